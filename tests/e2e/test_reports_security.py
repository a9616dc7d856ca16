"""The report app at ``/mlops/`` on a real API server: Airflow's authentication, sandboxed pages.

Reports hold rejected payment rows and, in Great Expectations Data Docs, values taken unescaped from
the drops; the app must answer only an Airflow user and serve every page in a CSP sandbox.
"""

from __future__ import annotations

import datetime as dt
import http.client
import urllib.error
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from include.devtools.simulator import SimulationConfig, transactions_for_day
from include.mlops import lake
from include.mlops.core.schema import TRANSACTIONS

if TYPE_CHECKING:
    from tests.e2e.conftest import AirflowStack

pytestmark = pytest.mark.e2e

HOSTILE = "<img src=x onerror=alert(1)>"
DAY = dt.date(2026, 1, 5)


def fetch(stack: AirflowStack, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, str]:
    """GET ``path`` as written (no client-side normalising of ``..`` or ``%2e``): status, headers, body."""
    url = urlsplit(stack.base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode(errors="replace")
    finally:
        conn.close()


def bearer(stack: AirflowStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.client.token()}"}


def assert_sandboxed(headers: dict[str, str]) -> None:
    policy = headers.get("content-security-policy", "")
    directives = [d.strip() for d in policy.split(";")]
    assert directives[0] == "sandbox allow-scripts", policy  # opaque origin: no allow-same-origin
    assert "allow-same-origin" not in policy and "default-src 'none'" in directives, policy
    assert "connect-src 'none'" in directives and "form-action 'none'" in directives, policy
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("referrer-policy") == "no-referrer"


@pytest.fixture(scope="module")
def stores(airflow_stack: AirflowStack) -> dict[str, str]:
    """A drift report, and a quarantined day whose Data Docs Great Expectations rendered from a drop
    carrying a script in a text column (validated and published as the ingest does)."""
    from include.mlops.ingest import validation

    home = airflow_stack.home
    drift = lake.location(str(home / "reports")).join("drift", f"dt={DAY}", "drift.html")
    lake.write_bytes(drift, b"<!DOCTYPE html><html><body>drift</body></html>")
    frame = transactions_for_day(DAY, SimulationConfig(rows_per_day=200)).to_pandas()
    frame.loc[frame.index[:3], "currency"] = HOSTILE
    report = validation.validate(frame, TRANSACTIONS, DAY, detail_on_failure=True)
    assert not report.success
    folder = lake.location(str(home / "quarantine")).join("transactions", f"dt={DAY}", "report")
    report.publish(folder.url)
    pages = [p for p in report.files if p.endswith(".html") and HOSTILE.encode() in report.files[p]]
    assert pages, "the Data Docs no longer carry the value unescaped: the test lost its point"
    return {
        "drift": f"/mlops/reports/drift/dt={DAY}/drift.html",
        "hostile": f"/mlops/quarantine/transactions/dt={DAY}/report/{pages[0]}",
        "index": f"/mlops/quarantine/transactions/dt={DAY}/report/docs/index.html",
    }


@pytest.mark.parametrize(
    "path",
    [
        "/mlops/",
        "/mlops/reports/",
        "/mlops/quarantine/transactions/",
        "/mlops/reports/drift/dt=2026-01-05/drift.html",
    ],
)
def test_an_anonymous_caller_gets_nothing(
    airflow_stack: AirflowStack, stores: dict[str, str], path: str
) -> None:
    status, headers, body = fetch(airflow_stack, path)
    assert status in (401, 403), (status, body[:300])
    assert "drift" not in body and "transactions" not in body
    assert_sandboxed(headers)
    # The Airflow API answers the same caller alike.
    assert fetch(airflow_stack, "/api/v2/dags")[0] in (401, 403)


def test_a_forged_or_foreign_token_gets_nothing(airflow_stack: AirflowStack, stores: dict[str, str]) -> None:
    forged = {"Authorization": "Bearer eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"}
    assert fetch(airflow_stack, stores["drift"], forged)[0] in (401, 403)
    assert fetch(airflow_stack, stores["drift"], {"Cookie": "_token=not-a-jwt"})[0] in (401, 403)


def test_an_api_token_opens_reports_in_the_sandbox(
    airflow_stack: AirflowStack, stores: dict[str, str]
) -> None:
    status, headers, body = fetch(airflow_stack, stores["drift"], bearer(airflow_stack))
    assert status == 200 and "drift" in body
    assert headers["content-type"].startswith("text/html")
    assert_sandboxed(headers)
    status, headers, body = fetch(airflow_stack, "/mlops/", bearer(airflow_stack))
    assert status == 200 and 'href="./reports/"' in body
    assert_sandboxed(headers)


def test_the_ui_session_cookie_opens_reports(airflow_stack: AirflowStack, stores: dict[str, str]) -> None:
    """A browser signed in to the Airflow UI sends its JWT in the ``_token`` cookie."""
    cookie = {"Cookie": f"_token={airflow_stack.client.token()}"}
    status, headers, body = fetch(airflow_stack, stores["index"], cookie)
    assert status == 200 and "<html" in body.lower()
    assert_sandboxed(headers)


def test_a_hostile_data_docs_page_is_served_only_sandboxed(
    airflow_stack: AirflowStack, stores: dict[str, str]
):
    status, headers, body = fetch(airflow_stack, stores["hostile"], bearer(airflow_stack))
    assert status == 200 and HOSTILE in body, "the page served is not the one GX rendered"
    assert headers["content-type"].startswith("text/html")
    assert_sandboxed(headers)
    assert fetch(airflow_stack, stores["hostile"])[0] in (401, 403)


def test_listings_escape_what_the_stores_hold(airflow_stack: AirflowStack, stores: dict[str, str]) -> None:
    name = lake.location(str(airflow_stack.home / "quarantine")).join("transactions", HOSTILE, "rows.json")
    lake.write_bytes(name, b"{}")
    status, headers, body = fetch(airflow_stack, "/mlops/quarantine/transactions/", bearer(airflow_stack))
    assert status == 200 and "&lt;img src=x onerror=alert(1)&gt;/" in body
    assert HOSTILE not in body
    assert_sandboxed(headers)


@pytest.mark.parametrize(
    ("path", "missing"),
    [
        ("/mlops/reports/drift/dt=1999-01-01/drift.html", "reports/drift/dt=1999-01-01/drift.html"),
        ("/mlops/quarantine/labels/", "quarantine/labels/"),
    ],
)
def test_no_answer_shows_where_the_stores_are(
    airflow_stack: AirflowStack, stores: dict[str, str], path, missing
):
    home = str(airflow_stack.home)
    status, headers, body = fetch(airflow_stack, path, bearer(airflow_stack))
    assert status == 404 and missing in body
    assert home not in body and "/reports/drift" not in body.replace(missing, "")
    assert_sandboxed(headers)
    for listed in ("/mlops/", "/mlops/reports/", "/mlops/quarantine/transactions/"):
        assert home not in fetch(airflow_stack, listed, bearer(airflow_stack))[2]


@pytest.mark.parametrize(
    "path",
    [
        "/mlops/reports/../quarantine/transactions/",
        "/mlops/reports/%2e%2e/quarantine/transactions/",
        "/mlops/reports/drift/%2E%2E/%2e%2e/%2e%2e/etc/passwd",
        "/mlops/reports/drift/..%2f..%2f..%2fetc/passwd",
    ],
)
def test_traversal_is_refused(airflow_stack: AirflowStack, stores: dict[str, str], path: str) -> None:
    status, _headers, body = fetch(airflow_stack, path, bearer(airflow_stack))
    assert status == 400, (status, body[:300])
    assert "root:" not in body and str(airflow_stack.home) not in body


def test_a_plain_http_client_needs_the_token_too(airflow_stack: AirflowStack) -> None:
    req = urllib.request.Request(airflow_stack.base_url + "/mlops/reports/", headers=bearer(airflow_stack))
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(airflow_stack.base_url + "/mlops/reports/", timeout=30)
    assert refused.value.code in (401, 403)
