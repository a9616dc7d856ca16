"""The SQL engine of the features: an in-memory DuckDB connection, Arrow tables in and out.

DuckDB is imported inside the functions: DAG files import this package at parse time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa


def duckdb_connection() -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection whose results do not depend on the host.

    The session time zone is UTC and any spill goes to the system's temporary folder.
    """
    import duckdb

    con = duckdb.connect()
    # hour() of a TIMESTAMPTZ follows the session time zone: pin it so features never depend on the host.
    con.execute("SET TimeZone = 'UTC'")
    # An in-memory database spills to ".tmp" under the working directory by default (the project,
    # when run from there): keep any spill in the system's temporary folder.
    con.execute("SET temp_directory = $1", [str(Path(tempfile.gettempdir()) / "mlops-duckdb")])
    return con


def query_arrow(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pa.Table:
    """The result of ``sql`` (with ``$1``... bound to ``params``) as an Arrow table."""
    return con.sql(sql, params=params).to_arrow_table()
