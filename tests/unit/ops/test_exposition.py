"""The text exposition format and the node-exporter textfiles, refreshed after the tasks that change facts."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from include.mlops.core.alerting import OpsSettings
from include.mlops.core.settings import load_settings, settings
from include.mlops.ops import (
    CATALOGUE,
    LAKE,
    REFRESH_AFTER,
    REGISTRY,
    TEXTFILES,
    refresh_after,
    render,
    sample,
    write_textfile,
)
from tests.unit.ops.recorded import land

if TYPE_CHECKING:
    from pathlib import Path


def test_every_family_is_described_even_without_a_sample() -> None:
    text = render([sample("rows_landed", 5, dataset="transactions", day="2026-01-05")]).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == {spec.name for spec in CATALOGUE}
    assert all(f.type == "gauge" and f.documentation for f in families.values())
    landed = families["mlops_rows_landed"].samples
    assert [(s.labels, s.value) for s in landed] == [({"dataset": "transactions", "day": "2026-01-05"}, 5.0)]


def test_a_sample_must_carry_exactly_its_family_labels() -> None:
    with pytest.raises(ValueError, match="takes labels"):
        sample("rows_landed", 5, dataset="transactions")


def test_every_exported_name_is_a_prometheus_name_of_the_project() -> None:
    names = [spec.name for spec in CATALOGUE]
    assert len(names) == len(set(names))
    for spec in CATALOGUE:
        assert spec.name.startswith("mlops_") and spec.source in (LAKE, REGISTRY)
        assert not spec.name.endswith("_total"), "gauges only: a _total name promises a counter"


def test_a_textfile_holds_its_own_source_only_and_is_replaced_whole(mlops_home: Path) -> None:
    land("transactions", __import__("datetime").date(2026, 1, 5), 42)
    folder = mlops_home / "metrics"
    path = write_textfile(LAKE, folder, settings(), OpsSettings.from_env({}))
    assert path == folder / TEXTFILES[LAKE]
    text = path.read_text()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "mlops_rows_landed" in names and "mlops_champion_version" not in names
    assert 'mlops_rows_landed{dataset="transactions",day="2026-01-05"} 42.0' in text
    assert os.listdir(folder) == [TEXTFILES[LAKE]], "no temporary file is left beside it"


def test_only_a_task_that_changes_a_fact_rewrites_a_textfile(mlops_home: Path) -> None:
    assert refresh_after("materialize_features", "materialize") == []
    assert not (mlops_home / "metrics").exists()
    written = refresh_after("ingest_transactions", "validate_and_land")
    assert [p.name for p in written] == [TEXTFILES[LAKE]]
    assert REFRESH_AFTER[("monitor_drift", "check_drift")] == (LAKE, REGISTRY)
    assert REFRESH_AFTER[("train_model", "evaluate_and_promote")] == (REGISTRY,)


def test_the_cluster_profile_writes_no_textfile(mlops_home: Path) -> None:
    cluster = load_settings({"MLOPS_HOME": str(mlops_home), "MLOPS_PROFILE": "cluster"})
    assert refresh_after("ingest_labels", "validate_and_land", cluster, OpsSettings.from_env({})) == []
    assert not (mlops_home / "metrics").exists()


def test_a_refresh_that_cannot_write_warns_and_returns(
    mlops_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = mlops_home / "blocked"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("a file where the folder should be")
    ops = OpsSettings.from_env({"MLOPS_METRICS_TEXTFILE_DIR": str(blocked)})
    assert refresh_after("ingest_labels", "validate_and_land", settings(), ops) == []
    assert "textfiles were not refreshed after ingest_labels.validate_and_land" in caplog.text
