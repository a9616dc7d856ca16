"""Stable 64-bit keys of ids, so that the daily summaries group and join on integers.

The key of an id is FNV-1a of its UTF-8 bytes: the same in every process, on every host and in
every library version, which a 30-day window that mixes summaries written months apart needs.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)


_FNV_PRIME = np.uint64(0x100000001B3)


def stable_key(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A 64-bit key of each id (FNV-1a of its UTF-8 bytes), the same in every process and version.

    Used to count distinct merchants per customer on integers. Two ids of one customer colliding
    has a probability of about 1e-17; DuckDB's ``hash()`` would be faster but may change between
    versions, which would mix two key spaces in a 30-day window.
    """
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    array = array.cast(pa.large_string())
    n = len(array)
    if n == 0:
        return pa.array([], pa.int64())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64, count=n + 1, offset=array.offset * 8)
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if array.buffers()[2] else np.zeros(1, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    key = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    # Ids of one length at a time, as a (rows, length) byte matrix: a handful of vector operations
    # per character instead of a Python loop per id.
    with np.errstate(over="ignore"):
        for length in np.unique(lengths):
            if length == lengths[0] and (lengths == length).all():
                rows = slice(None)  # one length (fixed-width ids): the bytes are already a matrix
                chars = data[starts[0] : starts[0] + n * length].reshape(n, length)
            else:
                rows = np.flatnonzero(lengths == length)
                chars = data[starts[rows, None] + np.arange(length)]
            columns = np.ascontiguousarray(chars.T)
            group = key[rows]
            for i in range(int(length)):
                group = (group ^ columns[i]) * _FNV_PRIME
            key[rows] = group
    return pa.array(key.view(np.int64), pa.int64())
