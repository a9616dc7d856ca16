"""The Kubernetes deployment on paper (deploy/kubernetes): every setting it names exists, every
manifest and values file parses, and the Helm values select what the page says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from include.mlops.core.knobs import documented

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
NOT_SETTINGS = {"MLOPS_TEST_POSTGRES_URL", "MLOPS_TEST_REDIS_URL", "MLOPS_REQUIRE_SERVICES"}


def _named_settings(text: str) -> set[str]:
    return set(re.findall(r"\bMLOPS_[A-Z0-9_]*[A-Z0-9]\b", text)) - NOT_SETTINGS


@pytest.mark.parametrize(
    "name", ["README.md", "airflow-values.yaml", "mlflow-server.yaml", "feast-apply-job.yaml"]
)
def test_every_setting_named_in_the_deployment_exists_in_the_catalogue(name: str) -> None:
    catalogue = {variable for _, variable, _, _ in documented()}
    named = _named_settings((DEPLOY / name).read_text())
    assert named - catalogue == set(), f"{name} names settings the project does not have"


def test_the_page_names_the_settings_it_documents() -> None:
    assert {"MLOPS_TRAINING_QUEUE", "MLOPS_LOCK_DATABASE_URL", "MLOPS_FEAST_REGISTRY"} <= _named_settings(
        (DEPLOY / "README.md").read_text()
    )


@pytest.mark.parametrize("path", sorted(p.name for p in DEPLOY.glob("*.yaml")))
def test_every_manifest_parses(path: str) -> None:
    documents = [d for d in yaml.safe_load_all((DEPLOY / path).read_text()) if d is not None]
    assert documents


def test_the_helm_values_run_the_celery_executor_on_external_services_without_secret_values() -> None:
    values = yaml.safe_load((DEPLOY / "airflow-values.yaml").read_text())
    assert values["executor"] == "CeleryExecutor"
    assert values["postgresql"]["enabled"] is False and values["redis"]["enabled"] is False
    assert {"metadataSecretName", "resultBackendSecretName", "brokerUrlSecretName"} <= set(values["data"])
    env = {item["name"]: item["value"] for item in values["env"]}
    assert env["MLOPS_PROFILE"] == "cluster" and env["MLOPS_TRAINING_BACKEND"] == "kubernetes"
    assert all(url.startswith("s3://") for k, url in env.items() if k.endswith("_URL") and "LAKE" in k)
    # Credentials only through the secret, never as a value here.
    assert not {"MLFLOW_TRACKING_URI", "MLOPS_FEAST_REGISTRY", "MLOPS_LOCK_DATABASE_URL"} & set(env)
    assert "mlops-credentials" in values["extraEnvFrom"]
    assert not re.search(r"://[^:/@\s]+:[^@/\s]+@", (DEPLOY / "airflow-values.yaml").read_text())
