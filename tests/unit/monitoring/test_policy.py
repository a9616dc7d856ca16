"""The drift rules: which day asks for a retrain and why, the statistic, the policy's knobs.

Pure code: no MLflow, no Evidently, no service.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from include.mlops.core.policies import DriftPolicy
from include.mlops.monitoring.policy import (
    SUPPRESSED_COOLDOWN,
    SUPPRESSED_LATER_DAY,
    SUPPRESSED_RUNNING,
    SUPPRESSED_SAME_DAY,
    ColumnDrift,
    DriftSummary,
    Performance,
    decide,
    psi,
)

D = dt.date(2026, 3, 10)
POLICY = DriftPolicy(drift_share=0.3, cooldown_days=7, performance_drop=0.2, min_positives=30)
NO_PERFORMANCE = Performance(note="no fully labelled day yet")


def summary(drifted: int, total: int, prediction: float | None = None) -> DriftSummary:
    """``total`` key features of which the first ``drifted`` drifted (PSI 0.5, the others 0.01)."""
    columns = tuple(
        ColumnDrift(f"feature_{i}", 0.5 if i < drifted else 0.01, 0.2, i < drifted) for i in range(total)
    )
    pred = None if prediction is None else ColumnDrift("prediction", prediction, 0.1, prediction >= 0.1)
    return DriftSummary(columns, pred)


def performance(drop: float, positives: int = 100) -> Performance:
    """A PR-AUC ``drop`` (relative) against a training PR-AUC of 0.5."""
    return Performance(
        days=("2026-03-01", "2026-03-05"),
        rows=10_000,
        positives=positives,
        pr_auc=0.5 * (1 - drop),
        recall_at_1pct_fpr=0.4,
        baseline_pr_auc=0.5,
        baseline_recall_at_1pct_fpr=0.6,
    )


# --------------------------------------------------------------------------------------------------
# The signals


@pytest.mark.parametrize(
    ("drifted", "total", "retrain"),
    [(0, 10, False), (2, 10, False), (2, 7, False), (3, 10, True), (4, 10, True), (10, 10, True)],
)
def test_feature_drift_counts_from_the_share_of_drifted_key_features(
    drifted: int, total: int, retrain: bool
) -> None:
    verdict = decide(summary(drifted, total, 0.01), NO_PERFORMANCE, None, D, POLICY)
    assert verdict.retrain is retrain
    assert verdict.signals == (("features",) if retrain else ())
    assert verdict.day == D and verdict.suppressed_by is None


def test_a_day_with_no_judged_feature_raises_no_feature_signal() -> None:
    verdict = decide(DriftSummary((), None), NO_PERFORMANCE, None, D, POLICY)
    assert not verdict.retrain and verdict.signals == ()
    assert "0/0 key features drifted" in verdict.explanation


def test_prediction_drift_counts_only_when_the_policy_says_so() -> None:
    assert decide(summary(0, 10, 0.25), NO_PERFORMANCE, None, D, POLICY).signals == ("prediction",)
    ignored = DriftPolicy(prediction_counts=False)
    verdict = decide(summary(0, 10, 0.25), NO_PERFORMANCE, None, D, ignored)
    assert not verdict.retrain and verdict.signals == ()
    assert "prediction drift 0.25" not in verdict.reason


def test_a_performance_drop_counts_from_the_threshold_with_enough_frauds() -> None:
    dropped = decide(summary(0, 10, 0.01), performance(0.25), None, D, POLICY)
    assert dropped.retrain and dropped.signals == ("performance",)
    assert "PR-AUC 0.375 vs 0.500 at training, -25%" in dropped.reason
    assert not decide(summary(0, 10, 0.01), performance(0.15), None, D, POLICY).retrain
    # Exactly the threshold counts.
    assert decide(summary(0, 10, 0.01), performance(0.2, positives=30), None, D, POLICY).retrain
    # Too few frauds to trust the PR-AUC: no signal, whatever the drop.
    assert not decide(summary(0, 10, 0.01), performance(0.9, positives=29), None, D, POLICY).retrain


def test_the_reason_names_the_day_the_columns_and_their_scores() -> None:
    columns = (
        ColumnDrift("is_online", 0.28, 0.1, True),
        ColumnDrift("amount_zscore_30d", 0.41, 0.2, True),
        ColumnDrift("is_night", 0.01, 0.1, False),
    )
    verdict = decide(
        DriftSummary(columns, ColumnDrift("prediction", 0.22, 0.1, True)), NO_PERFORMANCE, None, D, POLICY
    )
    assert verdict.retrain and verdict.signals == ("features", "prediction")
    assert verdict.reason == (
        "drift on 2026-03-10: 2/3 key features drifted (amount_zscore_30d 0.41, is_online 0.28); "
        "prediction drift 0.22"
    )
    assert verdict.explanation == f"retrain (features, prediction): {verdict.reason}"


def test_a_quiet_day_explains_everything_it_measured() -> None:
    quiet = decide(summary(1, 10, 0.02), NO_PERFORMANCE, None, D, POLICY)
    assert quiet.reason == "no drift on 2026-03-10"
    assert quiet.explanation == (
        "no drift on 2026-03-10: 1/10 key features drifted (feature_0 0.50) (a share of 0.3 counts); "
        "prediction PSI 0.02 (threshold 0.1); performance not measured (no fully labelled day yet)"
    )
    unmeasured = decide(summary(0, 10), NO_PERFORMANCE, None, D, POLICY)
    assert "prediction PSI not measured" in unmeasured.explanation


def test_the_reason_shows_at_most_six_drifted_columns() -> None:
    verdict = decide(summary(8, 10), NO_PERFORMANCE, None, D, POLICY)
    assert "8/10 key features drifted (" in verdict.reason
    assert verdict.reason.count("feature_") == 6 and verdict.reason.endswith(", ...)")


# --------------------------------------------------------------------------------------------------
# The suppressions


@pytest.mark.parametrize(
    ("days_after_trigger", "running", "retrain", "suppressed_by"),
    [
        (-3, False, False, SUPPRESSED_LATER_DAY),
        (0, False, False, SUPPRESSED_SAME_DAY),
        (1, False, False, SUPPRESSED_COOLDOWN),
        (6, False, False, SUPPRESSED_COOLDOWN),
        (7, False, True, None),
        (7, True, False, SUPPRESSED_RUNNING),
        (30, False, True, None),
    ],
)
def test_a_signal_is_suppressed_by_an_earlier_request_until_the_cooldown_ends(
    days_after_trigger: int, running: bool, retrain: bool, suppressed_by: str | None
) -> None:
    trigger = D - dt.timedelta(days=days_after_trigger)
    verdict = decide(summary(5, 10, 0.3), NO_PERFORMANCE, trigger, D, POLICY, retrain_running=running)
    assert verdict.retrain is retrain
    assert verdict.suppressed_by == suppressed_by
    assert verdict.signals == ("features", "prediction")
    assert verdict.reason.startswith("drift on 2026-03-10: 5/10 key features drifted")
    if suppressed_by is not None:
        assert verdict.explanation.startswith("no retrain: ")
        assert verdict.explanation.endswith(verdict.reason)
    if suppressed_by == SUPPRESSED_COOLDOWN:
        assert f"next one allowed from {trigger + dt.timedelta(days=7)}" in verdict.explanation


def test_a_running_retrain_suppresses_only_after_a_request() -> None:
    verdict = decide(summary(5, 10), NO_PERFORMANCE, None, D, POLICY, retrain_running=True)
    assert verdict.retrain and verdict.suppressed_by is None


def test_a_rerun_of_the_day_of_a_pending_request_asks_again_with_the_recorded_reason() -> None:
    recorded = "drift on 2026-03-10: 5/10 key features drifted (as recorded)"
    verdict = decide(
        summary(5, 10), NO_PERFORMANCE, D, D, POLICY, retrain_running=True, pending_reason=recorded
    )
    assert verdict.retrain and verdict.reissue and verdict.suppressed_by is None
    assert verdict.reason == recorded and verdict.signals == ("features",)
    assert verdict.explanation.startswith("retrain again: the retrain requested for 2026-03-10 was recorded")
    assert verdict.as_dict()["reissue"] is True
    # The request stands whatever the day's signals are now.
    quiet = decide(summary(0, 10, 0.01), NO_PERFORMANCE, D, D, POLICY, pending_reason=recorded)
    assert quiet.retrain and quiet.reissue and quiet.reason == recorded and quiet.signals == ()


def test_a_triggered_request_is_never_asked_for_twice() -> None:
    verdict = decide(summary(5, 10), NO_PERFORMANCE, D, D, POLICY, pending_reason=None)
    assert not verdict.retrain and not verdict.reissue
    assert verdict.suppressed_by == SUPPRESSED_SAME_DAY


@pytest.mark.parametrize(
    ("last", "suppressed_by"),
    [(D - dt.timedelta(days=2), SUPPRESSED_COOLDOWN), (D + dt.timedelta(days=1), SUPPRESSED_LATER_DAY)],
)
def test_a_pending_request_of_another_day_still_suppresses_and_says_how_to_trigger_it(
    last: dt.date, suppressed_by: str
) -> None:
    verdict = decide(summary(5, 10), NO_PERFORMANCE, last, D, POLICY, pending_reason=f"drift on {last}: x")
    assert not verdict.retrain and not verdict.reissue and verdict.suppressed_by == suppressed_by
    assert f"never triggered: rerun the check of {last}" in verdict.explanation
    assert verdict.reason.startswith("drift on 2026-03-10: ")


def test_a_pending_request_after_the_cooldown_is_a_running_retrain() -> None:
    last = D - dt.timedelta(days=POLICY.cooldown_days)
    verdict = decide(summary(5, 10), NO_PERFORMANCE, last, D, POLICY, True, pending_reason="drift on x")
    assert not verdict.retrain and verdict.suppressed_by == SUPPRESSED_RUNNING


def test_without_cooldown_a_day_still_never_triggers_twice() -> None:
    policy = DriftPolicy(cooldown_days=0)
    assert decide(summary(5, 10), NO_PERFORMANCE, D - dt.timedelta(days=1), D, policy).retrain
    again = decide(summary(5, 10), NO_PERFORMANCE, D, D, policy)
    assert not again.retrain and again.suppressed_by == SUPPRESSED_SAME_DAY


# --------------------------------------------------------------------------------------------------
# What the rules work on


def test_drifted_columns_come_highest_score_first_and_unserved_ones_before_all() -> None:
    columns = (
        ColumnDrift("low", 0.21, 0.2, True),
        ColumnDrift("quiet", 0.01, 0.2, False),
        ColumnDrift("gone", None, 0.2, True, note="no value on this day"),
        ColumnDrift("high", 0.9, 0.2, True),
    )
    drift = DriftSummary(columns, None, skipped=("empty",))
    assert [c.column for c in drift.drifted] == ["gone", "high", "low"]
    assert drift.judged == 4 and drift.share == pytest.approx(0.75)
    record = drift.as_dict()
    assert (record["judged"], record["drifted"], record["skipped"]) == (4, 3, ["empty"])
    assert record["prediction"] is None and record["columns"][2]["note"] == "no value on this day"
    assert DriftSummary(()).share == 0.0


@pytest.mark.parametrize(
    ("pr_auc", "baseline", "drop"),
    [(0.4, 0.5, 0.2), (0.6, 0.5, -0.2), (None, 0.5, None), (0.4, None, None), (0.4, 0.0, None)],
)
def test_the_relative_drop_needs_both_pr_aucs(
    pr_auc: float | None, baseline: float | None, drop: float | None
) -> None:
    measured = Performance(pr_auc=pr_auc, baseline_pr_auc=baseline)
    if drop is None:
        assert measured.relative_drop is None
    else:
        assert measured.relative_drop == pytest.approx(drop)
    assert Performance(pr_auc=float("nan"), baseline_pr_auc=0.5).relative_drop is None


def test_the_verdict_serialises_with_its_day_as_text() -> None:
    verdict = decide(summary(5, 10), NO_PERFORMANCE, D, D, POLICY)
    assert verdict.as_dict() == {
        "day": "2026-03-10",
        "retrain": False,
        "signals": ["features"],
        "reason": verdict.reason,
        "explanation": verdict.explanation,
        "suppressed_by": SUPPRESSED_SAME_DAY,
        "reissue": False,
    }
    assert performance(0.1).as_dict()["days"] == ["2026-03-01", "2026-03-05"]
    assert performance(0.1).as_dict()["relative_drop"] == pytest.approx(0.1)


# --------------------------------------------------------------------------------------------------
# The statistic


def test_psi_over_reference_deciles() -> None:
    rng = np.random.default_rng(0)
    reference = rng.lognormal(3.5, 1.0, 5_000)
    assert psi(reference, rng.lognormal(3.5, 1.0, 20_000)) < 0.01
    shifted = psi(reference, rng.lognormal(3.5, 1.0, 20_000) * 1.4)
    assert shifted > 0.1
    # Scale-free and insensitive to a monotone transform of both sides.
    assert psi(np.log(reference), np.log(rng.lognormal(3.5, 1.0, 20_000) * 1.4)) == pytest.approx(
        shifted, abs=0.03
    )
    # A few extreme values do not move it.
    noisy = np.r_[rng.lognormal(3.5, 1.0, 20_000), [1e9] * 5]
    assert psi(reference, noisy) < 0.01


def test_psi_compares_a_flag_value_by_value() -> None:
    rng = np.random.default_rng(0)
    flags = (rng.random(5_000) < 0.25).astype(float)
    # Online share 0.25 -> 0.5 is about 0.27.
    assert psi(flags, (rng.random(20_000) < 0.5).astype(float)) == pytest.approx(0.27, abs=0.03)
    # A value the reference never had counts (its cell was empty, floored).
    assert psi(flags, np.full(1_000, 2.0)) > 1.0


def test_psi_ignores_nans_and_is_nan_without_values() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=5_000)
    current = rng.normal(size=5_000)
    with_nans = np.r_[current, [np.nan] * 1_000]
    assert psi(reference, with_nans) == pytest.approx(psi(reference, current))
    assert math.isnan(psi(np.array([np.nan]), current))
    assert math.isnan(psi(reference, np.array([])))


# --------------------------------------------------------------------------------------------------
# The drift retrain learns the drifted world


def test_a_drift_retrain_waits_for_its_drifted_days_labels_before_it_trains() -> None:
    from include.mlops.monitoring.policy import retrain_plan

    day = dt.date(2026, 3, 10)
    policy = DriftPolicy.from_env({}, retrain_labelled_days=5, retrain_oot_days=2, retrain_window_days=14)
    plan = retrain_plan(day, policy)
    # Days 10..14 are labelled once the labels drop of 14 + 5 days is in.
    assert plan.as_of == dt.date(2026, 3, 19)
    assert plan.wait_days == 9
    assert (plan.window_days, plan.oot_days) == (14, 2)
    assert plan.as_conf("drift on 2026-03-10: x") == {
        "reason": "drift on 2026-03-10: x",
        "as_of": "2026-03-19",
        "window_days": 14,
        "oot_days": 2,
    }


def test_a_drift_retrain_is_judged_on_drifted_days_and_learns_from_the_others(tmp_path) -> None:
    """The plan's conf, fed to the training window's arithmetic: drifted OOT days, drifted days learnt."""
    import pyarrow as pa

    from include.mlops import lake
    from include.mlops.core.settings import load_settings
    from include.mlops.monitoring.policy import retrain_plan
    from include.mlops.training.window import training_window

    s = load_settings({"MLOPS_HOME": str(tmp_path)})
    day = dt.date(2026, 3, 10)
    policy = DriftPolicy.from_env({}, retrain_labelled_days=5, retrain_oot_days=2, retrain_window_days=14)
    plan = retrain_plan(day, policy)
    for i in range(-20, 12):
        d = day + dt.timedelta(days=i)
        for dataset in ("transactions", "labels"):
            lake.replace_partition(
                lake.partition("lake", dataset, d, s), lake.encode_parquet(pa.table({"x": [1]}))
            )
    window = training_window(plan.as_of, plan.window_days, plan.oot_days, s)
    assert window.oot_days == [day + dt.timedelta(days=3), day + dt.timedelta(days=4)]
    assert window.train_days[-3:] == [day, day + dt.timedelta(days=1), day + dt.timedelta(days=2)]
    assert len(window.train_days) == 14


@pytest.mark.parametrize(("labelled", "oot", "window"), [(2, 2, 14), (3, 0, 14), (5, 2, 2)])
def test_a_drift_retrain_needs_a_drifted_day_to_learn_one_to_judge_and_a_window_that_holds_them(
    labelled: int, oot: int, window: int
) -> None:
    from include.mlops.core.settings import SettingsError

    with pytest.raises(SettingsError, match="MLOPS_DRIFT_RETRAIN"):
        DriftPolicy.from_env(
            {}, retrain_labelled_days=labelled, retrain_oot_days=oot, retrain_window_days=window
        )
