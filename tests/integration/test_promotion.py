"""Promotion on the registry: alias moves, records, the lock and rollback, embedded and on the cluster
profile. The policy's pure rules are unit-tested in tests/unit/promotion.

Models of known quality are built once per session from the shared simulated lake (see
test_training.py): ``good`` (every feature), ``weak`` (the five features of the payment alone)
and ``shuffled`` (every feature, labels permuted: no signal). Each test registers the ones it
needs in its own MLflow.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mlflow.exceptions import MlflowException

from include.mlops import registry
from include.mlops.core import settings as settings_module
from include.mlops.core.schema import LABEL
from include.mlops.core.settings import load_settings
from tests.conftest import free_port, fresh_databases
from tests.integration.test_registry import lock_held_elsewhere
from tests.integration.test_training import (
    AS_OF,
    OOT_DAYS,
    WINDOW_DAYS,
    fraud_lake,
    lake_environ,
    lake_settings,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterator

    import numpy as np

    from include.mlops.core.settings import Settings

pytestmark = pytest.mark.integration

__all__ = ["fraud_lake", "lake_settings"]  # fixtures shared with test_training.py

FLOORS = {"MLOPS_PROMOTION_MIN_PR_AUC": "0.15", "MLOPS_PROMOTION_MIN_RECALL_AT_1PCT_FPR": "0.15"}


@dataclass
class Zoo:
    good: Any
    weak: Any
    shuffled: Any
    good_columns: list[str]
    weak_columns: list[str]
    oot_start: dt.date
    oot_end: dt.date


@pytest.fixture(scope="session")
def zoo(fraud_lake: Path) -> Zoo:
    """Three boosters of known quality, fitted on the shared lake's training window."""
    import numpy as np

    from include.mlops import features, training

    s = load_settings({"MLOPS_HOME": str(fraud_lake / "home"), **lake_environ(fraud_lake)})
    window = training.training_window(AS_OF, WINDOW_DAYS, OOT_DAYS, s)
    data = training.read_training_days(window.train_days, window.latest_labels, 20, 7, s)
    frame = features.with_features(data.frame, s)
    val = (frame["event_timestamp"] >= features.day_start(window.validation_start)).to_numpy()
    y = frame[LABEL].to_numpy()
    w = frame[training.WEIGHT].to_numpy()
    good_columns = list(features.FEATURE_COLUMNS)
    weak_columns = [name for name, _ in features.TRANSACTION_FEATURES]

    def fit(columns: list[str], labels: np.ndarray) -> Any:
        x = frame[columns].astype("float64")
        booster, _ = training.fit_xgboost(
            x[~val], labels[~val], w[~val], x[val], labels[val], w[val], "cpu", 7, rounds=300, threads=1
        )
        return booster

    shuffled = np.random.default_rng(1).permutation(y)
    return Zoo(
        good=fit(good_columns, y),
        weak=fit(weak_columns, y),
        shuffled=fit(good_columns, shuffled),
        good_columns=good_columns,
        weak_columns=weak_columns,
        oot_start=window.oot_start,
        oot_end=window.oot_end,
    )


def register(zoo: Zoo, which: str, airflow_run_id: str, s: Settings) -> int:
    """Log one of the zoo's boosters as training does and register it with the OOT window tags."""
    import mlflow
    import mlflow.xgboost
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    booster = getattr(zoo, which)
    columns = zoo.weak_columns if which == "weak" else zoo.good_columns
    client = registry.configure_mlflow(s)
    experiment = registry.ensure_experiment(client, registry.experiment_name("training", s), s)
    with mlflow.start_run(experiment_id=experiment, tags={"airflow_run_id": airflow_run_id}):
        info = mlflow.xgboost.log_model(
            booster,
            name=registry.MODEL_ARTIFACT,
            signature=ModelSignature(inputs=Schema([ColSpec(DataType.double, c) for c in columns])),
            pip_requirements=registry.pip_requirements(),
        )
    tags = {"airflow_run_id": airflow_run_id, "oot_start": str(zoo.oot_start), "oot_end": str(zoo.oot_end)}
    return int(mlflow.register_model(info.model_uri, s.model_name, tags=tags).version)


