"""The two ways to run training, with one command.

``MLOPS_TRAINING_BACKEND=local`` runs the entrypoint as a subprocess of an Airflow task (CPU, or the
GPU if the machine has one); ``kubernetes`` runs the very same argv in a KubernetesPodOperator pod
on a GPU node pool, from the project's image. The argv is one templated list
(:data:`TRAINING_ARGV`) rendered by Airflow's template engine in both cases, so the backends
cannot drift apart.

Imported by the ``train_model`` DAG at parse time: the Kubernetes provider (2.6 s to import) is
only imported when the kubernetes backend is selected.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from include.mlops.core.settings import PROJECT_ROOT, Settings, settings

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator

logger = logging.getLogger(__name__)

# Jinja over the run's params: the same for a nightly run, a drift-triggered run (its conf
# overrides params) and a manual run from the UI form.
TRAINING_ARGV: list[str] = [
    "python",
    "-m",
    "include.mlops",
    "train",
    "--as-of",
    # orchestration.training_day: the as_of param, else the night's day (the day before the logical date).
    "{{ params.as_of or macros.ds_add((dag_run.logical_date or dag_run.run_after) | ds, -1) }}",
    "--window-days",
    "{{ params.window_days }}",
    "--oot-days",
    "{{ params.oot_days }}",
    "--reason",
    "{{ params.reason }}",
    "--airflow-run-id",
    "{{ run_id }}",
]

# Settings the training process needs that are not secrets; credentials (AWS keys, the MLflow
# password, database URLs with passwords) come from the Kubernetes secret, never the pod spec.
POD_SETTINGS = (
    "MLOPS_PROFILE",
    "MLOPS_LAKE_URL",
    "MLOPS_REPORTS_URL",
    "MLOPS_S3_ENDPOINT_URL",
    "MLOPS_MLFLOW_ARTIFACT_URL",
    "MLOPS_MODEL_NAME",
    "MLOPS_FEAST_REPO",
    "MLOPS_SEED",
)


def _node_selector(s: Settings) -> dict[str, str]:
    key, _, value = s.k8s_gpu_node_selector.partition("=")
    return {key: value}


def _toleration(s: Settings) -> dict[str, str]:
    key_value, _, effect = s.k8s_gpu_toleration.partition(":")
    key, _, value = key_value.partition("=")
    return {"key": key, "operator": "Equal" if value else "Exists", "value": value or None, "effect": effect}


def kubernetes_training_operator(
    task_id: str = "train", s: Settings | None = None, **kwargs: Any
) -> BaseOperator:
    """A KubernetesPodOperator running :data:`TRAINING_ARGV` on one GPU of the GPU pool."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    s = s or settings()
    env = s.as_env()
    env_vars = [k8s.V1EnvVar(name=name, value=env[name]) for name in POD_SETTINGS if name in env]
    toleration = _toleration(s)
    return KubernetesPodOperator(
        task_id=task_id,
        name="train-fraud-model",
        namespace=s.k8s_namespace,
        image=s.training_image,
        cmds=TRAINING_ARGV[:1],
        arguments=TRAINING_ARGV[1:],
        env_vars=env_vars,
        # MLflow URI with credentials, AWS keys: from the secret, so no value is in the pod spec.
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=s.k8s_secret_name))],
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "4", "memory": "16Gi"},
            limits={"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
        ),
        node_selector=_node_selector(s),
        tolerations=[k8s.V1Toleration(**toleration)],
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=50000, run_as_group=0, fs_group=0
        ),
        container_security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
        labels={"app.kubernetes.io/name": "card-fraud-training", "app.kubernetes.io/part-of": "mlops"},
        get_logs=True,
        reattach_on_restart=True,
        on_finish_action="delete_succeeded_pod",
        startup_timeout_seconds=900,
        image_pull_policy="IfNotPresent",
        **kwargs,
    )


def run_local_training(argv: list[str]) -> None:
    """Run the rendered training argv as a subprocess, relaying its output into the task log.

    Each line the process writes is logged at INFO by this task: its output is information (the
    Airflow log viewer shows a task's raw stderr as errors). A non-zero exit fails the task with
    the last lines of that output.
    """
    import os
    import subprocess
    import sys
    from collections import deque

    env = {**os.environ, **settings().as_env()}
    # `python` in the argv is the image's interpreter; locally it is the one running Airflow.
    command = [sys.executable, *argv[1:]] if argv[0] == "python" else argv
    logger.info("running: %s", " ".join(command))
    tail: deque[str] = deque(maxlen=20)
    with subprocess.Popen(
        command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line.rstrip())
            logger.info("%s", line.rstrip())
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, output="\n".join(tail))
