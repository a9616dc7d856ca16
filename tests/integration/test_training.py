"""Training on simulator data through Feast, logged and registered in MLflow (embedded profile).

A lake of simulated days (transactions, labels, feature snapshots, a Feast registry) is built once
per session under pytest's base temporary folder and shared read-only with test_promotion.py; each
test has its own MLOPS_HOME (MLflow database and artifacts). The rules of each training step on
their own (window, labels join, sampling, model, lineage) are unit-tested in tests/unit/training.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from include.mlops import registry
from include.mlops.core import settings as settings_module
from include.mlops.core.schema import LABEL
from include.mlops.core.settings import PROJECT_ROOT, load_settings

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings

pytestmark = pytest.mark.integration

LAKE_START = dt.date(2026, 1, 1)
LAKE_DAYS = 25
ROWS_PER_DAY = 8_000
AS_OF = LAKE_START + dt.timedelta(days=LAKE_DAYS - 1)  # 2026-01-25
WINDOW_DAYS = 16
OOT_DAYS = 3
REPORTED_DAY = dt.date(2026, 1, 10)  # a transactions day with a (fake) validation report


def lake_environ(root: Path) -> dict[str, str]:
    """The settings variables that point at the shared lake built under ``root``."""
    return {
        "MLOPS_LAKE_URL": str(root / "lake"),
        "MLOPS_REPORTS_URL": str(root / "reports"),
        "MLOPS_FEAST_REGISTRY": str(root / "feast" / "registry.db"),
    }


def _build_lake(root: Path) -> None:
    from include.devtools import simulator
    from include.mlops import features, lake

    s = load_settings({"MLOPS_HOME": str(root / "home"), **lake_environ(root)})
    config = simulator.SimulationConfig(seed=11, rows_per_day=ROWS_PER_DAY)
    base = lake.location(s.lake_url)
    for i in range(LAKE_DAYS):
        day = LAKE_START + dt.timedelta(days=i)
        for name, table in (
            ("transactions", simulator.transactions_for_day(day, config)),
            ("labels", simulator.labels_for_day(day, config)),
        ):
            lake.write_parquet(lake.partition_at(base, name, day).join(lake.DATA_FILE), table)
    for i in range(LAKE_DAYS):
        features.compute_features_for_day(LAKE_START + dt.timedelta(days=i), settings=s)
    features.apply_definitions(settings=s)
    report = lake.location(s.reports_url).join("validation", "transactions", f"dt={REPORTED_DAY}")
    lake.write_bytes(report.join("validation.json"), json.dumps({"success": True}).encode())


@pytest.fixture(scope="session")
def fraud_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """25 simulated days (8,000 payments a day) with features and a Feast registry, built once."""
    root = tmp_path_factory.getbasetemp() / "fraud-lake"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if not (root / "READY").exists():
            _build_lake(root)
            (root / "READY").write_text("ok")
    return root


@pytest.fixture
def lake_settings(mlops_home: Path, fraud_lake: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A fresh MLOPS_HOME that reads the shared lake; training kept small for a 2-core machine."""
    for name, value in lake_environ(fraud_lake).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLOPS_TRAIN_THREADS", "1")
    monkeypatch.setenv("MLOPS_TRAIN_MAX_ROUNDS", "300")
    monkeypatch.setenv("MLOPS_TRAIN_DEVICE", "auto")
    monkeypatch.setenv("MLOPS_PROMOTION_BOOTSTRAP", "300")
    monkeypatch.delenv("MLOPS_LOCK_DATABASE_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLOPS_PROFILE", raising=False)
    settings_module.settings.cache_clear()
    return settings_module.settings()