@pytest.fixture
def policy_env(lake_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared lake, floors the weak model passes, and the default margin.

    The zoo's out-of-time days are small: a region's false-positive rate is judged from 1000 good
    payments, as the gate's own tests judge it (these tests are about the registry's records)."""
    for name, value in FLOORS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLOPS_PROMOTION_MARGIN", "0.005")
    monkeypatch.setenv("MLOPS_PROMOTION_FAIRNESS_MIN_NEGATIVES", "1000")
    return lake_settings


# --------------------------------------------------------------------------------------------------
# The registry: alias moves, records, rollback


def test_promotion_and_rollback_on_the_registry(policy_env: Settings, zoo: Zoo) -> None:
    from include.mlops import promotion

    s = policy_env
    client = registry.configure_mlflow(s)
    name = s.model_name

    # A model without signal fails the floors: no champion.
    register(zoo, "shuffled", "run-shuffled", s)
    result = promotion.evaluate_and_promote_run("run-shuffled")
    assert result["outcome"] == "rejected" and not result["promoted"], result
    assert registry.champion_version() is None

    # The first model that passes the floors is promoted.
    weak = register(zoo, "weak", "run-weak", s)
    result = promotion.evaluate_and_promote_run("run-weak")
    assert result["promoted"] and result["champion_after"] == weak, result
    assert registry.champion_version() == weak

    # A better one is promoted; the one it replaces stays reachable.
    good = register(zoo, "good", "run-good", s)
    result = promotion.evaluate_and_promote_run("run-good")
    assert result["promoted"], result
    assert (result["champion_before"], result["champion_after"]) == (weak, good)
    assert result["challenger_metrics"]["pr_auc"] > result["champion_metrics"]["pr_auc"] + 0.1
    assert int(client.get_model_version_by_alias(name, "previous_champion").version) == weak

    # The same model again is a tie: the champion stays.
    same = register(zoo, "good", "run-same", s)
    result = promotion.evaluate_and_promote_run("run-same")
    assert not result["promoted"] and result["outcome"] == "kept_champion"
    assert "tie" in result["reason"]

    # A worse one is not promoted.
    worse = register(zoo, "weak", "run-worse", s)
    result = promotion.evaluate_and_promote_run("run-worse")
    assert not result["promoted"] and "worse" in result["reason"]
    assert registry.champion_version() == good

    _check_decisions_recorded(s, zoo, weak=weak, good=good, worse=worse)
    _check_rerun_of_the_champion(s, good)
    _check_rollback(s, weak=weak, good=good)
    assert same  # registered, never champion


def _check_decisions_recorded(s: Settings, zoo: Zoo, weak: int, good: int, worse: int) -> None:
    """Decisions are recorded on the version, the model and the challenger's run."""
    import mlflow

    client, name = registry.configure_mlflow(s), s.model_name
    tags = client.get_model_version(name, str(worse)).tags
    assert tags["decision"] == "kept_champion" and tags["compared_with"] == str(good)
    assert float(tags["challenger_pr_auc"]) < float(tags["champion_pr_auc"])
    last = json.loads(client.get_registered_model(name).tags["last_decision"])
    assert (last["version"], last["outcome"]) == (worse, "kept_champion")
    assert last["champion_metrics"]["pr_auc"] > last["challenger_metrics"]["pr_auc"]
    promoted = json.loads(client.get_registered_model(name).tags["last_promotion"])
    assert (promoted["version"], promoted["champion_before"]) == (good, weak)
    run_id = client.get_model_version(name, str(good)).run_id
    (report,) = client.list_artifacts(run_id, "promotion")
    body = mlflow.artifacts.load_dict(f"runs:/{run_id}/{report.path}")
    assert body["decision"]["outcome"] == "promoted" and body["champion_version_before"] == weak
    assert body["oot_start"] == str(zoo.oot_start) and body["positives"] > 20
    assert body["airflow_run_id"] == "run-good" and body["policy"]["margin"] == 0.005


