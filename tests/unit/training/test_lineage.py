"""Lineage: what a model was made from, fingerprinted so that a later step can tell whether it changed."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import TYPE_CHECKING

from include.mlops import features, lake
from include.mlops.training import (
    code_sha256,
    code_version,
    fingerprint_digest,
    package_version,
    partition_fingerprint,
    snapshot_fingerprints,
    validation_results,
)

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings

DAY = dt.date(2026, 1, 10)


def _report(s: Settings, dataset: str, day: dt.date, content: bytes) -> None:
    loc = lake.partition("reports", lake.validation_reports(dataset), day, s).join(lake.VALIDATION_RESULT)
    lake.write_bytes(loc, content)


def test_a_partition_fingerprint_names_the_file_and_hashes_its_bytes() -> None:
    loc = lake.location("/lake/transactions/dt=2026-01-10/part-00000.parquet")
    fingerprint = partition_fingerprint("transactions", DAY, loc, b"payments", 12)
    assert fingerprint == {
        "dataset": "transactions",
        "day": "2026-01-10",
        "url": loc.url,
        "sha256": hashlib.sha256(b"payments").hexdigest(),
        "bytes": 8,
        "rows": 12,
    }


def test_the_digest_of_fingerprints_ignores_their_order_and_sees_a_changed_file() -> None:
    a = partition_fingerprint("labels", DAY, lake.location("/lake/a.parquet"), b"a", 1)
    b = partition_fingerprint("labels", DAY, lake.location("/lake/b.parquet"), b"b", 1)
    changed = partition_fingerprint("labels", DAY, lake.location("/lake/b.parquet"), b"B", 1)
    assert fingerprint_digest([a, b]) == fingerprint_digest([b, a])
    assert fingerprint_digest([a, b]) != fingerprint_digest([a, changed])
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint_digest([]))


def test_the_code_version_is_the_package_version_and_the_sources_hash() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", code_sha256())
    assert code_version() == f"{package_version()}+{code_sha256()[:12]}"


def test_validation_results_say_which_reports_exist_and_passed(tiny_settings: Settings) -> None:
    _report(tiny_settings, "transactions", DAY, json.dumps({"success": True}).encode())
    _report(tiny_settings, "labels", DAY, json.dumps({"success": False}).encode())
    _report(tiny_settings, "labels", DAY + dt.timedelta(days=1), b"not json")
    results = validation_results(
        [
            ("transactions", DAY),
            ("labels", DAY),
            ("labels", DAY + dt.timedelta(days=1)),
            ("transactions", DAY + dt.timedelta(days=1)),
        ],
        tiny_settings,
    )
    assert [(r["present"], r["success"]) for r in results] == [
        (True, True),
        (True, False),
        (True, None),
        (False, None),
    ]
    assert results[2]["error"].startswith("unreadable report")
    assert results[0]["path"].endswith("validation/transactions/dt=2026-01-10/validation.json")


def test_feature_snapshots_that_exist_are_fingerprinted(tiny_settings: Settings) -> None:
    lake.write_bytes(features.snapshot_location("customer", DAY, tiny_settings), b"customers")
    prints = snapshot_fingerprints([DAY, DAY + dt.timedelta(days=1)], tiny_settings)
    assert [(p["dataset"], p["day"], p["rows"]) for p in prints] == [("features/customer", "2026-01-10", -1)]
    assert prints[0]["sha256"] == hashlib.sha256(b"customers").hexdigest()
