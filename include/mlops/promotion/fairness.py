"""The fairness audit: how each group of card holders is treated at the model's operating point.

The groups are the card holders' home regions (:data:`REGIONS`, from the card's issuing country
``card_country``). At the operating threshold (the version's tag
:data:`~include.mlops.registry.OPERATING_THRESHOLD_TAG`: the score at the policy's 1 %
false-positive rate on its out-of-time days; computed on the rows when a version records none),
:func:`audit` measures per group

* the **false-positive rate**: the share of its good payments that would be declined;
* the **recall**: the share of its frauds that would be stopped;

and two disparities, each a ratio where 1 is parity and more is worse:

* FPR disparity = the worst judged group's false-positive rate / all customers' false-positive rate;
* recall disparity = all customers' recall / the worst judged group's recall.

(Below 1 when every judged group fares better than all customers together: the small groups,
not judged, fare worse.)

A group's false-positive rate counts when it has ``fairness_min_negatives`` good payments, its
recall when it has ``slice_min_positives`` frauds; smaller groups are reported, not judged.

:func:`fairness_objections` is the rule: a challenger whose disparity exceeds
``fairness_max_disparity`` is rejected; one whose disparity exceeds the champion's by more than
``fairness_margin`` keeps the champion. Rows without ``card_country`` cannot be audited: that is
reported, and not gated.

Pure: numpy imported inside the functions; no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from include.mlops import registry

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.core.policies import PromotionPolicy

GROUP_COLUMN = "card_country"
"""The column the groups come from: the card's issuing country, its holder's home."""

REGIONS: dict[str, str] = {
    "DE": "euro_area",
    "FR": "euro_area",
    "ES": "euro_area",
    "IT": "euro_area",
    "NL": "euro_area",
    "GB": "europe_other",
    "CH": "europe_other",
    "PL": "europe_other",
    "SE": "europe_other",
    "US": "north_america",
    "BR": "latin_america",
    "NG": "africa",
    "RU": "russia",
}
"""The card holder's home region of each issuing country (another country: ``other``)."""

CAPPED_DISPARITY = 999.0
"""A disparity with a zero denominator (a judged group with no fraud stopped) is recorded as this."""


def card_regions(frame: pd.DataFrame) -> np.ndarray | None:
    """Each row's card-holder region; ``None`` when the rows carry no :data:`GROUP_COLUMN`."""
    import numpy as np

    if GROUP_COLUMN not in frame:
        return None
    countries = frame[GROUP_COLUMN].astype("string").fillna("").to_numpy(dtype=object)
    return np.array([REGIONS.get(c, "other") for c in countries], dtype=object)


def _rate(hits: float, total: float) -> float | None:
    return None if total <= 0 else hits / total


def _group(name: str, y: np.ndarray, flags: np.ndarray, policy: PromotionPolicy) -> dict[str, Any]:
    """One group's counts and rates at the operating point, and which of them are judged."""
    negatives, positives = int((y == 0).sum()), int((y == 1).sum())
    fpr = _rate(float(flags[y == 0].sum()), negatives)
    recall = _rate(float(flags[y == 1].sum()), positives)
    return {
        "group": name,
        "rows": len(y),
        "negatives": negatives,
        "positives": positives,
        "false_positive_rate": None if fpr is None else round(fpr, 6),
        "recall": None if recall is None else round(recall, 6),
        "fpr_judged": negatives >= policy.fairness_min_negatives,
        "recall_judged": positives >= policy.slice_min_positives,
    }