def test_training_registers_a_challenger_with_its_metrics_lineage_and_reference(
    lake_settings: Settings, fraud_lake: Path
) -> None:
    import mlflow
    import numpy as np

    from include.mlops import features, training

    result = training.train(AS_OF, WINDOW_DAYS, OOT_DAYS, "nightly schedule", "scheduled__2026-01-25")

    # The window: labels through 01-25, so payments fully labelled through 01-20.
    window = result["window"]
    assert (window["oot_start"], window["oot_end"]) == ("2026-01-18", "2026-01-20")
    assert (window["train_start"], window["train_end"]) == ("2026-01-02", "2026-01-17")

    name = lake_settings.model_name
    client = registry.configure_mlflow(lake_settings)
    version = client.get_model_version(name, str(result["version"]))
    assert client.get_model_version_by_alias(name, "challenger").version == version.version
    for key, value in {
        "airflow_run_id": "scheduled__2026-01-25",
        "reason": "nightly schedule",
        "oot_start": "2026-01-18",
        "oot_end": "2026-01-20",
        "train_start": "2026-01-02",
        "train_end": "2026-01-17",
    }.items():
        assert version.tags[key] == value

    run = client.get_run(result["run_id"])
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["feature_service"] == features.FEATURE_SERVICE_NAME
    assert tags["profile"] == "embedded"
    assert tags["code_version"] == training.code_version()
    assert tags["data_window"] == "train 2026-01-02..2026-01-17, oot 2026-01-18..2026-01-20"
    # The device is the one read back from the booster, the same everywhere it is recorded.
    assert params["device"] == tags["device"] == result["device"]
    assert result["device"] == "cpu" or result["device"].startswith("cuda")
    for key in ("pr_auc", "recall_at_1pct_fpr", "roc_auc", "log_loss", "baseline_pr_auc", "train_seconds"):
        assert np.isfinite(metrics[key]), key
    assert metrics["oot_positives"] > 20 and metrics["train_positives"] > 50
    # Negatives were down-sampled on the training days only: the OOT days are all there.
    assert metrics["train_rows"] + metrics["validation_rows"] < metrics["window_rows_total"] / 4
    assert metrics["oot_rows"] == metrics["oot_rows_total"]
    # The model beats the logistic-regression baseline clearly, on the same OOT rows.
    assert metrics["pr_auc"] > 0.5
    assert metrics["pr_auc"] > metrics["baseline_pr_auc"] + 0.03, (
        metrics["pr_auc"],
        metrics["baseline_pr_auc"],
    )

    # Lineage: a fingerprint per partition file, and the validation reports that exist.
    lineage = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{registry.LINEAGE_ARTIFACT}")
    part = next(
        p for p in lineage["partitions"] if p["dataset"] == "transactions" and p["day"] == "2026-01-18"
    )
    assert part["sha256"] == hashlib.sha256(Path(part["url"]).read_bytes()).hexdigest()
    days = {(p["dataset"], p["day"]) for p in lineage["partitions"]}
    assert ("transactions", "2026-01-02") in days and ("labels", "2026-01-25") in days
    assert ("transactions", "2026-01-01") not in days
    assert lineage["feature_snapshots"], "the feature snapshots read are fingerprinted too"
    reports = {(v["dataset"], v["day"]): v for v in lineage["validation"]}
    assert reports[("transactions", str(REPORTED_DAY))]["success"] is True
    assert reports[("transactions", "2026-01-11")]["present"] is False

    # The reference sample for the drift monitor, and the scorer reproduces its predictions.
    reference = registry.reference_sample(run.info.run_id)
    assert len(reference) == min(training.REFERENCE_ROWS, int(metrics["oot_rows"]))
    assert {registry.REFERENCE_SCORE, LABEL, *features.FEATURE_COLUMNS} <= set(reference.columns)
    uri = f"models:/{name}@challenger"
    assert registry.feature_columns(uri) == list(features.FEATURE_COLUMNS)
    scores = registry.load_scorer(uri)(reference)
    assert np.allclose(scores, reference[registry.REFERENCE_SCORE].to_numpy(), atol=1e-6)
    assert ((scores >= 0) & (scores <= 1)).all() and scores.std() > 0
    # pyfunc gives probabilities too (the raw booster is logged), for float inputs.
    pyfunc = mlflow.pyfunc.load_model(uri).predict(
        reference[list(features.FEATURE_COLUMNS)].astype("float64")
    )
    assert np.allclose(np.asarray(pyfunc, dtype=float), scores, atol=1e-6)

    # Nothing was written into the source tree.
    assert not (PROJECT_ROOT / "mlruns").exists()
    assert str(lake_settings.home) in client.get_experiment(run.info.experiment_id).artifact_location


