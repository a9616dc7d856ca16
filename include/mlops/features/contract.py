"""The feature contract: names, windows, columns and schemas.

``feature_repo/`` derives its definitions from these.

Also where a day's snapshot lives and when it is valid: the snapshot of day ``D`` has the
``event_timestamp`` of the end of that day, so a payment on day ``E`` sees the snapshot of ``E-1``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pyarrow as pa

from include.mlops import lake
from include.mlops.core.schema import TIMESTAMP

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings


PROJECT = "card_fraud"
"""The Feast project (also in both ``feature_store*.yaml``)."""


FEATURE_SERVICE_NAME = "fraud_model_v1"
"""The versioned feature service the model is trained and served with."""


CUSTOMER_VIEW = "customer_daily_features"
"""The Feast feature view of the customer snapshots."""


MERCHANT_VIEW = "merchant_daily_features"
"""The Feast feature view of the merchant snapshots."""


SNAPSHOT_VIEWS: tuple[str, ...] = ("customer", "merchant")
"""The snapshots written per day, by the name their lake dataset and Feast source use."""


WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
"""The windows every windowed feature is computed over, in days ending at the snapshot."""


HISTORY_DAYS = max(WINDOWS_DAYS)
"""How many days of history a snapshot reads: the longest window."""


SNAPSHOT_TTL = dt.timedelta(days=2)
"""How long a snapshot may serve a payment: the next day's snapshot, or one missing day."""


SMALL_AMOUNT = 5.0
"""Payments under this are the probes of card testing."""


NIGHT_END_HOUR = 6
"""Payments from 00:00 to 05:59 UTC count as night-time."""


REQUEST_FIELDS: tuple[str, ...] = ("event_timestamp", "amount", "country", "channel", "card_present")
"""Fields of the payment itself that the on-demand features need (names from the schema)."""


ENTITY_KEYS: tuple[str, ...] = ("customer_id", "merchant_id")
"""The join keys of the two entities (names from the schema)."""


CUSTOMER_WINDOWED: tuple[tuple[str, pa.DataType], ...] = (
    ("txn_count", pa.int64()),
    ("amount_sum", pa.float64()),
    ("amount_mean", pa.float64()),
    ("amount_std", pa.float64()),
    ("distinct_merchants", pa.int64()),
    ("foreign_share", pa.float64()),
    ("night_share", pa.float64()),
    ("online_share", pa.float64()),
)
"""The customer's statistics with one column per window: ``customer_<name>_<w>d``, in this order."""


MERCHANT_WINDOWED: tuple[tuple[str, pa.DataType], ...] = (
    ("txn_count", pa.int64()),
    ("amount_mean", pa.float64()),
    ("labelled_count", pa.int64()),
    ("fraud_rate", pa.float64()),
)
"""The merchant's statistics with one column per window: ``merchant_<name>_<w>d``, in this order."""


CUSTOMER_FEATURES: tuple[tuple[str, pa.DataType], ...] = (
    *((f"customer_{name}_{w}d", t) for name, t in CUSTOMER_WINDOWED for w in WINDOWS_DAYS),
    ("customer_small_amount_count_1d", pa.int64()),
    ("customer_home_country", pa.string()),
)
"""Columns of the customer snapshot (after ``customer_id`` and ``event_timestamp``)."""


MERCHANT_FEATURES: tuple[tuple[str, pa.DataType], ...] = tuple(
    (f"merchant_{name}_{w}d", t) for name, t in MERCHANT_WINDOWED for w in WINDOWS_DAYS
)
"""Columns of the merchant snapshot (after ``merchant_id`` and ``event_timestamp``)."""


TRANSACTION_FEATURES: tuple[tuple[str, pa.DataType], ...] = (
    ("transaction_hour", pa.int64()),
    ("is_night", pa.int64()),
    ("is_online", pa.int64()),
    ("is_card_present", pa.int64()),
    ("is_small_amount", pa.int64()),
)
"""On-demand features of the payment alone."""


CUSTOMER_TRANSACTION_FEATURES: tuple[tuple[str, pa.DataType], ...] = (
    ("amount_to_customer_mean_7d", pa.float64()),
    ("amount_to_customer_mean_30d", pa.float64()),
    ("amount_zscore_30d", pa.float64()),
    ("is_foreign_country", pa.float64()),
)
"""On-demand features of the payment relative to its customer's snapshot (null without history)."""


MERCHANT_TRANSACTION_FEATURES: tuple[tuple[str, pa.DataType], ...] = (
    ("amount_to_merchant_mean_30d", pa.float64()),
)
"""On-demand features of the payment relative to its merchant's snapshot."""


# The customer's home country is an input of ``is_foreign_country``, not a model feature (a string).
_NOT_MODEL_FEATURES = frozenset({"customer_home_country"})


FEATURE_COLUMNS: tuple[str, ...] = tuple(
    name
    for name, _ in (
        *CUSTOMER_FEATURES,
        *MERCHANT_FEATURES,
        *TRANSACTION_FEATURES,
        *CUSTOMER_TRANSACTION_FEATURES,
        *MERCHANT_TRANSACTION_FEATURES,
    )
    if name not in _NOT_MODEL_FEATURES
)
"""The columns :data:`FEATURE_SERVICE_NAME` serves, in order: what the model is trained on."""


def _snapshot_schema(key: str, features: tuple[tuple[str, pa.DataType], ...]) -> pa.Schema:
    return pa.schema(
        [pa.field(key, pa.string(), nullable=False), pa.field("event_timestamp", TIMESTAMP, nullable=False)]
        + [pa.field(name, t) for name, t in features]
    )


CUSTOMER_SNAPSHOT_SCHEMA = _snapshot_schema("customer_id", CUSTOMER_FEATURES)
"""The customer snapshot file: ``customer_id``, ``event_timestamp``, then :data:`CUSTOMER_FEATURES`."""


MERCHANT_SNAPSHOT_SCHEMA = _snapshot_schema("merchant_id", MERCHANT_FEATURES)
"""The merchant snapshot file: ``merchant_id``, ``event_timestamp``, then :data:`MERCHANT_FEATURES`."""


def day_start(day: dt.date) -> dt.datetime:
    """Midnight UTC at the start of ``day``."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def snapshot_timestamp(day: dt.date) -> dt.datetime:
    """The ``event_timestamp`` of day ``day``'s snapshot: the end of the day (``day+1 00:00 UTC``)."""
    return day_start(day + dt.timedelta(days=1))


def snapshot_location(view: str, day: dt.date, settings: Settings | None = None) -> lake.Location:
    """Where the snapshot of ``view`` (``customer`` or ``merchant``) for ``day`` is written."""
    return lake.partition("lake", lake.feature_snapshots(view), day, settings).join(lake.DATA_FILE)


def snapshot_glob(lake_url: str, view: str) -> str:
    """The path pattern a Feast source reads: every day's snapshot file, never a temporary one."""
    return lake.partition_glob(lake_url, lake.feature_snapshots(view))
