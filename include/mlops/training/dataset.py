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
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import features, lake
from include.mlops.core.schema import LABEL, LABELS, MAX_LABEL_DELAY_DAYS, TRANSACTIONS
from include.mlops.core.settings import env_number, resolve_settings
from include.mlops.training.window import TrainingDataError, _days, _partition_files

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from include.mlops.core.settings import Settings


WEIGHT = "sample_weight"


NEGATIVES_PER_POSITIVE = 20


MAX_OOT_ROWS = 1_000_000


MAX_TRAIN_ROWS = 2_000_000


def _env_int(name: str, default: int) -> int:
    return env_number(name, default, int)


def _fingerprint(dataset: str, day: dt.date, loc: lake.Location, data: bytes, rows: int) -> dict:
    return {
        "dataset": dataset,
        "day": day.isoformat(),
        "url": loc.url,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "rows": rows,
    }


def _read_partition(
    base: lake.Location, dataset: str, day: dt.date, columns: list[str] | None = None
) -> tuple[pa.Table, list[dict]]:
    """A lake partition as one table, with the sha256 of each file (each file is read once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables, prints = [], []
    for loc in _partition_files(base, dataset, day):
        data = lake.read_bytes(loc)
        table = pq.read_table(pa.BufferReader(data), columns=columns)
        tables.append(table)
        prints.append(_fingerprint(dataset, day, loc, data, table.num_rows))
    if not tables:
        raise TrainingDataError(f"no {dataset} partition for {day} under {base.join(dataset).url}")
    return (pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]), prints


def _uniform(ids: pa.ChunkedArray | pa.Array, seed: int) -> np.ndarray:
    """A number in [0, 1) per id, fixed by the id and the seed only (not by the row order)."""
    import numpy as np
    import pandas as pd

    key = hashlib.sha256(f"mlops-sample-{seed}".encode()).hexdigest()[:16]
    hashed = pd.util.hash_pandas_object(
        pd.Series(ids.to_pandas()), index=False, hash_key=key, categorize=False
    ).to_numpy()
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass
class LabelledDays:
    """Labelled payments of some days: the frame (lake columns + label + weight) and its lineage."""

    frame: pd.DataFrame
    fingerprints: list[dict]
    stats: dict[str, Any]


def _labelled_day_tables(
    base: lake.Location, days: list[dt.date], labels_until: dt.date
) -> Iterator[tuple[dt.date, pa.Table, list[dict], int]]:
    """For each day: its payments with their label (Arrow), the files read, and duplicate labels.

    Labels of day ``D``'s payments are looked up in the labels partitions ``D .. D+5`` (capped at
    ``labels_until``); the partitions are kept in a sliding cache, so each file is read once. A
    payment labelled twice keeps its latest report. Everything stays in Arrow (a 1M-row day costs
    about a second). Raises :class:`TrainingDataError` listing the payments without a label.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    cache: dict[dt.date, pa.Table] = {}
    seen_prints: set[str] = set()
    unlabelled: list[tuple[dt.date, int, list[str]]] = []
    for day in days:
        prints: list[dict] = []
        tx, tx_prints = _read_partition(base, TRANSACTIONS.name, day)
        prints += tx_prints
        wanted = [d for d in _days(day, day + dt.timedelta(days=MAX_LABEL_DELAY_DAYS)) if d <= labels_until]
        for old in [d for d in cache if d not in wanted]:
            del cache[old]
        for d in wanted:
            if d not in cache and _partition_files(base, LABELS.name, d):
                table, label_prints = _read_partition(
                    base, LABELS.name, d, ["transaction_id", LABEL, "reported_at"]
                )
                cache[d] = pa.table(
                    {
                        "transaction_id": table.column("transaction_id").cast(pa.string()),
                        LABEL: table.column(LABEL).cast(pa.int8()),
                        "reported_at": table.column("reported_at"),
                    }
                )
                prints += [p for p in label_prints if p["url"] not in seen_prints]
                seen_prints.update(p["url"] for p in label_prints)
        ids = tx.column("transaction_id")
        present = [cache[d] for d in wanted if d in cache]
        if present:
            labels = pa.concat_tables(present, promote_options="permissive")
            labels = labels.filter(pc.is_in(labels.column("transaction_id"), value_set=ids))
        else:
            labels = pa.table({"transaction_id": pa.array([], pa.string()), LABEL: pa.array([], pa.int8())})
        position = pc.index_in(ids, value_set=labels.column("transaction_id"))
        # Every label left concerns one of the day's payments: more labels than labelled payments
        # means some payment was reported twice (e.g. settled, then charged back).
        duplicates = labels.num_rows - (len(position) - position.null_count)
        if duplicates:
            # The latest report wins: index_in takes the first occurrence, so put those first.
            labels = labels.sort_by([("reported_at", "descending")])
            position = pc.index_in(ids, value_set=labels.column("transaction_id"))
        label = pc.take(labels.column(LABEL), position)
        missing = label.null_count
        if missing:
            examples = ids.filter(pc.is_null(label)).slice(0, 3).to_pylist()
            unlabelled.append((day, missing, examples))
            continue
        yield day, tx.append_column(LABEL, label.cast(pa.int8())), prints, int(duplicates)
    if unlabelled:
        detail = "; ".join(f"{d}: {n} payments (e.g. {', '.join(map(str, ex))})" for d, n, ex in unlabelled)
        raise TrainingDataError(
            f"payments without a label in the labels partitions up to {labels_until} under "
            f"{base.join(LABELS.name).url}: {detail}. Every payment of a fully labelled day must be "
            f"labelled within {MAX_LABEL_DELAY_DAYS} days: check the labels feed before training."
        )


