"""Landing one day of a dataset in the lake, gated by its Great Expectations suite.

A drop is ``<landing>/<dataset>/dt=YYYY-MM-DD/``: one or more ``*.parquet`` or ``*.csv`` files and
an empty ``_SUCCESS`` marker written last. :func:`ingest_day` reads it into the schema's types,
validates it (:mod:`include.mlops.validation`), and then either

* writes ``<lake>/<dataset>/dt=YYYY-MM-DD/part-00000.parquet`` in one atomic step, replacing the
  partition (rows sorted by key, so a rerun writes the same bytes), with the validation result and
  Data Docs under ``<reports>/validation/<dataset>/dt=YYYY-MM-DD/``; or
* quarantines the day: ``rejection.json`` (what was wrong, the landing files and their sha256),
  the validation result and Data Docs under ``<quarantine>/<dataset>/dt=YYYY-MM-DD/``, leaves the
  lake as it was and raises :class:`DropRejected` with a message for the operator.

Landing files are only ever read. Names starting with ``.`` or ``_`` other than the marker are
ignored, as Hadoop and Spark writers use them for their own bookkeeping.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs

from include.mlops import lake
from include.mlops.core.schema import DATASETS, Dataset
from include.mlops.core.settings import settings as current_settings
from include.mlops.ingest.validation import ROW_COUNT_HISTORY, ValidationReport, to_frame, validate

if TYPE_CHECKING:
    import datetime as dt

    import pandas as pd

    from include.mlops.core.settings import Settings
    from include.mlops.lake import Location

REJECTION_NAME = "rejection.json"

# Casts tried one distinct value at a time to find the values of a CSV column that do not parse;
# past this the column is reported as text throughout.
_BISECT_BUDGET = 4096


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

    At most :data:`~include.mlops.validation.ROW_COUNT_HISTORY` of them; only the parquet footers
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


@dataclass(frozen=True)
class _File:
    name: str
    size: int
    sha256: str
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        found = {"name": self.name, "bytes": self.size, "sha256": self.sha256}
        if self.problem:
            found["problem"] = self.problem
        return found


class _Unreadable(Exception):
    def __init__(self, problems: list[str], files: list[_File] | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.files = files or []


def _same_kind(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether a typed (parquet) column may be cast to the schema's type without parsing text."""
    t = pa.types
    if t.is_dictionary(source):
        source = source.value_type
    if t.is_string(target):
        return t.is_string(source) or t.is_large_string(source)
    if t.is_integer(target) or t.is_floating(target):
        return t.is_integer(source) or t.is_floating(source)
    if t.is_timestamp(target):
        # A timestamp without a zone is ambiguous; the contract is UTC.
        return t.is_timestamp(source) and source.tz is not None
    if t.is_boolean(target):
        return t.is_boolean(source)
    return False


def _uncastable(values: pa.Array, target: pa.DataType) -> set[str] | None:
    """The values that do not cast to ``target``, found by halving; None past the budget."""
    bad: set[str] = set()
    pending = [values]
    for _ in range(_BISECT_BUDGET):
        if not pending:
            return bad
        chunk = pending.pop()
        try:
            chunk.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if len(chunk) == 1:
                bad.add(chunk[0].as_py())
            else:
                half = len(chunk) // 2
                pending += [chunk.slice(half), chunk.slice(0, half)]
    return None if pending else bad


def _text_with_bad_values(column: pa.ChunkedArray, target: pa.DataType) -> pd.Series:
    """A text column that does not fully parse, as the values GX's type check judges one by one.

    Values that parse become scalars of the schema's type, the others stay text, so the report
    counts and shows exactly the values that do not parse.
    """
    import numpy as np
    import pandas as pd
    import pyarrow.compute as pc

    text = column.combine_chunks()
    bad = _uncastable(pc.unique(text).drop_null(), target)
    if bad is None:
        return pd.Series(text.to_pylist(), dtype=object)
    bad_mask = pc.is_in(text, value_set=pa.array(sorted(bad), type=text.type))
    parsed = pc.if_else(bad_mask, None, text).cast(target)
    is_bad = bad_mask.to_numpy(zero_copy_only=False)
    make = pd.Timestamp if pa.types.is_timestamp(target) else np.dtype(target.to_pandas_dtype()).type
    values = pd.Series([None if v is None else make(v) for v in parsed.to_pylist()], dtype=object)
    values[is_bad] = np.asarray(text.to_pylist(), dtype=object)[is_bad]
    return values


