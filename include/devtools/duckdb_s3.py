"""S3 for DuckDB without its ``httpfs`` extension, for the cluster replay on a machine offline.

Feast's DuckDB offline store reads the lake's snapshots through ibis, which loads DuckDB's
``httpfs`` extension for every ``s3://`` path; DuckDB downloads that extension on first use. A
machine with no route to ``extensions.duckdb.org`` (this project's CI) cannot, so the cluster
replay (:mod:`include.devtools.cluster`) puts :data:`SITE` on the ``PYTHONPATH`` of the processes
it starts when the extension is missing: their ``sitecustomize`` calls :func:`install`, which,
when ibis' DuckDB backend is imported, gives DuckDB the lake's own S3 client (pyarrow's, the one
:mod:`include.mlops.lake` uses, behind fsspec) for ``s3://`` and skips the download. The pipeline
code is unchanged; a cluster with the extension in its image (``INSTALL httpfs`` at build time)
needs none of this.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path
from typing import Any

SITE = Path(__file__).resolve().parent / "duckdb_s3_site"
"""The folder whose ``sitecustomize.py`` calls :func:`install`."""
MODULE = "ibis.backends.duckdb"


def httpfs_available() -> bool:
    """Whether DuckDB has its ``httpfs`` extension installed (nothing is downloaded here: an image
    installs it at build time)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("LOAD httpfs")
        return True
    except duckdb.Error:
        return False
    finally:
        con.close()


def s3_filesystem() -> Any:
    """fsspec's view of the lake's S3 client (endpoint and region from the settings), as ``s3://``."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    from include.mlops import lake

    class LakeS3(ArrowFSWrapper):
        protocol = ("s3", "s3a")

    return LakeS3(lake.location("s3://lake").fs)


def patch_backend(backend_class: type) -> None:
    """Make ibis' DuckDB backend read ``s3://`` with :func:`s3_filesystem` instead of ``httpfs``."""
    original = backend_class._load_extensions
    if getattr(original, "__mlops_s3__", False):
        return

    def load_extensions(self, extensions: list[str], force_install: bool = False) -> None:
        if "httpfs" in extensions:
            if not self.con.filesystem_is_registered("s3"):
                self.con.register_filesystem(s3_filesystem())
            extensions = [e for e in extensions if e != "httpfs"]
        if extensions:
            original(self, extensions, force_install)

    load_extensions.__mlops_s3__ = True  # type: ignore[attr-defined]
    backend_class._load_extensions = load_extensions


class _PatchOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Patches ibis' DuckDB backend right after it is imported (and imports nothing before)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        self.wrapped = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: Any) -> Any:
        return self.wrapped.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.wrapped.exec_module(module)
        patch_backend(module.Backend)


def install() -> None:
    """Patch ibis' DuckDB backend now if it is imported, else as soon as it is."""
    if MODULE in sys.modules:
        patch_backend(sys.modules[MODULE].Backend)
    elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
