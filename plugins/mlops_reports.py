"""Airflow plugin: one click from a task to its Data Docs, drift report or MLflow run.

* Operator extra links on every task page: "GX Data Docs", "Evidently drift report" and
  "MLflow run". A task that produced one pushed its link to XCom (see
  ``include/mlops/orchestration/links.py``); for the others the button stays disabled.
* A small FastAPI app mounted on the Airflow API server at ``/mlops/`` serves the report files
  (Great Expectations Data Docs, quarantine reports, Evidently HTML) from ``MLOPS_REPORTS_URL``
  and ``MLOPS_QUARANTINE_URL``, local folders or S3 alike, so the links work in a browser.
"""

from __future__ import annotations

import mimetypes
from typing import TYPE_CHECKING

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from include.mlops.orchestration import links

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey


class _XComLink(BaseOperatorLink):
    key: str = ""

    @property
    def name(self) -> str:
        return links.LINK_NAMES[self.key]

    @property
    def xcom_key(self) -> str:
        return self.key

    def get_link(self, operator, *, ti_key: TaskInstanceKey) -> str:
        # Runs in the API server: read the XCom the task pushed (empty string: no link).
        from airflow.serialization.definitions.operatorlink import XComOperatorLink

        return XComOperatorLink(name=self.name, xcom_key=self.key).get_link(operator, ti_key=ti_key)


class DataDocsLink(_XComLink):
    key = links.DATA_DOCS


class DriftReportLink(_XComLink):
    key = links.DRIFT_REPORT


class MlflowRunLink(_XComLink):
    key = links.MLFLOW_RUN


def _reports_app():
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response

    from include.mlops import lake

    app = FastAPI(title="MLOps reports", description=__doc__)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        items = "".join(
            f'<li><a href="{root}/">{root}</a>: {links.served_root_url(root)}</li>'
            for root in links.SERVED_ROOTS
        )
        return f"<h1>MLOps reports</h1><ul>{items}</ul>"

    @app.get("/{root}/{path:path}")
    def serve(root: str, path: str):
        if root not in links.SERVED_ROOTS:
            raise HTTPException(404, f"unknown report root {root!r}")
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise HTTPException(400, "path escapes the report root")
        loc = lake.location(links.served_root_url(root))
        if parts:
            loc = loc.join(*parts)
        if path.endswith("/") or not parts:
            entries = lake.list_entries(loc)
            if not entries:
                raise HTTPException(404, f"nothing at {loc.url}")
            items = "".join(f'<li><a href="{name}">{name}</a></li>' for name in entries)
            return HTMLResponse(f"<h1>{root}/{path}</h1><ul>{items}</ul>")
        if not lake.exists(loc):
            raise HTTPException(404, f"no report at {loc.url}")
        media_type = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
        return Response(lake.read_bytes(loc), media_type=media_type)

    return app


class MlopsReportsPlugin(AirflowPlugin):
    name = "mlops_reports"
    global_operator_extra_links = [DataDocsLink(), DriftReportLink(), MlflowRunLink()]
    fastapi_apps = [{"app": _reports_app(), "url_prefix": "/mlops", "name": "MLOps reports"}]
    external_views = [
        {"name": "MLOps reports", "href": "/mlops/", "destination": "nav", "category": "browse"},
    ]
