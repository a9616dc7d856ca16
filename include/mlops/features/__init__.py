"""Features: customer and merchant snapshots computed from the lake, registered and served by Feast.

* :mod:`.contract`: names, windows, columns, schemas; where a day's snapshot lives;
* :mod:`.summaries`: small additive summaries per day, so a snapshot never rereads 30 days;
* :mod:`.snapshots`: :func:`compute_features_for_day`, point-in-time correct, byte-identical reruns;
* :mod:`.on_demand`: the payment's own features and its features relative to the snapshots;
* :mod:`.store`: the Feast store, :func:`materialize_day`, offline and online retrieval.
"""

from include.mlops.features.contract import (
    CUSTOMER_FEATURES,
    CUSTOMER_SNAPSHOT_SCHEMA,
    CUSTOMER_TRANSACTION_FEATURES,
    CUSTOMER_VIEW,
    ENTITY_KEYS,
    FEATURE_COLUMNS,
    FEATURE_SERVICE_NAME,
    HISTORY_DAYS,
    MERCHANT_FEATURES,
    MERCHANT_SNAPSHOT_SCHEMA,
    MERCHANT_TRANSACTION_FEATURES,
    MERCHANT_VIEW,
    NIGHT_END_HOUR,
    PROJECT,
    REQUEST_FIELDS,
    SMALL_AMOUNT,
    SNAPSHOT_TTL,
    TRANSACTION_FEATURES,
    WINDOWS_DAYS,
    day_start,
    snapshot_glob,
    snapshot_location,
    snapshot_timestamp,
)
from include.mlops.features.on_demand import (
    customer_transaction_features,
    merchant_transaction_features,
    transaction_features,
)
from include.mlops.features.snapshots import (
    compute_features_for_day,
)
from include.mlops.features.store import (
    FeaturesNotRegistered,
    apply_definitions,
    feature_store,
    feature_store_yaml,
    materialize_day,
    online_features,
    quiet_feast_import,
    training_frame,
    with_features,
)
from include.mlops.features.summaries import (
    stable_key,
)

__all__ = [
    "CUSTOMER_FEATURES",
    "CUSTOMER_SNAPSHOT_SCHEMA",
    "CUSTOMER_TRANSACTION_FEATURES",
    "CUSTOMER_VIEW",
    "ENTITY_KEYS",
    "FEATURE_COLUMNS",
    "FEATURE_SERVICE_NAME",
    "HISTORY_DAYS",
    "MERCHANT_FEATURES",
    "MERCHANT_SNAPSHOT_SCHEMA",
    "MERCHANT_TRANSACTION_FEATURES",
    "MERCHANT_VIEW",
    "NIGHT_END_HOUR",
    "PROJECT",
    "REQUEST_FIELDS",
    "SMALL_AMOUNT",
    "SNAPSHOT_TTL",
    "TRANSACTION_FEATURES",
    "WINDOWS_DAYS",
    "FeaturesNotRegistered",
    "apply_definitions",
    "compute_features_for_day",
    "customer_transaction_features",
    "day_start",
    "feature_store",
    "feature_store_yaml",
    "materialize_day",
    "merchant_transaction_features",
    "online_features",
    "quiet_feast_import",
    "snapshot_glob",
    "snapshot_location",
    "snapshot_timestamp",
    "stable_key",
    "training_frame",
    "transaction_features",
    "with_features",
]
