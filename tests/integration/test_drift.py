"""The drift monitor on simulated days: quiet on clean days, a retrain soon after the drift, a cooldown.

The world is the shared one of scored_world.py (built once per session): a champion trained on
clean days (OOT days 5-6), predictions for days 4-19, the simulator's drift from day 14. The days
are checked once, in order, as a daily ``monitor_drift`` would (a retrain verdict is marked
triggered, as ``mark_retrain_triggered`` does after ``retrain_on_drift``, except once: a crash
between the check and the trigger); the tests assert on what the checks returned and left
behind. The pure rules are tested in ``tests/unit/monitoring``.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from include.mlops import monitoring as drift
from include.mlops import registry
from include.mlops.core.policies import DriftPolicy
from include.mlops.core.schema import MAX_LABEL_DELAY_DAYS
from tests.integration.scored_world import (
    DAYS,
    DRIFT_DAY,
    FIRST_SCORED,
    World,
    day,
)

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings

pytestmark = pytest.mark.integration

COOLDOWN = 3
RESULT_KEYS = {
    "day",
    "retrain",
    "signals",
    "reason",
    "explanation",
    "suppressed_by",
    "reissue",
    "train_run_id",
    "model_version",
    "drifted_columns",
    "drift_share",
    "prediction_psi",
    "performance",
    "report_url",
    "report_html_url",
    "retrain_conf",
    "mlflow_experiment_id",
    "mlflow_run_id",
    "airflow_run_id",
    "rows",
    "sampled_rows",
    "reference_rows",
    "report_seconds",
    "seconds",
}
"""What ``monitor_day`` returns (``check_drift``'s XCom; ``train_model`` reads ``reason`` and ``day``)."""
VERDICT_KEYS = RESULT_KEYS | {"computed_at", "policy", "drift", "last_trigger", "retrain_running"}
"""What ``verdict.json`` holds: the result, the policy, the drift summary, the cooldown's state."""


# --------------------------------------------------------------------------------------------------
# Integration: the simulated days, checked in order


@dataclass
class Monitored:
    """What the day-by-day checks returned, and the state they left."""

    clean: dict[int, dict] = field(default_factory=dict)
    drifted: dict[int, dict] = field(default_factory=dict)
    trigger_after_clean: Any = None
    first_trigger: int | None = None
    after_cooldown_running: dict | None = None
    after_cooldown_done: dict | None = None
    pending_after_crash: Any = None
    crash_rerun: dict | None = None
    trigger_after_crash_rerun: Any = None
    rerun_first_trigger: dict | None = None
    rerun_second_trigger: dict | None = None
    final_trigger: Any = None


def checked(n: int, airflow_run_id: str, s: Settings) -> dict:
    """Check day ``n``; a retrain verdict triggers ``train_model`` and is marked, as the DAG does."""
    result = drift.monitor_day(day(n), airflow_run_id=airflow_run_id, settings=s)
    if result["retrain"]:
        drift.mark_triggered(result["day"], result["train_run_id"], s)
    return result


@pytest.fixture(scope="module")
def monitored(world_settings: Settings, scored_world: World) -> Monitored:
    """Check the clean days, then the drifted days until the cooldown is over; then rerun days."""
    import mlflow

    s = world_settings
    state = Monitored()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_DRIFT_COOLDOWN_DAYS", str(COOLDOWN))
        for n in range(FIRST_SCORED, DRIFT_DAY):
            state.clean[n] = checked(n, f"test__{day(n)}", s)
        state.trigger_after_clean = drift.last_trigger(s)

        for n in range(DRIFT_DAY, DAYS + 1):
            state.drifted[n] = checked(n, f"test__{day(n)}", s)
            if state.first_trigger is None and state.drifted[n]["retrain"]:
                state.first_trigger = n
            if state.first_trigger is not None and n == state.first_trigger + COOLDOWN:
                break
        if state.first_trigger is None or state.first_trigger + COOLDOWN > DAYS:
            return state
        after = state.first_trigger + COOLDOWN
        state.after_cooldown_running = state.drifted[after]

        # train_model finishes: it registers a version carrying the trigger's reason.
        registry.configure_mlflow(s)
        mlflow.register_model(
            f"runs:/{scored_world.champion_run_id}/{registry.MODEL_ARTIFACT}",
            s.model_name,
            tags={"reason": state.drifted[state.first_trigger]["reason"]},
        )
        # The check records the request, then its run dies before retrain_on_drift: never triggered.
        state.after_cooldown_done = drift.monitor_day(day(after), airflow_run_id="test__rerun", settings=s)
        state.pending_after_crash = drift.last_trigger(s)
        # The day's check is rerun: it asks again, and this time the trigger goes through.
        state.crash_rerun = checked(after, "test__crash_rerun", s)
        state.trigger_after_crash_rerun = drift.last_trigger(s)

        state.rerun_first_trigger = checked(state.first_trigger, "test__rerun", s)
        state.rerun_second_trigger = checked(after, "test__rerun2", s)
        state.final_trigger = drift.last_trigger(s)
    return state


def test_clean_days_trigger_nothing(monitored: Monitored) -> None:
    assert len(monitored.clean) == 10
    for n, result in monitored.clean.items():
        assert set(result) == RESULT_KEYS
        assert result["retrain"] is False, (n, result["explanation"])
        assert result["signals"] == [], (n, result["explanation"])
        assert result["reason"] == f"no drift on {day(n)}"
        assert result["day"] == day(n).isoformat()
        assert result["prediction_psi"] is not None and result["prediction_psi"] < 0.1
        assert result["drift_share"] < 0.3
    assert monitored.trigger_after_clean is None


def test_drift_triggers_a_retrain_within_two_days(monitored: Monitored) -> None:
    assert monitored.first_trigger is not None, [r["explanation"] for r in monitored.drifted.values()]
    assert monitored.first_trigger <= DRIFT_DAY + 2
    first = monitored.drifted[monitored.first_trigger]
    assert first["retrain"] is True and first["signals"]
    assert first["reason"].startswith(f"drift on {day(monitored.first_trigger)}: ")
    # The channel mix moved: the online flag is named with its score, and so is every drifted column.
    assert "is_online" in first["drifted_columns"]
    for column, score in first["drifted_columns"].items():
        assert f"{column} {score:.2f}" in first["reason"]
    if "prediction" in first["signals"]:
        assert f"prediction drift {first['prediction_psi']:.2f}" in first["reason"]
    # The key features alone would have been enough by the day after the drift.
    assert any("features" in monitored.drifted[n]["signals"] for n in (DRIFT_DAY, DRIFT_DAY + 1))
    assert max(monitored.drifted[n]["drift_share"] for n in (DRIFT_DAY, DRIFT_DAY + 1)) >= 0.3


def test_cooldown_allows_one_trigger_then_waits_for_the_running_retrain(monitored: Monitored) -> None:
    assert monitored.first_trigger is not None
    first = monitored.first_trigger
    triggered = [n for n, r in monitored.drifted.items() if r["retrain"]]
    assert triggered == [first]
    for n in range(first + 1, first + COOLDOWN):
        result = monitored.drifted[n]
        assert result["signals"], (n, result["explanation"])
        assert result["suppressed_by"] == drift.SUPPRESSED_COOLDOWN
        assert f"requested for {day(first)}" in result["explanation"]

    # Cooldown over, but the requested retrain has not registered a model yet.
    assert monitored.after_cooldown_running is not None
    assert monitored.after_cooldown_running["retrain"] is False
    assert monitored.after_cooldown_running["suppressed_by"] == drift.SUPPRESSED_RUNNING
    # Once it has, the still-drifted day asks for a new one.
    assert monitored.after_cooldown_done is not None and monitored.after_cooldown_done["retrain"] is True
    assert monitored.final_trigger.day == day(first + COOLDOWN)
    assert monitored.final_trigger.reason == monitored.after_cooldown_done["reason"]
    assert monitored.final_trigger.airflow_run_id == "test__rerun"
    assert not monitored.final_trigger.pending


def test_rerunning_a_day_never_triggers_twice(monitored: Monitored) -> None:
    assert monitored.rerun_first_trigger is not None and monitored.rerun_second_trigger is not None
    assert monitored.rerun_first_trigger["retrain"] is False
    assert monitored.rerun_first_trigger["suppressed_by"] == drift.SUPPRESSED_LATER_DAY
    assert monitored.rerun_second_trigger["retrain"] is False
    assert monitored.rerun_second_trigger["suppressed_by"] == drift.SUPPRESSED_SAME_DAY
    # The record still points at the day that asked, with its original request.
    assert monitored.final_trigger.day == day(monitored.first_trigger + COOLDOWN)


def test_a_retrain_recorded_but_never_triggered_is_asked_for_again_on_a_rerun(monitored: Monitored) -> None:
    assert monitored.first_trigger is not None and monitored.crash_rerun is not None
    after = day(monitored.first_trigger + COOLDOWN)
    requested = monitored.after_cooldown_done
    assert requested is not None and requested["retrain"] is True and requested["reissue"] is False
    assert requested["train_run_id"] == f"drift__{after}"
    # Recorded as pending: the cooldown counts from it, and train_model has not been triggered.
    pending = monitored.pending_after_crash
    assert pending.day == after and pending.pending and pending.triggered_run_id == drift.PENDING

    rerun = monitored.crash_rerun
    assert rerun["retrain"] is True and rerun["reissue"] is True and rerun["suppressed_by"] is None
    assert rerun["reason"] == requested["reason"]
    assert rerun["train_run_id"] == requested["train_run_id"]
    assert "recorded but never triggered" in rerun["explanation"]
    # Nothing new was recorded: the request is the original one, now marked with its run.
    again = monitored.trigger_after_crash_rerun
    assert (again.day, again.reason, again.requested_at, again.airflow_run_id) == (
        pending.day,
        pending.reason,
        pending.requested_at,
        "test__rerun",
    )
    assert not again.pending and again.triggered_run_id == f"drift__{after}"
    # Once triggered, a rerun of the day answers "already requested" (test below).
    assert monitored.rerun_second_trigger is not None
    assert monitored.rerun_second_trigger["suppressed_by"] == drift.SUPPRESSED_SAME_DAY
    assert monitored.rerun_second_trigger["train_run_id"] is None


def test_a_retrain_verdict_names_the_days_train_model_run(monitored: Monitored) -> None:
    assert monitored.first_trigger is not None
    first = monitored.drifted[monitored.first_trigger]
    assert first["train_run_id"] == drift.train_run_id(day(monitored.first_trigger))
    assert first["train_run_id"] == f"drift__{day(monitored.first_trigger)}"
    quiet = [r for r in (*monitored.clean.values(), *monitored.drifted.values()) if not r["retrain"]]
    assert quiet and all(r["train_run_id"] is None and r["reissue"] is False for r in quiet)
    # The retrain waits for the drifted days' labels: it trains as of the last of them + the delay.
    policy = DriftPolicy.from_env()
    waits = policy.retrain_labelled_days - 1 + MAX_LABEL_DELAY_DAYS
    assert first["retrain_conf"] == {
        "reason": first["reason"],
        "as_of": (dt.date.fromisoformat(first["day"]) + dt.timedelta(days=waits)).isoformat(),
        "window_days": policy.retrain_window_days,
        "oot_days": policy.retrain_oot_days,
    }
    assert all(r["retrain_conf"] is None for r in quiet)


def test_a_day_decides_only_under_the_model_lock(monitored: Monitored, world_settings: Settings) -> None:
    """``monitor_drift`` runs two days at a time in a backfill: each decision takes the model's lock
    (the one promotions and rollbacks take), waiting ``MLOPS_PROMOTION_LOCK_TIMEOUT`` at most."""
    assert monitored.first_trigger is not None
    before = drift.last_trigger(world_settings)
    with pytest.MonkeyPatch.context() as mp, registry.model_lock(600, world_settings):
        mp.setenv("MLOPS_PROMOTION_LOCK_TIMEOUT", "1")
        with pytest.raises(registry.LockTimeout):
            drift.monitor_day(day(DRIFT_DAY), airflow_run_id="test__locked", settings=world_settings)
    assert drift.last_trigger(world_settings) == before


def test_performance_is_measured_once_labels_have_arrived(
    monitored: Monitored, world_settings: Settings, scored_world: World
) -> None:

    client = registry.configure_mlflow(world_settings)
    baseline = client.get_run(scored_world.champion_run_id).data.metrics["pr_auc"]
    # Day 13: payments of days up to 8 are fully labelled; the model's OOT days end on day 6.
    measured = monitored.clean[13]["performance"]
    assert measured["days"] == [day(7).isoformat(), day(8).isoformat()]
    assert measured["rows"] > 3_000 and measured["positives"] > 0 and measured["label_coverage"] == 1.0
    assert 0 < measured["pr_auc"] <= 1
    assert measured["baseline_pr_auc"] == pytest.approx(baseline)
    # Day 9: only day 4 would be complete, and it is a training day of the model: nothing measured.
    assert monitored.clean[9]["performance"]["pr_auc"] is None
    assert "not after the model's out-of-time days" in monitored.clean[9]["performance"]["note"]


def test_reports_are_saved_and_logged_once_per_day(monitored: Monitored, world_settings: Settings) -> None:
    import mlflow

    assert monitored.first_trigger is not None
    s = world_settings
    client = registry.configure_mlflow(s)
    experiment = client.get_experiment_by_name(drift.experiment_name(s))
    assert str(s.home) in experiment.artifact_location
    for n in (FIRST_SCORED, monitored.first_trigger, monitored.first_trigger + COOLDOWN):
        folder = Path(drift.report_location(day(n), s).path)
        assert folder == Path(s.reports_url) / "drift" / f"dt={day(n)}"
        assert sorted(p.name for p in folder.iterdir()) == ["drift.html", "drift.json", "verdict.json"]
        html = (folder / "drift.html").read_text()
        assert "is_online" in html and "PSI over reference deciles" in html
        evidently = json.loads((folder / "drift.json").read_text())
        assert any(m.get("config", {}).get("column") == "prediction" for m in evidently["metrics"])
        verdict = json.loads((folder / "verdict.json").read_text())
        assert set(verdict) == VERDICT_KEYS
        assert verdict["day"] == day(n).isoformat()
        assert set(verdict["policy"]) >= {"drift_share", "cooldown_days", "sample_rows"}

        # One run per day, even for the days checked three times.
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.drift_day = '{day(n)}'", max_results=10
        )
        assert len(runs) == 1, n
        run = runs[0]
        assert run.info.status == "FINISHED"
        assert run.data.tags["model_version"] == str(verdict["model_version"])
        assert run.data.tags["retrain"] == str(verdict["retrain"]).lower()
        assert run.data.tags["reissue"] == str(verdict["reissue"]).lower()
        assert run.data.tags["train_run_id"] == (verdict["train_run_id"] or "")
        assert "drift_share" in run.data.metrics and "psi/is_online" in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "drift")}
        assert artifacts == {"drift/drift.html", "drift/drift.json", "drift/verdict.json"}
        logged = json.loads(
            Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path="drift/verdict.json"
                )
            ).read_text()
        )
        assert logged == verdict
    # The last check of the first trigger day is the rerun that stayed quiet.
    rerun = json.loads(
        (Path(drift.report_location(day(monitored.first_trigger), s).path) / "verdict.json").read_text()
    )
    assert rerun["retrain"] is False and rerun["suppressed_by"] == drift.SUPPRESSED_LATER_DAY