def _disparities(overall: dict[str, Any], groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The FPR and recall disparities (``None`` when no group is judged) and the worst groups."""
    out: dict[str, Any] = {"fpr_disparity": None, "recall_disparity": None}
    judged = [g for g in groups if g["fpr_judged"]]
    fpr_all = overall["false_positive_rate"]
    if judged and fpr_all is not None:
        worst = max(judged, key=lambda g: g["false_positive_rate"])
        ratio = 1.0 if fpr_all == 0 else worst["false_positive_rate"] / fpr_all
        out.update(fpr_disparity=round(ratio, 4), worst_fpr_group=worst["group"])
    judged = [g for g in groups if g["recall_judged"]]
    recall_all = overall["recall"]
    if judged and recall_all:
        worst = min(judged, key=lambda g: g["recall"])
        ratio = recall_all / worst["recall"] if worst["recall"] else CAPPED_DISPARITY
        ratio = min(ratio, CAPPED_DISPARITY)
        out.update(recall_disparity=round(ratio, 4), worst_recall_group=worst["group"])
    return out


def audit(
    y: np.ndarray, scores: np.ndarray, threshold: float, groups: np.ndarray, policy: PromotionPolicy
) -> dict[str, Any]:
    """One model's fairness at ``threshold``: all customers, each group, and the disparities."""
    import numpy as np

    y = np.asarray(y).astype(int)
    flags = np.asarray(scores, dtype=np.float64) >= threshold
    overall = _group("all customers", y, flags, policy)
    per_group = [_group(str(g), y[groups == g], flags[groups == g], policy) for g in sorted(set(groups))]
    return {
        "threshold": float(threshold),
        "overall": overall,
        "groups": per_group,
        **_disparities(overall, per_group),
    }


def _worst(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def disparity(record: dict[str, Any] | None) -> float | None:
    """The larger of a record's two disparities (``None`` when neither could be measured)."""
    if not record:
        return None
    return _worst([record.get("fpr_disparity"), record.get("recall_disparity")])


def _bound_objection(kind: str, record: dict[str, Any], policy: PromotionPolicy) -> str | None:
    """Why a disparity of the challenger's exceeds the bound, if it does."""
    value = record.get(f"{kind}_disparity")
    if value is None or value <= policy.fairness_max_disparity:
        return None
    if kind == "fpr":
        group = next(g for g in record["groups"] if g["group"] == record["worst_fpr_group"])
        return (
            f"fairness: good customers of {group['group']} would be declined {value:.2f}x as often as "
            f"all customers (false-positive rate {group['false_positive_rate']:.4f} vs "
            f"{record['overall']['false_positive_rate']:.4f} at the operating point), above the bound "
            f"{policy.fairness_max_disparity}"
        )
    group = next(g for g in record["groups"] if g["group"] == record["worst_recall_group"])
    return (
        f"fairness: frauds on cards of {group['group']} would be stopped {value:.2f}x less often than "
        f"for all customers (recall {group['recall']:.4f} vs {record['overall']['recall']:.4f} at the "
        f"operating point), above the bound {policy.fairness_max_disparity}"
    )


def fairness_objections(
    challenger: dict[str, Any] | None, champion: dict[str, Any] | None, policy: PromotionPolicy
) -> tuple[list[str], list[str]]:
    """``(rejections, comparisons)``: disparities of the challenger above the bound (it is rejected),
    and those grown by more than the margin over the champion's (the champion is kept)."""
    if not challenger:
        return [], []
    rejections = [r for r in (_bound_objection(k, challenger, policy) for k in ("fpr", "recall")) if r]
    comparisons = []
    for kind, label in (("fpr", "false-positive-rate"), ("recall", "recall")):
        mine = challenger.get(f"{kind}_disparity")
        theirs = (champion or {}).get(f"{kind}_disparity")
        if mine is not None and theirs is not None and mine > theirs + policy.fairness_margin:
            comparisons.append(
                f"fairness: the {label} disparity across card-holder regions grows from {theirs:.2f} "
                f"(champion) to {mine:.2f}, more than the margin {policy.fairness_margin}"
            )
    return rejections, comparisons


def fairness_summary(fairness: dict[str, Any]) -> dict[str, Any]:
    """Both models' disparities and worst groups from a decision's fairness record, for a task's result."""
    challenger, champion = fairness.get(registry.CHALLENGER), fairness.get(registry.CHAMPION)

    def brief(record: dict[str, Any] | None) -> dict[str, Any] | None:
        if not record:
            return None
        keys = ("threshold", "fpr_disparity", "worst_fpr_group", "recall_disparity", "worst_recall_group")
        return {k: record.get(k) for k in keys}

    return {
        "audited": bool(challenger),
        registry.CHALLENGER: brief(challenger),
        registry.CHAMPION: brief(champion),
        "max_disparity": fairness.get("max_disparity"),
        "objections": list(fairness.get("objections") or []),
    }
