"""The registry's facts as metrics, on a real MLflow registry (SQLite under a temporary home).

Versions are registered through MLflow, tagged as training and promotion tag them, rolled back by
the project's own ``rollback``, and a drift retrain request is recorded by the monitor's own
``record_trigger``; the metrics are read back from the exposition text.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from include.mlops import registry
from include.mlops.core.settings import settings
from include.mlops.monitoring.policy import Performance, decide
from include.mlops.monitoring.triggers import mark_triggered, record_trigger
from include.mlops.ops import REGISTRY, registry_samples, render
from include.mlops.promotion import rollback
from tests.unit.ops.recorded import POLICY, own_mlflow, summary

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def scrape() -> dict[tuple[str, tuple], float]:
    text = render(registry_samples(now=1_800_000_000.0), (REGISTRY,)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get(("mlops_" + name, tuple(sorted(labels.items()))))


def register(client, name: str, experiment_id: str, n: int, tags: dict[str, str]) -> int:
    """A version of a run that logged training times, tagged as training and the gate tag it."""
    run = client.create_run(experiment_id, run_name=f"train-{n}")
    for key, seconds in (("train_seconds", 10.0 * n), ("read_seconds", 2.0), ("feature_seconds", 1.5)):
        client.log_metric(run.info.run_id, key, seconds)
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    registry.set_version_tags(client, name, int(version.version), tags)
    return int(version.version)


@pytest.fixture
def home(mlops_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home with an MLflow store of its own."""
    own_mlflow(mlops_home, monkeypatch)
    return mlops_home


@pytest.fixture
def model(home: Path) -> dict:
    """Three versions: v1 promoted, v2 promoted over it, v3 rejected; then champion rolled back to v1
    and a drift retrain requested (pending)."""
    s = settings()
    client = registry.configure_mlflow(s)
    experiment_id = registry.ensure_experiment(client, registry.experiment_name("training", s), s)
    client.create_registered_model(s.model_name)
    common = {"train_end": "2026-01-06", "oot_end": "2026-01-09", "decision_status": "recorded"}
    decided = [
        ("0.701000", "promoted", "2026-01-12T02:10:00+00:00"),
        ("0.795000", "promoted", "2026-01-16T02:10:00+00:00"),
        ("0.210000", "rejected", "2026-01-20T02:10:00+00:00"),
    ]
    versions = []
    for n, (pr_auc, decision, at) in enumerate(decided, 1):
        tags = {**common, "oot_pr_auc": pr_auc, "decision": decision, "decided_at": at}
        versions.append(register(client, s.model_name, experiment_id, n, tags))
        if decision == "promoted":
            registry.move_alias(client, s.model_name, registry.CHAMPION, versions[-1])
    v1, v2 = versions[:2]
    moved = rollback(v1, "v2 flags too many good customers", s)
    day = dt.date(2026, 1, 21)
    drifted = decide(summary(5), Performance(), None, day, POLICY)
    record_trigger(drifted, v1, "scheduled__2026-01-21", s)
    return {"client": client, "versions": (v1, v2), "rollback": moved, "day": day}


def test_the_champion_its_age_and_how_it_came_to_serve(model: dict) -> None:
    found = scrape()
    v1, _ = model["versions"]
    assert value(found, "champion_version") == v1
    version = model["client"].get_model_version(settings().model_name, str(v1))
    assert value(found, "champion_registered_timestamp_seconds") == pytest.approx(
        version.creation_timestamp / 1000
    )
    # Moved back by the rollback: its time is the rollback's.
    rolled_back_at = dt.datetime.fromisoformat(version.tags["rolled_back_at"]).timestamp()
    assert value(found, "champion_promoted_timestamp_seconds") == pytest.approx(rolled_back_at)
    assert (
        value(found, "champion_trained_through_timestamp_seconds")
        == dt.datetime(2026, 1, 6, tzinfo=dt.UTC).timestamp()
    )
    assert value(found, "champion_oot_pr_auc") == pytest.approx(0.701)


def test_versions_decisions_and_rollbacks_are_counted(model: dict) -> None:
    found = scrape()
    assert value(found, "model_versions") == 3
    # v1's gate verdict survives the rollback that overwrote its ``decision``.
    assert value(found, "promotion_decisions", outcome="promoted") == 2
    assert value(found, "promotion_decisions", outcome="rejected") == 1
    assert value(found, "promotion_decisions", outcome="kept_champion") == 0
    assert value(found, "rollbacks") == 1
    newest = model["client"].get_model_version(settings().model_name, "3")
    assert value(found, "model_last_registered_timestamp_seconds") == pytest.approx(
        newest.creation_timestamp / 1000
    )
    assert value(found, "training_seconds", version="3", phase="fit") == 30.0
    assert value(found, "training_seconds", version="3", phase="features") == 1.5
    assert value(found, "registry_facts_up") == 1


def test_a_recorded_retrain_request_is_pending_until_triggered(model: dict) -> None:
    found = scrape()
    assert value(found, "retrain_pending") == 1
    requested = value(found, "retrain_last_requested_timestamp_seconds")
    assert requested is not None and abs(requested - dt.datetime.now(dt.UTC).timestamp()) < 600
    mark_triggered(model["day"], "drift__2026-01-21", settings())
    assert value(scrape(), "retrain_pending") == 0


def test_before_the_first_model_there_is_no_champion_and_no_failure(home: Path) -> None:
    found = scrape()
    assert value(found, "registry_facts_up") == 1 and value(found, "model_versions") == 0
    assert value(found, "champion_version") is None


def test_an_unreachable_registry_says_so_instead_of_failing(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from include.mlops.core import settings as settings_module
    from tests.conftest import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings_module.settings.cache_clear()
    found = scrape()
    assert value(found, "registry_facts_up") == 0 and value(found, "champion_version") is None
    assert "the registry's facts could not be read" in caplog.text
