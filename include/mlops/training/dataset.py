"""The labelled rows a training run learns from and is judged on, read from the lake and joined to Feast.

Each payment is joined to its label by ``transaction_id``; a payment without a label inside the
window is an error (never silently 0), and a payment labelled twice keeps its latest report.

Class imbalance: fraud is about 0.5 % of payments. On the training days negatives are
down-sampled per day to at most ``negatives_per_positive`` per fraud (and to ``max_rows`` over the
window), and each kept negative carries the inverse of its day's keep rate as sample weight, so the
weighted training set has the original class balance and the scores stay calibrated
probabilities. The OOT days are never re-balanced; above ``max_oot_rows`` a uniform sample (same
share every day) is taken. Sampling is a deterministic function of ``transaction_id`` and the
seed, not of row order, so a rerun (and the promotion step) gets the same rows.

:func:`build_dataset` is the training run's step: both sets of days with their point-in-time
features (:class:`TrainingSet`). The rows stay in Arrow while they are read and sampled, and the
features are read chunk by chunk into float32 matrices (:mod:`.stream`), so a run's memory follows
the training caps, not the window's days.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from include.mlops import features, lake
from include.mlops.core.policies import TrainingSettings
from include.mlops.core.schema import LABEL, MAX_LABEL_DELAY_DAYS
from include.mlops.core.settings import resolve_settings
from include.mlops.training.evaluation import reference_positions
from include.mlops.training.labels import LabelledDay, labelled_days
from include.mlops.training.stream import (
    FeatureRows,
    frame_with_features,
    mapped_rows,
    read_features,
    release_arrow_memory,
    spill_rows,
)
from include.mlops.training.window import TrainingDataError, day_range

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from include.mlops.core.settings import Settings
    from include.mlops.training.window import Window


logger = logging.getLogger(__name__)

WEIGHT = "sample_weight"
"""The column of a training row's sample weight (1 for a fraud, 1 / keep rate for a kept negative)."""


def stable_uniform(ids: pa.ChunkedArray | pa.Array, seed: int) -> np.ndarray:
    """A number in [0, 1) per id, fixed by the id and the seed only (not by the row order).

    Sampling compares it with a keep rate, so a rerun and the promotion step keep the same rows.
    """
    import numpy as np
    import pandas as pd

    key = hashlib.sha256(f"mlops-sample-{seed}".encode()).hexdigest()[:16]
    # pandas' SipHash of each id's UTF-8 bytes. ``to_numpy`` makes the Python strings it needs;
    # ``to_pandas`` would make the same strings ten times slower (it de-duplicates them first).
    hashed = pd.util.hash_array(ids.to_numpy(zero_copy_only=False), hash_key=key, categorize=False)
    # The top 53 bits of the 64-bit hash: every double in [0, 1) they can make is exact.
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True)
class LabelledDays:
    """Labelled payments of some days: the frame (lake columns + label + weight) and its lineage."""

    frame: pd.DataFrame
    fingerprints: list[dict]
    stats: dict[str, Any]


def _down_sample(
    labelled: LabelledDay, negatives_per_positive: int, rows_cap: float, seed: int
) -> tuple[pa.Table, dict[str, Any]]:
    """One training day with every fraud and a weighted sample of its negatives; the day's stats."""
    import numpy as np
    import pyarrow as pa

    table = labelled.table
    fraud = table.column(LABEL).to_numpy() == 1
    positives = int(fraud.sum())
    negatives = table.num_rows - positives
    rate = min(
        1.0,
        negatives_per_positive * max(positives, 1) / max(negatives, 1),
        max(rows_cap - positives, 1) / max(negatives, 1),
    )
    keep = fraud | (stable_uniform(table.column("transaction_id"), seed) < rate)
    kept = table.filter(keep).append_column(WEIGHT, pa.array(np.where(fraud[keep], 1.0, 1.0 / rate)))
    stats = {
        "day": labelled.day.isoformat(),
        "rows": table.num_rows,
        "positives": positives,
        "keep_rate": rate,
    }
    return kept, stats


