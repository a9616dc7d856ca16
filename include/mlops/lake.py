"""The one owner of data locations: the landing zone, the lake, the quarantine and the reports.

Every folder a stage reads or writes is named here, local or S3 alike, so no stage builds a path:

* a **root** per store (:func:`root`): ``landing``, ``lake``, ``quarantine``, ``reports`` (the
  ``MLOPS_*_URL`` settings);
* a **dataset** under a root (``transactions``, ``labels``, :data:`PREDICTIONS`,
  :func:`feature_snapshots` ...), split in one **partition** per day, ``dt=YYYY-MM-DD``
  (:func:`partition`); a partition of the lake holds one :data:`DATA_FILE`; a drop in the landing
  zone holds data files and, written last, :data:`SUCCESS_MARKER`.

A location is a URL: a plain path or ``file://`` for a local folder, ``s3://bucket/prefix`` for S3
(``MLOPS_S3_ENDPOINT_URL`` points at a non-AWS endpoint such as a MinIO or moto server). Built on
``pyarrow.fs`` so that parquet goes straight between Arrow and the store; pyarrow is imported
inside the functions, so DAG files can name a location at parse time for free.

Writes are atomic: a local file is written under a temporary name in the same folder and renamed
into place; an S3 object is a single PUT, which S3 makes visible all at once. A file too large to
hold in memory is streamed (:func:`write_parquet_stream`) under a hidden name, then renamed (local)
or copied (S3) into place. Readers take only :func:`data_files`, never a temporary or hidden file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from include.mlops.core.settings import settings as current_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from include.mlops.core.settings import Settings

DATA_FILE = "part-00000.parquet"
"""The one file of a lake partition (and of a feature snapshot or predictions partition)."""

SUCCESS_MARKER = "_SUCCESS"
"""Written last into a landing drop: the drop is complete."""

ROOTS = ("landing", "lake", "quarantine", "reports")

# The catalogue: datasets the pipeline writes besides the landed ones (`schema.DATASETS`).
PREDICTIONS = "predictions"
DRIFT_REPORTS = "drift"
VALIDATION_REPORTS = "validation"
VALIDATION_RESULT = "validation.json"
"""The Great Expectations result of a validated (or quarantined) drop, beside its Data Docs."""
DATA_SUFFIXES = (".parquet", ".csv")
SERVING_REQUESTS = "serving_requests"
"""The scoring service's request log: a partition per payment day that grows by one file per flush
(:func:`new_data_file`), read whole with :func:`read_table`."""


def feature_snapshots(view: str) -> str:
    """The lake dataset of a feature view's daily snapshots (``customer`` or ``merchant``)."""
    return f"features/{view}"


def feature_summaries(version: str, kind: str) -> str:
    """The lake dataset of the features' small daily summaries of one kind."""
    return f"features/_daily/{version}/{kind}"


def validation_reports(dataset: str) -> str:
    """The reports dataset of a landed dataset's validation results and Data Docs."""
    return f"{VALIDATION_REPORTS}/{dataset}"


