"""Per-slice non-regression: the challenger must not be much worse than the champion for any
kind of payment or customer that carries enough frauds to tell.

The slices
==========
:func:`slice_masks` cuts the out-of-time payments along :data:`DIMENSIONS`: the channel, whether
the card was present, the merchant's category, the card holder's home country (``card_country``,
the card's issuing country), the amount band (:data:`AMOUNT_BANDS`) and new versus established
customers (:data:`TENURE_FEATURE`: no payment in the 30 days before is new). A dimension whose
column the rows lack (a lake written before the column existed) is listed as unavailable.

The rule
========
:func:`judge_slices` measures PR-AUC per slice for both models on the same rows. A slice with
fewer frauds than ``slice_min_positives`` is reported, not judged (too small to tell). For each
judged slice, the paired bootstrap of the project (:func:`~.bootstrap.paired_bootstrap`, the same
resampled rows for both models, ``slice_bootstrap`` iterations) gives the interval of the
challenger-minus-champion difference; above ``bootstrap_rows`` evaluation rows, every slice is
resampled within one uniform sample of that size (point estimates use every row), so a dimension
costs one overall bootstrap of ``slice_bootstrap`` iterations. A judged slice **fails** when the
challenger loses more than ``slice_margin`` of PR-AUC there *and* the interval says the loss is
no chance (its upper bound is below 0; with ``slice_bootstrap = 0`` the point estimate alone
decides). A failing slice keeps the champion, and the decision names it.

Pure: numpy (and pandas for the masks) imported inside the functions; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops.core.metrics import average_precision
from include.mlops.promotion.bootstrap import paired_bootstrap

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.core.policies import PromotionPolicy

AMOUNT_BANDS: tuple[tuple[str, float], ...] = (
    ("under 5", 5.0),
    ("5-50", 50.0),
    ("50-250", 250.0),
    ("250-1000", 1000.0),
    ("1000 and more", float("inf")),
)
"""Amount bands, each with its upper bound (exclusive): micro payments (card testing) to large ones."""

TENURE_FEATURE = "customer_txn_count_30d"
"""The feature that tells a new customer (null or 0: no payment in the 30 days before) from an
established one."""

DIMENSIONS: tuple[str, ...] = (
    "channel",
    "card_present",
    "merchant_category",
    "card_country",
    "amount_band",
    "customer_tenure",
)
"""The dimensions payments are sliced along, in the order reports list them."""

SLICE_PASS, SLICE_FAIL, SLICE_TOO_SMALL, SLICE_NOT_COMPARED = "pass", "fail", "too_small", "not_compared"
"""A slice's status: judged and passing or failing, too few frauds to judge, or no champion."""


@dataclass(frozen=True)
class Slice:
    """A named subset of the evaluation rows: ``dimension = value`` and its row mask."""

    dimension: str
    value: str
    mask: np.ndarray

    @property
    def name(self) -> str:
        """``dimension=value``, how decisions and tags name the slice."""
        return f"{self.dimension}={self.value}"


def _labels(frame: pd.DataFrame, dimension: str) -> np.ndarray | None:
    """Each row's value of ``dimension`` as text; ``None`` when the rows lack its column."""
    import numpy as np
    import pandas as pd

    if dimension == "amount_band":
        if "amount" not in frame:
            return None
        bounds = [b for _, b in AMOUNT_BANDS]
        names = np.array([n for n, _ in AMOUNT_BANDS], dtype=object)
        return names[np.searchsorted(bounds, frame["amount"].to_numpy(dtype="float64"), side="right")]
    if dimension == "customer_tenure":
        if TENURE_FEATURE not in frame:
            return None
        count = pd.to_numeric(frame[TENURE_FEATURE], errors="coerce").fillna(0).to_numpy()
        return np.where(count > 0, "established", "new").astype(object)
    if dimension not in frame:
        return None
    if dimension == "card_present":
        present = frame[dimension].astype("boolean").fillna(False).to_numpy(dtype=bool)
        return np.where(present, "present", "not present").astype(object)
    return frame[dimension].astype("string").fillna("unknown").to_numpy(dtype=object)


def slice_masks(frame: pd.DataFrame) -> tuple[list[Slice], list[str]]:
    """The slices of ``frame`` along :data:`DIMENSIONS` (values sorted), and the dimensions its
    columns cannot give."""
    import numpy as np

    slices: list[Slice] = []
    unavailable: list[str] = []
    for dimension in DIMENSIONS:
        labels = _labels(frame, dimension)
        if labels is None:
            unavailable.append(dimension)
            continue
        for value in sorted(set(labels.tolist())):
            slices.append(Slice(dimension, str(value), np.asarray(labels == value)))
    return slices, unavailable