@dataclass(frozen=True)
class _LabelledTable:
    """Labelled payments of some days in Arrow (strings stay compact), the files read and the stats."""

    table: pa.Table
    fingerprints: list[dict]
    stats: dict[str, Any]

    def as_days(self) -> LabelledDays:
        """The same rows as a pandas frame (Python strings): what the reading functions return."""
        return LabelledDays(self.table.to_pandas(), self.fingerprints, self.stats)


def _training_table(
    days: list[dt.date],
    labels_until: dt.date,
    negatives_per_positive: int,
    seed: int,
    settings: Settings | None,
    max_rows: int,
) -> _LabelledTable:
    """:func:`read_training_days` in Arrow."""
    import pyarrow as pa

    base = lake.root("lake", settings)
    per_day_cap = max_rows / max(len(days), 1)
    parts, prints, per_day = [], [], []
    duplicates = total = negatives_total = 0
    for labelled in labelled_days(base, days, labels_until):
        kept, day_stats = _down_sample(labelled, negatives_per_positive, per_day_cap, seed)
        parts.append(kept)
        prints += labelled.fingerprints
        duplicates += labelled.duplicate_labels
        total += day_stats["rows"]
        negatives_total += day_stats["rows"] - day_stats["positives"]
        per_day.append(day_stats)
    table = pa.concat_tables(parts, promote_options="permissive")
    stats = {
        "rows_total": total,
        "negatives_total": negatives_total,
        "rows_kept": table.num_rows,
        "duplicate_labels": duplicates,
        "per_day": per_day,
    }
    return _LabelledTable(table, prints, stats)


def read_training_days(
    days: list[dt.date],
    labels_until: dt.date,
    negatives_per_positive: int,
    seed: int,
    settings: Settings | None = None,
    max_rows: int = TrainingSettings.max_rows,
) -> LabelledDays:
    """Labelled payments of ``days`` with negatives down-sampled per day and weighted back.

    On each day every fraud is kept and negatives are kept with probability
    ``min(1, negatives_per_positive * max(frauds, 1) / negatives, day's share of max_rows / negatives)``;
    kept negatives get the weight ``1 / keep_rate`` (column ``sample_weight``), frauds weight 1.
    ``max_rows`` is the knob ``MLOPS_TRAIN_MAX_ROWS`` (:class:`TrainingSettings`).
    """
    return _training_table(days, labels_until, negatives_per_positive, seed, settings, max_rows).as_days()