def _check_rerun_of_the_champion(s: Settings, good: int) -> None:
    """Rerunning the task that promoted the champion reports it and keeps the record that promoted it."""
    from include.mlops import promotion

    client, name = registry.configure_mlflow(s), s.model_name
    last_before = client.get_registered_model(name).tags["last_decision"]
    result = promotion.evaluate_and_promote_run("run-good")
    assert (result["outcome"], result["promoted"]) == ("already_champion", False)
    assert result["champion_before"] == result["champion_after"] == good
    assert client.get_model_version(name, str(good)).tags["decision"] == "promoted"
    assert client.get_registered_model(name).tags["last_decision"] == last_before
    run_id = client.get_model_version(name, str(good)).run_id
    assert len(client.list_artifacts(run_id, "promotion")) == 1


def _check_rollback(s: Settings, weak: int, good: int) -> None:
    """Rolling back restores the earlier version and says why; it needs a reason and a real version."""
    from include.mlops import promotion

    client, name = registry.configure_mlflow(s), s.model_name
    rolled = promotion.rollback(weak, reason="version 3 blocks good customers")
    assert (rolled["champion_before"], rolled["champion_after"]) == (good, weak)
    assert rolled["outcome"] == "rolled_back"
    assert registry.champion_version() == weak
    assert int(client.get_model_version_by_alias(name, "previous_champion").version) == good
    assert (
        client.get_model_version(name, str(weak)).tags["rollback_reason"] == "version 3 blocks good customers"
    )
    assert "blocks good customers" in client.get_model_version(name, str(good)).tags["demoted_by_rollback"]
    last = json.loads(client.get_registered_model(name).tags["last_decision"])
    assert (last["action"], last["champion_after"]) == ("rollback", weak)
    with pytest.raises(promotion.PromotionError, match="no version 99"):
        promotion.rollback(99, reason="typo")
    with pytest.raises(promotion.PromotionError, match="a rollback needs a reason"):
        promotion.rollback(good, reason="  ")
    assert promotion.rollback(weak, reason="again")["outcome"] == "already_champion"


# --------------------------------------------------------------------------------------------------
# Retries: a failure at any MLflow call of the commit-and-record sequence, then the task again

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:?\d{2}:?\d{2}(\+00:00|Z0000)")


