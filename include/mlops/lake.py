"""One way to read and write the landing zone, the lake and the reports, local or S3.

A location is a URL: a plain path or ``file://`` for a local folder, ``s3://bucket/prefix`` for S3
(``MLOPS_S3_ENDPOINT_URL`` points at a non-AWS endpoint such as a MinIO or moto server). Built on
``pyarrow.fs`` so that parquet goes straight between Arrow and the store.

Writes are atomic: a local file is written under a temporary name in the same folder and renamed
into place; an S3 object is a single PUT, which S3 makes visible all at once.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pyarrow.fs as pafs

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class Location:
    """A filesystem and a path on it, with the URL it came from."""

    fs: pafs.FileSystem
    path: str
    url: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> Location:
        tail = "/".join(p.strip("/") for p in parts if p)
        return Location(self.fs, f"{self.path.rstrip('/')}/{tail}", f"{self.url.rstrip('/')}/{tail}")


def _s3_filesystem(endpoint_url: str | None) -> pafs.S3FileSystem:
    kwargs: dict[str, object] = {}
    endpoint = endpoint_url or os.environ.get("MLOPS_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "http"
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def location(url: str, endpoint_url: str | None = None) -> Location:
    """Resolve a URL (local path, ``file://`` or ``s3://``) to a :class:`Location`."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        path = f"{parsed.netloc}/{parsed.path.lstrip('/')}".rstrip("/")
        return Location(_s3_filesystem(endpoint_url), path, url.rstrip("/"))
    if parsed.scheme in ("", "file"):
        path = os.path.abspath(parsed.path if parsed.scheme == "file" else url)
        return Location(pafs.LocalFileSystem(), path, path)
    raise ValueError(f"unsupported storage URL {url!r}: use a local path, file:// or s3://")


def exists(loc: Location) -> bool:
    return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound


def list_files(loc: Location) -> list[Location]:
    """The files directly under a folder, sorted by name; empty if the folder does not exist."""
    info = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    files = sorted(i.path for i in info if i.type == pafs.FileType.File)
    return [Location(loc.fs, p, f"{loc.url.rstrip('/')}/{p.rsplit('/', 1)[-1]}") for p in files]


def read_bytes(loc: Location) -> bytes:
    with loc.fs.open_input_stream(loc.path) as f:
        return f.read()


def write_bytes(loc: Location, data: bytes) -> None:
    """Write a whole file atomically."""
    parent = loc.path.rsplit("/", 1)[0]
    loc.fs.create_dir(parent, recursive=True)
    if not loc.is_local:
        with loc.fs.open_output_stream(loc.path) as f:
            f.write(data)
        return
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{loc.path.rsplit('/', 1)[-1]}"
    try:
        with loc.fs.open_output_stream(tmp) as f:
            f.write(data)
        os.replace(tmp, loc.path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


def delete(loc: Location) -> None:
    """Delete a file or a whole folder; nothing happens if it does not exist."""
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.Directory:
        loc.fs.delete_dir(loc.path)
    elif info.type == pafs.FileType.File:
        loc.fs.delete_file(loc.path)


def list_entries(loc: Location) -> list[str]:
    """Names directly under a folder (sub-folders end with ``/``), sorted; hidden names left out."""
    info = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    names = []
    for item in info:
        name = item.path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("."):
            continue
        names.append(name + "/" if item.type == pafs.FileType.Directory else name)
    return sorted(names)
