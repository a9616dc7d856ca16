"""Batch scoring of one day with the registry's champion, and the challenger in shadow.

Features come from the offline store point in time (:func:`include.mlops.features.with_features`),
not from the online store: a batch job scores a past day, and a backfill must score it with the
features that were true then. The online store only holds the latest snapshot, so using it for a
rerun of an old day would give different (and leaky) inputs. It is also the very path training
used, so there is no train/serve skew.

:func:`score_day` runs four steps: the models; the day's validated payments with their features;
both models' scores; the partition written. The last three go chunk by chunk, ``MLOPS_CHUNK_ROWS``
payments at a time, in transaction id order, streamed into the partition's file: memory holds one
chunk whatever the day's size, and the predictions are those of the whole day scored at once (a
payment's features and scores depend on that payment alone). The file replaces the old one only
once the last chunk is written (:func:`include.mlops.lake.replace_partition_stream`).

The models: a day scored for the first time gets the registry's champion and a distinct
challenger, as the aliases name them now. A day that already has predictions (a rerun, a backfill)
is scored again by the versions recorded in them, so that its predictions and its drift comparison
do not change with every promotion; ``rescore_with_current_champion`` asks for the aliases instead.

The predictions partition (``$MLOPS_LAKE_URL/predictions/dt=DAY/part-00000.parquet``,
:func:`predictions_file`) holds, per payment: the :data:`PREDICTION_KEYS`, the champion's input features,
:data:`SCORE_CHAMPION`, :data:`FLAGGED_CHAMPION` and :data:`CHAMPION_VERSION`, :data:`SCORE_CHALLENGER`
and :data:`CHALLENGER_VERSION` (NaN and :data:`NO_CHALLENGER` when there is no distinct challenger).
The drift monitor reads the features and scores from it, so it never recomputes them.

The decision flag: :data:`FLAGGED_CHAMPION` is true when the champion's score is at or above the
operating threshold recorded on the champion's version
(:data:`~include.mlops.registry.OPERATING_THRESHOLD_TAG`, set at registration: the score at the
policy's 1 % false-positive rate on that version's out-of-time days), the same threshold the
scoring service reads. A version that records none (registered before thresholds were recorded)
gets a null flag on every row, with a warning: "no decision" is never written as "not flagged".
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import lake, registry
from include.mlops.core.schema import (
    CHALLENGER_VERSION,
    CHAMPION_VERSION,
    FLAGGED_CHAMPION,
    NO_CHALLENGER,
    PREDICTION_KEYS,
    SCORE_CHALLENGER,
    SCORE_CHAMPION,
    TRANSACTIONS,
)
from include.mlops.core.settings import resolve_settings

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Iterator

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)


class NoChampionError(RuntimeError):
    """No model holds the champion alias yet: there is nothing to score with."""


class RecordedModelGone(RuntimeError):
    """A version recorded in a day's predictions is no longer in the registry: the day cannot be
    scored again as it was."""


RESCORE_PARAM = "rescore_with_current_champion"
"""The ``score_transactions`` param (and :func:`score_day` argument) that rescores with the aliases."""


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
    source: str = "registry aliases"
    """Where the versions come from: the registry's aliases or the day's recorded predictions."""


def score_day(
    day: dt.date, settings_: Settings | None = None, *, rescore_with_current_champion: bool = False
) -> dict:
    """Score ``day`` with the champion (and a distinct challenger in shadow); write its predictions.

    A day that already has predictions is scored by the versions recorded in them (the same
    predictions again), unless ``rescore_with_current_champion``; a day without any is scored by
    the registry's aliases. Idempotent: the partition is replaced as a whole, so scoring a day
    twice leaves one copy. Raises :class:`NoChampionError` when the aliases are asked for before
    the first promotion, :class:`RecordedModelGone` when a recorded version was deleted. Returns
    ``{"day", "rows", "champion_version", "challenger_version", "versions_from", "flagged_at_0.5",
    "operating_threshold", "flagged", "path", "seconds"}`` (``flagged``: payments at or above the
    champion's operating threshold; ``None`` with the threshold when the version records none).
    """
    s = resolve_settings(settings_)
    started = time.perf_counter()
    recorded = None if rescore_with_current_champion else _recorded_models(day, s)
    models = recorded or _models(day, s)
    payments = _transactions_location(day, s)
    threshold = _operating_threshold(models.champion, s)
    tally = _write(day, _prediction_tables(payments, models, threshold, s), s)
    result = {
        "day": day.isoformat(),
        "rows": tally.rows,
        "champion_version": models.champion,
        "challenger_version": models.challenger,
        "versions_from": models.source,
        "flagged_at_0.5": tally.at_half,
        "operating_threshold": threshold,
        "flagged": None if threshold is None else tally.flagged,
        "path": predictions_file(day, s).url,
        "seconds": round(time.perf_counter() - started, 2),
    }
    logger.info(
        "scored %s: %s payments, champion %s, challenger %s (from the %s)",
        day,
        tally.rows,
        models.champion,
        models.challenger,
        models.source,
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


def _recorded_models(day: dt.date, s: Settings) -> _Models | None:
    """The versions recorded in the day's predictions; ``None`` when the day has none yet.

    Each recorded version must still be in the registry (:class:`RecordedModelGone` otherwise).
    """
    loc = predictions_file(day, s)
    if not lake.exists(loc):
        return None
    table = lake.read_parquet(loc, columns=[CHAMPION_VERSION, CHALLENGER_VERSION])
    champions = set(table.column(CHAMPION_VERSION).to_pylist())
    challengers = set(table.column(CHALLENGER_VERSION).to_pylist())
    if len(champions) != 1 or len(challengers) != 1:
        # An empty day or mixed versions: nothing single to reproduce, the aliases decide.
        return None
    champion, challenger = int(champions.pop()), int(challengers.pop())
    models = _Models(champion, None if challenger == NO_CHALLENGER else challenger, "recorded predictions")
    client = registry.configure_mlflow(s)
    for role, version in ((registry.CHAMPION, models.champion), (registry.CHALLENGER, models.challenger)):
        if version is not None and not _version_exists(client, s.model_name, version):
            raise RecordedModelGone(
                f"{day} was scored by {role} v{version} of {s.model_name!r}, which is no longer in the "
                f"registry, so it cannot be scored again as it was; to rescore it with the current "
                f"champion, run score_transactions for that day with the param {RESCORE_PARAM}=true"
            )
    return models


def _version_exists(client: Any, name: str, version: int) -> bool:
    """Whether ``version`` of the registered model ``name`` exists (a registry error is raised)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, str(version))
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return False
        raise
    return True


