"""Landing one day of a dataset in the lake, gated by its Great Expectations suite.

:func:`ingest_day` takes a complete drop only (its ``_SUCCESS`` marker written; the sensor waits
for it). It reads the drop into the schema's types (:mod:`.drops`), validates it
(:mod:`.validation`), and then either

* writes ``<lake>/<dataset>/dt=YYYY-MM-DD/part-00000.parquet`` in one atomic step, replacing the
  partition (rows sorted by key, so a rerun writes the same bytes), with the validation result and
  Data Docs under ``<reports>/validation/<dataset>/dt=YYYY-MM-DD/``; or
* quarantines the day (:mod:`.quarantine`), leaves the lake as it was and raises
  :class:`DropRejected` with a message for the operator.

Landing files are only ever read.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import lake
from include.mlops.core.schema import DATASETS, Dataset
from include.mlops.core.settings import resolve_settings
from include.mlops.ingest.drops import UnreadableDrop, read_drop
from include.mlops.ingest.quarantine import REJECTION_NAME, Rejection, quarantine_day
from include.mlops.ingest.suite import ROW_COUNT_HISTORY
from include.mlops.ingest.validation import validate

if TYPE_CHECKING:
    import datetime as dt

    import pyarrow as pa

    from include.mlops.core.settings import Settings
    from include.mlops.ingest.drops import DropContents
    from include.mlops.ingest.report import ValidationReport

logger = logging.getLogger(__name__)


class DropIncomplete(RuntimeError):
    """The day's drop has no ``_SUCCESS`` marker yet: it may still be being written."""


