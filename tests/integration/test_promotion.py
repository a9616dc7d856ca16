"""The promotion policy, the alias moves, the lock and rollback, embedded and on the cluster profile.

Models of known quality are built once per session from the shared simulated lake (see
test_training.py): ``good`` (every feature), ``weak`` (the five features of the payment alone)
and ``shuffled`` (every feature, labels permuted: no signal). Each test registers the ones it
needs in its own MLflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from include.mlops import registry
from include.mlops.core import settings as settings_module
from include.mlops.core.schema import LABEL
from include.mlops.core.settings import PROJECT_ROOT, load_settings
from tests.conftest import free_port
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
    from pathlib import Path

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
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLOPS_TRAIN_THREADS", "1")
            mp.setenv("MLOPS_TRAIN_MAX_ROUNDS", "300")
            booster, _ = training.fit_xgboost(
                x[~val], labels[~val], w[~val], x[val], labels[val], w[val], "cpu", 7
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
    """The shared lake, floors the weak model passes, and the default margin."""
    for name, value in FLOORS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLOPS_PROMOTION_MARGIN", "0.005")
    return lake_settings


# --------------------------------------------------------------------------------------------------
# The policy as a pure function


def _labels(n: int = 6000, rate: float = 0.02, seed: int = 0) -> np.ndarray:
    import numpy as np

    return (np.random.default_rng(seed).random(n) < rate).astype(int)


def _scores(y: np.ndarray, signal: float, seed: int) -> np.ndarray:
    """Probabilities whose separation of the classes grows with ``signal``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    logit = -4.5 + signal * y + rng.normal(0, 1, len(y))
    return 1 / (1 + np.exp(-logit))


def _model(version: int, scores: np.ndarray, columns: list[str] | None = None) -> Any:
    from include.mlops.promotion import ModelScores

    return ModelScores(version, scores, columns or ["a", "b"])


def test_decide_first_model_needs_the_floors() -> None:
    from include.mlops.promotion import Policy, decide

    y = _labels()
    policy = Policy(min_pr_auc=0.3, min_recall_at_1pct_fpr=0.3, bootstrap=200)
    good = decide(y, _model(1, _scores(y, 5.0, 1)), None, policy)
    assert good.promote and good.outcome == "promoted", good.reason
    poor = decide(y, _model(1, _scores(y, 0.5, 1)), None, policy)
    assert not poor.promote and poor.outcome == "rejected"
    assert "below the floor" in poor.reason


def test_decide_better_worse_and_tie() -> None:
    from include.mlops.promotion import Policy, decide

    y = _labels()
    policy = Policy(margin=0.005, min_pr_auc=0.1, min_recall_at_1pct_fpr=0.1, bootstrap=300)
    strong, medium = _scores(y, 5.0, 1), _scores(y, 3.0, 2)

    better = decide(y, _model(2, strong), _model(1, medium), policy)
    assert better.promote, better.reason
    low, _high = better.comparison["bootstrap"]["delta_pr_auc_interval"]
    assert low > 0 and better.comparison["delta_pr_auc"] >= 0.005
    assert better.comparison["bootstrap"]["rows"] == len(y)
    # Above the row cap the intervals come from a uniform sample: same verdict here, wider interval.
    capped = decide(y, _model(2, strong), _model(1, medium), replace(policy, bootstrap_rows=3000))
    assert capped.promote and capped.comparison["bootstrap"]["rows"] == 3000

    worse = decide(y, _model(2, medium), _model(1, strong), policy)
    assert not worse.promote and worse.outcome == "kept_champion"
    assert "worse" in worse.reason

    # Identical scores, and a gain smaller than the margin: both are ties, the champion stays.
    tie = decide(y, _model(2, strong.copy()), _model(1, strong), policy)
    assert not tie.promote and "tie" in tie.reason
    nudged = decide(y, _model(2, strong), _model(1, strong), Policy(margin=0.05, bootstrap=0))
    assert not nudged.promote