def _transactions_location(day: dt.date, s: Settings) -> lake.Location:
    """The partition of the day's validated payments in the lake (an error when it has no file)."""
    folder = lake.partition("lake", TRANSACTIONS.name, day, s)
    if not lake.data_files(folder):
        raise FileNotFoundError(
            f"no validated transactions for {day} at {folder.url}: run ingest_transactions for that day first"
        )
    return folder


def _payment_chunks(folder: lake.Location, rows: int, columns: list[str]) -> Iterator[pa.Table]:
    """The day's payments (``columns`` of them), ``rows`` at a time, by transaction id (the
    predictions' order, ties in the lake's order); one empty table for a day without payments.

    The lake keeps a day sorted by transaction id (ingestion writes it so), and then the partition
    is read chunk by chunk; a partition in another order is read whole (Arrow, not pandas) and
    taken in order.
    """
    import pyarrow.compute as pc

    key = TRANSACTIONS.key_column
    keys = lake.read_table(folder, columns=[key]).column(key)
    if len(keys) == 0:
        yield lake.read_table(folder, columns)
        return
    if keys.null_count == 0 and pc.all(pc.less_equal(keys[:-1], keys[1:])).as_py():
        del keys
        yield from lake.iter_tables(folder, rows, columns)
        return
    table = lake.read_table(folder, columns)
    order = pc.sort_indices(table, sort_keys=[(key, "ascending")], null_placement="at_end")
    for start in range(0, table.num_rows, rows):
        yield table.take(order[start : start + rows])


def _operating_threshold(version: int, s: Settings) -> float | None:
    """The operating threshold recorded on ``version``; ``None`` (with a warning) when there is none."""
    threshold = registry.operating_threshold(registry.configure_mlflow(s), s.model_name, version)
    if threshold is None:
        logger.warning(
            "version %s of %s records no %s (registered before thresholds were recorded): %s is null "
            "on every row; a retrained version records one",
            version, s.model_name, registry.OPERATING_THRESHOLD_TAG, FLAGGED_CHAMPION,
        )  # fmt: skip
    return threshold


def decision_flags(scores: np.ndarray, threshold: float | None) -> pd.api.extensions.ExtensionArray:
    """Whether each score is at or above ``threshold``: nullable booleans, all null without one."""
    import numpy as np
    import pandas as pd

    if threshold is None:
        return pd.array([pd.NA] * len(scores), dtype="boolean")
    return pd.array(np.asarray(scores) >= threshold, dtype="boolean")


@dataclass(frozen=True)
class _Scorers:
    """The day's models, loaded once for all its chunks."""

    champion_columns: list[str]
    champion: Callable[[pd.DataFrame], np.ndarray]
    challenger_columns: list[str]
    challenger: Callable[[pd.DataFrame], np.ndarray] | None