def read_training_days(
    days: list[dt.date],
    labels_until: dt.date,
    negatives_per_positive: int,
    seed: int,
    settings: Settings | None = None,
    max_rows: int | None = None,
) -> LabelledDays:
    """Labelled payments of ``days`` with negatives down-sampled per day and weighted back.

    On each day every fraud is kept and negatives are kept with probability
    ``min(1, negatives_per_positive * max(frauds, 1) / negatives, day's share of max_rows / negatives)``;
    kept negatives get the weight ``1 / keep_rate`` (column ``sample_weight``), frauds weight 1.
    ``max_rows`` defaults to ``MLOPS_TRAIN_MAX_ROWS`` (:data:`MAX_TRAIN_ROWS`).
    """
    import numpy as np
    import pandas as pd

    base = lake.root("lake", settings)
    max_rows = _env_int("MLOPS_TRAIN_MAX_ROWS", MAX_TRAIN_ROWS) if max_rows is None else max_rows
    per_day_cap = max_rows / max(len(days), 1)
    parts, prints, per_day = [], [], []
    duplicates = total = negatives_total = 0
    for day, table, day_prints, dupes in _labelled_day_tables(base, days, labels_until):
        fraud = table.column(LABEL).to_numpy() == 1
        positives = int(fraud.sum())
        negatives = table.num_rows - positives
        rate = min(
            1.0,
            negatives_per_positive * max(positives, 1) / max(negatives, 1),
            max(per_day_cap - positives, 1) / max(negatives, 1),
        )
        keep = fraud | (_uniform(table.column("transaction_id"), seed) < rate)
        kept = table.filter(keep).to_pandas()
        kept[WEIGHT] = np.where(fraud[keep], 1.0, 1.0 / rate)
        parts.append(kept)
        prints += day_prints
        duplicates += dupes
        total += table.num_rows
        negatives_total += negatives
        per_day.append(
            {"day": day.isoformat(), "rows": table.num_rows, "positives": positives, "keep_rate": rate}
        )
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
    for day, table, day_prints, dupes in _labelled_day_tables(base, days, labels_until):
        rows = table.num_rows
        share = min(1.0, per_day_cap / max(rows, 1))
        if share < 1.0:
            table = table.filter(_uniform(table.column("transaction_id"), seed + 1) < share)
        parts.append(table.to_pandas())
        prints += day_prints
        duplicates += dupes
        total += rows
        per_day.append({"day": day.isoformat(), "rows": rows, "rows_kept": table.num_rows, "share": share})
    frame = pd.concat(parts, ignore_index=True)
    stats = {"rows_total": total, "rows_kept": len(frame), "duplicate_labels": duplicates, "per_day": per_day}
    return LabelledDays(frame, prints, stats)


def oot_frame(
    oot_start: dt.date, oot_end: dt.date, settings: Settings | None = None
) -> tuple[pd.DataFrame, list[dict]]:
    """The OOT payments of ``oot_start .. oot_end`` with features and labels, as training saw them.

    The same rows as the training run's evaluation (same cap, same seed): what promotion scores.
    """
    s = resolve_settings(settings)
    labels_until = oot_end + dt.timedelta(days=MAX_LABEL_DELAY_DAYS)
    data = read_oot_days(
        _days(oot_start, oot_end),
        labels_until,
        _env_int("MLOPS_TRAIN_MAX_OOT_ROWS", MAX_OOT_ROWS),
        s.seed,
        s,
    )
    return features.with_features(data.frame, s), data.fingerprints
