"""The scoring service's Kubernetes manifest: what it runs exists, and it runs it safely.

The container command must parse as the CLI's ``serve`` command, the probes must hit routes the
app has (``/health`` alive, ``/ready`` ready), the port must be the one the command listens on, the
image must be the project's (the training image), the token must come from a secret, and the
HorizontalPodAutoscaler must scale this Deployment.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from include.mlops.__main__ import build_parser
from include.mlops.core.serving_settings import ServingSettings
from include.mlops.core.settings import PROJECT_ROOT, load_settings
from include.mlops.serving import ScoringService, create_app

if TYPE_CHECKING:
    from pathlib import Path

MANIFEST = PROJECT_ROOT / "deploy" / "kubernetes" / "scoring-service.yaml"


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def container(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = documents["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def test_the_manifest_has_a_deployment_a_service_and_an_autoscaler(documents: dict) -> None:
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(documents)
    deployment = documents["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert documents["Service"]["spec"]["selector"].items() <= labels.items()
    target = documents["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    hpa = documents["HorizontalPodAutoscaler"]["spec"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]


def test_the_container_command_is_the_clis_serve_command(container: dict) -> None:
    command = container["command"]
    assert command[:3] == ["python", "-m", "include.mlops"]
    args = build_parser().parse_args(command[3:])
    assert args.func.__name__ == "_cmd_serve"
    assert args.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == args.port


def test_the_dockerfile_documents_the_same_command(container: dict) -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    label = re.search(r'serving-command="([^"]+)"', dockerfile)
    assert label, "the Dockerfile does not document the scoring service's command"
    assert shlex.split(label.group(1)) == container["command"]
    assert re.search(rf"^EXPOSE {container['ports'][0]['containerPort']}$", dockerfile, re.M)


def test_the_probes_hit_routes_the_app_has(container: dict, tmp_path: Path) -> None:
    service = ScoringService(load_settings({"MLOPS_HOME": str(tmp_path)}), ServingSettings.from_env({}))
    routes = {(route.path, method) for route in create_app(service).routes for method in route.methods or ()}
    probes = {
        name: container[name]["httpGet"] for name in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    for name, probe in probes.items():
        assert (probe["path"], "GET") in routes, f"{name} hits {probe['path']}, which the app lacks"
        assert probe["port"] in {p["name"] for p in container["ports"]}
    assert probes["readinessProbe"]["path"] == "/ready"
    assert probes["livenessProbe"]["path"] == "/health"


def test_the_image_is_the_projects_and_the_token_comes_from_a_secret(
    container: dict, documents: dict
) -> None:
    assert container["image"] == load_settings({}).training_image
    env = {e["name"]: e for e in container["env"]}
    assert env["MLOPS_PROFILE"]["value"] == "cluster"
    assert set(env["MLOPS_SERVING_TOKEN"]) == {"name", "valueFrom"}
    assert "secretKeyRef" in env["MLOPS_SERVING_TOKEN"]["valueFrom"]
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == [load_settings({}).k8s_secret_name]
    # Every setting the manifest names is one the service reads.
    assert {n for n in env if n.startswith("MLOPS_SERVING_")} <= set(
        ServingSettings.from_env({}).as_env()
    ) | {"MLOPS_SERVING_TOKEN"}
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]["cpu"]