def _scorers(models: _Models, s: Settings) -> _Scorers:
    """Load the champion and, when distinct, the challenger from the registry."""
    champion_uri = registry.model_uri(models.champion, s)
    champion = (registry.feature_columns(champion_uri), registry.load_scorer(champion_uri))
    if models.challenger is None:
        return _Scorers(*champion, [], None)
    uri = registry.model_uri(models.challenger, s)
    return _Scorers(*champion, registry.feature_columns(uri), registry.load_scorer(uri))


def _prediction_tables(
    folder: lake.Location, models: _Models, threshold: float | None, s: Settings
) -> Iterator[pa.Table]:
    """The predictions of the payments in ``folder``, chunk by chunk, by transaction id.

    Only the payments' columns that the predictions or the features need are read, and each
    chunk's frames are dropped before the next chunk is read: memory holds one chunk.
    """
    import pyarrow as pa

    from include.mlops.features import ENTITY_KEYS, REQUEST_FIELDS, with_features

    scorers = _scorers(models, s)
    needed = {*PREDICTION_KEYS, *ENTITY_KEYS, *REQUEST_FIELDS, *scorers.champion_columns}
    columns = [c for c in TRANSACTIONS.names if c in needed | set(scorers.challenger_columns)]
    for number, payments in enumerate(_payment_chunks(folder, s.chunk_rows, columns), start=1):
        frame = with_features(payments.to_pandas(), s)
        del payments
        predictions = _predictions(frame, models, scorers, threshold)
        del frame
        table = pa.Table.from_pandas(predictions, preserve_index=False)
        del predictions
        logger.debug("scored chunk %s: %s payments", number, table.num_rows)
        yield table
        del table


def _predictions(
    frame: pd.DataFrame, models: _Models, scorers: _Scorers, threshold: float | None
) -> pd.DataFrame:
    """One row per payment, in ``frame``'s order: keys, the champion's inputs, both scores and
    versions, the champion's decision flag. An error when the features lack one of the
    challenger's inputs."""
    out = frame[list(PREDICTION_KEYS)].copy()
    for column in scorers.champion_columns:
        out[column] = frame[column].astype("float64")
    out[SCORE_CHAMPION] = scorers.champion(frame)
    out[FLAGGED_CHAMPION] = decision_flags(out[SCORE_CHAMPION].to_numpy(), threshold)
    out[CHAMPION_VERSION] = models.champion
    if scorers.challenger is None:
        out[SCORE_CHALLENGER], out[CHALLENGER_VERSION] = float("nan"), NO_CHALLENGER
        return out
    missing = [c for c in scorers.challenger_columns if c not in frame.columns]
    if missing:
        raise RuntimeError(f"challenger v{models.challenger} needs features the store lacks: {missing}")
    out[SCORE_CHALLENGER] = scorers.challenger(frame)
    out[CHALLENGER_VERSION] = models.challenger
    return out


@dataclass
class _Tally:
    """What the written predictions hold, counted chunk by chunk."""

    rows: int = 0
    at_half: int = 0
    """Payments with a champion's score at or above 0.5."""
    flagged: int = 0
    """Payments flagged at the operating threshold."""

    def add(self, table: pa.Table) -> None:
        import pyarrow.compute as pc

        self.rows += table.num_rows
        self.at_half += pc.sum(pc.greater_equal(table[SCORE_CHAMPION], 0.5)).as_py() or 0
        self.flagged += pc.sum(table[FLAGGED_CHAMPION]).as_py() or 0


def _write(day: dt.date, tables: Iterator[pa.Table], s: Settings) -> _Tally:
    """Replace the day's predictions partition with ``tables``, streamed in order into its one
    file (the first table's schema is the file's); what was written, counted."""
    tally = _Tally()
    first = next(tables)
    schema = first.schema
    with lake.replace_partition_stream(predictions_location(day, s), schema) as writer:
        # Once written, a table is let go before the next chunk is scored.
        rest = itertools.chain((first,), tables)
        del first
        for table in rest:
            writer.write_table(table if table.schema.equals(schema) else table.cast(schema))
            tally.add(table)
            del table
    return tally


def read_predictions(day: dt.date, settings_: Settings | None = None) -> pd.DataFrame:
    """The predictions partition of ``day`` as a DataFrame."""
    loc = predictions_file(day, settings_)
    if not lake.exists(loc):
        raise FileNotFoundError(f"no predictions for {day} at {loc.url}: run score_transactions first")
    return lake.read_parquet(loc).to_pandas()
