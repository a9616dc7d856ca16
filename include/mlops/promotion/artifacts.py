"""What the gate shows on the challenger's MLflow run, under ``evaluation/``.

* ``pr_curve.png`` and ``roc_curve.png``: both models on the same out-of-time rows;
* ``calibration.png``: mean score against observed fraud rate per score quantile, both models;
* ``bootstrap.png``: the distribution of the paired bootstrap's PR-AUC differences, with the
  interval, zero and the margin;
* ``slices.json`` and ``fairness.json``: the full tables, in MLflow's table layout (``columns``
  and ``data``), so ``mlflow.load_table``-style readers and the artifact viewer show them;
* ``summary.md``: the decision as a reviewer reads it.

(The challenger's feature importance was logged there by its training run.) MLflow's own
``mlflow.models.evaluate`` is not used: it re-scores the model through pyfunc, which for this
model returns probabilities it would take for labels, and computes its own metrics; the plots
here are of the very scores and metrics the gate decided on.

Every file has a fixed name and is overwritten: a retried task logs the same files again.
Figures are matplotlib ``Figure`` objects, never pyplot's global state, built and drawn under
:func:`~include.mlops.core.figures.drawing` (promotions may run in threads side by side, and
matplotlib's text layout is not thread-safe). matplotlib, numpy and scikit-learn are imported
inside the functions.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.core.figures import drawing, new_figure
from include.mlops.promotion.slices import SLICE_FAIL, SLICE_NOT_COMPARED, SLICE_PASS, SLICE_TOO_SMALL

if TYPE_CHECKING:
    import numpy as np

    from include.mlops.promotion.evaluation import Evaluation
    from include.mlops.promotion.policy import Decision

logger = logging.getLogger(__name__)

EVALUATION_FOLDER = "evaluation"
"""The run's artifact folder of the gate's plots and tables."""

CURVE_POINTS = 2000
"""Points drawn per curve at most (a curve of a million distinct scores is drawn from a sample)."""


def _thin(*arrays: np.ndarray) -> list[np.ndarray]:
    """Every array at the same evenly spaced positions, at most :data:`CURVE_POINTS` of them."""
    import numpy as np

    n = len(arrays[0])
    if n <= CURVE_POINTS:
        return list(arrays)
    keep = np.unique(np.linspace(0, n - 1, CURVE_POINTS).astype(int))
    return [a[keep] for a in arrays]


def _models(evaluation: Evaluation) -> list[tuple[str, np.ndarray]]:
    """``(label, scores)`` of the models that could be scored, challenger first."""
    out = []
    pairs = ((registry.CHALLENGER, evaluation.challenger), (registry.CHAMPION, evaluation.champion))
    for role, model in pairs:
        if model is not None and model.scores is not None:
            out.append((f"{role} v{model.version}", model.scores))
    return out


def curve_figures(evaluation: Evaluation) -> dict[str, Any]:
    """The precision-recall and ROC figures of both models on the evaluation rows."""
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    y = evaluation.labels
    pr, pr_ax = new_figure()
    roc, roc_ax = new_figure()
    for label, scores in _models(evaluation):
        s = np.nan_to_num(np.asarray(scores, dtype=np.float64))
        precision, recall, _ = precision_recall_curve(y, s)
        pr_ax.plot(*_thin(recall, precision), label=f"{label} (AP {average_precision_score(y, s):.3f})")
        fpr, tpr, _ = roc_curve(y, s)
        roc_ax.plot(*_thin(fpr, tpr), label=f"{label} (AUC {roc_auc_score(y, s):.3f})")
    days = f"{evaluation.oot_start}..{evaluation.oot_end}, {evaluation.rows} payments"
    pr_ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall, {days}")
    roc_ax.set(xlabel="false-positive rate", ylabel="recall", xscale="log", title=f"ROC, {days}")
    roc_ax.axvline(0.01, color="grey", linestyle=":", label="1% FPR (operating point)")
    for ax in (pr_ax, roc_ax):
        ax.legend(loc="best", fontsize=8)
        ax.title.set_fontsize(9)
    return {"pr_curve.png": pr, "roc_curve.png": roc}


def calibration_figure(evaluation: Evaluation) -> Any:
    """Mean score against the observed fraud rate, per score quantile (log-log), both models."""
    import numpy as np
    from sklearn.calibration import calibration_curve

    fig, ax = new_figure()
    y = evaluation.labels
    for label, scores in _models(evaluation):
        s = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64)), 0.0, 1.0)
        observed, predicted = calibration_curve(y, s, n_bins=15, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=label)
    ax.plot([1e-5, 1], [1e-5, 1], color="grey", linestyle=":", label="perfectly calibrated")
    ax.set(xscale="log", yscale="log", xlabel="mean score", ylabel="observed fraud rate")
    ax.set_title("Calibration per score quantile", fontsize=9)
    ax.legend(loc="best", fontsize=8)
    return fig


def bootstrap_figure(decision: Decision) -> Any | None:
    """The distribution of the bootstrap's PR-AUC differences (``None`` without a bootstrap)."""
    draws = (decision.evidence.get("bootstrap_draws") or {}).get("delta_pr_auc")
    boot = decision.comparison.get("bootstrap")
    if not draws or not boot:
        return None
    fig, ax = new_figure(6, 4)
    ax.hist(draws, bins=40, color="tab:blue", alpha=0.7)
    low, high = boot["delta_pr_auc_interval"]
    for x, style, label in (
        (low, "--", f"{boot['confidence']:.0%} interval"),
        (high, "--", None),
        (0.0, "-", "no difference"),
        (decision.comparison.get("margin", 0.0), ":", "margin"),
    ):
        ax.axvline(x, color="black", linestyle=style, label=label)
    ax.set(xlabel="challenger - champion PR-AUC", ylabel="bootstrap draws")
    ax.set_title(f"Paired bootstrap, {boot['iterations']} draws of {boot['rows']} payments", fontsize=9)
    ax.legend(loc="best", fontsize=8)
    return fig