def test_decide_a_gain_inside_the_noise_is_not_enough() -> None:
    import numpy as np

    from include.mlops.promotion import Policy, decide

    # 300 rows, 6 frauds: a point gain above the margin, but an interval that includes 0.
    y = np.zeros(300, dtype=int)
    y[[10, 50, 90, 130, 170, 210]] = 1
    champion = _scores(y, 3.0, 3)
    challenger = champion.copy()
    challenger[50] = champion.max() + 0.01  # one fraud moved to the top
    decision = decide(y, _model(2, challenger), _model(1, champion), Policy(0.005, 0.0, 0.0, 500))
    assert decision.comparison["delta_pr_auc"] > 0.005
    assert not decision.promote and "not clearly > 0" in decision.reason


def _nan(s: np.ndarray) -> None:
    s[:3] = np.nan


def _constant(s: np.ndarray) -> None:
    s[:] = 0.01


def _out_of_range(s: np.ndarray) -> None:
    s[0] = 1.7


def _uncalibrated(s: np.ndarray) -> None:
    s[:] = 0.9
    s[0] = 0.1


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_nan, "NaN or infinite"),
        (_constant, "constant scores"),
        (_out_of_range, "outside [0, 1]"),
        (_uncalibrated, "observed fraud rate"),
    ],
    ids=["nan", "constant", "out-of-range", "uncalibrated"],
)
def test_decide_rejects_insane_scores(mutate: Any, expected: str) -> None:
    from include.mlops.promotion import Policy, decide

    y = _labels()
    scores = _scores(y, 5.0, 1)
    mutate(scores)
    decision = decide(y, _model(2, scores), _model(1, _scores(y, 1.0, 2)), Policy(bootstrap=0))
    assert not decision.promote and decision.outcome == "rejected"
    assert expected in decision.reason


def test_decide_rejects_a_model_needing_unserved_columns() -> None:
    from include.mlops.promotion import ModelScores, Policy, decide

    y = _labels()
    challenger = ModelScores(2, None, ["a", "new_feature"], missing_columns=["new_feature"])
    decision = decide(y, challenger, None, Policy(bootstrap=0))
    assert decision.outcome == "rejected" and "new_feature" in decision.reason


# --------------------------------------------------------------------------------------------------
# The registry: alias moves, records, rollback


def test_promotion_and_rollback_on_the_registry(policy_env: Settings, zoo: Zoo) -> None:
    import mlflow

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

    # Decisions are recorded on the version, the model and the challenger's run.
    tags = client.get_model_version(name, str(worse)).tags
    assert tags["decision"] == "kept_champion" and tags["compared_with"] == str(good)
    assert float(tags["challenger_pr_auc"]) < float(tags["champion_pr_auc"])
    last = json.loads(client.get_registered_model(name).tags["last_decision"])
    assert (last["version"], last["outcome"]) == (worse, "kept_champion")
    assert last["champion_metrics"]["pr_auc"] > last["challenger_metrics"]["pr_auc"]
    run_id = client.get_model_version(name, str(good)).run_id
    (report,) = client.list_artifacts(run_id, "promotion")
    body = mlflow.artifacts.load_dict(f"runs:/{run_id}/{report.path}")
    assert body["decision"]["outcome"] == "promoted" and body["champion_version_before"] == weak
    assert body["oot_start"] == str(zoo.oot_start) and body["positives"] > 20

    # Rolling back restores the earlier version and says why.
    rolled = promotion.rollback(weak, reason="version 3 blocks good customers")
    assert (rolled["champion_before"], rolled["champion_after"]) == (good, weak)
    assert registry.champion_version() == weak
    assert (
        client.get_model_version(name, str(weak)).tags["rollback_reason"] == "version 3 blocks good customers"
    )
    assert "blocks good customers" in client.get_model_version(name, str(good)).tags["demoted_by_rollback"]
    last = json.loads(client.get_registered_model(name).tags["last_decision"])
    assert (last["action"], last["champion_after"]) == ("rollback", weak)
    with pytest.raises(promotion.PromotionError, match="no version 99"):
        promotion.rollback(99, reason="typo")
    assert same  # registered, never champion


