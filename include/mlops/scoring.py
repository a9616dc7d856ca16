"""Batch scoring of one day with the registry's champion, and the challenger in shadow.

Features come from the offline store point in time (``features.training_frame``), not from the
online store: a batch job scores a past day, and a backfill must score it with the features that
were true then. The online store only holds the latest snapshot, so using it for a rerun of an old
day would give different (and leaky) inputs. It is also the very path training used, so there is
no train/serve skew.

The predictions partition (``$MLOPS_LAKE_URL/predictions/dt=DAY/part-00000.parquet``) holds, per
payment: the keys, the model's input features, the champion's score and version, and the
challenger's score and version when a different challenger exists. The drift monitor reads the
features and scores from it, so it never recomputes them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from include.mlops import lake, registry
from include.mlops.core.schema import TRANSACTIONS
from include.mlops.core.settings import Settings, settings

if TYPE_CHECKING:
    import datetime as dt

    import pandas as pd

KEYS = ("transaction_id", "event_timestamp", "customer_id", "merchant_id")
SCORE_CHAMPION = "score_champion"
SCORE_CHALLENGER = "score_challenger"


class NoChampionError(RuntimeError):
    """No model holds the champion alias yet: there is nothing to score with."""


def predictions_location(day: dt.date, s: Settings | None = None) -> lake.Location:
    """The predictions partition of ``day`` in the lake."""
    return lake.partition("lake", lake.PREDICTIONS, day, s)


def predictions_file(day: dt.date, s: Settings | None = None) -> lake.Location:
    """The predictions file of ``day`` (the partition's one data file)."""
    return predictions_location(day, s).join(lake.DATA_FILE)


def _read_transactions(day: dt.date, s: Settings) -> pd.DataFrame:
    folder = lake.partition("lake", TRANSACTIONS.name, day, s)
    table = lake.read_table(folder)
    if table is None:
        raise FileNotFoundError(
            f"no validated transactions for {day} at {folder.url}: run ingest_transactions for that day first"
        )
    return table.to_pandas()


def score_day(day: dt.date, settings_: Settings | None = None) -> dict:
    """Score ``day`` with the champion (and a distinct challenger in shadow); write its predictions.

    Idempotent: the partition is replaced as a whole, so scoring a day twice leaves one copy.
    Raises :class:`NoChampionError` before the first promotion.
    """
    import pyarrow as pa

    # The registry's own reading: a missing alias is None, an unreachable registry is an error
    # (never a silently skipped day).
    from include.mlops.features import with_features

    s = settings_ or settings()
    started = time.perf_counter()
    client = registry.configure_mlflow(s)
    champion = registry.alias_version(client, s.model_name, registry.CHAMPION)
    if champion is None:
        raise NoChampionError(
            f"registered model {s.model_name!r} has no 'champion' alias yet; {day} is not scored "
            "(train_model promotes the first model that passes the floors)"
        )
    challenger = registry.alias_version(client, s.model_name, registry.CHALLENGER)
    if challenger == champion:
        challenger = None

    payments = _read_transactions(day, s)
    frame = with_features(payments, s)
    champion_uri = f"models:/{s.model_name}/{champion}"
    columns = registry.feature_columns(champion_uri)
    out = frame[list(KEYS)].copy()
    for column in columns:
        out[column] = frame[column].astype("float64")
    out[SCORE_CHAMPION] = registry.load_scorer(champion_uri)(frame)
    out["champion_version"] = champion
    if challenger is not None:
        challenger_uri = f"models:/{s.model_name}/{challenger}"
        missing = [c for c in registry.feature_columns(challenger_uri) if c not in frame.columns]
        if missing:
            raise RuntimeError(f"challenger v{challenger} needs features the store lacks: {missing}")
        out[SCORE_CHALLENGER] = registry.load_scorer(challenger_uri)(frame)
    else:
        out[SCORE_CHALLENGER] = float("nan")
    out["challenger_version"] = challenger if challenger is not None else -1
    out = out.sort_values("transaction_id", kind="mergesort").reset_index(drop=True)

    table = pa.Table.from_pandas(out, preserve_index=False)
    file = lake.replace_partition(predictions_location(day, s), lake.encode_parquet(table))
    return {
        "day": day.isoformat(),
        "rows": len(out),
        "champion_version": champion,
        "challenger_version": challenger,
        "flagged_at_0.5": int((out[SCORE_CHAMPION] >= 0.5).sum()),
        "path": file.url,
        "seconds": round(time.perf_counter() - started, 2),
    }


def read_predictions(day: dt.date, settings_: Settings | None = None) -> pd.DataFrame:
    """The predictions partition of ``day`` as a DataFrame."""
    loc = predictions_file(day, settings_)
    if not lake.exists(loc):
        raise FileNotFoundError(f"no predictions for {day} at {loc.url}: run score_transactions first")
    return lake.read_parquet(loc).to_pandas()
