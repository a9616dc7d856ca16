"""Publishing a validation report: its JSON result and the Data Docs pages it needs, nothing stale."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from include.mlops import lake
from include.mlops.ingest import DOCS_FOLDER, RESULT_NAME, ExpectationOutcome, ValidationReport, docs_files

if TYPE_CHECKING:
    from pathlib import Path

DAY = dt.date(2026, 1, 5)


def report(files: dict[str, bytes]) -> ValidationReport:
    outcomes = (
        ExpectationOutcome("expect_a", "amount", "amount is a number", True),
        ExpectationOutcome("expect_b", "amount", "amount is small", False, 2, 10, examples=(99.0,)),
    )
    return ValidationReport("transactions", DAY, False, 10, outcomes, files=files)


def test_publishing_writes_the_result_and_pages_and_removes_older_pages(tmp_path: Path) -> None:
    folder = lake.location(str(tmp_path / "reports"))
    lake.write_bytes(folder.join(DOCS_FOLDER, "validations", "old.html"), b"stale")
    files = {RESULT_NAME: b"{}", f"{DOCS_FOLDER}/index.html": b"<html/>"}

    published = report(files).publish(folder.url)

    assert published.result_url == folder.join(RESULT_NAME).url
    assert published.docs_url == folder.join(DOCS_FOLDER, "index.html").url
    assert lake.read_bytes(folder.join(RESULT_NAME)) == b"{}"
    assert not lake.exists(folder.join(DOCS_FOLDER, "validations", "old.html"))
    assert published.as_dict()["docs_url"] == published.docs_url


def test_a_report_without_pages_has_no_docs_url(tmp_path: Path) -> None:
    published = report({RESULT_NAME: b"{}"}).publish(str(tmp_path / "q"))
    assert published.docs_url is None and published.result_url.endswith(RESULT_NAME)


def test_a_report_lists_its_failures_in_suite_order() -> None:
    found = report({})
    assert [o.expectation for o in found.failures] == ["expect_b"]
    assert found.summary() == "  - amount is small: 2 of 10 rows fail, e.g. 99.0"
    assert found.as_dict()["failures"][0]["examples"] == [99.0]
    assert "files" not in found.as_dict()


def test_only_the_static_assets_the_pages_use_are_kept(tmp_path: Path) -> None:
    (tmp_path / "validations").mkdir()
    (tmp_path / "static" / "styles").mkdir(parents=True)
    (tmp_path / "index.html").write_bytes(b'<link href="static/styles/site.css">')
    (tmp_path / "validations" / "day.html").write_bytes(b"<p>day</p>")
    (tmp_path / "static" / "styles" / "site.css").write_bytes(b"p {}")
    (tmp_path / "static" / "styles" / "unused.css").write_bytes(b"a {}")

    assert docs_files(tmp_path) == {
        f"{DOCS_FOLDER}/index.html": b'<link href="static/styles/site.css">',
        f"{DOCS_FOLDER}/validations/day.html": b"<p>day</p>",
        f"{DOCS_FOLDER}/static/styles/site.css": b"p {}",
    }
