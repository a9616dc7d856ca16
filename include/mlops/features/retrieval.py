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
    from collections.abc import Iterator

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
    import numpy as np
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
    positions, expected = result[_ROW].to_numpy(copy=True), np.arange(len(request))
    if len(result) != len(request) or not np.array_equal(np.sort(positions), expected):
        raise RuntimeError(
            f"the offline store returned {len(result)} rows for {len(request)} entity rows "
            f"({np.setdiff1d(expected, positions).size} missing)"
        )
    # Only the features are kept, and Feast's whole frame is let go before they are reordered:
    # one copy of a chunk's features at a time, not three.
    features = result[list(FEATURE_COLUMNS)]
    del result, request
    features = features.take(np.argsort(positions, kind="stable"))
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


def features_in_chunks(
    frame: pd.DataFrame, chunk_rows: int, settings: Settings | None = None
) -> Iterator[pd.DataFrame]:
    """:func:`with_features` of ``frame`` by consecutive slices of at most ``chunk_rows`` rows.

    A row's point-in-time features depend on that row alone, so each slice is joined on its own
    and memory holds one slice's join, whatever the size of ``frame``. The slices come in input
    order, each indexed by its rows' positions in ``frame``: concatenated, they are
    ``with_features(frame)`` (same rows, order and values). A feature with nulls in some slices
    only may have another dtype in the others (int64 where the whole has float64); concatenated,
    the dtypes are the whole's. A frame without rows gives one empty result, with the columns.
    ``chunk_rows`` is usually the ``MLOPS_CHUNK_ROWS`` setting.
    """
    import pandas as pd

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows, not {chunk_rows}")
    if len(frame) == 0:
        yield with_features(frame, settings)
        return
    for start in range(0, len(frame), chunk_rows):
        chunk = with_features(frame.iloc[start : start + chunk_rows], settings)
        chunk.index = pd.RangeIndex(start, start + len(chunk))
        yield chunk
