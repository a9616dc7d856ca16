"""Airflow plugin: one click from a task to its Data Docs, drift report or MLflow run.

* Operator extra links on every task page: "GX Data Docs", "Evidently drift report" and
  "MLflow run". A task that produced one pushed its link to XCom (see
  ``include/mlops/orchestration/links.py``); for the others the button stays disabled.
* A small FastAPI app mounted on the Airflow API server at ``/mlops/`` serves the report files
  (Great Expectations Data Docs, quarantine reports, Evidently HTML) from ``MLOPS_REPORTS_URL``
  and ``MLOPS_QUARANTINE_URL``, local folders or S3 alike, so the links work in a browser.
  Airflow mounts plugin apps without its own authentication, so every route asks for it here: the
  user signed in to the Airflow UI (its JWT cookie) or an API token (``Authorization: Bearer``, from
  ``POST /auth/token``), allowed to read DAGs; 401/403 otherwise. Every answer carries a sandboxing
  Content-Security-Policy (:data:`CONTENT_SECURITY_POLICY`): report pages hold values from the drops.
"""

from __future__ import annotations

import html
import mimetypes
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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


# Where Great Expectations Data Docs take their CSS and JavaScript from (jQuery, Bootstrap and
# bootstrap-table build the index page's table of validations).
DATA_DOCS_CDNS = (
    "https://cdn.jsdelivr.net",
    "https://cdnjs.cloudflare.com",
    "https://code.jquery.com",
    "https://maxcdn.bootstrapcdn.com",
    "https://stackpath.bootstrapcdn.com",
    "https://unpkg.com",
)

# Every answer of the app carries this policy. Report pages hold values taken from drops (Data Docs
# print sampled unexpected values without escaping them), so they run sandboxed: ``sandbox`` without
# ``allow-same-origin`` gives a page an opaque origin, so that its scripts (Evidently's report is
# all JavaScript) cannot read Airflow's cookies or storage nor call its API with them; forms,
# fetch/XHR and plugins are off, and images load from the reports themselves only.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "sandbox allow-scripts",
        "default-src 'none'",
        f"script-src 'self' 'unsafe-inline' 'unsafe-eval' {' '.join(DATA_DOCS_CDNS)}",
        f"style-src 'self' 'unsafe-inline' {' '.join(DATA_DOCS_CDNS)}",
        f"font-src 'self' data: {' '.join(DATA_DOCS_CDNS)}",
        "img-src 'self' data:",
        "connect-src 'none'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'self'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
}


class PathRefused(ValueError):
    """A requested path that may not be served: it leaves its root or names a hidden file."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def path_parts(path: str) -> list[str]:
    """The segments of a path below a served root; :class:`PathRefused` for one that may not be served.

    ``.`` and ``..`` (after URL decoding, which the server has done) would leave the root: 400.
    Names starting with a dot are hidden, as in the listings (a write in progress): 404.
    """
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", "..") or "\\" in part or "\x00" in part:
            raise PathRefused("path escapes the report root", 400)
        if part.startswith("."):
            raise PathRefused(f"nothing at {path}", 404)
    return parts


def page(title: str, items: list[tuple[str, str]]) -> str:
    """A small HTML page listing links; every text and link is escaped (names come from the stores)."""
    rows = "".join(
        f'<li><a href="{html.escape(href, quote=True)}">{html.escape(text)}</a></li>' for href, text in items
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><ul>{rows}</ul></body></html>"
    )


def entry_href(name: str) -> str:
    """A relative link to a folder entry: percent-encoded (a ``:`` cannot make it a scheme)."""
    return "./" + quote(name, safe="/")


_bearer = HTTPBearer(auto_error=False)


async def signed_in_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Any:
    """The caller, authenticated as the Airflow API does it: a bearer token, else the UI's JWT cookie.

    Airflow's security module is imported here, not with the plugin: only the API server answers.
    """
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, None, credentials)


def may_read_dags(request: Request, user: Annotated[Any, Depends(signed_in_user)]) -> None:
    """403 unless the auth manager lets the user read DAGs (and so their runs' reports)."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    requires_access_dag("GET")(request, user)


def _reports_app() -> FastAPI:
    from include.mlops import lake

    app = FastAPI(
        title="MLOps reports",
        description=__doc__,
        dependencies=[Depends(may_read_dags)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page("MLOps reports", [(entry_href(f"{root}/"), f"{root}/") for root in links.SERVED_ROOTS])

    @app.get("/{root}")
    def root_folder(root: str, request: Request):
        if root not in links.SERVED_ROOTS:
            raise HTTPException(404, "unknown report root")
        return RedirectResponse(quote(request.url.path) + "/", status_code=307)

    @app.get("/{root}/{path:path}")
    def serve(root: str, path: str, request: Request):
        import pyarrow.fs as pafs

        if root not in links.SERVED_ROOTS:
            raise HTTPException(404, "unknown report root")
        try:
            parts = path_parts(path)
        except PathRefused as exc:
            raise HTTPException(exc.status, str(exc)) from None
        shown = "/".join([root, *parts])  # what is missing, relative to the served roots
        loc = lake.location(links.served_root_url(root))
        if parts:
            loc = loc.join(*parts)
        if path.endswith("/") or not parts:
            entries = lake.list_entries(loc)
            if not entries:
                raise HTTPException(404, f"nothing at {shown}/")
            return HTMLResponse(page(f"{shown}/", [(entry_href(name), name) for name in entries]))
        kind = loc.fs.get_file_info(loc.path).type
        if kind == pafs.FileType.Directory:
            return RedirectResponse(quote(request.url.path) + "/", status_code=307)
        if kind != pafs.FileType.File:
            raise HTTPException(404, f"no report at {shown}")
        media_type = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
        return Response(lake.read_bytes(loc), media_type=media_type)

    return app


class MlopsReportsPlugin(AirflowPlugin):
    name = "mlops_reports"
    global_operator_extra_links = [DataDocsLink(), DriftReportLink(), MlflowRunLink()]
    fastapi_apps = [{"app": _reports_app(), "url_prefix": "/mlops", "name": "MLOps reports"}]
    external_views = [
        {"name": "MLOps reports", "href": "/mlops/", "destination": "nav", "category": "browse"},
        # Written by `make demo` at the end of its replay (include/devtools/demo_report.py).
        {
            "name": "Demo summary",
            "href": "/mlops/reports/demo/index.html",
            "destination": "nav",
            "category": "browse",
        },
    ]
