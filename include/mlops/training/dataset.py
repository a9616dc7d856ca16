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
features, as the matrices the fit and the evaluation use (:class:`TrainingSet`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from include.mlops import features, lake
from include.mlops.core.policies import TrainingSettings
from include.mlops.core.schema import LABEL, LABELS, MAX_LABEL_DELAY_DAYS, TRANSACTIONS
from include.mlops.core.settings import resolve_settings
from include.mlops.training.lineage import partition_fingerprint
from include.mlops.training.window import TrainingDataError, day_range, partition_files

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from include.mlops.core.settings import Settings
    from include.mlops.training.window import Window


logger = logging.getLogger(__name__)

WEIGHT = "sample_weight"
"""The column of a training row's sample weight (1 for a fraud, 1 / keep rate for a kept negative)."""

_LABEL_COLUMNS = ["transaction_id", LABEL, "reported_at"]


def stable_uniform(ids: pa.ChunkedArray | pa.Array, seed: int) -> np.ndarray:
    """A number in [0, 1) per id, fixed by the id and the seed only (not by the row order).

    Sampling compares it with a keep rate, so a rerun and the promotion step keep the same rows.
    """
    import numpy as np
    import pandas as pd

    key = hashlib.sha256(f"mlops-sample-{seed}".encode()).hexdigest()[:16]
    hashed = pd.util.hash_pandas_object(
        pd.Series(ids.to_pandas()), index=False, hash_key=key, categorize=False
    ).to_numpy()
    # The top 53 bits of the 64-bit hash: every double in [0, 1) they can make is exact.
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _read_partition(
    base: lake.Location, dataset: str, day: dt.date, columns: list[str] | None = None
) -> tuple[pa.Table, list[dict]]:
    """A lake partition as one table, with the fingerprint of each file (each file is read once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables, prints = [], []
    for loc in partition_files(base, dataset, day):
        data = lake.read_bytes(loc)
        table = pq.read_table(pa.BufferReader(data), columns=columns)
        tables.append(table)
        prints.append(partition_fingerprint(dataset, day, loc, data, table.num_rows))
    if not tables:
        raise TrainingDataError(f"no {dataset} partition for {day} under {base.join(dataset).url}")
    return (pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]), prints


@dataclass(frozen=True)
class LabelledDays:
    """Labelled payments of some days: the frame (lake columns + label + weight) and its lineage."""

    frame: pd.DataFrame
    fingerprints: list[dict]
    stats: dict[str, Any]


@dataclass(frozen=True)
class _LabelledDay:
    """One day's payments with their label, the files read for it and its duplicate labels."""

    day: dt.date
    table: pa.Table
    fingerprints: list[dict]
    duplicate_labels: int


class _LabelReports:
    """The labels partitions that can concern one day's payments, read while the days move forward.

    Labels of day ``D``'s payments are in the partitions ``D .. D+5`` (capped at ``labels_until``).
    Consecutive days share five of them, so they stay cached and each file is read once.
    """

    def __init__(self, base: lake.Location, labels_until: dt.date) -> None:
        self.base = base
        self.labels_until = labels_until
        self.cache: dict[dt.date, pa.Table] = {}
        self.seen: set[str] = set()

    def for_payments_of(self, day: dt.date) -> tuple[pa.Table, list[dict]]:
        """The label reports of the partitions of ``day .. day+5``, and the files read for the first time."""
        import pyarrow as pa

        last = min(day + dt.timedelta(days=MAX_LABEL_DELAY_DAYS), self.labels_until)
        wanted = day_range(day, last)
        for old in [d for d in self.cache if d not in wanted]:
            del self.cache[old]
        prints: list[dict] = []
        for d in wanted:
            if d not in self.cache and partition_files(self.base, LABELS.name, d):
                table, label_prints = _read_partition(self.base, LABELS.name, d, _LABEL_COLUMNS)
                self.cache[d] = pa.table(
                    {
                        "transaction_id": table.column("transaction_id").cast(pa.string()),
                        LABEL: table.column(LABEL).cast(pa.int8()),
                        "reported_at": table.column("reported_at"),
                    }
                )
                prints += [p for p in label_prints if p["url"] not in self.seen]
                self.seen.update(p["url"] for p in label_prints)
        present = [self.cache[d] for d in wanted if d in self.cache]
        if present:
            return pa.concat_tables(present, promote_options="permissive"), prints
        none = pa.table({"transaction_id": pa.array([], pa.string()), LABEL: pa.array([], pa.int8())})
        return none, prints


def _latest_labels(ids: pa.ChunkedArray, reports: pa.Table) -> tuple[pa.ChunkedArray, int]:
    """The label of each payment of ``ids`` (null when none), from its latest report; and how many
    payments were reported more than once."""
    import pyarrow.compute as pc

    reports = reports.filter(pc.is_in(reports.column("transaction_id"), value_set=ids))
    position = pc.index_in(ids, value_set=reports.column("transaction_id"))
    # Every report left concerns one of the day's payments: more reports than labelled payments
    # means some payment was reported twice (e.g. settled, then charged back).
    duplicates = reports.num_rows - (len(position) - position.null_count)
    if duplicates:
        # The latest report wins: index_in takes the first occurrence, so put those first.
        reports = reports.sort_by([("reported_at", "descending")])
        position = pc.index_in(ids, value_set=reports.column("transaction_id"))
    return pc.take(reports.column(LABEL), position), int(duplicates)


def _labelled_days(base: lake.Location, days: list[dt.date], labels_until: dt.date) -> Iterator[_LabelledDay]:
    """For each day: its payments with their label (Arrow), the files read, and duplicate labels.

    Everything stays in Arrow (a 1M-row day costs about a second). Raises
    :class:`TrainingDataError` listing the payments without a label, once every day was read.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    reports = _LabelReports(base, labels_until)
    unlabelled: list[tuple[dt.date, int, list[str]]] = []
    for day in days:
        payments, prints = _read_partition(base, TRANSACTIONS.name, day)
        day_reports, label_prints = reports.for_payments_of(day)
        ids = payments.column("transaction_id")
        label, duplicates = _latest_labels(ids, day_reports)
        if label.null_count:
            examples = ids.filter(pc.is_null(label)).slice(0, 3).to_pylist()
            unlabelled.append((day, label.null_count, examples))
            continue
        table = payments.append_column(LABEL, label.cast(pa.int8()))
        yield _LabelledDay(day, table, prints + label_prints, duplicates)
    if unlabelled:
        detail = "; ".join(f"{d}: {n} payments (e.g. {', '.join(map(str, ex))})" for d, n, ex in unlabelled)
        raise TrainingDataError(
            f"payments without a label in the labels partitions up to {labels_until} under "
            f"{base.join(LABELS.name).url}: {detail}. Every payment of a fully labelled day must be "
            f"labelled within {MAX_LABEL_DELAY_DAYS} days: check the labels feed before training."
        )


def _down_sample(
    labelled: _LabelledDay, negatives_per_positive: int, rows_cap: float, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One training day with every fraud and a weighted sample of its negatives; the day's stats."""
    import numpy as np

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
    kept = table.filter(keep).to_pandas()
    kept[WEIGHT] = np.where(fraud[keep], 1.0, 1.0 / rate)
    stats = {
        "day": labelled.day.isoformat(),
        "rows": table.num_rows,
        "positives": positives,
        "keep_rate": rate,
    }
    return kept, stats


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
    import pandas as pd

    base = lake.root("lake", settings)
    per_day_cap = max_rows / max(len(days), 1)
    parts, prints, per_day = [], [], []
    duplicates = total = negatives_total = 0
    for labelled in _labelled_days(base, days, labels_until):
        kept, day_stats = _down_sample(labelled, negatives_per_positive, per_day_cap, seed)
        parts.append(kept)
        prints += labelled.fingerprints
        duplicates += labelled.duplicate_labels
        total += day_stats["rows"]
        negatives_total += day_stats["rows"] - day_stats["positives"]
        per_day.append(day_stats)
    frame = pd.concat(parts, ignore_index=True)
    stats = {
        "rows_total": total,
        "negatives_total": negatives_total,
        "rows_kept": len(frame),
        "duplicate_labels": duplicates,
        "per_day": per_day,
    }
    return LabelledDays(frame, prints, stats)


def read_oot_days(
    days: list[dt.date], labels_until: dt.date, max_rows: int, seed: int, settings: Settings | None = None
) -> LabelledDays:
    """Labelled payments of ``days``, untouched, or a uniform sample when above ``max_rows``.

    The sample keeps the same share of every day (a fixed hash of ``transaction_id``), so the
    class balance and the mix of days are those of the real traffic.
    """
    import pandas as pd

    s = resolve_settings(settings)
    base = lake.root("lake", s)
    per_day_cap = max(1, max_rows // max(len(days), 1))
    parts, prints, per_day = [], [], []
    duplicates = total = 0
    for labelled in _labelled_days(base, days, labels_until):
        table = labelled.table
        rows = table.num_rows
        share = min(1.0, per_day_cap / max(rows, 1))
        if share < 1.0:
            # seed + 1: the OOT sample must not be the same draw as the training down-sampling.
            table = table.filter(stable_uniform(table.column("transaction_id"), seed + 1) < share)
        parts.append(table.to_pandas())
        prints += labelled.fingerprints
        duplicates += labelled.duplicate_labels
        total += rows
        per_day.append(
            {"day": labelled.day.isoformat(), "rows": rows, "rows_kept": table.num_rows, "share": share}
        )
    frame = pd.concat(parts, ignore_index=True)
    stats = {"rows_total": total, "rows_kept": len(frame), "duplicate_labels": duplicates, "per_day": per_day}
    return LabelledDays(frame, prints, stats)


def oot_frame(
    oot_start: dt.date, oot_end: dt.date, settings: Settings | None = None, max_rows: int | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """The OOT payments of ``oot_start .. oot_end`` with features and labels, as training saw them.

    The same rows as the training run's evaluation (same cap, same seed): what promotion scores.
    ``max_rows`` defaults to the training knob ``MLOPS_TRAIN_MAX_OOT_ROWS``, read here because
    promotion calls this on its own.
    """
    s = resolve_settings(settings)
    if max_rows is None:
        max_rows = TrainingSettings.from_env().max_oot_rows
    labels_until = oot_end + dt.timedelta(days=MAX_LABEL_DELAY_DAYS)
    data = read_oot_days(day_range(oot_start, oot_end), labels_until, max_rows, s.seed, s)
    return features.with_features(data.frame, s), data.fingerprints


@dataclass(frozen=True)
class TrainingSet:
    """The rows of a training run with their features: the training days (fit rows, then the
    validation slice early stopping watches) and the OOT days the model is judged on."""

    train: LabelledDays
    """Training days with features, negatives down-sampled and weighted."""
    oot: LabelledDays
    """OOT days with features, as the traffic was (a uniform sample above the cap)."""
    columns: tuple[str, ...]
    x: pd.DataFrame
    y: np.ndarray
    weight: np.ndarray
    in_validation: np.ndarray
    """True on the rows of the validation slice."""
    x_oot: pd.DataFrame
    y_oot: np.ndarray
    negatives_per_positive: int
    read_seconds: float
    feature_seconds: float

    @property
    def in_fit(self) -> np.ndarray:
        """True on the rows the model is fitted on (the training days before the validation slice)."""
        return ~self.in_validation

    @property
    def sampling(self) -> dict[str, Any]:
        """How the rows were sampled, day by day (part of the lineage)."""
        return {
            "negatives_per_positive": self.negatives_per_positive,
            "training_days": self.train.stats["per_day"],
            "oot_days": self.oot.stats["per_day"],
        }


def build_dataset(window: Window, knobs: TrainingSettings, settings: Settings | None = None) -> TrainingSet:
    """The labelled rows of ``window`` with their point-in-time features, split for fit and evaluation.

    Raises :class:`TrainingDataError` when the fit rows, the validation slice or the OOT days hold
    no fraud: the metrics would be undefined.
    """
    s = resolve_settings(settings)
    started = time.perf_counter()
    train = read_training_days(
        window.train_days, window.latest_labels, knobs.negatives_per_positive, s.seed, s, knobs.max_rows
    )
    oot = read_oot_days(window.oot_days, window.latest_labels, knobs.max_oot_rows, s.seed, s)
    read_seconds = time.perf_counter() - started
    logger.info(
        "read %d training payments (kept %d) and %d OOT payments in %.1fs",
        train.stats["rows_total"], train.stats["rows_kept"], oot.stats["rows_kept"], read_seconds,
    )  # fmt: skip

    started = time.perf_counter()
    train = replace(train, frame=features.with_features(train.frame, s))
    oot = replace(oot, frame=features.with_features(oot.frame, s))
    feature_seconds = time.perf_counter() - started
    logger.info(
        "features from %s for %d rows in %.1fs",
        features.FEATURE_SERVICE_NAME, len(train.frame) + len(oot.frame), feature_seconds,
    )  # fmt: skip

    data = _training_set(window, train, oot, knobs.negatives_per_positive, read_seconds, feature_seconds)
    _require_fraud(data, window)
    return data


def _training_set(
    window: Window,
    train: LabelledDays,
    oot: LabelledDays,
    negatives_per_positive: int,
    read_seconds: float,
    feature_seconds: float,
) -> TrainingSet:
    """The matrices of the fit and the evaluation: every feature a double, labels and weights."""
    import numpy as np

    columns = list(features.FEATURE_COLUMNS)
    validation_start = features.day_start(window.validation_start)
    return TrainingSet(
        train=train,
        oot=oot,
        columns=tuple(columns),
        x=train.frame[columns].astype("float64"),
        y=train.frame[LABEL].to_numpy(dtype=np.int32),
        weight=train.frame[WEIGHT].to_numpy(dtype=np.float64),
        in_validation=(train.frame["event_timestamp"] >= validation_start).to_numpy(),
        x_oot=oot.frame[columns].astype("float64"),
        y_oot=oot.frame[LABEL].to_numpy(dtype=np.int32),
        negatives_per_positive=negatives_per_positive,
        read_seconds=read_seconds,
        feature_seconds=feature_seconds,
    )


def _require_fraud(data: TrainingSet, window: Window) -> None:
    """Raise :class:`TrainingDataError` unless the fit rows, the validation slice and the OOT days
    each hold a fraud."""
    for name, y in (
        ("fit", data.y[data.in_fit]),
        ("validation", data.y[data.in_validation]),
        ("OOT", data.y_oot),
    ):
        if int(y.sum()) == 0:
            raise TrainingDataError(
                f"no fraud among the {len(y)} labelled payments of the {name} days ({window.describe()}): "
                "the metrics are undefined. Train with a longer window."
            )