class DropRejected(RuntimeError):
    """The day's drop cannot go to the lake; it was quarantined with a report.

    ``str(exc)`` is the operator's message; the attributes carry the same facts for code.
    """

    def __init__(
        self,
        message: str,
        *,
        dataset: str,
        day: dt.date,
        report_url: str,
        docs_url: str | None = None,
        problems: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.day = day
        self.report_url = report_url
        self.docs_url = docs_url
        self.problems = problems


@dataclass(frozen=True)
class IngestResult:
    """A day landed in the lake: where, how many rows, the validation report and a fingerprint."""

    dataset: str
    day: dt.date
    rows: int
    partition_url: str
    report_url: str
    docs_url: str | None
    fingerprint: str

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-compatible values (for XCom and run metadata)."""
        return {
            "dataset": self.dataset,
            "day": self.day.isoformat(),
            "rows": self.rows,
            "partition_url": self.partition_url,
            "report_url": self.report_url,
            "docs_url": self.docs_url,
            "fingerprint": self.fingerprint,
        }


def _dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}") from None


def partition_url(kind: str, dataset: str, day: dt.date, settings: Settings | None = None) -> str:
    """The folder of ``dataset`` for ``day`` in the landing zone, the lake, the quarantine or the reports.

    ``kind`` is one of :data:`~include.mlops.lake.ROOTS`. Reports live under ``<reports>/validation/``.
    """
    name = _dataset(dataset).name
    if kind == "reports":
        return lake.partition(kind, lake.validation_reports(name), day, settings).url
    return lake.partition(kind, name, day, settings).url


def settled(dataset: str, day: dt.date, settings: Settings | None = None) -> str | None:
    """Where the day's drop of ``dataset`` went once validated: ``"lake"``, ``"quarantine"``, or
    ``None`` while it has not been validated yet (a lake partition landed earlier wins)."""
    if lake.exists(lake.partition_file(_dataset(dataset).name, day, settings)):
        return "lake"
    quarantine = lake.location(partition_url("quarantine", dataset, day, settings))
    return "quarantine" if lake.exists(quarantine.join(REJECTION_NAME)) else None


def drop_marker_url(dataset: str, day: dt.date, settings: Settings | None = None) -> str:
    """The ``_SUCCESS`` marker of the day's drop: the producer writes it last, the sensor waits on it."""
    return lake.partition("landing", _dataset(dataset).name, day, settings).join(lake.SUCCESS_MARKER).url


def recent_row_counts(dataset: str, day: dt.date, settings: Settings | None = None) -> list[int]:
    """Row counts of the most recent lake partitions strictly before ``day``, oldest first.

    At most :data:`~include.mlops.ingest.suite.ROW_COUNT_HISTORY` of them; only the parquet footers
    are read.
    """
    base = lake.root("lake", settings)
    name = _dataset(dataset).name
    counts = []
    for earlier in [d for d in lake.partition_days(base, name) if d < day][-ROW_COUNT_HISTORY:]:
        try:
            counts.append(lake.parquet_rows(lake.partition_at(base, name, earlier).join(lake.DATA_FILE)))
        except FileNotFoundError:
            continue
    return counts


def ingest_day(dataset: str, day: dt.date, settings: Settings | None = None) -> IngestResult:
    """Validate the day's drop of ``dataset`` and land it in the lake, or quarantine it.

    Raises :class:`DropIncomplete` when the drop's ``_SUCCESS`` marker is missing and
    :class:`DropRejected` (after quarantining the day) when a file cannot be read or the suite
    fails. Rerunning a day replaces its partition; the landing files are never modified.
    """
    spec = _dataset(dataset)
    s = resolve_settings(settings)
    _require_marker(spec, day, s)
    contents = _read_or_reject(spec, day, s)
    report = validate(contents.frame, spec, day, recent_row_counts(spec.name, day, s))
    if not report.success:
        failed = len(report.failures)
        raise _rejected(
            spec,
            day,
            quarantine_day(
                spec,
                day,
                s,
                headline=f"{failed} of {len(report.outcomes)} expectations failed.",
                problems=[o.explain() for o in report.failures],
                files=contents.files,
                report=report,
            ),
        )
    if contents.table is None:
        raise RuntimeError(f"{spec.name} {day}: the suite passed rows that are not of the schema's types")
    return _land(contents.table, report, spec, day, s)


def _require_marker(spec: Dataset, day: dt.date, s: Settings) -> None:
    """Raise :class:`DropIncomplete` unless the day's drop carries its ``_SUCCESS`` marker."""
    landing = lake.partition("landing", spec.name, day, s)
    if lake.exists(landing.join(lake.SUCCESS_MARKER)):
        return
    found = "has files but no" if lake.list_files(landing) else "does not exist yet, nor its"
    raise DropIncomplete(
        f"{spec.name} drop of {day.isoformat()} is not complete: {landing.url} {found} "
        f"{lake.SUCCESS_MARKER} marker. The producer writes the marker after the data files; wait for "
        f"it (the sensor does), or ask the producer to finish the drop, then rerun {day.isoformat()}."
    )


def _read_or_reject(spec: Dataset, day: dt.date, s: Settings) -> DropContents:
    """The day's drop, read; a drop with a file that cannot be read is quarantined and raised."""
    try:
        return read_drop(lake.partition("landing", spec.name, day, s), spec)
    except UnreadableDrop as exc:
        count = len(exc.problems)
        rejection = quarantine_day(
            spec,
            day,
            s,
            headline=f"{count} problem{'s' if count > 1 else ''} reading the files.",
            problems=exc.problems,
            files=exc.files,
            report=None,
        )
        raise _rejected(spec, day, rejection) from None


def _rejected(spec: Dataset, day: dt.date, rejection: Rejection) -> DropRejected:
    """The error of a quarantined day (logged: a rejected drop is what an operator must act on)."""
    logger.warning(
        "%s drop of %s rejected (%d problems), quarantined: %s",
        spec.name,
        day,
        len(rejection.problems),
        rejection.report_url,
    )
    return DropRejected(
        rejection.message,
        dataset=spec.name,
        day=day,
        report_url=rejection.report_url,
        docs_url=rejection.docs_url,
        problems=rejection.problems,
    )


def _land(
    table: pa.Table, report: ValidationReport, spec: Dataset, day: dt.date, s: Settings
) -> IngestResult:
    """Replace the day's lake partition with ``table``, publish its report, clear its quarantine."""
    data = _lake_bytes(table, spec)
    lake_folder = lake.partition("lake", spec.name, day, s)
    lake.replace_partition(lake_folder, data)
    published = report.publish(partition_url("reports", spec.name, day, s))
    # The day is good now: an earlier rejection of it no longer describes the lake.
    lake.delete(lake.partition("quarantine", spec.name, day, s))
    logger.info("landed %s of %s: %d rows in %s", spec.name, day, report.rows, lake_folder.url)
    return IngestResult(
        dataset=spec.name,
        day=day,
        rows=report.rows,
        partition_url=lake_folder.url,
        report_url=published.result_url or "",
        docs_url=published.docs_url,
        fingerprint=hashlib.sha256(data).hexdigest(),
    )


def _lake_bytes(table: pa.Table, dataset: Dataset) -> bytes:
    """The partition's file: the schema's columns in order, rows sorted by key (reruns are byte-identical)."""
    import pyarrow.compute as pc

    ordered = table.select(dataset.names).cast(dataset.arrow_schema)
    key = ordered.column(dataset.key_column)
    # Producers usually write in key order already: checking costs milliseconds, sorting 0.2 s a 1M rows.
    if len(key) > 1 and not pc.all(pc.less_equal(key[:-1], key[1:])).as_py():
        ordered = ordered.sort_by([(dataset.key_column, "ascending")])
    return lake.encode_parquet(ordered)