def test_reports_go_to_s3_when_the_reports_url_is_s3(
    world_settings: Settings, s3_bucket: str, s3_endpoint: str
) -> None:
    import boto3

    from include.mlops.core import settings as settings_module
    from include.mlops.core.settings import load_settings

    s = load_settings(
        {
            "MLOPS_HOME": str(world_settings.home),
            "MLOPS_REPORTS_URL": f"s3://{s3_bucket}/reports",
            "MLOPS_S3_ENDPOINT_URL": s3_endpoint,
        }
    )
    try:
        result = drift.monitor_day(day(FIRST_SCORED + 1), settings=s)
    finally:
        settings_module.settings.cache_clear()
    folder = f"reports/drift/dt={day(FIRST_SCORED + 1)}"
    assert result["report_url"] == f"s3://{s3_bucket}/{folder}"
    assert result["retrain"] is False
    listed = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").list_objects_v2(
        Bucket=s3_bucket, Prefix=folder
    )
    # (pyarrow's create_dir leaves an empty "folder/" marker object: not a file.)
    files = [o["Key"] for o in listed["Contents"] if not o["Key"].endswith("/")]
    assert sorted(key.rsplit("/", 1)[-1] for key in files) == [
        "drift.html",
        "drift.json",
        "verdict.json",
    ]


