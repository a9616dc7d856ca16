"""The one owner of the MLflow side: tracking set-up, experiments, aliases, a version's artifacts,
the scorer, and the model's lock.

One registered model (``MLOPS_MODEL_NAME``); aliases, not stages: :data:`CHAMPION` serves,
:data:`CHALLENGER` is the latest candidate, :data:`PREVIOUS_CHAMPION` is the version the last move
replaced. A version is scored through :func:`load_scorer` with the columns of its signature
(:func:`feature_columns`); its training run also logged the drift monitor's reference sample
(:func:`reference_sample`) and its data lineage.

The lock
========
Promotions, rollbacks and the drift monitor's retrain decisions of one registered model are
serialised by :func:`model_lock`: embedded, ``flock`` on ``MLOPS_HOME/locks/promotion-<model>.lock``
(released by the kernel if the process dies); cluster, ``pg_advisory_lock`` on a key derived from
the model name (``MLOPS_LOCK_DATABASE_URL``), held by a dedicated session (released by the server
if the session dies), so the tasks can run on any worker or pod.

MLflow and psycopg2 are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from include.mlops.core.settings import resolve_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy as np
    import pandas as pd

    from include.mlops.core.settings import Settings

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"

MODEL_ARTIFACT = "model"
LINEAGE_ARTIFACT = "lineage/data_lineage.json"
REFERENCE_ARTIFACT = "reference/reference_sample.parquet"
REFERENCE_SCORE = "prediction"
"""The model's score in its reference sample."""

TAG_LIMIT = 4000
"""MLflow's tag values are capped (5000 characters on some backends): longer text is cut here."""


class LockTimeout(RuntimeError):
    """Another promotion, rollback or drift decision held the model's lock for longer than the timeout."""


class LockUnavailable(RuntimeError):
    """The profile needs a lock that the settings do not configure."""


def cut(text: str) -> str:
    """``text`` as a tag value: at most :data:`TAG_LIMIT` characters."""
    return text[:TAG_LIMIT]


def now() -> str:
    """The current UTC time as recorded in tags (ISO 8601, seconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------
# Tracking and experiments


def configure_mlflow(settings: Settings | None = None) -> Any:
    """Point MLflow at the settings' tracking server and registry; returns an ``MlflowClient``.

    For a local SQLite backend the folder is created; for S3 artifacts behind a non-AWS endpoint
    ``MLFLOW_S3_ENDPOINT_URL`` is set from ``MLOPS_S3_ENDPOINT_URL`` when it is not set already.
    """
    import mlflow
    from mlflow import MlflowClient

    s = resolve_settings(settings)
    uri = s.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if s.s3_endpoint_url and not os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
        # MLflow's artifact client reads its endpoint from this variable only.
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = s.s3_endpoint_url
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_name(purpose: str, settings: Settings | None = None) -> str:
    """The MLflow experiment of ``purpose`` (``training``, ``monitoring``): ``<model_name>-<purpose>``."""
    return f"{resolve_settings(settings).model_name}-{purpose}"


def ensure_experiment(client: Any, name: str, settings: Settings | None = None) -> str:
    """An experiment's id, created with an explicit artifact location if needed."""
    from mlflow.exceptions import MlflowException

    s = resolve_settings(settings)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{s.mlflow_artifact_url.rstrip('/')}/{name}"
    scheme = urlparse(location).scheme
    if scheme in ("", "file"):
        location = str(Path(urlparse(location).path if scheme else location).resolve())
        Path(location).mkdir(parents=True, exist_ok=True)
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Created by a concurrent run in the meantime.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


# --------------------------------------------------------------------------------------------------
# Versions and aliases


def model_uri(version: int, settings: Settings | None = None) -> str:
    """The URI of a version of the registered model: ``models:/<name>/<version>``."""
    return f"models:/{resolve_settings(settings).model_name}/{version}"


def alias_version(client: Any, name: str, alias: str) -> int | None:
    """The version an alias points at; ``None`` when the alias (or the model) does not exist.

    Any other registry error (an unreachable server) is raised: it never reads as "no alias".
    """
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def champion_version(settings: Settings | None = None) -> int | None:
    """The version the ``champion`` alias points at, or ``None`` when there is none yet."""
    s = resolve_settings(settings)
    return alias_version(configure_mlflow(s), s.model_name, CHAMPION)


def move_alias(client: Any, name: str, alias: str, version: int) -> None:
    """Point ``alias`` at ``version``."""
    client.set_registered_model_alias(name, alias, str(version))


def set_version_tags(client: Any, name: str, version: int, tags: dict[str, Any]) -> None:
    """Tag a version (values as text, cut at :data:`TAG_LIMIT`)."""
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, cut(str(value)))


