"""What the other stages record, read back for alerts, metrics and dashboards (no new state).

The file names are the recording stages' own (``ingest.quarantine.REJECTION_NAME``,
``monitoring.outputs.VERDICT_NAME`` / ``HTML_NAME``); operations may not import those stages, so a
unit test holds the names here equal to theirs. Every location comes from :mod:`include.mlops.lake`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

from include.mlops import lake
from include.mlops.core.settings import resolve_settings

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)

REJECTION_FILE = "rejection.json"
"""A quarantined drop's report, in its quarantine partition (written by ingestion)."""

VERDICT_FILE = "verdict.json"
"""A drift check's verdict, in the day's drift report folder (written by monitoring)."""

DRIFT_HTML = "drift.html"
"""A drift check's Evidently report, beside its verdict."""

LANDED_DATASETS = ("transactions", "labels")
"""The landed datasets (``schema.DATASETS``)."""

FEATURE_VIEWS = ("customer", "merchant")
"""The feature views whose daily snapshots the lake holds (``lake.feature_snapshots``)."""


def day_start(day: dt.date) -> float:
    """The UNIX time of 00:00 UTC of ``day`` (how a day is a Prometheus value)."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()


def _read_json(loc: lake.Location) -> dict[str, Any] | None:
    try:
        found = json.loads(lake.read_bytes(loc))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("could not read %s: %s", loc.url, exc)
        return None
    return found if isinstance(found, dict) else None


def landed_days(dataset: str, settings: Settings | None = None) -> list[dt.date]:
    """The days of ``dataset`` (a landed dataset, or :data:`lake.PREDICTIONS`, or a feature
    snapshot dataset) that have their data file in the lake, sorted."""
    s = resolve_settings(settings)
    base = lake.root("lake", s)
    return [
        day
        for day in lake.partition_days(base, dataset)
        if lake.exists(lake.partition_at(base, dataset, day).join(lake.DATA_FILE))
    ]


def landed_rows(dataset: str, day: dt.date, settings: Settings | None = None) -> int | None:
    """Rows of the day's lake partition of ``dataset`` (its parquet footer only); ``None`` without one."""
    with contextlib.suppress(FileNotFoundError):
        return lake.parquet_rows(lake.partition_file(dataset, day, settings))
    return None


def rejections(dataset: str, settings: Settings | None = None) -> dict[dt.date, dict[str, Any]]:
    """The quarantined days of ``dataset`` and their ``rejection.json``, by day."""
    s = resolve_settings(settings)
    base = lake.root("quarantine", s)
    found = {}
    for day in lake.partition_days(base, dataset):
        record = _read_json(lake.partition_at(base, dataset, day).join(REJECTION_FILE))
        if record is not None:
            found[day] = record
    return found


def verdicts(settings: Settings | None = None) -> dict[dt.date, dict[str, Any]]:
    """Every checked day's drift verdict (``verdict.json``), by day."""
    s = resolve_settings(settings)
    base = lake.root("reports", s)
    found = {}
    for day in lake.partition_days(base, lake.DRIFT_REPORTS):
        record = _read_json(lake.partition_at(base, lake.DRIFT_REPORTS, day).join(VERDICT_FILE))
        if record is not None:
            found[day] = record
    return found


def rejected_rows(rejection: dict[str, Any]) -> int | None:
    """Rows of a quarantined drop as validation counted them (``None`` when it could not be read)."""
    counts = [f.get("element_count") for f in rejection.get("failures") or []]
    known = [int(c) for c in counts if isinstance(c, int | float)]
    return max(known) if known else None


def failed_expectations(rejection: dict[str, Any]) -> int:
    """Expectations a quarantined drop failed; an unreadable drop counts its unreadable files (at least 1)."""
    failures = rejection.get("failures") or []
    if failures:
        return len(failures)
    return max(1, sum(1 for f in rejection.get("files") or [] if isinstance(f, dict) and f.get("problem")))
