"""The report app of the ``mlops_reports`` plugin, without an Airflow: what it serves and how.

Authentication itself is Airflow's (checked end to end in ``tests/e2e/test_reports_security.py``);
here an anonymous caller is refused before any auth manager is asked, and the signed-in tests
stand the check in with a dependency override.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from include.mlops import lake

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[3]
HOSTILE = "<img src=x onerror=alert(1)>"


def _plugin():
    spec = importlib.util.spec_from_file_location(
        "mlops_reports_under_test", ROOT / "plugins" / "mlops_reports.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plugin = _plugin()


def _client(signed_in: bool) -> TestClient:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    reports = plugin._reports_app()
    if signed_in:
        reports.dependency_overrides[plugin.may_read_dags] = lambda: None
    outer = FastAPI()
    outer.mount("/mlops", reports)
    return TestClient(outer, follow_redirects=False)


@pytest.fixture
def stores(mlops_home: Path) -> Path:
    """A report and a quarantined day's Data Docs carrying a hostile value, in the local stores."""
    reports = lake.location(str(mlops_home / "reports"))
    lake.write_bytes(reports.join("drift", "dt=2026-01-05", "drift.html"), b"<html>drift</html>")
    lake.write_bytes(reports.join("drift", "dt=2026-01-05", ".tmp-x-drift.html"), b"half written")
    quarantine = lake.location(str(mlops_home / "quarantine"))
    page = f"<html><td>{HOSTILE}</td></html>".encode()
    lake.write_bytes(quarantine.join("transactions", "dt=2026-01-05", "docs", "index.html"), page)
    lake.write_bytes(quarantine.join("transactions", HOSTILE, "x.json"), b"{}")
    return mlops_home


@pytest.fixture
def client(stores: Path) -> Iterator[TestClient]:
    with _client(signed_in=True) as c:
        yield c


# -- pure parts -------------------------------------------------------------------------------


def test_the_policy_sandboxes_pages_without_their_origin_and_lets_them_reach_nothing() -> None:
    directives = dict(d.split(" ", 1) for d in plugin.CONTENT_SECURITY_POLICY.split("; "))
    assert directives["sandbox"] == "allow-scripts"  # an opaque origin: no allow-same-origin
    assert "allow-same-origin" not in plugin.CONTENT_SECURITY_POLICY
    for name in ("default-src", "connect-src", "form-action", "base-uri"):
        assert directives[name] == "'none'"
    assert directives["img-src"] == "'self' data:"
    assert plugin.SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert plugin.SECURITY_HEADERS["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["..", "a/../b", "./a", "a/..", "a\\..\\b", "a\x00"])
def test_a_path_that_leaves_its_root_is_refused(path: str) -> None:
    with pytest.raises(plugin.PathRefused) as refused:
        plugin.path_parts(path)
    assert refused.value.status == 400


def test_hidden_names_are_not_served_and_plain_paths_split() -> None:
    with pytest.raises(plugin.PathRefused) as refused:
        plugin.path_parts("drift/.tmp-x-drift.html")
    assert refused.value.status == 404
    assert plugin.path_parts("drift//dt=2026-01-05/drift.html") == ["drift", "dt=2026-01-05", "drift.html"]


def test_listings_escape_names_and_links() -> None:
    text = plugin.page(HOSTILE, [(plugin.entry_href(HOSTILE + "/"), HOSTILE + "/")])
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert plugin.entry_href("javascript:alert(1)") == "./javascript%3Aalert%281%29"
    assert plugin.entry_href('a"b c/') == "./a%22b%20c/"


# -- the app ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/mlops/", "/mlops/reports/", "/mlops/reports/drift/dt=2026-01-05/drift.html"]
)
def test_an_anonymous_caller_is_refused_with_the_policy(stores: Path, path: str) -> None:
    with _client(signed_in=False) as anonymous:
        answer = anonymous.get(path)
    assert answer.status_code == 401
    assert answer.headers["content-security-policy"] == plugin.CONTENT_SECURITY_POLICY
    assert "drift" not in answer.text


def test_a_report_is_served_with_the_sandbox(client: TestClient) -> None:
    answer = client.get("/mlops/reports/drift/dt=2026-01-05/drift.html")
    assert answer.status_code == 200 and answer.text == "<html>drift</html>"
    assert answer.headers["content-type"].startswith("text/html")
    for name, value in plugin.SECURITY_HEADERS.items():
        assert answer.headers[name] == value


def test_a_hostile_quarantine_page_is_served_only_sandboxed(client: TestClient) -> None:
    answer = client.get("/mlops/quarantine/transactions/dt=2026-01-05/docs/index.html")
    assert answer.status_code == 200 and HOSTILE in answer.text
    assert answer.headers["content-security-policy"].startswith("sandbox allow-scripts;")


def test_the_index_and_listings_show_no_store_location_and_escape_names(
    client: TestClient, stores: Path
) -> None:
    index = client.get("/mlops/")
    assert index.status_code == 200 and 'href="./reports/"' in index.text
    assert str(stores) not in index.text
    listing = client.get("/mlops/quarantine/transactions/")
    assert listing.status_code == 200
    assert "<img" not in listing.text and "&lt;img" in listing.text
    assert str(stores) not in listing.text
    assert ".tmp-" not in client.get("/mlops/reports/drift/dt=2026-01-05/").text


@pytest.mark.parametrize(
    ("path", "missing"),
    [
        ("/mlops/reports/drift/dt=1999-01-01/drift.html", "reports/drift/dt=1999-01-01/drift.html"),
        ("/mlops/quarantine/labels/", "quarantine/labels/"),
    ],
)
def test_a_missing_report_is_named_relative_to_its_root(
    client: TestClient, stores: Path, path: str, missing: str
):
    answer = client.get(path)
    assert answer.status_code == 404
    assert answer.json()["detail"].endswith(missing)
    assert str(stores) not in answer.text and "/reports/drift" not in answer.json()["detail"].split(" at ")[0]


@pytest.mark.parametrize(
    "raw",
    [
        "/mlops/reports/%2e%2e/quarantine/x",
        "/mlops/reports/drift/%2E%2E/%2e%2e/etc",
        "/mlops/reports/a%2f..%2fb",
    ],
)
def test_encoded_traversal_is_refused(client: TestClient, raw: str) -> None:
    answer = client.get(raw)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-security-policy"] == plugin.CONTENT_SECURITY_POLICY


def test_folders_redirect_to_their_listing(client: TestClient) -> None:
    assert client.get("/mlops/reports").headers["location"] == "/mlops/reports/"
    assert client.get("/mlops/reports/drift").headers["location"] == "/mlops/reports/drift/"
    assert client.get("/mlops/elsewhere/x").status_code == 404


def test_reports_on_s3_are_served_alike(
    s3_bucket: str, mlops_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.mlops.core import settings as settings_module

    monkeypatch.setenv("MLOPS_REPORTS_URL", f"s3://{s3_bucket}/reports")
    settings_module.settings.cache_clear()
    lake.write_bytes(lake.location(f"s3://{s3_bucket}/reports/drift/drift.html"), b"<html>s3</html>")
    with _client(signed_in=True) as c:
        page = c.get("/mlops/reports/drift/drift.html")
        listing = c.get("/mlops/reports/drift/")
        missing = c.get("/mlops/reports/drift/nope.html")
    assert page.status_code == 200 and page.text == "<html>s3</html>"
    assert page.headers["content-security-policy"] == plugin.CONTENT_SECURITY_POLICY
    assert 'href="./drift.html"' in listing.text
    assert s3_bucket not in listing.text and s3_bucket not in missing.text and missing.status_code == 404
