"""Settings: defaults need no configuration, every value can be overridden, bad values say why."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from include.mlops.core.settings import PROJECT_ROOT, SettingsError, load_settings

if TYPE_CHECKING:
    from pathlib import Path


def test_embedded_defaults_need_no_environment():
    s = load_settings({})
    assert s.profile == "embedded"
    assert s.home == (PROJECT_ROOT / ".local").resolve()
    assert s.landing_url == str(s.home / "landing")
    assert s.lake_url == str(s.home / "lake")
    assert s.quarantine_url == str(s.home / "quarantine")
    assert s.reports_url == str(s.home / "reports")
    assert s.mlflow_tracking_uri == f"sqlite:///{s.home / 'mlflow' / 'mlflow.db'}"
    assert s.training_backend == "local"
    assert s.s3_endpoint_url is None


def test_every_runtime_default_lives_under_mlops_home(tmp_path: Path):
    s = load_settings({"MLOPS_HOME": str(tmp_path)})
    runtime = [
        s.landing_url,
        s.lake_url,
        s.quarantine_url,
        s.reports_url,
        s.mlflow_artifact_url,
        s.feast_registry,
        s.feast_online_path,
    ]
    for value in runtime:
        assert value.startswith(str(tmp_path)), value
    # The embedded Feast registry is a SQLite database (Feast's SQL registry), not a protobuf file.
    assert s.feast_registry == str(tmp_path / "feast" / "registry.sqlite")
    # The default home is the git-ignored .local/, never another folder of the source tree.
    assert ".local/" in (PROJECT_ROOT / ".gitignore").read_text()


def test_cluster_profile_is_only_settings():
    s = load_settings(
        {
            "MLOPS_PROFILE": "cluster",
            "MLOPS_LANDING_URL": "s3://landing-bucket/drops/",
            "MLOPS_LAKE_URL": "s3://lake-bucket/lake",
            "MLOPS_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
            "MLOPS_TRAINING_BACKEND": "kubernetes",
        }
    )
    assert s.is_cluster
    assert s.landing_url == "s3://landing-bucket/drops"
    assert s.lake_url == "s3://lake-bucket/lake"
    assert s.s3_endpoint_url == "http://127.0.0.1:9000"
    assert s.mlflow_tracking_uri == "http://mlflow:5000"
    assert s.training_backend == "kubernetes"


def test_blank_values_fall_back_to_defaults():
    assert load_settings({"MLOPS_PROFILE": "  ", "MLOPS_SEED": ""}).profile == "embedded"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MLOPS_PROFILE", "laptop", "MLOPS_PROFILE='laptop'"),
        ("MLOPS_TRAINING_BACKEND", "spark", "MLOPS_TRAINING_BACKEND='spark'"),
        ("MLOPS_SEED", "seven", "MLOPS_SEED='seven' is not an integer"),
    ],
)
def test_bad_values_are_named_in_the_error(name: str, value: str, message: str):
    with pytest.raises(SettingsError, match=message):
        load_settings({name: value})


def test_as_env_round_trips():
    s = load_settings({"MLOPS_HOME": "/srv/mlops", "MLOPS_SEED": "11", "MLOPS_MODEL_NAME": "fraud_v2"})
    again = load_settings(s.as_env())
    assert again == s
