"""The training pod as the KubernetesPodOperator would create it, rendered without a cluster.

Both backends of `train_model` must run the same command: the local task's rendered argv is
compared with the rendered pod's container command.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from include.mlops.core import settings as settings_module

ROOT = Path(__file__).resolve().parents[3]
SECRET_VALUES = ("s3cr3t-key", "hunter2")
CONTEXT_PARAMS = {
    "as_of": "2026-01-20",
    "window_days": 14,
    "oot_days": 3,
    "reason": "drift: amount share 0.62 on 2026-01-19",
    "rollback_to": None,
}


def _load_dag(monkeypatch: pytest.MonkeyPatch, backend: str):
    monkeypatch.setenv("MLOPS_TRAINING_BACKEND", backend)
    monkeypatch.setenv("MLOPS_PROFILE", "cluster")
    monkeypatch.setenv("MLOPS_TRAINING_IMAGE", "registry.example.com/card-fraud-mlops:1.4.2")
    monkeypatch.setenv("MLOPS_LAKE_URL", "s3://lake/prod")
    # Secrets present in the scheduler's environment must not leak into the pod spec.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_VALUES[0])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://mlflow:{SECRET_VALUES[1]}@mlflow:5000")
    settings_module.settings.cache_clear()
    try:
        namespace = runpy.run_path(str(ROOT / "dags" / "train_model.py"))
        return namespace["train_model"]()
    finally:
        settings_module.settings.cache_clear()


def _context(dag) -> dict:
    return {"params": dict(CONTEXT_PARAMS), "ds": "2026-01-21", "run_id": "manual__2026-01-21", "dag": dag}


@pytest.fixture
def pod_and_operator(monkeypatch):
    from kubernetes.client import ApiClient

    dag = _load_dag(monkeypatch, "kubernetes")
    op = dag.get_task("train")
    op.render_template_fields(_context(dag))
    pod = op.build_pod_request_obj(dry_run=True)
    return ApiClient().sanitize_for_serialization(pod), op


def test_pod_requests_one_gpu_on_the_gpu_pool(pod_and_operator):
    manifest, _ = pod_and_operator
    spec = manifest["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "base"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert container["image"] == "registry.example.com/card-fraud-mlops:1.4.2"


def test_pod_runs_as_non_root_without_privilege_escalation(pod_and_operator):
    manifest, _ = pod_and_operator
    assert manifest["spec"]["securityContext"]["runAsNonRoot"] is True
    assert manifest["spec"]["securityContext"]["runAsUser"] != 0
    (container,) = [c for c in manifest["spec"]["containers"] if c["name"] == "base"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_no_secret_value_is_in_the_pod_spec(pod_and_operator):
    manifest, op = pod_and_operator
    text = json.dumps(manifest)
    for secret in SECRET_VALUES:
        assert secret not in text
    (container,) = [c for c in manifest["spec"]["containers"] if c["name"] == "base"]
    names = {e["name"] for e in container.get("env", [])}
    assert not names & {"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "MLFLOW_TRACKING_URI"}
    assert container["envFrom"] == [{"secretRef": {"name": "mlops-credentials"}}]
    assert {"name": "MLOPS_LAKE_URL", "value": "s3://lake/prod"} in container["env"]
    assert op.reattach_on_restart is True and op.get_logs is True


def test_pod_command_equals_the_local_backend_command(pod_and_operator, monkeypatch):
    manifest, _ = pod_and_operator
    (container,) = [c for c in manifest["spec"]["containers"] if c["name"] == "base"]
    pod_argv = [*container["command"], *container["args"]]

    dag = _load_dag(monkeypatch, "local")
    local = dag.get_task("train")
    assert local.__class__.__name__ != "KubernetesPodOperator"
    local.render_template_fields(_context(dag))
    (local_argv,) = local.op_args

    assert pod_argv == local_argv
    assert pod_argv[:4] == ["python", "-m", "include.mlops", "train"]
    assert pod_argv[pod_argv.index("--reason") + 1] == CONTEXT_PARAMS["reason"]
    assert pod_argv[pod_argv.index("--as-of") + 1] == "2026-01-20"