class Faults:
    """The MlflowClient calls made while the model's lock is held, counted; the k-th raises once.

    Only the outermost calls count (a client method calling another is one call). Odd points raise
    an ``MlflowException``, even ones a ``ConnectionError``.
    """

    def __init__(self) -> None:
        self.inside = False
        self.depth = 0
        self.fail_at = 0
        self.calls: list[str] = []

    def hook(self, name: str, original: Any) -> Any:
        @functools.wraps(original)
        def hooked(*args: Any, **kwargs: Any) -> Any:
            if not self.inside or self.depth:
                return original(*args, **kwargs)
            self.depth += 1
            try:
                self.calls.append(name)
                if len(self.calls) == self.fail_at:
                    self._raise(name)
                return original(*args, **kwargs)
            finally:
                self.depth -= 1

        return hooked

    def _raise(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        message = f"injected failure at call {self.fail_at} ({name})"
        raise MlflowException(message) if self.fail_at % 2 else ConnectionError(message)

    def run(self, operation: Any, fail_at: int = 0) -> Any:
        """``operation()`` failing at its ``fail_at``-th call under the lock (0: never)."""
        self.calls, self.fail_at = [], fail_at
        try:
            return operation()
        finally:
            self.fail_at = 0


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    """Every public MlflowClient method hooked, counting while the model's lock is held."""
    from mlflow import MlflowClient

    f = Faults()
    for name, member in list(vars(MlflowClient).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            monkeypatch.setattr(MlflowClient, name, f.hook(name, member))
    model_lock = registry.model_lock

    @contextlib.contextmanager
    def counted_lock(*args: Any, **kwargs: Any) -> Iterator[str]:
        with model_lock(*args, **kwargs) as held:
            f.inside = True
            try:
                yield held
            finally:
                f.inside = False

    monkeypatch.setattr(registry, "model_lock", counted_lock)
    return f


class Snapshot:
    """The MLflow store of ``s`` (SQLite database and artifacts) saved now, restored in place."""

    def __init__(self, s: Settings, folder: Path) -> None:
        self.db = Path(s.mlflow_tracking_uri.removeprefix("sqlite:///"))
        self.artifacts = Path(s.mlflow_artifact_url)
        self.saved_db, self.saved_artifacts = folder / "mlflow.db", folder / "artifacts"
        folder.mkdir(parents=True)
        self._copy(self.db, self.saved_db)
        shutil.copytree(self.artifacts, self.saved_artifacts)

    @staticmethod
    def _copy(source: Path, target: Path) -> None:
        with (
            contextlib.closing(sqlite3.connect(source)) as src,
            contextlib.closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)

    def restore(self) -> None:
        """The store as saved, at the same paths (the open connections see it)."""
        self._copy(self.saved_db, self.db)
        shutil.rmtree(self.artifacts)
        shutil.copytree(self.saved_artifacts, self.artifacts)


def registry_state(s: Settings) -> dict[str, Any]:
    """Aliases, the model's and every version's tags, and the promotion reports, timestamps masked."""
    import mlflow

    client = registry.configure_mlflow(s)
    model = client.get_registered_model(s.model_name)
    versions = client.search_model_versions(f"name = '{s.model_name}'")
    reports = {
        f"{v.version}/{a.path}": mlflow.artifacts.load_dict(f"runs:/{v.run_id}/{a.path}")
        for v in versions
        for a in client.list_artifacts(v.run_id, "promotion")
    }
    state = {
        "aliases": dict(model.aliases),
        "model_tags": dict(model.tags),
        "version_tags": {v.version: dict(v.tags) for v in versions},
        "reports": reports,
    }
    return json.loads(_TIME.sub("<time>", json.dumps(state, sort_keys=True, default=str)))


def masked(result: dict[str, Any]) -> dict[str, Any]:
    """A task's result with its timestamps masked and its timings left out."""
    result = {k: v for k, v in result.items() if k != "seconds"}
    return json.loads(_TIME.sub("<time>", json.dumps(result, sort_keys=True, default=str)))


def kill_everywhere(faults: Faults, operation: Any, snapshot: Snapshot, s: Settings) -> tuple[Any, int]:
    """Run ``operation`` once uninterrupted, then, from the snapshot each time, failing at each of its
    calls under the lock and again without failure: the retry must end in the same aliases, records
    and result. Returns the uninterrupted result and the number of kill points tried."""
    snapshot.restore()
    expected = faults.run(operation)
    calls, state = list(faults.calls), registry_state(s)
    assert calls, "the operation made no MLflow call under the lock"
    for k in range(1, len(calls) + 1):
        snapshot.restore()
        with pytest.raises((MlflowException, ConnectionError), match="injected failure"):
            faults.run(operation, fail_at=k)
        assert faults.calls == calls[:k], f"the failing run diverged before point {k}"
        retried = faults.run(operation)
        where = f"failure at call {k} of {len(calls)} ({calls[k - 1]})"
        assert masked(retried) == masked(expected), where
        assert registry_state(s) == state, where
    return expected, len(calls)


def cached_evaluations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pair of versions evaluated and judged once (the OOT rows, the scores and the gate's
    decision are the same every time), a lighter bootstrap and no plots (tested in
    test_promotion_gate.py): the runs of these tests differ in their MLflow calls only."""
    from include.mlops.promotion import evaluation, gate, promote

    monkeypatch.setenv("MLOPS_PROMOTION_BOOTSTRAP", "100")
    monkeypatch.setenv("MLOPS_PROMOTION_SLICE_BOOTSTRAP", "20")
    done: dict[tuple[int, int | None], Any] = {}
    judged: dict[tuple[int | None, int | None], Any] = {}

    def evaluate_once(challenger: int, champion: int | None, *args: Any, **kwargs: Any) -> Any:
        if (challenger, champion) not in done:
            done[challenger, champion] = evaluation.evaluate(challenger, champion, *args, **kwargs)
        return done[challenger, champion]

    def judge_once(y: Any, challenger: Any, champion: Any, *args: Any, **kwargs: Any) -> Any:
        key = (challenger.version, champion.version if champion else None)
        if key not in judged:
            judged[key] = gate.judge(y, challenger, champion, *args, **kwargs)
        return judged[key]

    monkeypatch.setattr(promote, "evaluate", evaluate_once)
    monkeypatch.setattr(promote, "judge", judge_once)
    monkeypatch.setattr(promote, "log_gate_artifacts", lambda *args, **kwargs: None)


KILL_POINTS: dict[str, int] = {}
"""Kill points tried per operation (printed by the tests with ``-s``)."""


def test_a_promotion_retried_after_a_failure_at_any_call_ends_as_an_uninterrupted_one(
    policy_env: Settings, zoo: Zoo, faults: Faults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import promotion

    s = policy_env
    cached_evaluations(monkeypatch)
    weak = register(zoo, "weak", "run-weak", s)
    promotion.evaluate_and_promote_run("run-weak")
    good = register(zoo, "good", "run-good", s)

    # A promotion that replaces a champion: decision, both aliases, model tags, report.
    before = Snapshot(s, tmp_path / "before-good")
    promote_good = functools.partial(promotion.evaluate_and_promote_run, "run-good")
    result, points = kill_everywhere(faults, promote_good, before, s)
    KILL_POINTS["promotion (replaces a champion)"] = points
    assert (result["outcome"], result["champion_before"], result["champion_after"]) == (
        "promoted",
        weak,
        good,
    )
    client = registry.configure_mlflow(s)
    assert int(client.get_model_version_by_alias(s.model_name, registry.PREVIOUS_CHAMPION).version) == weak
    tags = client.get_model_version(s.model_name, str(good)).tags
    assert (tags["decision"], tags["compared_with"], tags["decision_status"]) == (
        "promoted",
        str(weak),
        "recorded",
    )
    # Once recorded in full, a rerun changes nothing.
    state = registry_state(s)
    assert promote_good()["outcome"] == "already_champion"
    assert registry_state(s) == state

    # A challenger that loses: no alias moves, the decision and report recorded once.
    worse = register(zoo, "weak", "run-worse", s)
    kept = Snapshot(s, tmp_path / "before-worse")
    keep_worse = functools.partial(promotion.evaluate_and_promote_run, "run-worse")
    result, points = kill_everywhere(faults, keep_worse, kept, s)
    KILL_POINTS["promotion (champion kept)"] = points
    assert (result["outcome"], result["champion_after"]) == ("kept_champion", good)
    assert (
        len(client.list_artifacts(client.get_model_version(s.model_name, str(worse)).run_id, "promotion"))
        == 1
    )
    print(f"kill points tried: {KILL_POINTS}")


def test_a_rollback_retried_after_a_failure_at_any_call_ends_as_an_uninterrupted_one(
    policy_env: Settings, zoo: Zoo, faults: Faults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import promotion

    s = policy_env
    cached_evaluations(monkeypatch)
    weak = register(zoo, "weak", "run-weak", s)
    good = register(zoo, "good", "run-good", s)
    for run_id in ("run-weak", "run-good"):
        promotion.evaluate_and_promote_run(run_id)
    assert registry.champion_version() == good
    snapshot = Snapshot(s, tmp_path / "before-rollback")
    reason = "version 3 blocks good customers"
    back_to_weak = functools.partial(promotion.rollback, weak, reason=reason)
    result, points = kill_everywhere(faults, back_to_weak, snapshot, s)
    KILL_POINTS["rollback"] = points
    assert (result["outcome"], result["champion_before"], result["champion_after"]) == (
        "rolled_back",
        good,
        weak,
    )

    _check_retry_after_the_alias_moved(s, faults, snapshot, back_to_weak, weak=weak, good=good)
    print(f"kill points tried: {KILL_POINTS}")


def _check_retry_after_the_alias_moved(
    s: Settings, faults: Faults, snapshot: Snapshot, back: Any, weak: int, good: int
) -> None:
    """A retry after the first attempt moved the alias keeps where it rolled back from."""
    client, name = registry.configure_mlflow(s), s.model_name
    snapshot.restore()
    faults.run(back)
    moves = [i for i, call in enumerate(faults.calls, 1) if call == "set_registered_model_alias"]
    snapshot.restore()
    with pytest.raises((MlflowException, ConnectionError), match="injected failure"):
        faults.run(back, fail_at=moves[-1] + 1)  # the champion moved, nothing recorded after it
    assert registry.champion_version() == weak
    retried = back()
    assert (retried["outcome"], retried["champion_before"]) == ("rolled_back", good)
    tags = client.get_model_version(name, str(weak)).tags
    assert tags["rolled_back_from"] == str(good) and tags["decision_status"] == "recorded"
    assert "blocks good customers" in client.get_model_version(name, str(good)).tags["demoted_by_rollback"]
    last = json.loads(client.get_registered_model(name).tags["last_decision"])
    assert (last["outcome"], last["champion_before"], last["champion_after"]) == ("rolled_back", good, weak)
    assert int(client.get_model_version_by_alias(name, registry.PREVIOUS_CHAMPION).version) == good
    # A rerun of the finished rollback changes nothing.
    state = registry_state(s)
    assert back()["outcome"] == "already_champion"
    assert registry_state(s) == state


def _answer(option: str, comment: str = "", user: str | None = "risk officer") -> dict[str, Any]:
    """The result of the ``review`` task as the HITL operator returns it (no user: timed out)."""
    import datetime as dt

    return {
        "chosen_options": [option],
        "params_input": {"comment": comment},
        "responded_by_user": {"id": "u1", "name": user} if user else None,
        "responded_at": dt.datetime(2026, 1, 26, 9, 30, tzinfo=dt.UTC),
    }


def test_a_review_is_asked_before_the_alias_moves_and_its_answer_is_recorded(
    policy_env: Settings, zoo: Zoo, faults: Faults, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import promotion

    s = policy_env
    cached_evaluations(monkeypatch)
    client, name = registry.configure_mlflow(s), s.model_name
    weak = register(zoo, "weak", "run-weak", s)
    promotion.evaluate_and_promote_run("run-weak")
    good = register(zoo, "good", "run-good", s)

    asked = promotion.evaluate_and_promote_run("run-good", review=True)
    assert (asked["outcome"], asked["awaiting_review"], asked["promoted"]) == (
        "awaiting_approval",
        True,
        False,
    )
    assert registry.champion_version() == weak and asked["champion_after"] == weak
    tags = client.get_model_version(name, str(good)).tags
    assert (tags["decision"], tags["decision_status"], tags["compared_with"]) == (
        "awaiting_approval", "pending", str(weak),
    )  # fmt: skip
    # A retried judge asks the same question (same decision time, one report).
    promotion.evaluate_and_promote_run("run-good", review=True)
    assert client.get_model_version(name, str(good)).tags["decided_at"] == tags["decided_at"]
    assert len(client.list_artifacts(asked["run_id"], "promotion")) == 1
    body = promotion.review_body(asked, "http://mlflow/run", 24)
    assert f"version {good}" in body and "http://mlflow/run" in body and "Approve" in body

    waiting = Snapshot(s, tmp_path / "awaiting-review")
    approve = functools.partial(
        promotion.conclude_review, "run-good", _answer("Approve", "checked the slices and the regions")
    )
    approved, points = kill_everywhere(faults, approve, waiting, s)
    KILL_POINTS["review (approved)"] = points
    assert (approved["outcome"], approved["champion_before"], approved["champion_after"]) == (
        "promoted", weak, good,
    )  # fmt: skip
    assert "approved by risk officer" in approved["reason"] and approved["review"]["outcome"] == "approved"
    tags = client.get_model_version(name, str(good)).tags
    assert (tags["review_outcome"], tags["reviewed_by"], tags["decision_status"]) == (
        "approved", "risk officer", "recorded",
    )  # fmt: skip
    assert tags["review_comment"] == "checked the slices and the regions"
    state = registry_state(s)
    assert promotion.conclude_review("run-good", _answer("Reject"))["outcome"] == "promoted"
    assert registry_state(s) == state  # a concluded review is not answered twice

    _check_rejections(s, zoo, waiting, weak=weak, good=good)
    print(f"kill points tried: {KILL_POINTS}")


def _check_rejections(s: Settings, zoo: Zoo, waiting: Snapshot, weak: int, good: int) -> None:
    """Rejected, timed out, or answered after the champion moved: the alias stays, and says why."""
    from include.mlops import promotion

    client, name = registry.configure_mlflow(s), s.model_name
    waiting.restore()
    rejected = promotion.conclude_review("run-good", _answer("Reject", "fraud ops are not ready"))
    assert (rejected["outcome"], rejected["champion_after"]) == ("rejected_in_review", weak)
    assert rejected["reason"].startswith("rejected in review by risk officer")
    assert registry.champion_version() == weak
    with pytest.raises(promotion.PromotionError, match=r"rejected by the promotion gate \(its reviewer"):
        promotion.rollback(good, reason="serve it anyway")

    waiting.restore()
    timed_out = promotion.conclude_review("run-good", _answer("Reject", user=None))
    assert timed_out["outcome"] == "rejected_in_review" and "no review within 24 h" in timed_out["reason"]
    assert client.get_model_version(name, str(good)).tags["review_outcome"] == "timed_out"

    waiting.restore()
    register(zoo, "good", "run-other", s)
    other = promotion.evaluate_and_promote_run("run-other", review=False)
    assert other["promoted"]
    late = promotion.conclude_review("run-good", _answer("Approve", "looks fine"))
    assert late["outcome"] == "kept_champion" and "the champion moved from version" in late["reason"]
    assert registry.champion_version() == other["challenger_version"]
    with pytest.raises(promotion.PromotionError, match="awaits no review"):
        promotion.conclude_review("run-other", _answer("Approve"))


def test_a_version_the_gate_rejected_is_served_again_only_with_force(
    policy_env: Settings, zoo: Zoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import promotion

    s = policy_env
    cached_evaluations(monkeypatch)
    client, name = registry.configure_mlflow(s), s.model_name
    shuffled = register(zoo, "shuffled", "run-shuffled", s)
    good = register(zoo, "good", "run-good", s)
    for run_id in ("run-shuffled", "run-good"):
        promotion.evaluate_and_promote_run(run_id)
    assert client.get_model_version(name, str(shuffled)).tags["decision"] == "rejected"

    state = registry_state(s)
    with pytest.raises(promotion.PromotionError, match="rejected by the promotion gate"):
        promotion.rollback(shuffled, reason="try the shuffled one")
    with pytest.raises(promotion.PromotionError, match="a rollback needs a reason"):
        promotion.rollback(shuffled, reason=" ", force=True)
    assert registry_state(s) == state  # refused before anything moved or was recorded

    forced = promotion.rollback(shuffled, reason="the others are worse tonight", force=True)
    assert (forced["outcome"], forced["champion_before"]) == ("rolled_back", good)
    tags = client.get_model_version(name, str(shuffled)).tags
    assert (tags["decision"], tags["gate_decision"], tags["rollback_forced"]) == (
        "rollback",
        "rejected",
        "True",
    )
    assert json.loads(client.get_registered_model(name).tags["last_decision"])["forced"] is True
    # The gate's verdict outlives the rollback: going back to it again needs force again.
    promotion.rollback(good, reason="back to a sound one")
    with pytest.raises(promotion.PromotionError, match="rejected by the promotion gate"):
        promotion.rollback(shuffled, reason="once more")
    assert registry.champion_version() == good


def test_concurrent_promotions_cannot_both_win(
    policy_env: Settings, zoo: Zoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import promotion, training
    from include.mlops.promotion import evaluation, promote

    s = policy_env
    first = register(zoo, "good", "race-a", s)
    second = register(zoo, "good", "race-b", s)
    # Feast's DuckDB connection is not shared between threads (Airflow runs tasks as processes):
    # the OOT rows are built once here, and the threads race on the registry and the lock only.
    # The evaluation looks ``oot_frame`` up on the training package when it runs.
    oot = training.oot_frame(zoo.oot_start, zoo.oot_end)
    monkeypatch.setattr(training, "oot_frame", lambda *args, **kwargs: (oot[0].copy(), oot[1]))

    # Both evaluate while there is no champion, then race for the lock: without the lock and the
    # re-read of the champion inside it, both would be promoted.
    barrier = threading.Barrier(2, timeout=120)
    waited: list[int] = []

    def evaluate_then_wait(*args: Any, **kwargs: Any) -> Any:
        result = evaluation.evaluate(*args, **kwargs)
        if kwargs.get("frame") is None:
            waited.append(barrier.wait())
        return result

    # ``evaluate_and_promote_run`` calls the ``evaluate`` of its own module.
    monkeypatch.setattr(promote, "evaluate", evaluate_then_wait)
    results: dict[str, Any] = {}

    def run(run_id: str) -> None:
        try:
            results[run_id] = promotion.evaluate_and_promote_run(run_id)
        except Exception as error:  # reported below
            results[run_id] = error

    threads = [threading.Thread(target=run, args=(r,)) for r in ("race-a", "race-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(isinstance(r, dict) for r in results.values()), results
    assert sorted(waited) == [0, 1]  # both had evaluated against no champion before either decided
    winners = [r for r in results.values() if r["promoted"]]
    assert len(winners) == 1, results
    (loser,) = [r for r in results.values() if not r["promoted"]]
    winner = winners[0]["challenger_version"]
    assert winner in (first, second)
    assert registry.champion_version() == winner
    # The loser was judged against the winner, inside the lock: a tie.
    assert loser["champion_before"] == winner and loser["outcome"] == "kept_champion"


def test_promotion_lock_waits_the_policy_lock_timeout(
    mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import promotion

    with lock_held_elsewhere(dict(os.environ)) as held:
        monkeypatch.setenv("MLOPS_PROMOTION_LOCK_TIMEOUT", "0.5")
        started = time.monotonic()
        with pytest.raises(registry.LockTimeout, match="held for more than"), promotion.promotion_lock():
            pass
        assert time.monotonic() - started < 30
        assert held.startswith("file lock")
    with promotion.promotion_lock(timeout=5) as held:
        assert held.startswith("file lock")


# --------------------------------------------------------------------------------------------------
# The cluster profile: MLflow server on PostgreSQL with artifacts on S3, Feast registry on PostgreSQL


@contextlib.contextmanager
def _mlflow_server(backend: str, artifacts: str, env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", backend,
        "--artifacts-destination", artifacts,
    ]  # fmt: skip
    with open(log, "w") as out:
        server = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {server.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after 120s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def test_cluster_profile_trains_promotes_and_serves(
    lake_settings: Settings,
    fraud_lake: Path,
    postgres_url: str,
    redis_url: str,
    s3_endpoint: str,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import boto3
    import numpy as np

    from include.mlops import features, promotion, training

    with fresh_databases(postgres_url, "mlflow", "feast") as (mlflow_db, feast_db):
        server_env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
        artifacts = f"s3://{s3_bucket}/mlflow"
        with _mlflow_server(mlflow_db, artifacts, server_env, tmp_path / "mlflow-server.log") as tracking:
            for name, value in {
                "MLOPS_PROFILE": "cluster",
                "MLFLOW_TRACKING_URI": tracking,
                "MLOPS_MLFLOW_ARTIFACT_URL": artifacts,
                "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
                "MLOPS_FEAST_REGISTRY": feast_db,
                "MLOPS_REDIS_URL": redis_url,
                "MLOPS_LOCK_DATABASE_URL": postgres_url,
                **FLOORS,
            }.items():
                monkeypatch.setenv(name, value)
            settings_module.settings.cache_clear()
            s = settings_module.settings()
            assert s.is_cluster and s.mlflow_tracking_uri == tracking
            features.apply_definitions()

            result = training.train(AS_OF, 8, 2, "cluster check", "cluster__run")
            decision = promotion.evaluate_and_promote_run("cluster__run")
            assert decision["promoted"] and decision["champion_after"] == result["version"], decision

            uri = f"models:/{s.model_name}@champion"
            reference = registry.reference_sample(result["run_id"])
            scores = registry.load_scorer(uri)(reference)
            assert np.allclose(scores, reference[registry.REFERENCE_SCORE].to_numpy(), atol=1e-6)
            client = registry.configure_mlflow()
            experiment = client.get_experiment_by_name(registry.experiment_name("training"))
            assert experiment.artifact_location.startswith(f"s3://{s3_bucket}/mlflow/")

    keys = [
        o["Key"]
        for page in boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        .get_paginator("list_objects_v2")
        .paginate(Bucket=s3_bucket, Prefix="mlflow/")
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith(registry.REFERENCE_ARTIFACT) for k in keys), keys[:20]
    assert any(k.endswith("MLmodel") for k in keys), keys[:20]
    assert any("/promotion/evaluation-" in k for k in keys), keys[:20]
