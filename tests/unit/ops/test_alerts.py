"""The alerts' texts: what happened, which day or version, why, what to do, where the report is.

Inputs are what the tasks return and record, made by the stages' own rules (``recorded.py``);
quiet days, reruns and nightly non-events send nothing.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from include.mlops.ops import alerts
from tests.unit.ops.recorded import performance, verdict

DAY = dt.date(2026, 1, 14)


def promotion_result(outcome: str, reason: str, before: int | None = 1) -> dict:
    """What ``evaluate_and_promote_run`` returns (its documented keys)."""
    return {
        "model": "card_fraud",
        "challenger_version": 2,
        "champion_before": before,
        "champion_after": 2 if outcome == "promoted" else before,
        "outcome": outcome,
        "promoted": outcome == "promoted",
        "reason": reason,
        "challenger_metrics": {"pr_auc": 0.795, "recall_at_1pct_fpr": 0.61},
        "champion_metrics": {"pr_auc": 0.769, "recall_at_1pct_fpr": 0.58} if before else {},
    }


def test_every_alert_says_what_why_what_to_do_and_where_in_one_text() -> None:
    alert = alerts.task_failed(
        "score_transactions",
        "score",
        "2026-01-14",
        3,
        RuntimeError("MLflow answered 503\nTraceback ..."),
        {"Task log": "http://airflow/dags/score_transactions/runs/r/tasks/score?try_number=3"},
    )
    text = alert.text
    assert alert.subject == "[mlops critical] score_transactions.score failed for 2026-01-14"
    assert (
        "What happened: task score of score_transactions failed for 2026-01-14 after its last retry (try 3)"
        in text
    )
    assert "Why: RuntimeError: MLflow answered 503 ..." in text
    assert "What to do: read the task log" in text and "clear the task" in text
    assert "Task log: http://airflow/dags/score_transactions/runs/r/tasks/score?try_number=3" in text
    assert json.loads(json.dumps(alert.as_dict()))["text"] == text


def test_a_quarantine_names_each_failed_expectation_and_the_fix() -> None:
    rejection = {
        "reason": "invalid",
        "landing_url": "/landing/transactions/dt=2026-01-14",
        "lake": "Nothing of 2026-01-14 is in the lake.",
        "failures": [
            {"expectation": "expect_column_values_to_be_between", "column": "amount", "element_count": 2000},
            {
                "expectation": "expect_column_values_to_not_be_null",
                "column": "customer_id",
                "element_count": 2000,
            },
        ],
        "message": "transactions drop of 2026-01-14 rejected: 2 of 12 expectations failed.\n"
        "  - amount is between 0 and 50000: 12 of 2000 rows fail, e.g. -5.0\n"
        "  - customer_id is not null: 3 of 2000 rows fail",
    }
    alert = alerts.drop_quarantined(
        "transactions", "2026-01-14", rejection, links={"Quarantine report": "http://x"}
    )
    assert alert.title == "transactions drop of 2026-01-14 quarantined: 2 failed expectations"
    assert (
        "amount is between 0 and 50000: 12 of 2000 rows fail, e.g. -5.0; customer_id is not null" in alert.why
    )
    assert "Nothing of 2026-01-14 is in the lake." in alert.what
    assert "fix the drop in /landing/transactions/dt=2026-01-14" in alert.todo
    assert "clear validate_and_land of ingest_transactions for 2026-01-14" in alert.todo
    assert alert.facts["failed_expectations"] == [
        "expect_column_values_to_be_between(amount)",
        "expect_column_values_to_not_be_null(customer_id)",
    ]


def test_a_drift_retrain_alert_carries_the_reason_the_day_and_the_run() -> None:
    result = verdict(DAY, drifted=4, prediction=0.25)
    alert = alerts.drift_checked(result, {"Drift report": "http://airflow/mlops/reports/drift/x/drift.html"})
    assert alert is not None and alert.event == alerts.DRIFT_RETRAIN
    assert alert.title == "drift on 2026-01-14: retrain requested (features, prediction)"
    assert alert.why == result["reason"] and "4/10 key features drifted" in alert.why
    assert "train_model was asked to run as drift__2026-01-14" in alert.what
    assert alert.day == "2026-01-14" and alert.version == 1
    assert "Drift report: http://airflow/mlops/reports/drift/x/drift.html" in alert.text


def test_drift_held_by_the_cooldown_is_reported_once_as_information() -> None:
    result = verdict(DAY, drifted=5, last_trigger_day=DAY - dt.timedelta(days=2))
    alert = alerts.drift_checked(result)
    assert alert is not None and alert.event == alerts.DRIFT_DETECTED and alert.severity == alerts.INFO
    assert alert.title == "drift on 2026-01-14: no retrain (cooldown)"
    assert "cooldown" in alert.why


@pytest.mark.parametrize(
    ("result", "why"),
    [
        (verdict(DAY, drifted=1, perf=performance(0.55, 0.5)), "a quiet day"),
        (verdict(DAY, drifted=5, last_trigger_day=DAY), "a rerun of the requesting day"),
        (
            verdict(DAY, drifted=5, last_trigger_day=DAY + dt.timedelta(days=3)),
            "a backfill of an earlier day",
        ),
        ({**verdict(DAY, drifted=5), "reissue": True}, "a reissued request"),
    ],
)
def test_no_drift_message_on_a_quiet_day_a_rerun_or_a_reissue(result: dict, why: str) -> None:
    assert alerts.drift_checked(result) is None, why


def test_a_promotion_gives_both_models_metrics_and_how_to_undo_it() -> None:
    alert = alerts.promotion_decided(promotion_result("promoted", "PR-AUC 0.7950 beats champion version 1"))
    assert alert is not None and alert.event == alerts.PROMOTED and alert.version == 2
    assert alert.title == "model version 2 promoted to champion in place of version 1"
    assert "PR-AUC 0.795, recall at 1% FPR 0.610; champion 1: PR-AUC 0.769, recall 0.580" in alert.why
    assert "rollback_to=1" in alert.todo


def test_the_first_champion_has_nothing_to_roll_back_to() -> None:
    alert = alerts.promotion_decided(promotion_result("promoted", "passes the floors", before=None))
    assert alert.title == "model version 2 promoted to champion (the first champion)"
    assert "no earlier champion" in alert.todo


def test_a_rejection_warns_and_says_the_champion_keeps_serving() -> None:
    alert = alerts.promotion_decided(promotion_result("rejected", "PR-AUC 0.2100 is below the floor 0.3"))
    assert alert.event == alerts.REJECTED and alert.severity == alerts.WARNING
    assert alert.title == "model version 2 rejected: champion 1 keeps serving"
    assert alert.why.startswith("PR-AUC 0.2100 is below the floor 0.3")


def test_a_verdict_awaiting_review_says_where_to_answer_and_a_reviewer_rejection_warns() -> None:
    awaiting = alerts.promotion_decided(
        promotion_result("awaiting_approval", "PR-AUC 0.7950 beats champion 1")
    )
    assert awaiting.event == alerts.AWAITING_REVIEW
    assert awaiting.title == "model version 2 passed the gate and awaits a reviewer's approval"
    assert "Required actions" in awaiting.todo
    refused = alerts.promotion_decided(promotion_result("rejected_in_review", "rejected by the reviewer"))
    assert refused.event == alerts.REJECTED and "rejected by a reviewer" in refused.what


def test_a_kept_champion_alerts_for_a_drift_retrain_but_not_for_the_nightly_run() -> None:
    result = promotion_result("kept_champion", "the gain is within the margin")
    assert alerts.promotion_decided(result, "nightly schedule") is None
    alert = alerts.promotion_decided(result, "drift on 2026-01-14: 4/10 key features drifted")
    assert alert is not None and alert.event == alerts.KEPT
    assert "trained for: drift on 2026-01-14" in alert.what


def test_a_rerun_of_a_recorded_promotion_is_quiet() -> None:
    assert (
        alerts.promotion_decided(promotion_result("already_champion", "version 2 is already the champion"))
        is None
    )


def test_a_rollback_names_both_versions_and_the_reason() -> None:
    result = {
        "model": "m",
        "champion_before": 3,
        "champion_after": 2,
        "outcome": "rolled_back",
        "reason": "v3 flags too many",
    }
    alert = alerts.rolled_back(result)
    assert alert.title == "champion rolled back to version 2 (from 3)" and alert.why == "v3 flags too many"
    assert alerts.rolled_back({**result, "outcome": "already_champion"}) is None


def test_a_late_drop_says_the_sensor_keeps_waiting() -> None:
    alert = alerts.drop_late(
        "labels", "2026-01-14", "2026-01-15 06:00 UTC", "/landing/labels/dt=2026-01-14/_SUCCESS"
    )
    assert alert.title == "labels drop of 2026-01-14 has not landed by 2026-01-15 06:00 UTC"
    assert "/landing/labels/dt=2026-01-14/_SUCCESS is not there yet" in alert.what
    assert "sensor keeps waiting" in alert.what and "ask the producer" in alert.todo