@dataclass(frozen=True)
class Location:
    """A filesystem and a path on it, with the URL it came from."""

    fs: pafs.FileSystem
    path: str
    url: str

    @property
    def is_local(self) -> bool:
        import pyarrow.fs as pafs

        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        """The last component of the path (a file or folder name)."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def join(self, *parts: str) -> Location:
        tail = "/".join(p.strip("/") for p in parts if p)
        return Location(self.fs, f"{self.path.rstrip('/')}/{tail}", f"{self.url.rstrip('/')}/{tail}")


def _s3_filesystem(endpoint_url: str | None) -> pafs.S3FileSystem:
    import pyarrow.fs as pafs

    kwargs: dict[str, object] = {}
    if endpoint_url:
        parsed = urlparse(endpoint_url)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "http"
    # The AWS SDK's own variables, as every AWS client reads them.
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def location(url: str, endpoint_url: str | None = None) -> Location:
    """Resolve a URL (local path, ``file://`` or ``s3://``) to a :class:`Location`.

    S3 goes to ``endpoint_url``, by default the settings' ``MLOPS_S3_ENDPOINT_URL``.
    """
    import pyarrow.fs as pafs

    parsed = urlparse(url)
    if parsed.scheme == "s3":
        path = f"{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")
        endpoint = endpoint_url or current_settings().s3_endpoint_url
        return Location(_s3_filesystem(endpoint), path, url.rstrip("/"))
    if parsed.scheme in ("", "file"):
        path = os.path.abspath(parsed.path if parsed.scheme == "file" else url)
        return Location(pafs.LocalFileSystem(), path, path)
    raise ValueError(f"unsupported storage URL {url!r}: use a local path, file:// or s3://")


# --------------------------------------------------------------------------------------------------
# Roots and partitions


def root_url(kind: str, s: Settings | None = None) -> str:
    """The URL of one of the stores (:data:`ROOTS`) in the settings."""
    s = s or current_settings()
    urls = {
        "landing": s.landing_url,
        "lake": s.lake_url,
        "quarantine": s.quarantine_url,
        "reports": s.reports_url,
    }
    if kind not in urls:
        raise ValueError(f"unknown kind of store {kind!r}: expected one of {', '.join(ROOTS)}")
    return urls[kind]


def root(kind: str, s: Settings | None = None) -> Location:
    """One of the stores (:data:`ROOTS`) as a location."""
    s = s or current_settings()
    return location(root_url(kind, s), s.s3_endpoint_url)


def partition_name(day: dt.date | str) -> str:
    """The folder name of a day's partition: ``dt=YYYY-MM-DD`` (a template such as ``{{ ds }}`` too)."""
    return f"dt={day.isoformat() if isinstance(day, dt.date) else day}"


def partition_url(base_url: str, dataset: str, day: dt.date | str) -> str:
    """The URL of a day's partition of ``dataset`` under ``base_url`` (no filesystem is touched)."""
    return f"{base_url.rstrip('/')}/{dataset}/{partition_name(day)}"


def partition_glob(base_url: str, dataset: str) -> str:
    """The pattern of every day's data file of ``dataset``, never a temporary one (a Feast source)."""
    # A bare "*" would also match the ".tmp-..." file of a write in progress.
    return f"{base_url.rstrip('/')}/{dataset}/dt=*/part-*.parquet"


def partition_at(base: Location, dataset: str, day: dt.date | str) -> Location:
    """A day's partition of ``dataset`` under ``base`` (a root, or a folder given by the caller)."""
    return base.join(dataset, partition_name(day))


def partition(kind: str, dataset: str, day: dt.date | str, s: Settings | None = None) -> Location:
    """A day's partition of ``dataset`` in one of the stores (:data:`ROOTS`)."""
    return partition_at(root(kind, s), dataset, day)


def partition_file(dataset: str, day: dt.date, s: Settings | None = None) -> Location:
    """The data file of a day's lake partition of ``dataset``."""
    return partition("lake", dataset, day, s).join(DATA_FILE)


def partition_days(base: Location, dataset: str) -> list[dt.date]:
    """The days that have a partition folder of ``dataset`` under ``base``, sorted."""
    import pyarrow.fs as pafs

    folder = base.join(dataset)
    infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, allow_not_found=True))
    days = []
    for info in infos:
        if info.type == pafs.FileType.Directory and info.base_name.startswith("dt="):
            try:
                days.append(dt.date.fromisoformat(info.base_name[3:]))
            except ValueError:
                continue
    return sorted(days)


def data_files(folder: Location, suffixes: tuple[str, ...] = (".parquet",)) -> list[Location]:
    """The data files of a partition, sorted: temporary, hidden and marker files left out."""
    return [f for f in list_files(folder) if f.path.endswith(suffixes) and not f.name.startswith((".", "_"))]