def _oot_table(
    days: list[dt.date], labels_until: dt.date, max_rows: int, seed: int, settings: Settings | None
) -> _LabelledTable:
    """:func:`read_oot_days` in Arrow."""
    import pyarrow as pa

    base = lake.root("lake", resolve_settings(settings))
    per_day_cap = max(1, max_rows // max(len(days), 1))
    parts, prints, per_day = [], [], []
    duplicates = total = 0
    for labelled in labelled_days(base, days, labels_until):
        table = labelled.table
        rows = table.num_rows
        share = min(1.0, per_day_cap / max(rows, 1))
        if share < 1.0:
            # seed + 1: the OOT sample must not be the same draw as the training down-sampling.
            table = table.filter(stable_uniform(table.column("transaction_id"), seed + 1) < share)
        parts.append(table)
        prints += labelled.fingerprints
        duplicates += labelled.duplicate_labels
        total += rows
        per_day.append(
            {"day": labelled.day.isoformat(), "rows": rows, "rows_kept": table.num_rows, "share": share}
        )
    table = pa.concat_tables(parts, promote_options="permissive")
    stats = {
        "rows_total": total,
        "rows_kept": table.num_rows,
        "duplicate_labels": duplicates,
        "per_day": per_day,
    }
    return _LabelledTable(table, prints, stats)


def read_oot_days(
    days: list[dt.date], labels_until: dt.date, max_rows: int, seed: int, settings: Settings | None = None
) -> LabelledDays:
    """Labelled payments of ``days``, untouched, or a uniform sample when above ``max_rows``.

    The sample keeps the same share of every day (a fixed hash of ``transaction_id``), so the
    class balance and the mix of days are those of the real traffic.
    """
    return _oot_table(days, labels_until, max_rows, seed, settings).as_days()


def oot_frame(
    oot_start: dt.date, oot_end: dt.date, settings: Settings | None = None, max_rows: int | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """The OOT payments of ``oot_start .. oot_end`` with features and labels, as training saw them.

    The same rows as the training run's evaluation (same cap, same seed): what promotion scores.
    ``max_rows`` defaults to the training knob ``MLOPS_TRAIN_MAX_OOT_ROWS``, read here because
    promotion calls this on its own. The features are joined ``MLOPS_CHUNK_ROWS`` rows at a time.
    """
    import pandas as pd

    s = resolve_settings(settings)
    if max_rows is None:
        max_rows = TrainingSettings.from_env().max_oot_rows
    labels_until = oot_end + dt.timedelta(days=MAX_LABEL_DELAY_DAYS)
    data = read_oot_days(day_range(oot_start, oot_end), labels_until, max_rows, s.seed, s)
    return pd.concat(features.features_in_chunks(data.frame, s.chunk_rows, s)), data.fingerprints


@dataclass(frozen=True)
class TrainingSet:
    """The rows of a training run with their features: the fit rows, the validation slice early
    stopping watches (the last training days) and the OOT days the model is judged on.

    The features are float32 matrices read chunk by chunk (:mod:`.stream`); no frame of the whole
    window is ever built. The fit rows come first and the validation rows after them, each in the
    order of the lake.
    """

    train: LabelledDays
    """Training days (fit rows, then validation rows), negatives down-sampled and weighted: the
    lake's columns with Arrow strings, the label, the weight and the features (views of
    :attr:`fit` and :attr:`validation`). What the MLflow run logs as its training dataset."""
    oot: LabelledDays
    """OOT days as the traffic was (a uniform sample above the cap), same layout."""
    columns: tuple[str, ...]
    fit: FeatureRows
    validation: FeatureRows
    out_of_time: FeatureRows
    reference: pd.DataFrame
    """The OOT rows of the drift monitor's reference sample, as Feast served them (ids,
    timestamps, features), indexed by their position among the OOT rows."""
    negatives_per_positive: int
    read_seconds: float
    feature_seconds: float

    @property
    def x_oot(self) -> pd.DataFrame:
        """The OOT features as a float32 frame (no copy)."""
        return self.out_of_time.frame()

    @property
    def y_oot(self) -> np.ndarray:
        """The OOT labels."""
        return self.out_of_time.y

    @property
    def sampling(self) -> dict[str, Any]:
        """How the rows were sampled, day by day (part of the lineage)."""
        return {
            "negatives_per_positive": self.negatives_per_positive,
            "training_days": self.train.stats["per_day"],
            "oot_days": self.oot.stats["per_day"],
        }


def _fit_rows_first(data: _LabelledTable, validation_start: dt.date) -> tuple[_LabelledTable, int]:
    """The training rows with the fit rows first and the validation rows (from ``validation_start``
    on) after them, each in their order; and the number of fit rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    stamps = data.table.column("event_timestamp")
    start = pa.scalar(features.day_start(validation_start), type=stamps.type)
    validation = pc.fill_null(pc.greater_equal(stamps, start), False).to_numpy(zero_copy_only=False)
    fit_rows = int((~validation).sum())
    if validation[:fit_rows].any():  # a payment of a validation day before one of a fit day
        order = np.concatenate([np.flatnonzero(~validation), np.flatnonzero(validation)])
        data = replace(data, table=data.table.take(pa.array(order)))
    return data, fit_rows


def build_dataset(window: Window, knobs: TrainingSettings, settings: Settings | None = None) -> TrainingSet:
    """The labelled rows of ``window`` with their point-in-time features, split for fit and evaluation.

    The features are read ``MLOPS_CHUNK_ROWS`` rows at a time. Raises :class:`TrainingDataError`
    when the fit rows, the validation slice or the OOT days hold no fraud (the metrics would be
    undefined), before any feature is read.
    """
    s = resolve_settings(settings)
    started = time.perf_counter()
    train = _training_table(
        window.train_days, window.latest_labels, knobs.negatives_per_positive, s.seed, s, knobs.max_rows
    )
    oot = _oot_table(window.oot_days, window.latest_labels, knobs.max_oot_rows, s.seed, s)
    train, fit_rows = _fit_rows_first(train, window.validation_start)
    _require_fraud(_labels(train.table), fit_rows, _labels(oot.table), window)
    read_seconds = time.perf_counter() - started
    logger.info(
        "read %d training payments (kept %d) and %d OOT payments in %.1fs",
        train.stats["rows_total"], train.stats["rows_kept"], oot.stats["rows_kept"], read_seconds,
    )  # fmt: skip

    started = time.perf_counter()
    columns = tuple(features.FEATURE_COLUMNS)
    picked = reference_positions(oot.table.num_rows, s.seed)
    with tempfile.TemporaryDirectory(prefix="mlops-training-", ignore_cleanup_errors=True) as folder:
        # The lake's columns are kept only to be logged, and each chunk's join reads a few of them
        # once: they stay on disk, mapped (each chunk maps them afresh: see read_features).
        paths = spill_rows(train.table, folder), spill_rows(oot.table, folder)
        train, oot = (replace(t, table=mapped_rows(p)) for t, p in zip((train, oot), paths, strict=True))
        release_arrow_memory()
        x, _ = read_features(paths[0], columns, s.chunk_rows, s)
        x_oot, reference = read_features(paths[1], columns, s.chunk_rows, s, keep=picked)
    feature_seconds = time.perf_counter() - started
    logger.info(
        "features from %s for %d rows in %.1fs (%d rows per chunk)",
        features.FEATURE_SERVICE_NAME, len(x) + len(x_oot), feature_seconds, s.chunk_rows,
    )  # fmt: skip

    rows = FeatureRows(x, _labels(train.table), train.table.column(WEIGHT).to_numpy(), columns, s.chunk_rows)
    # Python strings, as in the lake's frames: the logged reference is read back as it was.
    ids = oot.table.column("transaction_id").take(picked).to_pylist()
    return TrainingSet(
        train=LabelledDays(frame_with_features(train.table, x, columns), train.fingerprints, train.stats),
        oot=LabelledDays(frame_with_features(oot.table, x_oot, columns), oot.fingerprints, oot.stats),
        columns=columns,
        fit=rows.part(0, fit_rows),
        validation=rows.part(fit_rows, len(rows)),
        out_of_time=FeatureRows(x_oot, _labels(oot.table), None, columns, s.chunk_rows),
        reference=reference.assign(transaction_id=ids)[["transaction_id", "event_timestamp", *columns]],
        negatives_per_positive=knobs.negatives_per_positive,
        read_seconds=read_seconds,
        feature_seconds=feature_seconds,
    )


def _labels(table: pa.Table) -> np.ndarray:
    return table.column(LABEL).to_numpy().astype("int32")


def _require_fraud(y: np.ndarray, fit_rows: int, y_oot: np.ndarray, window: Window) -> None:
    """Raise :class:`TrainingDataError` unless the fit rows, the validation slice and the OOT days
    each hold a fraud."""
    for name, labels in (("fit", y[:fit_rows]), ("validation", y[fit_rows:]), ("OOT", y_oot)):
        if int(labels.sum()) == 0:
            raise TrainingDataError(
                f"no fraud among the {len(labels)} labelled payments of the {name} days "
                f"({window.describe()}): the metrics are undefined. Train with a longer window."
            )
