"""Reading a landing drop: its files, as the schema's types where they parse, and what is wrong.

A drop is ``<landing>/<dataset>/dt=YYYY-MM-DD/``: one or more ``*.parquet`` or ``*.csv`` files and
an empty ``_SUCCESS`` marker written last. :func:`read_drop` reads every data file (names starting
with ``.`` or ``_`` other than the marker are ignored, as Hadoop and Spark writers use them for
their own bookkeeping), casts the known columns to the schema's types where the contract allows it,
and returns the rows both as an Arrow table and as the frame the suite validates. A file that
cannot be read at all raises :class:`UnreadableDrop` naming every such file. Files are only read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs

from include.mlops import lake
from include.mlops.ingest.suite import to_frame

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.core.schema import Dataset
    from include.mlops.lake import Location

# Casts tried one distinct value at a time to find the values of a CSV column that do not parse;
# past this the column is reported as text throughout.
_BISECT_BUDGET = 4096


@dataclass(frozen=True)
class DropFile:
    """One file of a drop as it was read: its name, size and sha256, and what is wrong with it."""

    name: str
    size: int
    sha256: str
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The file as JSON-compatible values (``problem`` only when there is one)."""
        found = {"name": self.name, "bytes": self.size, "sha256": self.sha256}
        if self.problem:
            found["problem"] = self.problem
        return found


class UnreadableDrop(Exception):
    """Some file of the drop cannot be read: ``problems`` says what, one line each."""

    def __init__(self, problems: list[str], files: list[DropFile] | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.files = files or []


@dataclass(frozen=True)
class DropContents:
    """The rows of a drop and the files they came from.

    ``table`` holds the rows in the schema's types, or is None when some column is not of them
    (the suite will say which); ``frame`` is what the suite validates either way.
    """

    table: pa.Table | None
    frame: pd.DataFrame
    files: list[DropFile] = field(default_factory=list)


def read_drop(folder: Location, dataset: Dataset) -> DropContents:
    """The drop in ``folder`` as :class:`DropContents`; :class:`UnreadableDrop` listing every file
    that cannot be read (or an empty drop)."""
    parts, files, problems = _read_files(folder, dataset)
    if not files and not problems:
        problems.append(f"the drop has a {lake.SUCCESS_MARKER} marker but no data files (*.parquet, *.csv)")
    if problems:
        raise UnreadableDrop(problems, files)
    return _combine(parts, files)


# A file read into the schema's types, and the text columns that did not fully parse (see _coerce).
_Part = tuple[pa.Table, dict[str, "pd.Series"]]


def _read_files(folder: Location, dataset: Dataset) -> tuple[list[_Part], list[DropFile], list[str]]:
    """Every entry of the drop's folder in name order: the parts read, the files, the problems."""
    problems: list[str] = []
    files: list[DropFile] = []
    parts: list[_Part] = []
    entries = folder.fs.get_file_info(pafs.FileSelector(folder.path, allow_not_found=True))
    for entry in sorted(entries, key=lambda e: e.base_name):
        name = entry.base_name
        if name == lake.SUCCESS_MARKER or name.startswith((".", "_")):
            continue
        if entry.type == pafs.FileType.Directory:
            # Rows in a sub-folder would otherwise be silently left out of the day.
            problems.append(f"{name}/: a sub-folder; a drop holds its data files directly")
            continue
        data = lake.read_bytes(folder.join(name))
        problem = None
        if not name.endswith(lake.DATA_SUFFIXES):
            problem = f"{name}: unsupported file type; a drop holds only *.parquet or *.csv files"
        else:
            try:
                table = _read_file(folder.join(name), data, dataset)
                parts.append(_coerce(table, dataset, name.endswith(".csv")))
            except UnreadableDrop as exc:
                problem = exc.problems[0]
        if problem:
            problems.append(problem)
        files.append(DropFile(name, len(data), hashlib.sha256(data).hexdigest(), problem))
    return parts, files, problems


def _combine(parts: list[_Part], files: list[DropFile]) -> DropContents:
    """The parts as one table and frame; side by side as frames only when they cannot be one table."""
    import pandas as pd

    tables = [t for t, _ in parts]
    if not any(partial for _, partial in parts):
        try:
            table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
            return DropContents(table, to_frame(table), files)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # the files disagree on a column's type: validate them side by side
    frames = []
    for part, partial in parts:
        frame = to_frame(part)
        for name, values in partial.items():
            frame[name] = values
        frames.append(frame)
    return DropContents(None, pd.concat(frames, ignore_index=True), files)


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
    """One data file as an Arrow table, or :class:`UnreadableDrop` with what is wrong with it."""
    name = location.path.rsplit("/", 1)[-1]
    if not data:
        raise UnreadableDrop([f"{name}: the file is empty (0 bytes)"])
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableDrop([f"{name}: not a readable parquet file ({_first_line(exc)})"]) from None
    import pyarrow.csv as pacsv

    if b"\x00" in data:
        raise UnreadableDrop([f"{name}: binary content (NUL bytes), not a CSV text file"])
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{data[exc.start]:02x} at offset {exc.start}"
        raise UnreadableDrop([f"{name}: not UTF-8 text ({where}); save the CSV as UTF-8"]) from None
    options = pacsv.ConvertOptions(
        # Every known column is read as text and parsed by the contract's rules (see _coerce).
        column_types=dict.fromkeys(dataset.names, pa.string()),
        strings_can_be_null=True,
        null_values=[""],
    )
    try:
        return pacsv.read_csv(pa.BufferReader(data), convert_options=options)
    except (pa.ArrowException, OSError) as exc:
        raise UnreadableDrop([f"{name}: not a readable CSV file ({_first_line(exc)})"]) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
