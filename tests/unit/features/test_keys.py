"""The 64-bit key of an id is FNV-1a of its UTF-8 bytes, whatever the array's layout."""

from __future__ import annotations

import pyarrow as pa

from include.mlops.features import stable_key


def fnv1a(text: str) -> int:
    """FNV-1a (64 bits) of the UTF-8 bytes, one byte at a time, as a signed 64-bit integer."""
    key = 0xCBF29CE484222325
    for byte in text.encode():
        key = ((key ^ byte) * 0x100000001B3) % 2**64
    return key - 2**64 if key >= 2**63 else key


def test_keys_are_the_published_fnv1a_values() -> None:
    # The test vectors of the FNV reference: "" is the offset basis, "a" and "foobar" are listed.
    keys = stable_key(pa.array(["", "a", "foobar"])).to_pylist()
    assert [k % 2**64 for k in keys] == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]


def test_ids_of_mixed_lengths_and_non_ascii_bytes_match_a_byte_by_byte_hash() -> None:
    ids = ["c-000001", "m-42", "c-000002", "zürich-€", "m-42", "", "c-000001x"]
    assert stable_key(pa.array(ids)).to_pylist() == [fnv1a(i) for i in ids]


def test_fixed_width_ids_take_the_matrix_path_and_agree() -> None:
    ids = [f"t-{i:06d}" for i in range(500)]
    keys = stable_key(pa.array(ids)).to_pylist()
    assert keys == [fnv1a(i) for i in ids]
    assert len(set(keys)) == len(ids)


def test_chunked_sliced_and_large_string_arrays_give_the_same_keys() -> None:
    ids = ["a1", "b22", "c333", "d4444", "e5"]
    expected = [fnv1a(i) for i in ids]
    chunked = pa.chunked_array([ids[:2], ids[2:]])
    sliced = pa.array(["skip", *ids, "skip"]).slice(1, len(ids))
    large = pa.array(ids, pa.large_string())
    dictionary = pa.array(ids).dictionary_encode()
    for array in (chunked, sliced, large, dictionary):
        assert stable_key(array).to_pylist() == expected


def test_an_empty_array_gives_an_empty_int64_array() -> None:
    keys = stable_key(pa.array([], pa.string()))
    assert keys.type == pa.int64() and len(keys) == 0