def slices_table(decision: Decision) -> dict[str, Any]:
    """Every slice's record, as a table (``columns`` and ``data``)."""
    columns = ["slice", "status", "rows", "positives", "challenger_pr_auc", "champion_pr_auc",
               "delta_pr_auc", "interval_low", "interval_high"]  # fmt: skip
    data = [
        [r["slice"], r["status"], r["rows"], r["positives"], r["challenger_pr_auc"],
         r["champion_pr_auc"], r["delta_pr_auc"], *(r["interval"] or [None, None])]
        for r in decision.slices
    ]  # fmt: skip
    return {"columns": columns, "data": data}


def fairness_table(decision: Decision) -> dict[str, Any]:
    """Each card-holder region's rates at each model's operating point, as a table."""
    columns = ["model", "group", "threshold", "negatives", "positives", "false_positive_rate",
               "recall", "fpr_judged", "recall_judged"]  # fmt: skip
    data = []
    for role in (registry.CHALLENGER, registry.CHAMPION):
        record = decision.fairness.get(role)
        for group in [record["overall"], *record["groups"]] if record else []:
            data.append(
                [role, group["group"], record["threshold"], group["negatives"], group["positives"],
                 group["false_positive_rate"], group["recall"], group["fpr_judged"], group["recall_judged"]]
            )  # fmt: skip
    return {"columns": columns, "data": data}


def log_gate_artifacts(
    client: Any, run_id: str, evaluation: Evaluation, decision: Decision, summary: str
) -> None:
    """Log the plots, the tables and the reviewer's summary of ``decision`` on the run ``run_id``."""
    with drawing():
        figures = {**curve_figures(evaluation), "calibration.png": calibration_figure(evaluation)}
        boot = bootstrap_figure(decision)
        if boot is not None:
            figures["bootstrap.png"] = boot
        for name, figure in figures.items():
            figure.tight_layout()
            client.log_figure(run_id, figure, f"{EVALUATION_FOLDER}/{name}")
    client.log_dict(run_id, slices_table(decision), f"{EVALUATION_FOLDER}/slices.json")
    client.log_dict(run_id, fairness_table(decision), f"{EVALUATION_FOLDER}/fairness.json")
    client.log_text(run_id, summary, f"{EVALUATION_FOLDER}/summary.md")
    logger.info("logged %d plots and the slice and fairness tables on run %s", len(figures), run_id)