def _coerce(table: pa.Table, dataset: Dataset, from_text: bool) -> tuple[pa.Table, dict[str, pd.Series]]:
    """Cast the known columns to the schema's types where the contract allows it.

    A CSV column is text and is parsed; a parquet column is cast only within its kind (int64 to
    int8, nanoseconds to microseconds, another zone to UTC). A column that cannot be cast keeps
    its own type and the suite's type expectation reports it; for a CSV column the values that do
    not parse are returned separately so that the report names them.
    """
    partial: dict[str, pd.Series] = {}
    for name in table.column_names:
        if name not in dataset.names:
            continue
        target = dataset.column(name).type
        column = table.column(name)
        if column.type == target:
            continue
        text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        if not (from_text and text) and not _same_kind(column.type, target):
            continue
        try:
            # Sub-microsecond digits are dropped on purpose: the lake keeps microseconds.
            cast = column.cast(target, safe=not pa.types.is_timestamp(target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if from_text and text:
                partial[name] = _text_with_bad_values(column, target)
            continue
        table = table.set_column(table.schema.get_field_index(name), name, cast)
    return table, partial


def _read_file(location: Location, data: bytes, dataset: Dataset) -> pa.Table:
    """One data file as an Arrow table, or :class:`_Unreadable` with what is wrong with it."""
    name = location.path.rsplit("/", 1)[-1]
    if not data:
        raise _Unreadable([f"{name}: the file is empty (0 bytes)"])
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError) as exc:
            raise _Unreadable([f"{name}: not a readable parquet file ({_first_line(exc)})"]) from None
    import pyarrow.csv as pacsv

    if b"\x00" in data:
        raise _Unreadable([f"{name}: binary content (NUL bytes), not a CSV text file"])
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{data[exc.start]:02x} at offset {exc.start}"
        raise _Unreadable([f"{name}: not UTF-8 text ({where}); save the CSV as UTF-8"]) from None
    options = pacsv.ConvertOptions(
        # Every known column is read as text and parsed by the contract's rules (see _coerce).
        column_types=dict.fromkeys(dataset.names, pa.string()),
        strings_can_be_null=True,
        null_values=[""],
    )
    try:
        return pacsv.read_csv(pa.BufferReader(data), convert_options=options)
    except (pa.ArrowException, OSError) as exc:
        raise _Unreadable([f"{name}: not a readable CSV file ({_first_line(exc)})"]) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _read_drop(folder: Location, dataset: Dataset) -> tuple[pa.Table | None, pd.DataFrame, list[_File]]:
    """The drop's rows as a typed table and as the frame to validate, and the files read.

    The table is None when some column is not of the schema's type (the suite will say which).
    Raises :class:`_Unreadable` listing every file that cannot be read.
    """
    import pandas as pd

    problems: list[str] = []
    files: list[_File] = []
    parts: list[tuple[pa.Table, dict[str, pd.Series]]] = []
    entries = folder.fs.get_file_info(pafs.FileSelector(folder.path, allow_not_found=True))
    for entry in sorted(entries, key=lambda e: e.base_name):
        name = entry.base_name
        if name == lake.SUCCESS_MARKER or name.startswith((".", "_")):
            continue
        if entry.type == pafs.FileType.Directory:
            # Rows in a sub-folder would otherwise be silently left out of the day.
            problems.append(f"{name}/: a sub-folder; a drop holds its data files directly")
            continue
        location = folder.join(name)
        data = lake.read_bytes(location)
        digest = hashlib.sha256(data).hexdigest()
        if not name.endswith(lake.DATA_SUFFIXES):
            problem = f"{name}: unsupported file type; a drop holds only *.parquet or *.csv files"
        else:
            try:
                parts.append(_coerce(_read_file(location, data, dataset), dataset, name.endswith(".csv")))
                problem = None
            except _Unreadable as exc:
                problem = exc.problems[0]
        if problem:
            problems.append(problem)
        files.append(_File(name, len(data), digest, problem))
    if not files and not problems:
        problems.append(f"the drop has a {lake.SUCCESS_MARKER} marker but no data files (*.parquet, *.csv)")
    if problems:
        raise _Unreadable(problems, files)

    tables = [t for t, _ in parts]
    if not any(partial for _, partial in parts):
        try:
            table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
            return table, to_frame(table), files
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # the files disagree on a column's type: validate them side by side
    frames = []
    for part, partial in parts:
        frame = to_frame(part)
        for name, values in partial.items():
            frame[name] = values
        frames.append(frame)
    return None, pd.concat(frames, ignore_index=True), files


def _lake_bytes(table: pa.Table, dataset: Dataset) -> bytes:
    """The partition's file: the schema's columns in order, rows sorted by key (reruns are byte-identical)."""
    import pyarrow.compute as pc

    ordered = table.select(dataset.names).cast(dataset.arrow_schema)
    key = ordered.column(dataset.key_column)
    # Producers usually write in key order already: checking costs milliseconds, sorting 0.2 s a 1M rows.
    if len(key) > 1 and not pc.all(pc.less_equal(key[:-1], key[1:])).as_py():
        ordered = ordered.sort_by([(dataset.key_column, "ascending")])
    return lake.encode_parquet(ordered)


def _lake_state(lake_folder: Location, day: dt.date) -> str:
    if lake.exists(lake_folder.join(lake.DATA_FILE)):
        return (
            f"The lake keeps the partition landed earlier for {day.isoformat()} unchanged "
            f"({lake_folder.url})."
        )
    return f"Nothing of {day.isoformat()} is in the lake."


def _reject(
    dataset: Dataset,
    day: dt.date,
    s: Settings,
    *,
    headline: str,
    problems: list[str],
    files: list[_File],
    report: ValidationReport | None,
) -> DropRejected:
    """Quarantine the day (reports only; the landing files stay where they are) and build the error."""
    quarantine = lake.partition("quarantine", dataset.name, day, s)
    landing = lake.partition("landing", dataset.name, day, s).url
    lake_folder = lake.partition("lake", dataset.name, day, s)
    lake.delete(quarantine)
    published = report.publish(quarantine.url) if report is not None else None
    rejection = quarantine.join(REJECTION_NAME)
    if not lake.exists(lake_folder.join(lake.DATA_FILE)):
        # Without a landed file the folder can only hold leftovers, which a reader would take
        # for the day: the day must have no partition at all.
        lake.delete(lake_folder)
    lake_state = _lake_state(lake_folder, day)
    lines = [f"{dataset.name} drop of {day.isoformat()} rejected: {headline}"]
    lines += [p if p.startswith("  - ") else f"  - {p}" for p in problems]
    if published is not None:
        lines.append(f"Validation result: {published.result_url}")
        if published.docs_url:
            lines.append(f"Data Docs: {published.docs_url}")
    lines.append(f"Quarantine report: {rejection.url}")
    lines.append(lake_state)
    lines.append(
        f"The landing files in {landing} were left untouched. Fix the drop there (data files first, "
        f"{lake.SUCCESS_MARKER} last) and rerun {day.isoformat()} (clear that day's run in Airflow)."
    )
    message = "\n".join(lines)
    body = {
        "dataset": dataset.name,
        "day": day.isoformat(),
        "reason": "invalid" if report is not None else "unreadable",
        "message": message,
        "landing_url": landing,
        "files": [f.as_dict() for f in files],
        "lake": lake_state,
        "validation_url": published.result_url if published else None,
        "docs_url": published.docs_url if published else None,
        "failures": [o.as_dict() for o in published.failures] if published else [],
    }
    lake.write_bytes(rejection, json.dumps(body, indent=2).encode())
    return DropRejected(
        message,
        dataset=dataset.name,
        day=day,
        report_url=rejection.url,
        docs_url=published.docs_url if published else None,
        problems=tuple(p.removeprefix("  - ") for p in problems),
    )


def ingest_day(dataset: str, day: dt.date, settings: Settings | None = None) -> IngestResult:
    """Validate the day's drop of ``dataset`` and land it in the lake, or quarantine it.

    Raises :class:`DropIncomplete` when the drop's ``_SUCCESS`` marker is missing and
    :class:`DropRejected` (after quarantining the day) when a file cannot be read or the suite
    fails. Rerunning a day replaces its partition; the landing files are never modified.
    """
    spec = _dataset(dataset)
    s = settings or current_settings()
    landing = lake.partition("landing", spec.name, day, s)
    if not lake.exists(landing.join(lake.SUCCESS_MARKER)):
        found = "has files but no" if lake.list_files(landing) else "does not exist yet, nor its"
        raise DropIncomplete(
            f"{spec.name} drop of {day.isoformat()} is not complete: {landing.url} {found} "
            f"{lake.SUCCESS_MARKER} marker. The producer writes the marker after the data files; wait for "
            f"it (the sensor does), or ask the producer to finish the drop, then rerun {day.isoformat()}."
        )

    try:
        table, frame, files = _read_drop(landing, spec)
    except _Unreadable as exc:
        count = len(exc.problems)
        raise _reject(
            spec,
            day,
            s,
            headline=f"{count} problem{'s' if count > 1 else ''} reading the files.",
            problems=exc.problems,
            files=exc.files,
            report=None,
        ) from None

    report = validate(frame, spec, day, recent_row_counts(spec.name, day, s))
    if not report.success:
        failed = len(report.failures)
        raise _reject(
            spec,
            day,
            s,
            headline=f"{failed} of {len(report.outcomes)} expectations failed.",
            problems=[o.explain() for o in report.failures],
            files=files,
            report=report,
        )
    if table is None:
        raise RuntimeError(f"{spec.name} {day}: the suite passed rows that are not of the schema's types")
    data = _lake_bytes(table, spec)

    lake_folder = lake.partition("lake", spec.name, day, s)
    lake.replace_partition(lake_folder, data)
    published = report.publish(partition_url("reports", spec.name, day, s))
    # The day is good now: an earlier rejection of it no longer describes the lake.
    lake.delete(lake.partition("quarantine", spec.name, day, s))
    return IngestResult(
        dataset=spec.name,
        day=day,
        rows=report.rows,
        partition_url=lake_folder.url,
        report_url=published.result_url or "",
        docs_url=published.docs_url,
        fingerprint=hashlib.sha256(data).hexdigest(),
    )
