"""Sources: the daily feature snapshots in the lake, and the payment itself as request data.

The snapshot files are written by ``include.mlops.features.compute_features_for_day``. The paths
here follow the process's settings; ``apply_definitions`` points them at the lake of the settings
it is given before registering them.
"""

import sys
from pathlib import Path

# The Feast CLI imports this folder as a standalone repository: make the project package importable
# so that the definitions derive from the one data contract.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])
if _PROJECT_ROOT not in sys.path:
    sys.path.append(_PROJECT_ROOT)

import pyarrow as pa  # noqa: E402
from feast import Field, FileSource, RequestSource  # noqa: E402
from feast.data_format import ParquetFormat  # noqa: E402
from feast.types import Bool, Float64, Int64, String, UnixTimestamp  # noqa: E402

from include.mlops.core.schema import TRANSACTIONS  # noqa: E402
from include.mlops.core.settings import settings  # noqa: E402
from include.mlops.features import (  # noqa: E402
    CUSTOMER_FEATURES,
    MERCHANT_FEATURES,
    REQUEST_FIELDS,
    snapshot_glob,
)


def feast_type(arrow_type: pa.DataType):
    """The Feast type of a column of the data contract."""
    if pa.types.is_timestamp(arrow_type):
        return UnixTimestamp
    mapping = {pa.string(): String, pa.float64(): Float64, pa.int64(): Int64, pa.bool_(): Bool}
    return mapping[arrow_type]


def fields(columns) -> list[Field]:
    """Feast fields for ``(name, arrow type)`` pairs."""
    return [Field(name=name, dtype=feast_type(arrow_type)) for name, arrow_type in columns]


customer_snapshots = FileSource(
    name="customer_daily_snapshots",
    path=snapshot_glob(settings().lake_url, "customer"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="One row per customer and day, event_timestamp = end of the day (UTC).",
    tags={"snapshot": "customer"},
)

merchant_snapshots = FileSource(
    name="merchant_daily_snapshots",
    path=snapshot_glob(settings().lake_url, "merchant"),
    file_format=ParquetFormat(),
    timestamp_field="event_timestamp",
    description="One row per merchant and day, event_timestamp = end of the day (UTC).",
    tags={"snapshot": "merchant"},
)

transaction = RequestSource(
    name="transaction",
    schema=fields((name, TRANSACTIONS.column(name).type) for name in REQUEST_FIELDS),
    description="Fields of the payment being scored, supplied with the request.",
)

# What the snapshot files hold besides the key and the timestamp: the feature views' schemas.
customer_snapshot_fields = fields(CUSTOMER_FEATURES)
merchant_snapshot_fields = fields(MERCHANT_FEATURES)
