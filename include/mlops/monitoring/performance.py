"""The model's performance on the days whose labels have all arrived, against its training run.

A day ``X`` counts when ``X <= day - 5`` (labels arrive within five days), every labels partition
``X+1 .. X+5`` is in the lake, the same model version scored it, and ``X`` lies after the
version's out-of-time window (``oot_end`` tag), so that none of it was seen in training. The last
``performance_days`` such days are pooled, each sampled like the drift check, joined with their
labels, and scored with PR-AUC and recall at 1 % FPR; the baseline is the PR-AUC of the version's
training run (``pr_auc``, its out-of-time days).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import lake, registry
from include.mlops.core.schema import LABEL, LABELS, MAX_LABEL_DELAY_DAYS
from include.mlops.core.settings import resolve_settings
from include.mlops.monitoring.policy import Performance
from include.mlops.monitoring.predictions import ID, SCORE, VERSION, sample_positions

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from include.mlops.core.policies import DriftPolicy
    from include.mlops.core.settings import Settings


@dataclass(frozen=True)
class _Baseline:
    """The version's training run: its metrics and the last day it was evaluated on."""

    pr_auc: float | None
    recall_at_1pct_fpr: float | None
    oot_end: dt.date | None

    def fields(self) -> dict[str, float | None]:
        """The :class:`Performance` fields that come from training."""
        return {"baseline_pr_auc": self.pr_auc, "baseline_recall_at_1pct_fpr": self.recall_at_1pct_fpr}


@dataclass(frozen=True)
class _LabelledDays:
    """The fully labelled days chosen (oldest first, each sampled), and why others were not."""

    tables: list[tuple[dt.date, pa.Table]]
    notes: list[str]


def measure_performance(
    day: dt.date, version: int, policy: DriftPolicy, settings: Settings | None = None
) -> Performance:
    """PR-AUC and recall at 1 % FPR of ``version`` on the latest fully labelled days before ``day``.

    See the module docstring for which days count; the last ``policy.performance_days`` of them
    are pooled. Without such a day, or without a fraud among them, the :class:`Performance` has
    no PR-AUC and its ``note`` says why.
    """
    s = resolve_settings(settings)
    baseline = _baseline(version, s)
    chosen = _labelled_days(day, version, baseline.oot_end, policy, s)
    if not chosen.tables:
        return Performance(note="; ".join(chosen.notes) or "no fully labelled day yet", **baseline.fields())
    return _score(chosen, baseline, s)


def _baseline(version: int, s: Settings) -> _Baseline:
    client = registry.configure_mlflow(s)
    mv = client.get_model_version(s.model_name, str(version))
    metrics = _run_metrics(client, mv.run_id)
    oot_end = mv.tags.get("oot_end")
    return _Baseline(
        pr_auc=metrics.get("pr_auc"),
        recall_at_1pct_fpr=metrics.get("recall_at_1pct_fpr"),
        oot_end=dt.date.fromisoformat(oot_end) if oot_end else None,
    )


def _run_metrics(client: Any, run_id: str | None) -> dict[str, float]:
    # A version without a readable run has no baseline: the drop is then unknown, not an error.
    if not run_id:
        return {}
    try:
        return dict(client.get_run(run_id).data.metrics)
    except Exception:
        return {}


def _labels_folder(d: dt.date, s: Settings) -> lake.Location:
    return lake.partition("lake", LABELS.name, d, s)


def _label_days(x: dt.date) -> list[dt.date]:
    """The labels partitions that may hold a label of a payment of day ``x``."""
    return [x + dt.timedelta(days=k) for k in range(1, MAX_LABEL_DELAY_DAYS + 1)]


def _labelled_days(
    day: dt.date, version: int, oot_end: dt.date | None, policy: DriftPolicy, s: Settings
) -> _LabelledDays:
    import pyarrow as pa
    import pyarrow.compute as pc

    last = day - dt.timedelta(days=MAX_LABEL_DELAY_DAYS)
    earliest = last - dt.timedelta(days=policy.performance_days - 1)
    tables: list[tuple[dt.date, pa.Table]] = []
    notes: list[str] = []
    x = last
    while x >= earliest:
        if oot_end is not None and x <= oot_end:
            # Every earlier day is in-sample too: stop looking.
            notes.append(f"{x} is not after the model's out-of-time days")
            break
        loc = lake.partition_file(lake.PREDICTIONS, x, s)
        if any(not lake.data_files(_labels_folder(d, s)) for d in _label_days(x)):
            notes.append(f"labels of {x} incomplete")
        elif not lake.exists(loc):
            notes.append(f"{x} not scored")
        else:
            table = lake.read_parquet(loc, [ID, SCORE, VERSION])
            table = table.filter(pc.equal(table.column(VERSION), version))
            if table.num_rows == 0:
                notes.append(f"{x} scored by another version")
            else:
                keep = sample_positions(table.column(ID), policy.sample_rows, s.seed)
                tables.append((x, table if keep is None else table.take(pa.array(keep))))
        x -= dt.timedelta(days=1)
    tables.sort(key=lambda item: item[0])
    return _LabelledDays(tables, notes)


def _latest_labels(days: list[dt.date], ids: pa.Array, s: Settings) -> pd.DataFrame:
    """The label of each of ``ids`` found in the labels partitions of ``days``, one per payment."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = []
    for d in days:
        for f in lake.data_files(_labels_folder(d, s)):
            part = lake.read_parquet(f, [ID, LABEL, "reported_at"])
            found.append(part.filter(pc.is_in(part.column(ID), value_set=ids)))
    labels = pa.concat_tables(found).to_pandas()
    # A payment reported twice (settled, then charged back): the latest report wins.
    return labels.sort_values("reported_at", kind="stable").drop_duplicates(ID, keep="last")


def _score(chosen: _LabelledDays, baseline: _Baseline, s: Settings) -> Performance:
    import numpy as np
    import pyarrow as pa

    from include.mlops.core.metrics import TARGET_FPR, average_precision, recall_at_fpr

    scored = pa.concat_tables([t.select([ID, SCORE]) for _, t in chosen.tables])
    label_days = sorted({d for x, _ in chosen.tables for d in _label_days(x)})
    labels = _latest_labels(label_days, scored.column(ID).combine_chunks(), s)
    frame = scored.to_pandas().merge(labels[[ID, LABEL]], on=ID, how="inner")
    y = frame[LABEL].to_numpy(dtype=np.int64)
    score = frame[SCORE].to_numpy(dtype=np.float64)
    positives = int(y.sum())
    days = tuple(x.isoformat() for x, _ in chosen.tables)
    coverage = len(frame) / max(scored.num_rows, 1)
    base = baseline.fields()
    if positives == 0:
        return Performance(
            days, len(frame), 0, label_coverage=coverage, note="no fraud among the labelled rows", **base
        )
    return Performance(
        days=days,
        rows=len(frame),
        positives=positives,
        pr_auc=average_precision(y, score),
        recall_at_1pct_fpr=recall_at_fpr(y, score, TARGET_FPR),
        label_coverage=coverage,
        note="; ".join(chosen.notes),
        **base,
    )