def _metric_line(decision: Decision) -> str:
    """Both models' headline metrics, as one Markdown line."""
    mine, theirs = decision.challenger_metrics, decision.champion_metrics or {}
    parts = []
    for key, label in (("pr_auc", "PR-AUC"), ("recall_at_1pct_fpr", "recall at 1% FPR")):
        if key in mine:
            versus = f" (champion {theirs[key]:.4f})" if key in theirs else ""
            parts.append(f"{label} **{mine[key]:.4f}**{versus}")
    return ", ".join(parts) or "no metrics (the challenger could not be scored)"


def _slice_lines(decision: Decision) -> list[str]:
    """The failing slices first, then the counts of the others."""
    records = list(decision.slices)
    if not records:
        return ["- slices: not judged"]
    lines = [
        f"- **{r['slice']}**: PR-AUC {r['challenger_pr_auc']:.4f} vs {r['champion_pr_auc']:.4f} "
        f"({r['delta_pr_auc']:+.4f}), {r['positives']} frauds: **fails**"
        for r in records
        if r["status"] == SLICE_FAIL
    ]
    counts = {
        s: sum(r["status"] == s for r in records)
        for s in (SLICE_PASS, SLICE_FAIL, SLICE_TOO_SMALL, SLICE_NOT_COMPARED)
    }
    lines.append(
        f"- slices: {counts[SLICE_PASS]} pass, {counts[SLICE_FAIL]} fail, {counts[SLICE_TOO_SMALL]} too "
        f"small to judge, {counts[SLICE_NOT_COMPARED]} not compared (no champion)"
    )
    return lines


def _fairness_lines(decision: Decision) -> list[str]:
    """Each model's disparities and worst groups, and the bound."""
    record = decision.fairness
    if not record:
        return ["- fairness: not audited"]
    if not record.get("audited"):
        return [f"- fairness: not audited ({record.get('skipped')})"]
    lines = []
    for role in (registry.CHALLENGER, registry.CHAMPION):
        audit = record.get(role)
        if audit:
            lines.append(
                f"- fairness, {role} (threshold {audit['threshold']:.4g}): false-positive-rate disparity "
                f"{audit.get('fpr_disparity')} (worst: {audit.get('worst_fpr_group')}), recall disparity "
                f"{audit.get('recall_disparity')} (worst: {audit.get('worst_recall_group')})"
            )
    lines.append(f"- fairness bound {record['max_disparity']}, margin over the champion {record['margin']}")
    return lines


def decision_markdown(
    decision: Decision, evaluation: Evaluation, policy: Any, link: str | None = None
) -> str:
    """The gate's decision as a reviewer reads it (Markdown): verdict, reasons, metrics, slices,
    fairness, where the plots are."""
    champion = evaluation.champion.version if evaluation.champion else None
    lines = [
        f"**Challenger v{evaluation.challenger.version}** against "
        + (f"**champion v{champion}**" if champion else "no champion")
        + f" on {evaluation.rows} payments of {evaluation.oot_start}..{evaluation.oot_end} "
        f"({int(evaluation.labels.sum())} frauds).",
        "",
        f"Gate: **{decision.outcome}**. {_metric_line(decision)}.",
        "",
        *(f"- {reason}" for reason in decision.reasons),
        *_slice_lines(decision),
        *_fairness_lines(decision),
        "",
        f"Plots and full tables: the run's `{EVALUATION_FOLDER}/` artifacts"
        + (f" ([MLflow run]({link}))" if link else "")
        + f"; policy: margin {policy.margin}, slice margin {policy.slice_margin}.",
    ]
    return "\n".join(lines)
