"""The optional human approval: the DAG's shape per setting, and how a reviewer's answer is read.

The registry side (awaiting, approved, rejected, timed out, the champion moved meanwhile, retries)
is tested in tests/integration/test_promotion.py; under a real scheduler in tests/e2e/test_approval.py.
"""

from __future__ import annotations

import datetime as dt
import runpy
from pathlib import Path
from typing import Any

import pytest

from include.mlops import promotion
from include.mlops.core import settings as settings_module
from include.mlops.core.policies import PromotionPolicy
from include.mlops.core.settings import SettingsError

ROOT = Path(__file__).resolve().parents[3]


def build_dag(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    """The ``train_model`` DAG as its file builds it with ``env``."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings_module.settings.cache_clear()
    return runpy.run_path(str(ROOT / "dags" / "train_model.py"))["train_model"]()


def test_automatic_approval_keeps_the_single_promotion_task(mlops_home: Path, monkeypatch) -> None:
    dag = build_dag(monkeypatch, MLOPS_PROMOTION_APPROVAL="automatic")
    assert {"evaluate_and_promote", "train"} <= set(dag.task_dict)
    assert not {"judge", "review", "conclude_review"} & set(dag.task_dict)
    assert dag.get_task("train").downstream_task_ids == {"evaluate_and_promote"}


def test_required_approval_puts_a_review_between_the_gate_and_the_alias(
    mlops_home: Path, monkeypatch
) -> None:
    from airflow.providers.standard.operators.hitl import HITLOperator

    dag = build_dag(
        monkeypatch, MLOPS_PROMOTION_APPROVAL="required", MLOPS_PROMOTION_APPROVAL_TIMEOUT_HOURS="8"
    )
    assert "evaluate_and_promote" not in dag.task_dict
    assert dag.get_task("train").downstream_task_ids == {"judge"}
    review = dag.get_task("review")
    assert isinstance(review, HITLOperator)
    assert review.options == [promotion.APPROVE, promotion.REJECT]
    assert review.defaults == [promotion.REJECT]  # what a time-out answers
    assert promotion.COMMENT in review.params
    assert review.response_timeout == dt.timedelta(hours=8)
    assert review.downstream_task_ids == {"conclude_review"}
    assert dag.get_task("judge").downstream_task_ids == {"review"}
    assert "judge" in review.body and "judge" in review.subject


def test_the_approval_setting_is_checked() -> None:
    assert not PromotionPolicy.from_env({}).approval_required
    assert PromotionPolicy.from_env({"MLOPS_PROMOTION_APPROVAL": "required"}).approval_required
    with pytest.raises(SettingsError, match="MLOPS_PROMOTION_APPROVAL='sometimes'"):
        PromotionPolicy.from_env({"MLOPS_PROMOTION_APPROVAL": "sometimes"})
    with pytest.raises(SettingsError, match=r"MLOPS_PROMOTION_APPROVAL_TIMEOUT_HOURS=0\.0 must be positive"):
        PromotionPolicy.from_env({"MLOPS_PROMOTION_APPROVAL_TIMEOUT_HOURS": "0"})


WHEN = dt.datetime(2026, 1, 26, 9, 30, tzinfo=dt.UTC)


def test_an_approval_is_read_with_its_reviewer_and_comment() -> None:
    review = promotion.review_of(
        {
            "chosen_options": ["Approve"],
            "params_input": {"comment": "  checked the travel slice "},
            "responded_by_user": {"id": "7", "name": "risk officer"},
            "responded_at": WHEN,
        }
    )
    assert (review.approved, review.timed_out, review.reviewer) == (True, False, "risk officer")
    assert review.comment == "checked the travel slice" and review.at == "2026-01-26T09:30:00+00:00"
    assert (
        review.reason(24) == "approved by risk officer at 2026-01-26T09:30:00+00:00: checked the travel slice"
    )
    assert review.tags()["review_outcome"] == "approved"


def test_a_rejection_and_a_time_out_are_told_apart() -> None:
    rejected = promotion.review_of(
        {
            "chosen_options": ["Reject"],
            "params_input": {},
            "responded_by_user": {"id": "7"},
            "responded_at": WHEN,
        }
    )
    assert (rejected.approved, rejected.timed_out, rejected.outcome) == (False, False, "rejected")
    assert rejected.reason(24).startswith("rejected in review by 7")
    # On a time-out the scheduler answers the default with no user.
    timed_out = promotion.review_of(
        {"chosen_options": ["Reject"], "params_input": {"comment": ""}, "responded_by_user": None,
         "responded_at": WHEN}
    )  # fmt: skip
    assert (timed_out.approved, timed_out.timed_out, timed_out.outcome) == (False, True, "timed_out")
    assert timed_out.reason(0.5) == "no review within 0.5 h: rejected at 2026-01-26T09:30:00+00:00"
    assert timed_out.tags()["reviewed_by"] == "nobody (timed out)"
    # An "Approve" without a user cannot happen; it would not count as an approval.
    assert not promotion.review_of({"chosen_options": ["Approve"], "responded_by_user": None}).approved


def test_the_review_body_shows_the_gate_summary_and_the_run() -> None:
    result = {
        "model": "card_fraud",
        "challenger_version": 4,
        "champion_before": 3,
        "reason": "PR-AUC 0.81 beats champion version 3",
        "summary": "Gate: **promoted**. PR-AUC **0.8100** (champion 0.7900)",
    }
    body = promotion.review_body(result, "http://mlflow.example/#/experiments/1/runs/abc", 24)
    assert "card_fraud version 4** over champion version 3" in body
    assert "Gate: **promoted**" in body and "(http://mlflow.example/#/experiments/1/runs/abc)" in body
    assert "within 24 h it is rejected" in body
    first = promotion.review_body({**result, "champion_before": None, "summary": None}, None, 24)
    assert "(no champion yet)" in first and "Reasons: PR-AUC 0.81" in first


def test_a_recorded_decision_reads_back_as_it_was() -> None:
    decision = promotion.Decision(
        True, promotion.PROMOTED, ("a", "b"), {"pr_auc": 0.8}, None, {"margin": 0.005}, {"failures": []},
        slices=({"slice": "channel=pos", "status": "pass"},), fairness={"audited": False},
        evidence={"bootstrap_draws": {"delta_pr_auc": [0.1]}},
    )  # fmt: skip
    again = promotion.Decision.from_dict(decision.as_dict())
    assert again == decision and again.evidence == {}
