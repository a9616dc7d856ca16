"""The Prometheus rules and the Grafana dashboard: valid for promtool, and over metrics the project exports.

``promtool`` comes with Debian's ``prometheus`` package (CI installs it). Without it the promtool
tests skip with the reason, unless ``MLOPS_REQUIRE_SERVICES=1`` (CI), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest
import yaml

from include.mlops.core.settings import PROJECT_ROOT
from include.mlops.ops import exported_names

if TYPE_CHECKING:
    from pathlib import Path

PROMETHEUS = PROJECT_ROOT / "deploy" / "prometheus"
GRAFANA = PROJECT_ROOT / "deploy" / "grafana" / "mlops.json"
NAME = re.compile(r"\bmlops_[a-z0-9_]+")


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None)
    if found:
        return found
    message = "promtool not installed (Debian package `prometheus`): the alerting rules are not checked"
    if os.environ.get("MLOPS_REQUIRE_SERVICES"):
        pytest.fail(message)
    pytest.skip(message)


def run(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def rules() -> list[dict]:
    spec = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in spec["groups"] for rule in group["rules"]]


def test_the_rules_pass_promtool_check() -> None:
    done = run("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_the_rules_unit_tests_pass() -> None:
    done = run("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_each_rule_has_a_case_that_fires_it_and_one_that_keeps_it_quiet() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} is never shown firing"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} is never shown quiet"


def test_the_scrape_config_is_valid(tmp_path: Path) -> None:
    # promtool checks that the token file exists: check a copy whose token file does.
    token = tmp_path / "airflow-api-token"
    token.write_text("a-token")
    for name in ("alerts.yml", "prometheus.yml"):
        text = (PROMETHEUS / name).read_text().replace("/etc/prometheus/airflow-api-token", str(token))
        (tmp_path / name).write_text(text)
    done = run("check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (mlops,) = [job for job in config["scrape_configs"] if job["job_name"] == "mlops"]
    assert mlops["metrics_path"] == "/mlops-metrics/metrics" and mlops["authorization"]["type"] == "Bearer"


def test_every_metric_a_rule_names_is_exported() -> None:
    named = {name for rule in rules() for name in NAME.findall(rule["expr"])}
    assert named, "the rules name no metric"
    assert named <= exported_names(), f"not exported: {sorted(named - exported_names())}"


def test_every_query_of_the_grafana_dashboard_names_exported_metrics_only() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    targets = [t for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(targets) >= 20
    for target in targets:
        named = set(NAME.findall(target["expr"]))
        assert named, f"a query names no project metric: {target['expr']}"
        assert named <= exported_names(), f"not exported: {sorted(named - exported_names())}"
    # Every panel reads the dashboard's Prometheus data source variable, never a fixed uid.
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if p["type"] != "row"} == {"${datasource}"}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
