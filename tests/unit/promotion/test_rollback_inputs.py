"""How a rollback is asked for: the ``rollback`` task of ``train_model`` and ``python -m include.mlops
rollback``. The registry side is tested in tests/integration/test_promotion.py; here the rollback
itself is replaced by a recorder.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest

from include.mlops import promotion
from include.mlops.core import settings as settings_module

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The rollbacks asked for (none performed)."""
    seen: list[dict[str, Any]] = []

    def record(version: int, reason: str, settings: Any = None, *, force: bool = False) -> dict:
        seen.append({"version": version, "reason": reason, "force": force})
        return {"outcome": promotion.ROLLED_BACK}

    monkeypatch.setattr(promotion, "rollback", record)
    return seen


@pytest.fixture
def dag(mlops_home: Path) -> Any:
    """The ``train_model`` DAG as its file builds it."""
    settings_module.settings.cache_clear()
    return runpy.run_path(str(ROOT / "dags" / "train_model.py"))["train_model"]()


def rollback_task(dag: Any, **params: Any) -> Any:
    """Run the body of the ``rollback`` task with the DAG's default params updated by ``params``."""
    values = {name: param.value for name, param in dag.params.items()} | params
    return dag.get_task("rollback").python_callable(params=values, run_id="manual__1")


def test_the_dag_offers_a_force_flag_off_by_default(dag: Any) -> None:
    assert dag.params["force_rollback"] is False
    assert dag.params["reason"] == "nightly schedule"


@pytest.mark.parametrize("reason", ["nightly schedule", "", "   "])
def test_a_rollback_without_its_own_reason_fails_the_task(
    dag: Any, calls: list[dict[str, Any]], reason: str
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="needs a `reason` param"):
        rollback_task(dag, rollback_to=3, reason=reason)
    assert calls == []


def test_the_task_passes_the_reason_and_the_force_flag(dag: Any, calls: list[dict[str, Any]]) -> None:
    rollback_task(dag, rollback_to=3, reason="version 4 blocks good customers")
    rollback_task(dag, rollback_to=2, reason="the gate was wrong", force_rollback=True)
    assert calls == [
        {"version": 3, "reason": "version 4 blocks good customers", "force": False},
        {"version": 2, "reason": "the gate was wrong", "force": True},
    ]


def test_a_refused_rollback_fails_the_task_at_once(dag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    def refuse(*args: Any, **kwargs: Any) -> dict:
        raise promotion.PromotionError("version 2 of card_fraud was rejected by the promotion gate")

    monkeypatch.setattr(promotion, "rollback", refuse)
    with pytest.raises(AirflowFailException, match="rejected by the promotion gate"):
        rollback_task(dag, rollback_to=2, reason="the gate was wrong")


def test_the_command_line_has_force(calls: list[dict[str, Any]], capsys: pytest.CaptureFixture) -> None:
    from include.mlops.__main__ import main

    assert main(["rollback", "3", "--reason", "blocks good customers"]) == 0
    assert main(["rollback", "2", "--reason", "the gate was wrong", "--force"]) == 0
    assert [c["force"] for c in calls] == [False, True]
    assert calls[1] == {"version": 2, "reason": "the gate was wrong", "force": True}
    assert promotion.ROLLED_BACK in capsys.readouterr().out
