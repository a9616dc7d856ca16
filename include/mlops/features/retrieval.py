"""Reading the features back: point in time for training and batch scoring, online for live payments.

Both go through the feature service :data:`FEATURE_SERVICE_NAME` of the store :func:`.feature_store`
builds, so training and serving see the same columns, in the order of :data:`FEATURE_COLUMNS`.
Feast and pandas are imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from include.mlops.features.contract import (
    ENTITY_KEYS,
    FEATURE_COLUMNS,
    FEATURE_SERVICE_NAME,
    REQUEST_FIELDS,
)
from include.mlops.features.store import (
    DEPLOY_COMMAND,
    FeaturesNotRegistered,
    feature_store,
    quiet_feast_calls,
)

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.core.settings import Settings

# The column that tags each entity row with its position, so the result can be put back in order.
_ROW = "__row"


def training_frame(entity_df: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """The input rows with the feature service's features at each row's ``event_timestamp``.

    ``entity_df`` needs ``customer_id``, ``merchant_id``, ``event_timestamp`` and the request fields
    (:data:`REQUEST_FIELDS`); a lake transactions table has them all. Feast neither keeps the order
    nor, for some stores, every row: each row is tagged with its position (not its transaction id,
    so that even repeated ids come back once each) and the result is put back in input order. Every
    input row comes back (an error otherwise), with its own columns unchanged followed by
    :data:`FEATURE_COLUMNS`.
    """
    import pandas as pd

    missing = [c for c in (*ENTITY_KEYS, *REQUEST_FIELDS) if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df lacks {missing}: it needs {ENTITY_KEYS} and {REQUEST_FIELDS}")
    clash = [c for c in (*FEATURE_COLUMNS, _ROW) if c in entity_df.columns]
    if clash:
        raise ValueError(f"entity_df already has feature columns {clash}")
    base = entity_df.reset_index(drop=True)
    request = base[[*ENTITY_KEYS, *REQUEST_FIELDS]].copy()
    request["event_timestamp"] = pd.to_datetime(request["event_timestamp"], utc=True)
    request[_ROW] = range(len(request))
    if request.empty:
        return pd.concat([base, pd.DataFrame(columns=list(FEATURE_COLUMNS))], axis=1)

    store = feature_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE_NAME)
    with quiet_feast_calls():
        result = store.get_historical_features(entity_df=request, features=service).to_df()
    if len(result) != len(request) or set(result[_ROW]) != set(request[_ROW]):
        raise RuntimeError(
            f"the offline store returned {len(result)} rows for {len(request)} entity rows "
            f"({len(set(request[_ROW]) - set(result[_ROW]))} missing)"
        )
    features = result.set_index(_ROW).sort_index()[list(FEATURE_COLUMNS)]
    features.index = base.index
    return pd.concat([base, features], axis=1)


def online_features(entity_rows: list[dict], settings: Settings | None = None) -> pd.DataFrame:
    """The feature service's features for live payments, one output row per input row, in order.

    Each row needs ``customer_id``, ``merchant_id`` and the request fields (:data:`REQUEST_FIELDS`);
    other keys (such as ``transaction_id``) are passed through to the output.
    """
    import pandas as pd

    needed = (*ENTITY_KEYS, *REQUEST_FIELDS)
    rows = []
    for i, row in enumerate(entity_rows):
        absent = [k for k in needed if k not in row]
        if absent:
            raise ValueError(f"entity row {i} lacks {absent}")
        rows.append({k: row[k] for k in needed})
    base = pd.DataFrame(entity_rows)
    if not rows:
        return pd.concat([base, pd.DataFrame(columns=list(FEATURE_COLUMNS))], axis=1)
    store = feature_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE_NAME)
    result = store.get_online_features(features=service, entity_rows=rows).to_df()
    features = result[list(FEATURE_COLUMNS)].reset_index(drop=True)
    return pd.concat([base.drop(columns=[c for c in FEATURE_COLUMNS if c in base]), features], axis=1)


def with_features(frame: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """``frame`` (lake payments) with the feature service's features, point in time, in input order.

    The path training, promotion and batch scoring share (:func:`training_frame`), with an
    operator's message when the definitions were never registered.
    """
    try:
        return training_frame(frame, settings=settings)
    except Exception as error:
        if type(error).__name__ == "FeatureServiceNotFoundException":
            raise FeaturesNotRegistered(
                f"the Feast registry has no feature service {FEATURE_SERVICE_NAME!r}: deploy the "
                f"definitions with `{DEPLOY_COMMAND}` (`make feast-apply` locally) first"
            ) from error
        raise