def _rounded(value: float | None) -> float | None:
    """A metric for the record: 6 decimals, ``None`` when undefined (NaN)."""
    import math

    return None if value is None or math.isnan(value) else round(float(value), 6)


def judge_slice(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    piece: Slice,
    policy: PromotionPolicy,
    sample: np.ndarray | None = None,
) -> dict[str, Any]:
    """One slice's record: rows, frauds, both PR-AUCs, the difference, its interval and its status.

    ``sample`` (a row mask) restricts the bootstrap to those rows of the slice.
    """
    import numpy as np

    m = piece.mask
    yy, a = y[m], challenger[m]
    positives = int(yy.sum())
    record: dict[str, Any] = {
        "slice": piece.name,
        "dimension": piece.dimension,
        "value": piece.value,
        "rows": int(m.sum()),
        "positives": positives,
        "challenger_pr_auc": _rounded(average_precision(yy, a)) if positives else None,
        "champion_pr_auc": None,
        "delta_pr_auc": None,
        "interval": None,
    }
    if champion is None:
        return {**record, "status": SLICE_NOT_COMPARED}
    b = champion[m]
    record["champion_pr_auc"] = _rounded(average_precision(yy, b)) if positives else None
    if positives < policy.slice_min_positives or positives == len(yy):
        return {**record, "status": SLICE_TOO_SMALL}
    delta = float(average_precision(yy, a) - average_precision(yy, b))
    record["delta_pr_auc"] = _rounded(delta)
    significant = True
    if policy.slice_bootstrap > 0:
        rows = m if sample is None else m & sample
        boot = paired_bootstrap(
            y[rows], challenger[rows], champion[rows], policy.slice_bootstrap, policy.confidence,
            policy.seed, policy.bootstrap_rows,
        )  # fmt: skip
        low, high = boot["delta_pr_auc_interval"]
        record["interval"] = [_rounded(low), _rounded(high)]
        significant = bool(np.isfinite(high) and high < 0)
    failed = delta < -policy.slice_margin and significant
    return {**record, "status": SLICE_FAIL if failed else SLICE_PASS}


def judge_slices(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    slices: list[Slice],
    policy: PromotionPolicy,
) -> list[dict[str, Any]]:
    """Every slice's record (:func:`judge_slice`), in the order of ``slices``."""
    import numpy as np

    y = np.asarray(y).astype(int)
    a = np.asarray(challenger, dtype=np.float64)
    b = None if champion is None else np.asarray(champion, dtype=np.float64)
    sample = None
    if 0 < policy.bootstrap_rows < len(y):
        rng = np.random.default_rng(policy.seed)
        sample = np.zeros(len(y), dtype=bool)
        sample[rng.choice(len(y), size=policy.bootstrap_rows, replace=False)] = True
    return [judge_slice(y, a, b, piece, policy, sample) for piece in slices]


def describe_failure(record: dict[str, Any], policy: PromotionPolicy) -> str:
    """Why a failing slice refuses the challenger, in one line."""
    interval = record["interval"]
    bounds = ""
    if interval:
        bounds = f", {policy.confidence:.0%} interval [{interval[0]:+.4f}, {interval[1]:+.4f}]"
    return (
        f"slice {record['slice']} regresses: PR-AUC {record['challenger_pr_auc']:.4f} vs champion "
        f"{record['champion_pr_auc']:.4f} ({record['delta_pr_auc']:+.4f}{bounds}; {record['positives']} "
        f"frauds in {record['rows']} payments), beyond the slice margin {policy.slice_margin}"
    )


def slices_summary(records: list[dict[str, Any]], unavailable: list[str]) -> dict[str, Any]:
    """Counts and names for a tag or a task's result: judged, failing, too small, unavailable."""
    return {
        "judged": sum(r["status"] in (SLICE_PASS, SLICE_FAIL) for r in records),
        "failing": [r["slice"] for r in records if r["status"] == SLICE_FAIL],
        "too_small": [r["slice"] for r in records if r["status"] == SLICE_TOO_SMALL],
        "not_compared": sum(r["status"] == SLICE_NOT_COMPARED for r in records),
        "unavailable": list(unavailable),
    }