# --------------------------------------------------------------------------------------------------
# An unreadable cooldown state fails the check: it never reads as "no retrain requested yet"


def closed_port() -> int:
    """A loopback port that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_error(*args: Any, **kwargs: Any) -> Any:
    """What a client method answers when the tracking server fails (HTTP 503)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    raise MlflowException("API request failed with error code 503 != 200", TEMPORARILY_UNAVAILABLE)


def test_an_unreachable_mlflow_raises_instead_of_deciding(
    monitored: Monitored, world_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    from include.mlops.core import settings as settings_module
    from include.mlops.core.policies import DriftPolicy
    from include.mlops.core.settings import load_settings

    assert monitored.first_trigger is not None
    policy = DriftPolicy.from_env()
    check = drift.measure_day(day(DAYS), policy, world_settings)
    before = drift.last_trigger(world_settings)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    unreachable = load_settings(
        {"MLOPS_HOME": str(world_settings.home), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"}
    )
    try:
        with pytest.raises(MlflowException):
            drift.last_trigger(unreachable)
        with pytest.raises(MlflowException):
            drift.decide_day(check, policy, unreachable)
        with pytest.raises(MlflowException):
            drift.retrain_running(before, policy, unreachable)
    finally:
        settings_module.settings.cache_clear()
    assert drift.last_trigger(world_settings) == before


def test_a_server_error_reading_the_requests_fails_the_check_and_records_nothing(
    monitored: Monitored, world_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside the cooldown of the last request: an error read as "never requested" would retrain."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    assert monitored.first_trigger is not None
    s = world_settings
    before = drift.last_trigger(s)
    target = min(before.day + dt.timedelta(days=1), day(DAYS))
    verdict_file = Path(drift.report_location(target, s).path) / "verdict.json"
    written = verdict_file.read_bytes() if verdict_file.exists() else None
    monkeypatch.setenv("MLOPS_DRIFT_COOLDOWN_DAYS", str(COOLDOWN))
    monkeypatch.setattr(MlflowClient, "get_registered_model", server_error)
    with pytest.raises(MlflowException, match="503"):
        drift.monitor_day(target, airflow_run_id="test__mlflow_down", settings=s)
    monkeypatch.undo()
    assert drift.last_trigger(s) == before
    assert (verdict_file.read_bytes() if verdict_file.exists() else None) == written


def test_a_server_error_reading_the_versions_fails_the_decision(
    monitored: Monitored, world_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last request is recent: whether its retrain still runs needs the versions."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from include.mlops.core.policies import DriftPolicy

    s = world_settings
    policy = DriftPolicy.from_env()
    check = drift.measure_day(day(DAYS), policy, s)
    before = drift.last_trigger(s)
    assert before is not None
    monkeypatch.setattr(MlflowClient, "search_model_versions", server_error)
    with pytest.raises(MlflowException, match="503"):
        drift.retrain_running(before, policy, s)
    with pytest.raises(MlflowException, match="503"):
        drift.decide_day(check, policy, s)
    monkeypatch.undo()
    assert drift.last_trigger(s) == before


def test_a_registered_model_that_does_not_exist_means_never_requested(tmp_path: Path) -> None:
    from include.mlops.core import settings as settings_module
    from include.mlops.core.policies import DriftPolicy
    from include.mlops.core.settings import load_settings

    fresh = load_settings({"MLOPS_HOME": str(tmp_path / "home")})
    try:
        assert drift.last_trigger(fresh) is None
        assert drift.retrain_running(None, DriftPolicy(), fresh) is False
    finally:
        settings_module.settings.cache_clear()