def test_the_cli_trains_with_the_knobs_of_its_environment(lake_settings: Settings) -> None:
    knobs = {"MLOPS_TRAIN_MAX_OOT_ROWS": "3000", "MLOPS_TRAIN_NEGATIVES_PER_POSITIVE": "5"}
    env = {**os.environ, **lake_settings.as_env(), **knobs, "PYTHONPATH": str(PROJECT_ROOT)}
    argv = [
        *("train", "--as-of", str(AS_OF), "--window-days", "8", "--oot-days", "2"),
        *("--reason", "drift: amount shift", "--airflow-run-id", "manual__cli"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "include.mlops", *argv],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["window"]["oot_start"] == "2026-01-19"
    version = registry.configure_mlflow(lake_settings).get_model_version(
        lake_settings.model_name, str(result["version"])
    )
    assert version.tags["airflow_run_id"] == "manual__cli"
    assert version.tags["reason"] == "drift: amount shift"
    # The MLOPS_TRAIN_* knobs reached every step: sampling, OOT cap and XGBoost's rounds.
    params = registry.configure_mlflow(lake_settings).get_run(result["run_id"]).data.params
    assert params["negatives_per_positive"] == "5"
    assert params["xgb_n_estimators"] == "300"
    metrics = result["metrics"]
    assert metrics["oot_rows"] < metrics["oot_rows_total"]
    assert abs(metrics["oot_rows"] - 3000) < 300, "a uniform sample of 1,500 payments a day"


def test_the_streamed_training_set_and_model_are_those_of_the_window_read_in_memory(
    lake_settings: Settings,
) -> None:
    """Features joined 2,000 rows at a time and XGBoost fed batch by batch give the rows, the
    features, the booster and the metrics of the whole window read at once, as training did before."""
    import numpy as np
    import xgboost as xgb

    from include.mlops import features, training
    from include.mlops.core.metrics import classification_metrics
    from include.mlops.core.policies import TrainingSettings

    s = replace(lake_settings, chunk_rows=2_000)
    knobs = replace(TrainingSettings.from_env(), max_rounds=150)
    window = training.training_window(AS_OF, 7, 2, s)
    data = training.build_dataset(window, knobs, s)
    assert len(data.fit) > 2 * s.chunk_rows and len(data.out_of_time) > 4 * s.chunk_rows, "several chunks"

    # In memory: every payment of the window through Feast at once, float64 frames.
    read = training.read_training_days(
        window.train_days, window.latest_labels, knobs.negatives_per_positive, s.seed, s, knobs.max_rows
    )
    frame = features.with_features(read.frame, s)
    oot = features.with_features(
        training.read_oot_days(window.oot_days, window.latest_labels, knobs.max_oot_rows, s.seed, s).frame, s
    )
    columns = list(features.FEATURE_COLUMNS)
    val = (frame["event_timestamp"] >= features.day_start(window.validation_start)).to_numpy()
    fit_frame, val_frame = frame[~val], frame[val]

    # The same rows, labels, weights, and features bit for bit (the float32 XGBoost makes of them).
    for rows, expected in ((data.fit, fit_frame), (data.validation, val_frame), (data.out_of_time, oot)):
        assert np.array_equal(
            rows.x, expected[columns].astype("float64").to_numpy().astype(np.float32), equal_nan=True
        )
        assert np.array_equal(rows.y, expected[LABEL].to_numpy())
    assert np.array_equal(data.fit.weight, fit_frame[training.WEIGHT].to_numpy())
    assert np.array_equal(data.validation.weight, val_frame[training.WEIGHT].to_numpy())
    ids = data.train.frame["transaction_id"].tolist()
    assert ids == [*fit_frame["transaction_id"], *val_frame["transaction_id"]]
    reference = oot.iloc[training.reference_positions(len(oot), s.seed)]
    assert data.reference["transaction_id"].tolist() == reference["transaction_id"].tolist()
    assert np.array_equal(
        data.reference[columns].to_numpy("float64"), reference[columns].to_numpy("float64"), equal_nan=True
    )

    # The booster the scikit-learn wrapper fitted on those frames, cut at its best round.
    fitted = training.fit_models(data, knobs, s.seed)
    params = training.xgb_params(
        fitted.device_requested, s.seed, rounds=knobs.max_rounds, threads=knobs.threads
    )
    model = xgb.XGBClassifier(**params)
    model.fit(
        fit_frame[columns].astype("float64"), fit_frame[LABEL], sample_weight=fit_frame[training.WEIGHT],
        eval_set=[(val_frame[columns].astype("float64"), val_frame[LABEL])],
        sample_weight_eval_set=[val_frame[training.WEIGHT]], verbose=False,
    )  # fmt: skip
    in_memory = model.get_booster()[: model.best_iteration + 1]
    in_memory.set_param({"device": "cpu"})
    assert fitted.booster.save_raw("json") == in_memory.save_raw("json")
    evaluation = training.evaluate(data, fitted)
    scores = in_memory.inplace_predict(oot[columns].astype("float64")).astype(np.float64)
    assert np.array_equal(evaluation.scores, scores)
    assert evaluation.model == classification_metrics(oot[LABEL].to_numpy(), scores)
