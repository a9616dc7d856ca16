"""Airflow plugin: the platform's Prometheus metrics, behind Airflow's authentication, kept fresh.

* A FastAPI app mounted on the Airflow API server at ``/mlops-metrics/``: ``GET
  /mlops-metrics/metrics`` answers the text exposition format of every metric of
  ``include/mlops/ops/catalogue.py``, computed from the lake and the registry (cached
  :data:`CACHE_SECONDS`). Airflow mounts plugin apps without its own authentication, so the app
  asks for it, as ``mlops_reports`` does: an API token (``Authorization: Bearer``, from ``POST
  /auth/token``) or the UI's session cookie, of a user allowed to read DAGs; 401/403 otherwise.
  Prometheus scrapes it with ``authorization: {credentials_file: ...}`` (see
  ``deploy/prometheus/prometheus.yml``).
* A listener that rewrites the node-exporter textfiles (``mlops_lake.prom``,
  ``mlops_registry.prom``) after each task that changes a fact they report
  (``include.mlops.ops.exposition.REFRESH_AFTER``), when the task ends, succeeded or failed.

A listener rather than task callbacks: it needs no line in any DAG file, sees every task whatever
callbacks a DAG sets (a task's own ``on_success_callback`` replaces the one of ``default_args``),
runs in the task's process after the task's own work, and Airflow logs and swallows its errors,
so a refresh can never fail a task. Only the textfile of the facts the task changed is rewritten:
an ingestion pays for reading the lake, not for MLflow.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

CACHE_SECONDS = 15.0
"""How long a computed answer is served again: several Prometheus servers (HA pairs) or a fast
scrape interval read the lake and the registry once per window."""

_bearer = HTTPBearer(auto_error=False)


async def signed_in_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Any:
    """The caller, authenticated as the Airflow API does it: a bearer token, else the UI's JWT cookie."""
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, None, credentials)


def may_read_dags(request: Request, user: Annotated[Any, Depends(signed_in_user)]) -> None:
    """403 unless the auth manager lets the user read DAGs (the metrics describe their runs' data)."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    requires_access_dag("GET")(request, user)


class _Cache:
    """The last rendered answer and when it was computed (one computation at a time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.body: bytes | None = None
        self.at = 0.0

    def get(self) -> bytes:
        from include.mlops.ops import collect, render

        with self.lock:
            if self.body is None or time.monotonic() - self.at > CACHE_SECONDS:
                self.body = render(collect())
                self.at = time.monotonic()
            return self.body


def metrics_app() -> FastAPI:
    """The app serving ``/metrics`` to authenticated callers only."""
    from include.mlops.ops import CONTENT_TYPE

    app = FastAPI(
        title="MLOps metrics",
        description=__doc__,
        dependencies=[Depends(may_read_dags)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    cache = _Cache()

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(cache.get(), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    return app


class TextfileRefresher:
    """Listener: rewrite the textfiles of the facts a finished task changed."""

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        """After a success."""
        self.refresh(task_instance)

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        """After a failure (a quarantined drop is a fact too) or a try that will be retried."""
        self.refresh(task_instance)

    @staticmethod
    def refresh(task_instance: Any) -> None:
        """Refresh after ``task_instance``'s task, when it changes a fact (else nothing is read)."""
        from include.mlops.ops import REFRESH_AFTER, refresh_after

        key = (getattr(task_instance, "dag_id", None), getattr(task_instance, "task_id", None))
        if key in REFRESH_AFTER:
            refresh_after(*key)


class MlopsMetricsPlugin(AirflowPlugin):
    name = "mlops_metrics"
    fastapi_apps = [{"app": metrics_app(), "url_prefix": "/mlops-metrics", "name": "MLOps metrics"}]
    listeners = [TextfileRefresher()]
