"""Batch scoring of one day with the registry's champion, and the challenger in shadow.

Features come from the offline store point in time (:func:`include.mlops.features.with_features`),
not from the online store: a batch job scores a past day, and a backfill must score it with the
features that were true then. The online store only holds the latest snapshot, so using it for a
rerun of an old day would give different (and leaky) inputs. It is also the very path training
used, so there is no train/serve skew.

:func:`score_day` runs four steps: the champion and a distinct challenger from the registry's
aliases; the day's validated payments with their features; both models' scores; the partition
written. The predictions partition (``$MLOPS_LAKE_URL/predictions/dt=DAY/part-00000.parquet``,
:func:`predictions_file`) holds, per payment: the :data:`PREDICTION_KEYS`, the champion's input features,
:data:`SCORE_CHAMPION` and :data:`CHAMPION_VERSION`, :data:`SCORE_CHALLENGER` and
:data:`CHALLENGER_VERSION` (NaN and :data:`NO_CHALLENGER` when there is no distinct challenger).
The drift monitor reads the features and scores from it, so it never recomputes them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from include.mlops import lake, registry
from include.mlops.core.schema import (
    CHALLENGER_VERSION,
    CHAMPION_VERSION,
    NO_CHALLENGER,
    PREDICTION_KEYS,
    SCORE_CHALLENGER,
    SCORE_CHAMPION,
    TRANSACTIONS,
)
from include.mlops.core.settings import resolve_settings

if TYPE_CHECKING:
    import datetime as dt

    import numpy as np
    import pandas as pd

    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)


class NoChampionError(RuntimeError):
    """No model holds the champion alias yet: there is nothing to score with."""


def predictions_location(day: dt.date, s: Settings | None = None) -> lake.Location:
    """The predictions partition of ``day`` in the lake."""
    return lake.partition("lake", lake.PREDICTIONS, day, s)


def predictions_file(day: dt.date, s: Settings | None = None) -> lake.Location:
    """The predictions file of ``day`` (the partition's one data file)."""
    return predictions_location(day, s).join(lake.DATA_FILE)


@dataclass(frozen=True)
class _Models:
    """The versions a day is scored with."""

    champion: int
    challenger: int | None
    """``None`` when the challenger alias is missing or points at the champion."""


def score_day(day: dt.date, settings_: Settings | None = None) -> dict:
    """Score ``day`` with the champion (and a distinct challenger in shadow); write its predictions.

    Idempotent: the partition is replaced as a whole, so scoring a day twice leaves one copy.
    Raises :class:`NoChampionError` before the first promotion. Returns ``{"day", "rows",
    "champion_version", "challenger_version", "flagged_at_0.5", "path", "seconds"}``.
    """
    from include.mlops.features import with_features

    s = resolve_settings(settings_)
    started = time.perf_counter()
    models = _models(day, s)
    frame = with_features(_read_transactions(day, s), s)
    predictions = _predictions(frame, models, s)
    file = _write(day, predictions, s)
    result = {
        "day": day.isoformat(),
        "rows": len(predictions),
        "champion_version": models.champion,
        "challenger_version": models.challenger,
        "flagged_at_0.5": int((predictions[SCORE_CHAMPION] >= 0.5).sum()),
        "path": file.url,
        "seconds": round(time.perf_counter() - started, 2),
    }
    logger.info(
        "scored %s: %s payments, champion %s, challenger %s",
        day,
        len(predictions),
        models.champion,
        models.challenger,
    )
    return result


def _models(day: dt.date, s: Settings) -> _Models:
    """The champion and a distinct challenger, as the registry's aliases name them now.

    A missing alias is ``None``; an unreachable registry is an error (never a silently skipped day).
    """
    client = registry.configure_mlflow(s)
    champion = registry.alias_version(client, s.model_name, registry.CHAMPION)
    if champion is None:
        raise NoChampionError(
            f"registered model {s.model_name!r} has no 'champion' alias yet; {day} is not scored "
            "(train_model promotes the first model that passes the floors)"
        )
    challenger = registry.alias_version(client, s.model_name, registry.CHALLENGER)
    return _Models(champion, None if challenger == champion else challenger)


def _read_transactions(day: dt.date, s: Settings) -> pd.DataFrame:
    """The day's validated payments from the lake."""
    folder = lake.partition("lake", TRANSACTIONS.name, day, s)
    table = lake.read_table(folder)
    if table is None:
        raise FileNotFoundError(
            f"no validated transactions for {day} at {folder.url}: run ingest_transactions for that day first"
        )
    return table.to_pandas()


def _predictions(frame: pd.DataFrame, models: _Models, s: Settings) -> pd.DataFrame:
    """One row per payment: keys, the champion's inputs, both scores and versions; by transaction id."""
    champion_uri = registry.model_uri(models.champion, s)
    out = frame[list(PREDICTION_KEYS)].copy()
    for column in registry.feature_columns(champion_uri):
        out[column] = frame[column].astype("float64")
    out[SCORE_CHAMPION] = registry.load_scorer(champion_uri)(frame)
    out[CHAMPION_VERSION] = models.champion
    if models.challenger is None:
        out[SCORE_CHALLENGER], out[CHALLENGER_VERSION] = float("nan"), NO_CHALLENGER
    else:
        out[SCORE_CHALLENGER] = _shadow(frame, models.challenger, s)
        out[CHALLENGER_VERSION] = models.challenger
    return out.sort_values("transaction_id", kind="mergesort").reset_index(drop=True)


def _shadow(frame: pd.DataFrame, challenger: int, s: Settings) -> np.ndarray:
    """The challenger's scores; an error when the features lack one of its inputs."""
    uri = registry.model_uri(challenger, s)
    missing = [c for c in registry.feature_columns(uri) if c not in frame.columns]
    if missing:
        raise RuntimeError(f"challenger v{challenger} needs features the store lacks: {missing}")
    return registry.load_scorer(uri)(frame)


def _write(day: dt.date, predictions: pd.DataFrame, s: Settings) -> lake.Location:
    """Replace the day's predictions partition with ``predictions``; returns its file."""
    import pyarrow as pa

    table = pa.Table.from_pandas(predictions, preserve_index=False)
    return lake.replace_partition(predictions_location(day, s), lake.encode_parquet(table))


def read_predictions(day: dt.date, settings_: Settings | None = None) -> pd.DataFrame:
    """The predictions partition of ``day`` as a DataFrame."""
    loc = predictions_file(day, settings_)
    if not lake.exists(loc):
        raise FileNotFoundError(f"no predictions for {day} at {loc.url}: run score_transactions first")
    return lake.read_parquet(loc).to_pandas()