def test_concurrent_promotions_cannot_both_win(
    policy_env: Settings, zoo: Zoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import promotion, training

    s = policy_env
    first = register(zoo, "good", "race-a", s)
    second = register(zoo, "good", "race-b", s)
    # Feast's DuckDB connection is not shared between threads (Airflow runs tasks as processes):
    # the OOT rows are built once here, and the threads race on the registry and the lock only.
    oot = training.oot_frame(zoo.oot_start, zoo.oot_end)
    monkeypatch.setattr(training, "oot_frame", lambda *args, **kwargs: (oot[0].copy(), oot[1]))

    # Both evaluate while there is no champion, then race for the lock: without the lock and the
    # re-read of the champion inside it, both would be promoted.
    barrier = threading.Barrier(2, timeout=120)
    evaluate = promotion.evaluate

    def evaluate_then_wait(*args: Any, **kwargs: Any) -> Any:
        result = evaluate(*args, **kwargs)
        if kwargs.get("frame") is None:
            barrier.wait()
        return result

    monkeypatch.setattr(promotion, "evaluate", evaluate_then_wait)
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
    winners = [r for r in results.values() if r["promoted"]]
    assert len(winners) == 1, results
    (loser,) = [r for r in results.values() if not r["promoted"]]
    winner = winners[0]["challenger_version"]
    assert winner in (first, second)
    assert registry.champion_version() == winner
    # The loser was judged against the winner, inside the lock: a tie.
    assert loser["champion_before"] == winner and loser["outcome"] == "kept_champion"


_HOLD_LOCK = """
import sys, time
from include.mlops.promotion import promotion_lock
with promotion_lock(timeout=5) as held:
    print(held, flush=True)
    time.sleep(120)
"""


@contextlib.contextmanager
def _lock_held_elsewhere(env: dict[str, str]) -> Iterator[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK],
        cwd=PROJECT_ROOT,
        env={**env, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline().strip()
        assert line, "the lock holder did not start"
        yield line
    finally:
        os.killpg(holder.pid, signal.SIGTERM)
        holder.wait(timeout=30)


def test_file_lock_excludes_another_process(mlops_home: Path) -> None:
    from include.mlops import promotion

    with _lock_held_elsewhere(dict(os.environ)) as held:
        assert held.startswith("file lock")
        with (
            pytest.raises(registry.LockTimeout, match="held for more than"),
            promotion.promotion_lock(timeout=0.5),
        ):
            pass
    with promotion.promotion_lock(timeout=5) as held:  # released when its holder died
        assert held.startswith("file lock")


def test_advisory_lock_excludes_another_process(
    mlops_home: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops import promotion

    monkeypatch.setenv("MLOPS_LOCK_DATABASE_URL", postgres_url)
    monkeypatch.setenv("MLOPS_MODEL_NAME", f"lock_test_{uuid.uuid4().hex[:8]}")
    settings_module.settings.cache_clear()
    with _lock_held_elsewhere(dict(os.environ)) as held:
        assert held.startswith("postgresql advisory lock")
        with pytest.raises(registry.LockTimeout), promotion.promotion_lock(timeout=0.5):
            pass
    with promotion.promotion_lock(timeout=5) as held:
        assert held.startswith("postgresql advisory lock")
    monkeypatch.setenv("MLOPS_PROFILE", "cluster")
    monkeypatch.delenv("MLOPS_LOCK_DATABASE_URL")
    settings_module.settings.cache_clear()
    with pytest.raises(registry.LockUnavailable, match="MLOPS_LOCK_DATABASE_URL"), promotion.promotion_lock():
        pass


# --------------------------------------------------------------------------------------------------
# The cluster profile: MLflow server on PostgreSQL with artifacts on S3, Feast registry on PostgreSQL


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def _databases(postgres_url: str, *names: str) -> Iterator[list[str]]:
    import psycopg2

    conn = psycopg2.connect(postgres_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f'CREATE DATABASE "{name}"')
        yield [_with_database(postgres_url, n) for n in names]
    finally:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


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

    suffix = uuid.uuid4().hex[:10]
    with _databases(postgres_url, f"mlflow_{suffix}", f"feast_{suffix}") as (mlflow_db, feast_db):
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