def read_table(folder: Location, columns: list[str] | None = None) -> pa.Table | None:
    """Every data file of a partition as one table; ``None`` when it has none."""
    import pyarrow as pa

    tables = [read_parquet(f, columns) for f in data_files(folder)]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def read_parquet(loc: Location, columns: list[str] | None = None, **options: Any) -> pa.Table:
    """One parquet file as a table (only ``columns`` when given)."""
    import pyarrow.parquet as pq

    with loc.fs.open_input_file(loc.path) as handle:
        return pq.read_table(handle, columns=columns, **options)


def parquet_columns(loc: Location) -> list[str]:
    """The column names of a parquet file (its footer only)."""
    import pyarrow.parquet as pq

    with loc.fs.open_input_file(loc.path) as handle:
        return list(pq.read_schema(handle).names)


def parquet_rows(loc: Location) -> int:
    """The row count of a parquet file (its footer only)."""
    import pyarrow.parquet as pq

    with loc.fs.open_input_file(loc.path) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def new_data_file(folder: Location, now: dt.datetime | None = None) -> Location:
    """A new data file in a partition that grows by appending files: ``part-<UTC time>-<random>.parquet``.

    Names sort by write time and never collide across writers (processes, pods); each is written
    once, atomically (:func:`write_bytes`), and :func:`data_files` lists them all.
    """
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return folder.join(f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet")


def replace_partition(folder: Location, data: bytes) -> Location:
    """Make ``data`` the partition's one file: written atomically, then every other file removed.

    Readers of the folder see the old file or the new one, never a mix; leftovers of an earlier
    layout or a crashed write go once the new file is in place. Returns the file.
    """
    file = folder.join(DATA_FILE)
    write_bytes(file, data)
    for stale in list_files(folder):
        if stale.name != DATA_FILE:
            delete(stale)
    return file


# --------------------------------------------------------------------------------------------------
# Files


def exists(loc: Location) -> bool:
    """Whether a file or folder is there."""
    import pyarrow.fs as pafs

    return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound


def list_files(loc: Location) -> list[Location]:
    """The files directly under a folder, sorted by name; empty if the folder does not exist."""
    import pyarrow.fs as pafs

    info = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    files = sorted(i.path for i in info if i.type == pafs.FileType.File)
    return [Location(loc.fs, p, f"{loc.url.rstrip('/')}/{p.rsplit('/', 1)[-1]}") for p in files]


def read_bytes(loc: Location) -> bytes:
    """A whole file's bytes."""
    with loc.fs.open_input_stream(loc.path) as f:
        return f.read()


def write_bytes(loc: Location, data: bytes) -> None:
    """Write a whole file atomically.

    A local file is written under a temporary name beside it and renamed into place; then the
    temporary files that killed writes of the same file left behind are removed.
    """
    parent = loc.path.rsplit("/", 1)[0]
    loc.fs.create_dir(parent, recursive=True)
    if not loc.is_local:
        with loc.fs.open_output_stream(loc.path) as f:
            f.write(data)
        return
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{loc.name}"
    try:
        with loc.fs.open_output_stream(tmp) as f:
            f.write(data)
        os.replace(tmp, loc.path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _remove_stale_temporaries(parent, loc.name)


def _remove_stale_temporaries(parent: str, name: str) -> None:
    """Remove the temporary files of earlier writes of ``name`` in the local folder ``parent``.

    A write killed between its temporary file and the rename leaves ``.tmp-<32 hex>-<name>``
    beside the target; readers never see it, and once a write of the same file has succeeded it
    is of no use. Only that exact form of name is removed: another file's temporary files, and
    every other name, stay. Each file has one writer at a time in the pipeline (one run per day and
    dataset); two writers of one file at once would make the slower one's rename fail, never mix
    contents.
    """
    pattern = re.compile(rf"\.tmp-[0-9a-f]{{32}}-{re.escape(name)}")
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry.path)


def encode_parquet(table: pa.Table) -> bytes:
    """The project's parquet encoding of a table: zstd, timestamps in microseconds.

    Microseconds because Feast's DuckDB offline store cannot read nanoseconds.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", coerce_timestamps="us")
    return sink.getvalue().to_pybytes()


def write_parquet(loc: Location, table: pa.Table) -> None:
    """Write an Arrow table as one parquet file (:func:`encode_parquet`), atomically."""
    write_bytes(loc, encode_parquet(table))


@contextlib.contextmanager
def write_parquet_stream(loc: Location, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """Write one parquet file table by table, atomically: memory holds one table, not the file.

    Yields a ``pyarrow.parquet.ParquetWriter`` of ``schema`` with :func:`encode_parquet`'s encoding
    (each ``write_table`` adds row groups; one call writes the bytes :func:`write_parquet` would).
    The file grows under a hidden temporary name beside ``loc`` (``.tmp-<32 hex>-<name>``, which
    :func:`data_files` never lists) and takes its place only when the block ends without an error:
    a local file by a rename, an S3 object by a copy (S3 makes the copy visible all at once). On an
    error the temporary file is removed and ``loc`` keeps what it had, the old file or nothing.
    """
    import pyarrow.parquet as pq

    parent = loc.path.rsplit("/", 1)[0]
    loc.fs.create_dir(parent, recursive=True)
    name = f".tmp-{uuid.uuid4().hex}-{loc.name}"
    tmp = Location(loc.fs, f"{parent}/{name}", f"{loc.url.rsplit('/', 1)[0]}/{name}")
    try:
        with (
            loc.fs.open_output_stream(tmp.path) as sink,
            pq.ParquetWriter(sink, schema, compression="zstd", coerce_timestamps="us") as writer,
        ):
            yield writer
        if loc.is_local:
            os.replace(tmp.path, loc.path)
        else:
            loc.fs.copy_file(tmp.path, loc.path)
    finally:
        # Also after a copy to S3; a temporary file left by a failed delete is never read.
        with contextlib.suppress(OSError):
            delete(tmp)
    if loc.is_local:
        _remove_stale_temporaries(parent, loc.name)


@contextlib.contextmanager
def replace_partition_stream(folder: Location, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """:func:`replace_partition` written table by table (:func:`write_parquet_stream`).

    The other files of the folder are removed only once the new file is in place; on an error
    the partition is left as it was.
    """
    with write_parquet_stream(folder.join(DATA_FILE), schema) as writer:
        yield writer
    for stale in list_files(folder):
        if stale.name != DATA_FILE:
            delete(stale)


def iter_tables(folder: Location, rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """A partition's rows as consecutive tables of ``rows`` rows (the last one shorter).

    The rows and order of :func:`read_table` (only ``columns`` when given), read batch by batch, so
    memory holds about one table whatever the partition's size; the data files of the partition
    are expected to share their columns (a lake partition has one). Nothing is yielded for a
    partition without rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows < 1:
        raise ValueError(f"rows must be a positive number, not {rows}")
    pending: list[pa.Table] = []
    count = 0
    for file in data_files(folder):
        with file.fs.open_input_file(file.path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=rows, columns=columns):
                pending.append(pa.Table.from_batches([batch]))
                count += batch.num_rows
                while count >= rows:
                    table = pa.concat_tables(pending, promote_options="permissive")
                    yield table.slice(0, rows)
                    pending, count = [table.slice(rows)], count - rows
    if count:
        yield pa.concat_tables(pending, promote_options="permissive")


def delete(loc: Location) -> None:
    """Delete a file or a whole folder; nothing happens if it does not exist."""
    import pyarrow.fs as pafs

    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.Directory:
        loc.fs.delete_dir(loc.path)
    elif info.type == pafs.FileType.File:
        loc.fs.delete_file(loc.path)


def list_entries(loc: Location) -> list[str]:
    """Names directly under a folder (sub-folders end with ``/``), sorted; hidden names left out."""
    import pyarrow.fs as pafs

    info = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    names = []
    for item in info:
        name = item.path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("."):
            continue
        names.append(name + "/" if item.type == pafs.FileType.Directory else name)
    return sorted(names)
