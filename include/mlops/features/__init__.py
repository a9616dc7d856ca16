"""Features: customer and merchant snapshots computed from the lake, registered and served by Feast.

How a day flows: the lake's payments and labels of day ``D`` -> small daily summaries -> the
snapshots of ``D`` (end of day) in the lake -> Feast's offline store reads them point in time,
``materialize`` loads them into the online store.

* :mod:`.contract`: names, windows, columns, schemas; where a day's snapshot lives and when it is valid;
* :mod:`.keys`: :func:`stable_key`, the 64-bit key of an id that the summaries group on;
* :mod:`.engine`: the DuckDB connection the summaries and snapshots are computed with;
* :mod:`.summaries`: small additive summaries per day, so a snapshot never rereads 30 days;
* :mod:`.snapshots`: :func:`compute_features_for_day`, point-in-time correct, byte-identical reruns;
* :mod:`.on_demand`: the payment's own features and its features relative to the snapshots;
* :mod:`.config`: which ``feature_store*.yaml`` a profile uses, and its variables;
* :mod:`.store`: the Feast store per profile and the deploy step of the definitions
  (:func:`apply_definitions`, :func:`plan_definitions`, :func:`require_deployed`);
* :mod:`.materialize`: :func:`materialize_day`, one day into the online store;
* :mod:`.retrieval`: :func:`training_frame` (offline, point in time, also in chunks:
  :func:`features_in_chunks`) and :func:`online_features`;
* :mod:`.online_stores`: Feast's SQLite and Redis online stores with batched writes, named by
  ``online_store: type:`` in ``feature_repo/feature_store*.yaml`` (Feast imports it; the pipeline
  never does, so its names are not listed here);
* :mod:`.offline_store`: Feast's DuckDB offline store reading only the days a query can reach, its
  point-in-time join an ``ASOF JOIN`` (:mod:`.asof`); named by ``offline_store: type:``, likewise.

Only numpy and pyarrow are imported with the package: DuckDB, pandas and Feast inside the functions.
"""

from include.mlops.features.config import expand_variables, feast_redis_connection, feature_store_yaml
from include.mlops.features.contract import (
    CUSTOMER_FEATURES,
    CUSTOMER_SNAPSHOT_SCHEMA,
    CUSTOMER_TRANSACTION_FEATURES,
    CUSTOMER_VIEW,
    CUSTOMER_WINDOWED,
    ENTITY_KEYS,
    FEATURE_COLUMNS,
    FEATURE_SERVICE_NAME,
    HISTORY_DAYS,
    MERCHANT_FEATURES,
    MERCHANT_SNAPSHOT_SCHEMA,
    MERCHANT_TRANSACTION_FEATURES,
    MERCHANT_VIEW,
    MERCHANT_WINDOWED,
    NIGHT_END_HOUR,
    PROJECT,
    REQUEST_FIELDS,
    SMALL_AMOUNT,
    SNAPSHOT_TTL,
    SNAPSHOT_VIEWS,
    TRANSACTION_FEATURES,
    WINDOWS_DAYS,
    day_start,
    snapshot_glob,
    snapshot_location,
    snapshot_timestamp,
)
from include.mlops.features.engine import duckdb_connection, query_arrow
from include.mlops.features.keys import stable_key
from include.mlops.features.materialize import materialize_day
from include.mlops.features.on_demand import (
    customer_transaction_features,
    merchant_transaction_features,
    transaction_features,
)
from include.mlops.features.retrieval import (
    features_in_chunks,
    online_features,
    training_frame,
    with_features,
)
from include.mlops.features.snapshots import compute_features_for_day
from include.mlops.features.store import (
    DEPLOY_COMMAND,
    FeaturesNotRegistered,
    apply_definitions,
    feature_store,
    plan_definitions,
    quiet_feast_calls,
    quiet_feast_import,
    require_deployed,
)
from include.mlops.features.summaries import (
    build_label_summary,
    build_transaction_summaries,
    ensure_history,
    load_history,
)

__all__ = [
    "CUSTOMER_FEATURES",
    "CUSTOMER_SNAPSHOT_SCHEMA",
    "CUSTOMER_TRANSACTION_FEATURES",
    "CUSTOMER_VIEW",
    "CUSTOMER_WINDOWED",
    "DEPLOY_COMMAND",
    "ENTITY_KEYS",
    "FEATURE_COLUMNS",
    "FEATURE_SERVICE_NAME",
    "HISTORY_DAYS",
    "MERCHANT_FEATURES",
    "MERCHANT_SNAPSHOT_SCHEMA",
    "MERCHANT_TRANSACTION_FEATURES",
    "MERCHANT_VIEW",
    "MERCHANT_WINDOWED",
    "NIGHT_END_HOUR",
    "PROJECT",
    "REQUEST_FIELDS",
    "SMALL_AMOUNT",
    "SNAPSHOT_TTL",
    "SNAPSHOT_VIEWS",
    "TRANSACTION_FEATURES",
    "WINDOWS_DAYS",
    "FeaturesNotRegistered",
    "apply_definitions",
    "build_label_summary",
    "build_transaction_summaries",
    "compute_features_for_day",
    "customer_transaction_features",
    "day_start",
    "duckdb_connection",
    "ensure_history",
    "expand_variables",
    "feast_redis_connection",
    "feature_store",
    "feature_store_yaml",
    "features_in_chunks",
    "load_history",
    "materialize_day",
    "merchant_transaction_features",
    "online_features",
    "plan_definitions",
    "query_arrow",
    "quiet_feast_calls",
    "quiet_feast_import",
    "require_deployed",
    "snapshot_glob",
    "snapshot_location",
    "snapshot_timestamp",
    "stable_key",
    "training_frame",
    "transaction_features",
    "with_features",
]
