"""Started by Python in each process of the cluster replay when DuckDB cannot fetch ``httpfs``.

See :mod:`include.devtools.duckdb_s3`.
"""

from include.devtools.duckdb_s3 import install

install()