OPERATING_THRESHOLD_TAG = "operating_threshold"
"""Version tag holding the score at or above which a payment is flagged (the policy's operating
point on the version's out-of-time days): batch scoring's decision flag and the scoring service
both read it from here."""


def operating_threshold(client: Any, name: str, version: int) -> float | None:
    """The operating threshold recorded on ``version``, or ``None`` when it records none."""
    tags = client.get_model_version(name, str(version)).tags or {}
    text = tags.get(OPERATING_THRESHOLD_TAG)
    return None if text in (None, "") else float(text)


def pip_requirements() -> list[str]:
    """The exact requirements of a logged model (explicit: inference takes seconds and may guess)."""
    from importlib import metadata

    return [f"{p}=={metadata.version(p)}" for p in ("mlflow", "xgboost", "numpy", "pandas", "scipy")]


# --------------------------------------------------------------------------------------------------
# Scoring with a version, and its artifacts


def feature_columns(model_uri: str) -> list[str]:
    """The input columns of a logged model, in order, from its signature."""
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    if signature is None:
        raise ValueError(f"model {model_uri} has no signature: cannot tell its feature columns")
    return list(signature.inputs.input_names())


def load_scorer(model_uri: str) -> Callable[[pd.DataFrame], np.ndarray]:
    """A function giving fraud probabilities (float64, one per row) for a frame with the feature columns.

    ``model_uri`` is any MLflow model URI (``models:/card_fraud@champion``, ``runs:/...``). Extra
    columns are ignored; a missing feature column is an error naming it. Scores on the CPU.
    """
    import mlflow.xgboost
    import numpy as np

    columns = feature_columns(model_uri)
    booster = mlflow.xgboost.load_model(model_uri)
    booster.set_param({"device": "cpu"})

    def score(frame: pd.DataFrame) -> np.ndarray:
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise ValueError(f"model {model_uri} needs feature columns that the frame lacks: {absent}")
        if frame.empty:
            return np.empty(0, dtype=np.float64)
        x = frame[columns].astype("float64")
        return np.asarray(booster.inplace_predict(x), dtype=np.float64)

    return score


def reference_sample(run_id: str, settings: Settings | None = None) -> pd.DataFrame:
    """The reference sample logged by a training run (features, prediction, label) as a frame."""
    import mlflow
    import pandas as pd

    configure_mlflow(settings)
    with tempfile.TemporaryDirectory(prefix="mlops-ref-") as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp
        )
        return pd.read_parquet(io.BytesIO(Path(path).read_bytes()))


# --------------------------------------------------------------------------------------------------
# The model's lock


def _lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key derived from the model name."""
    return int.from_bytes(hashlib.sha256(f"mlops-promotion:{name}".encode()).digest()[:8], "big", signed=True)


def _libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg2://``) as libpq accepts it."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}" if sep else url


@contextlib.contextmanager
def model_lock(timeout: float, settings: Settings | None = None) -> Iterator[str]:
    """Hold the model's exclusive lock for the ``with`` block; yields its description.

    PostgreSQL advisory lock when ``MLOPS_LOCK_DATABASE_URL`` is set; otherwise a file lock under
    ``MLOPS_HOME/locks`` (embedded profile only: the cluster profile refuses to run without the
    database lock, since a file lock does not reach across pods). Raises :class:`LockTimeout`.
    """
    s = resolve_settings(settings)
    if s.lock_database_url:
        with _advisory_lock(s.lock_database_url, s.model_name, timeout) as held:
            yield held
        return
    if s.is_cluster:
        raise LockUnavailable(
            "the cluster profile needs MLOPS_LOCK_DATABASE_URL (a PostgreSQL URL) for the promotion "
            "lock: a file lock would not stop a promotion running in another pod"
        )
    with _file_lock(s, timeout) as held:
        yield held


@contextlib.contextmanager
def _file_lock(s: Settings, timeout: float) -> Iterator[str]:
    import fcntl

    folder = s.home / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"promotion-{s.model_name}.lock"
    deadline = time.monotonic() + timeout
    with open(path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise LockTimeout(
                        f"the promotion lock {path} was held for more than {timeout:.0f}s (holder: {holder})"
                    ) from None
                time.sleep(0.05)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {now()}\n")
            handle.flush()
            yield f"file lock {path}"
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(url: str, name: str, timeout: float) -> Iterator[str]:
    import psycopg2

    key = _lock_key(name)
    conn = psycopg2.connect(_libpq_url(url), connect_timeout=10, application_name="mlops-promotion")
    conn.autocommit = True
    try:
        deadline = time.monotonic() + timeout
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if cur.fetchone()[0]:
                    break
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"the PostgreSQL advisory lock {key} (promotion of {name}) was held for more than "
                        f"{timeout:.0f}s; see pg_locks where locktype = 'advisory'"
                    )
                time.sleep(0.1)
        try:
            yield f"postgresql advisory lock {key}"
        finally:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()
