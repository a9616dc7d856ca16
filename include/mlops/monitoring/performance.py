"""The model's performance on the days whose labels have all arrived, against its training run."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from include.mlops import lake, registry
from include.mlops.core.schema import LABEL, LABELS, MAX_LABEL_DELAY_DAYS
from include.mlops.core.settings import resolve_settings
from include.mlops.monitoring.policy import Performance, Policy
from include.mlops.monitoring.report import _ID, _SCORE, _VERSION, sample_positions

if TYPE_CHECKING:
    import pyarrow as pa

    from include.mlops.core.settings import Settings


def _run_metrics(client: Any, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        return dict(client.get_run(run_id).data.metrics)
    except Exception:
        return {}


def measure_performance(
    day: dt.date, version: int, policy: Policy, settings: Settings | None = None
) -> Performance:
    """PR-AUC and recall at 1 % FPR of ``version`` on the latest fully labelled days before ``day``.

    A day ``X`` counts when ``X <= day - 5``, every labels partition ``X+1 .. X+5`` is in the lake,
    its predictions were made by ``version``, and ``X`` is after the version's out-of-time window
    (``oot_end`` tag), so that none of it was seen in training. The last
    ``policy.performance_days`` such days are pooled (each sampled like the drift check).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from include.mlops.core.metrics import TARGET_FPR, average_precision, recall_at_fpr

    s = resolve_settings(settings)
    client = registry.configure_mlflow(s)
    mv = client.get_model_version(s.model_name, str(version))
    baseline = _run_metrics(client, mv.run_id)
    base = {
        "baseline_pr_auc": baseline.get("pr_auc"),
        "baseline_recall_at_1pct_fpr": baseline.get("recall_at_1pct_fpr"),
    }
    oot_end = mv.tags.get("oot_end")
    after = dt.date.fromisoformat(oot_end) if oot_end else None

    def labels_folder(d: dt.date) -> lake.Location:
        return lake.partition("lake", LABELS.name, d, s)

    last = day - dt.timedelta(days=MAX_LABEL_DELAY_DAYS)
    earliest = last - dt.timedelta(days=policy.performance_days - 1)
    chosen: list[tuple[dt.date, pa.Table]] = []
    notes = []
    candidate = last
    while candidate >= earliest:
        x, candidate = candidate, candidate - dt.timedelta(days=1)
        if after is not None and x <= after:
            notes.append(f"{x} is not after the model's out-of-time days")
            break
        label_days = [x + dt.timedelta(days=k) for k in range(1, MAX_LABEL_DELAY_DAYS + 1)]
        if any(not lake.data_files(labels_folder(d)) for d in label_days):
            notes.append(f"labels of {x} incomplete")
            continue
        loc = lake.partition_file(lake.PREDICTIONS, x, s)
        if not lake.exists(loc):
            notes.append(f"{x} not scored")
            continue
        table = lake.read_parquet(loc, [_ID, _SCORE, _VERSION])
        table = table.filter(pc.equal(table.column(_VERSION), version))
        if table.num_rows == 0:
            notes.append(f"{x} scored by another version")
            continue
        keep = sample_positions(table.column(_ID), policy.sample_rows, s.seed)
        chosen.append((x, table if keep is None else table.take(pa.array(keep))))
    if not chosen:
        return Performance(note="; ".join(notes) or "no fully labelled day yet", **base)

    chosen.sort(key=lambda item: item[0])
    scored = pa.concat_tables([t.select([_ID, _SCORE]) for _, t in chosen])
    ids = scored.column(_ID)
    label_days = sorted(
        {x + dt.timedelta(days=k) for x, _ in chosen for k in range(1, MAX_LABEL_DELAY_DAYS + 1)}
    )
    found = []
    for d in label_days:
        for f in lake.data_files(labels_folder(d)):
            part = lake.read_parquet(f, [_ID, LABEL, "reported_at"])
            found.append(part.filter(pc.is_in(part.column(_ID), value_set=ids.combine_chunks())))
    labels = pa.concat_tables(found).to_pandas()
    # A payment reported twice (settled, then charged back): the latest report wins.
    labels = labels.sort_values("reported_at", kind="stable").drop_duplicates(_ID, keep="last")
    frame = scored.to_pandas().merge(labels[[_ID, LABEL]], on=_ID, how="inner")
    y = frame[LABEL].to_numpy(dtype=np.int64)
    score = frame[_SCORE].to_numpy(dtype=np.float64)
    positives = int(y.sum())
    days = tuple(x.isoformat() for x, _ in chosen)
    coverage = len(frame) / max(scored.num_rows, 1)
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
        note="; ".join(notes),
        **base,
    )
