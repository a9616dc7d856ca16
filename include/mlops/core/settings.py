"""Settings: read from the environment once, with a default for every value.

The embedded profile needs no configuration at all: every runtime file lives under
``MLOPS_HOME`` (``.local/`` in the project by default, git-ignored). The cluster profile is the
same code with other values (S3 URLs, PostgreSQL, Redis, Kubernetes); see the README's table.

This module imports only the standard library so that DAG files can read settings at parse time
for free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

PROJECT_ROOT = Path(__file__).resolve().parents[3]

PROFILES = ("embedded", "cluster")
TRAINING_BACKENDS = ("local", "kubernetes")


class SettingsError(ValueError):
    """A setting has a value the project cannot use."""


def knob(env: str, doc: str, shown: str, **options: Any) -> Any:
    """A settings field read from the variable ``env``; ``doc`` and ``shown`` (its default as the
    README shows it) are the knob's one documentation: ``settings --markdown`` prints them."""
    return field(metadata={"env": env, "doc": doc, "shown": shown}, **options)


@dataclass(frozen=True)
class Settings:
    """The pipeline's settings: where everything lives and which backends run it."""

    profile: str = knob("MLOPS_PROFILE", "`embedded` or `cluster`", "`embedded`")
    home: Path = knob(
        "MLOPS_HOME",
        "root of all runtime state (git-ignored); nothing is written into the source tree",
        "`.local/` in the project",
    )
    landing_url: str = knob(
        "MLOPS_LANDING_URL",
        "where drops land: `transactions/dt=YYYY-MM-DD/` and `labels/dt=YYYY-MM-DD/`, `*.parquet` or "
        "`*.csv` then `_SUCCESS`; a folder or `s3://bucket/prefix`",
        "`$MLOPS_HOME/landing`",
    )
    lake_url: str = knob(
        "MLOPS_LAKE_URL",
        "validated data, features and predictions, one partition per day",
        "`$MLOPS_HOME/lake`",
    )
    quarantine_url: str = knob(
        "MLOPS_QUARANTINE_URL", "rejected drops' validation results and Data Docs", "`$MLOPS_HOME/quarantine`"
    )
    reports_url: str = knob(
        "MLOPS_REPORTS_URL",
        "validation Data Docs and drift reports, one stable path per day",
        "`$MLOPS_HOME/reports`",
    )
    s3_endpoint_url: str | None = knob(
        "MLOPS_S3_ENDPOINT_URL",
        "S3 endpoint for a non-AWS server (MinIO, moto); `AWS_ENDPOINT_URL` is honoured too",
        "unset (AWS)",
    )
    seed: int = knob("MLOPS_SEED", "seed of the simulator and of every deterministic sample", "`7`")
    sensor_poke_seconds: int = knob(
        "MLOPS_SENSOR_POKE_SECONDS", "how often the deferred landing sensors look for `_SUCCESS`", "`30`"
    )
    # MLflow
    mlflow_tracking_uri: str = knob(
        "MLFLOW_TRACKING_URI", "MLflow tracking and registry", "`sqlite:///$MLOPS_HOME/mlflow/mlflow.db`"
    )
    mlflow_artifact_url: str = knob(
        "MLOPS_MLFLOW_ARTIFACT_URL",
        "MLflow artifact root (`s3://...` in the cluster)",
        "`$MLOPS_HOME/mlflow/artifacts`",
    )
    mlflow_ui_url: str = knob(
        "MLOPS_MLFLOW_UI_URL", 'MLflow UI the "MLflow run" buttons open', "`http://127.0.0.1:5000`"
    )
    model_name: str = knob("MLOPS_MODEL_NAME", "the registered model", "`card_fraud`")
    lock_database_url: str | None = knob(
        "MLOPS_LOCK_DATABASE_URL",
        "PostgreSQL URL for the model's lock (advisory lock); required in the cluster profile, a "
        "file lock under `MLOPS_HOME` otherwise",
        "unset",
    )
    # Feast
    feast_repo: Path = knob("MLOPS_FEAST_REPO", "the Feast repository", "`feature_repo/`")
    feast_registry: str = knob(
        "MLOPS_FEAST_REGISTRY",
        "Feast SQL registry: a SQLite file path (embedded) or a SQLAlchemy PostgreSQL URL (cluster)",
        "`$MLOPS_HOME/feast/registry.sqlite`",
    )
    feast_online_path: str = knob(
        "MLOPS_FEAST_ONLINE_PATH", "Feast SQLite online store (embedded)", "`$MLOPS_HOME/feast/online.db`"
    )
    redis_url: str = knob(
        "MLOPS_REDIS_URL",
        "Feast Redis online store (cluster); `redis://host:6379/0` is accepted",
        "`127.0.0.1:6379`",
    )
    chunk_rows: int = knob(
        "MLOPS_CHUNK_ROWS",
        "rows per chunk when point-in-time features are read and a day is scored or a training set "
        "is built; bounds their memory whatever the day's size",
        "`250000`",
    )
    # Training
    train_cron: str | None = knob(
        "MLOPS_TRAIN_CRON",
        "nightly training schedule (UTC); `none` leaves only drift-triggered and manual runs",
        "`0 2 * * *`",
    )
    training_backend: str = knob(
        "MLOPS_TRAINING_BACKEND", "`local` (subprocess) or `kubernetes` (KubernetesPodOperator)", "`local`"
    )
    training_queue: str = knob(
        "MLOPS_TRAINING_QUEUE",
        "executor queue of the `train` task (CeleryExecutor: a worker serving it takes the trainings)",
        "`default`",
    )
    training_image: str = knob(
        "MLOPS_TRAINING_IMAGE",
        "image of the training pod (this project's `Dockerfile`)",
        "`card-fraud-mlops:latest`",
    )
    k8s_namespace: str = knob("MLOPS_K8S_NAMESPACE", "namespace of the training pod", "`mlops`")
    k8s_gpu_node_selector: str = knob(
        "MLOPS_K8S_GPU_NODE_SELECTOR",
        "node selector of the GPU pool (`key=value`)",
        "`nvidia.com/gpu.present=true`",
    )
    k8s_gpu_toleration: str = knob(
        "MLOPS_K8S_GPU_TOLERATION",
        "toleration for the GPU pool (`key=value:effect`)",
        "`nvidia.com/gpu=present:NoSchedule`",
    )
    k8s_secret_name: str = knob(
        "MLOPS_K8S_SECRET_NAME",
        "Kubernetes secret holding MLflow and S3 credentials for the pod",
        "`mlops-credentials`",
    )

    @property
    def is_cluster(self) -> bool:
        return self.profile == "cluster"

    def as_env(self) -> dict[str, str]:
        """The settings as their variables, to hand to a subprocess or a pod unchanged."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "train_cron":
                value = "none"
            if value is None:
                continue
            env[f.metadata["env"]] = str(value)
        return env


def _env(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "")
    return value if value.strip() else default


def env_number(name: str, default: float, kind: type = int, environ: Mapping[str, str] | None = None) -> Any:
    """A numeric setting: ``kind`` (int or float) of the variable, ``default`` when unset or blank."""
    environ = os.environ if environ is None else environ
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise SettingsError(f"{name}={text!r} is not {expected}") from None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default: the process environment)."""
    environ = os.environ if environ is None else environ

    profile = _env(environ, "MLOPS_PROFILE", "embedded").lower()
    if profile not in PROFILES:
        raise SettingsError(f"MLOPS_PROFILE={profile!r}: expected one of {', '.join(PROFILES)}")

    home = Path(_env(environ, "MLOPS_HOME", str(PROJECT_ROOT / ".local"))).expanduser().resolve()

    def url(name: str, default: Path | str) -> str:
        return _env(environ, name, str(default)).rstrip("/")

    backend = _env(environ, "MLOPS_TRAINING_BACKEND", "local").lower()
    if backend not in TRAINING_BACKENDS:
        raise SettingsError(
            f"MLOPS_TRAINING_BACKEND={backend!r}: expected one of {', '.join(TRAINING_BACKENDS)}"
        )

    def integer(name: str, default: int) -> int:
        return env_number(name, default, int, environ)

    endpoint = _env(environ, "MLOPS_S3_ENDPOINT_URL", environ.get("AWS_ENDPOINT_URL", "")) or None
    chunk_rows = integer("MLOPS_CHUNK_ROWS", 250_000)
    if chunk_rows < 1:
        raise SettingsError(f"MLOPS_CHUNK_ROWS={chunk_rows}: expected a positive number of rows")

    return Settings(
        profile=profile,
        home=home,
        landing_url=url("MLOPS_LANDING_URL", home / "landing"),
        lake_url=url("MLOPS_LAKE_URL", home / "lake"),
        quarantine_url=url("MLOPS_QUARANTINE_URL", home / "quarantine"),
        reports_url=url("MLOPS_REPORTS_URL", home / "reports"),
        s3_endpoint_url=endpoint,
        seed=integer("MLOPS_SEED", 7),
        sensor_poke_seconds=integer("MLOPS_SENSOR_POKE_SECONDS", 30),
        mlflow_tracking_uri=_env(
            environ, "MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
        ),
        mlflow_artifact_url=url("MLOPS_MLFLOW_ARTIFACT_URL", home / "mlflow" / "artifacts"),
        model_name=_env(environ, "MLOPS_MODEL_NAME", "card_fraud"),
        feast_repo=Path(_env(environ, "MLOPS_FEAST_REPO", str(PROJECT_ROOT / "feature_repo"))),
        feast_registry=_env(environ, "MLOPS_FEAST_REGISTRY", str(home / "feast" / "registry.sqlite")),
        feast_online_path=_env(environ, "MLOPS_FEAST_ONLINE_PATH", str(home / "feast" / "online.db")),
        redis_url=_env(environ, "MLOPS_REDIS_URL", "127.0.0.1:6379"),
        chunk_rows=chunk_rows,
        train_cron=None
        if _env(environ, "MLOPS_TRAIN_CRON", "0 2 * * *").lower() in ("none", "off")
        else _env(environ, "MLOPS_TRAIN_CRON", "0 2 * * *"),
        training_backend=backend,
        training_queue=_env(environ, "MLOPS_TRAINING_QUEUE", "default"),
        training_image=_env(environ, "MLOPS_TRAINING_IMAGE", "card-fraud-mlops:latest"),
        k8s_namespace=_env(environ, "MLOPS_K8S_NAMESPACE", "mlops"),
        k8s_gpu_node_selector=_env(environ, "MLOPS_K8S_GPU_NODE_SELECTOR", "nvidia.com/gpu.present=true"),
        k8s_gpu_toleration=_env(environ, "MLOPS_K8S_GPU_TOLERATION", "nvidia.com/gpu=present:NoSchedule"),
        k8s_secret_name=_env(environ, "MLOPS_K8S_SECRET_NAME", "mlops-credentials"),
        mlflow_ui_url=_env(environ, "MLOPS_MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/"),
        lock_database_url=_env(environ, "MLOPS_LOCK_DATABASE_URL", "") or None,
    )


@cache
def settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def resolve_settings(s: Settings | None = None) -> Settings:
    """``s``, or the process-wide settings when it is ``None``: the optional last argument of the
    stage functions, so tests and tools can run a stage on other settings."""
    return s if s is not None else settings()
