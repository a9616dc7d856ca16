"""Which key features the drift report compares, and with which threshold (no Evidently needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from include.mlops.core.policies import DriftPolicy
from include.mlops.monitoring.report import plan_columns

POLICY = DriftPolicy(psi_threshold=0.2, flag_psi_threshold=0.1)


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A day and a reference with one column of each kind."""
    reference = pd.DataFrame(
        {
            "amount": [1.0, 2.0, 3.0, 4.0],
            "is_online": [0.0, 1.0, 1.0, np.nan],
            "never_filled": [np.nan] * 4,
            "gone_today": [5.0, 6.0, 7.0, 8.0],
            "gone_flag": [0.0, 1.0, 0.0, 1.0],
        }
    )
    current = pd.DataFrame(
        {
            "amount": [2.0, 3.0, 4.0, 5.0],
            "is_online": [1.0, 1.0, 0.0, 1.0],
            "never_filled": [1.0, 2.0, 3.0, 4.0],
            "gone_today": [np.nan] * 4,
            "gone_flag": [np.nan] * 4,
        }
    )
    return current, reference


def test_features_with_values_on_both_sides_are_judged_flags_with_their_own_threshold() -> None:
    current, reference = frames()
    plan = plan_columns(current, reference, list(reference.columns), POLICY)
    assert plan.judged == ("amount", "is_online")
    assert plan.flags == ("is_online",)
    assert plan.thresholds == {"amount": 0.2, "is_online": 0.1}


def test_a_feature_empty_in_the_reference_is_skipped() -> None:
    current, reference = frames()
    plan = plan_columns(current, reference, list(reference.columns), POLICY)
    assert plan.skipped == ("never_filled",)


def test_a_feature_no_longer_served_counts_as_drifted_with_its_threshold() -> None:
    current, reference = frames()
    plan = plan_columns(current, reference, list(reference.columns), POLICY)
    assert [(c.column, c.score, c.threshold, c.drifted) for c in plan.unserved] == [
        ("gone_today", None, 0.2, True),
        ("gone_flag", None, 0.1, True),
    ]
    assert {c.note for c in plan.unserved} == {"no value on this day"}


def test_only_the_features_asked_for_are_planned() -> None:
    current, reference = frames()
    plan = plan_columns(current, reference, ["is_online"], POLICY)
    assert (plan.judged, plan.skipped, plan.unserved) == (("is_online",), (), ())
