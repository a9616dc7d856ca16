"""``monitor_day`` killed at each of its writes, on a copy of the scored world with its champion.

Two drills on a drifted day. Its first check writes the reference sample's cache, the three report
files (each a temporary file, then its rename), the commits of the MLflow store (the monitoring
experiment, the day's run, its scores and tags, its end) and the retrain request recorded on the
registered model. A second check of the day (its report folder full, its request pending) rewrites
the reports and its run and asks again for the request without recording it.

After every kill: ``verdict.json``, written last, commits the day's report folder; a reader that
sees it sees whole ``drift.html`` and ``drift.json`` of the same check, and a file of the folder
that a reader sees is whole. The monitoring experiment holds at most one active run for the day,
and a verdict that a reader sees names it. The rerun then ends as an uninterrupted run did: the
same verdict (times and the run id aside), exactly one finished run for the day that the verdict
names, the retrain requested once (a second check leaves the request, its time included, as it
was), and no temporary file left in the reports.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from include.mlops import lake, registry
from include.mlops.core.settings import settings
from include.mlops.monitoring import outputs, triggers
from tests.faults.harness import Runner, Stage, is_temporary
from tests.integration.scored_world import DRIFT_DAY, day

if TYPE_CHECKING:
    from pathlib import Path

    from tests.faults.harness import Point, Sandbox
    from tests.integration.scored_world import World

pytestmark = pytest.mark.integration

MONITOR = "include.mlops.monitoring:monitor_day"
PRELOAD = (
    "include.mlops.monitoring",
    "include.mlops.monitoring.monitor",
    "evidently",
    "evidently.core",
    "evidently.legacy",
    "evidently.metrics",
    "evidently.presets",
    "evidently.ui",
    "plotly.graph_objs",
    "scipy.stats",
    "sklearn.metrics",
    "pandas",
    "pyarrow.parquet",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "alembic",
    "sqlalchemy",
)
"""What the check imports on first use, imported once by the runner (``sqlalchemy`` also hooks
the MLflow store's commits)."""

DAY = day(DRIFT_DAY + 1)
"""A drifted day: its first check asks for a retrain."""

REPORTS = (outputs.HTML_NAME, outputs.JSON_NAME, outputs.VERDICT_NAME)
VOLATILE = ("computed_at", "seconds", "report_seconds", "mlflow_run_id")
"""The fields of ``verdict.json`` that differ from check to check of the same day."""


# --------------------------------------------------------------------------------------------------
# What readers see


def _folder() -> Path:
    from pathlib import Path

    return Path(outputs.report_location(DAY).path)


def _visible(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def _whole(name: str, data: bytes) -> str | None:
    """Why a report file is not whole; None when it is."""
    if name == outputs.HTML_NAME:
        return None if data.rstrip().endswith(b"</html>") else f"{name}: cut short ({len(data)} bytes)"
    try:
        record = json.loads(data)
    except ValueError as exc:
        return f"{name}: not valid JSON ({exc}), {len(data)} bytes"
    if name == outputs.JSON_NAME and "metrics" not in record:
        return f"{name}: no metrics"
    if name == outputs.VERDICT_NAME and record.get("day") != DAY.isoformat():
        return f"{name}: the verdict of {record.get('day')}, not {DAY}"
    return None


def _store() -> sqlite3.Connection:
    """A fresh read-only connection to the world's MLflow store (the world is replaced between runs)."""
    uri = settings().mlflow_tracking_uri
    assert uri.startswith("sqlite:///"), uri
    return sqlite3.connect(f"file:{uri.removeprefix('sqlite:///')}?mode=ro", uri=True)


def _day_runs() -> list[tuple[str, str]]:
    """The active runs of the day in the monitoring experiment: (run id, status)."""
    with closing(_store()) as db:
        return db.execute(
            "SELECT r.run_uuid, r.status FROM runs r "
            "JOIN experiments e ON e.experiment_id = r.experiment_id "
            "JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE e.name = ? AND r.lifecycle_stage = 'active' AND t.key = ? AND t.value = ?",
            (outputs.experiment_name(), outputs.RUN_DAY_TAG, DAY.isoformat()),
        ).fetchall()


def _request() -> dict[str, str]:
    """The retrain request's tags on the registered model."""
    with closing(_store()) as db:
        rows = db.execute(
            "SELECT key, value FROM registered_model_tags WHERE name = ? AND key LIKE 'drift_retrain_%'",
            (settings().model_name,),
        ).fetchall()
    return dict(rows)


def _after_kill(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
    """What is wrong with the day's reports and run after a kill; empty when all is well.

    ``before`` and ``after``: the report folder before the check and after an uninterrupted one.
    """
    problems = []
    seen = _visible(_folder())
    for name, data in sorted(seen.items()):
        if name not in REPORTS:
            problems.append(f"{name}: a file of the report folder that no check writes")
        elif problem := _whole(name, data):
            problems.append(problem)
    runs = _day_runs()
    if len(runs) > 1:
        problems.append(f"{len(runs)} monitoring runs for {DAY}: {runs}")
    verdict = seen.get(outputs.VERDICT_NAME)
    if verdict is None:
        return problems
    missing = [n for n in (outputs.HTML_NAME, outputs.JSON_NAME) if n not in seen]
    if missing:
        problems.append(f"verdict.json is visible without {', '.join(missing)}")
    old = verdict == before.get(outputs.VERDICT_NAME)
    for name in (outputs.HTML_NAME, outputs.JSON_NAME):
        if name not in seen:
            continue
        earlier = seen[name] == before.get(name)
        # A file a check writes the same bytes of each time (drift.json) cannot tell the checks apart.
        if earlier != old and not (earlier and after.get(name) == before.get(name)):
            problems.append(f"verdict.json of {'the earlier' if old else 'this'} check beside another {name}")
    try:
        run_id = json.loads(verdict).get("mlflow_run_id")
    except ValueError:
        return problems
    if run_id not in {r for r, _ in runs}:
        problems.append(f"verdict.json names run {run_id}, not an active run of the day ({runs})")
    return problems


def _fields(verdict: bytes) -> dict:
    return {k: v for k, v in json.loads(verdict).items() if k not in VOLATILE}


def _after_rerun(expected: dict, request: dict[str, str], ignored: set[str]) -> list[str]:
    """How the day's reports, run and request differ from the uninterrupted run's."""
    seen = _visible(_folder())
    problems = [f"{n}: missing after the rerun" for n in REPORTS if n not in seen]
    problems += [p for n, data in sorted(seen.items()) if n in REPORTS and (p := _whole(n, data))]
    problems += [f"{n}: left after the rerun" for n in sorted(set(seen) - set(REPORTS))]
    runs = _day_runs()
    if len(runs) != 1 or runs[0][1] != "FINISHED":
        problems.append(f"not one finished monitoring run for {DAY}: {runs}")
    if outputs.VERDICT_NAME not in seen or problems:
        return problems
    verdict = json.loads(seen[outputs.VERDICT_NAME])
    if verdict["mlflow_run_id"] != runs[0][0]:
        problems.append(f"verdict.json names run {verdict['mlflow_run_id']}, not the day's {runs[0][0]}")
    fields = _fields(seen[outputs.VERDICT_NAME])
    for key in sorted(set(expected) | set(fields)):
        if expected.get(key) != fields.get(key):
            problems.append(f"verdict.json {key}: {fields.get(key)!r}, not {expected.get(key)!r}")
    now = {k: v for k, v in _request().items() if k not in ignored}
    if now != request:
        problems.append(f"the retrain request is {now}, not {request}")
    return problems


# --------------------------------------------------------------------------------------------------
# The world and the drill


def _forget_checks() -> None:
    """The copy as if no day had been checked yet (the integration tier checks days of the world)."""
    client = registry.configure_mlflow()
    found = client.get_experiment_by_name(outputs.experiment_name())
    if found is not None:
        client.rename_experiment(found.experiment_id, f"{found.name}-earlier-{found.experiment_id}")
    model = settings().model_name
    for key in client.get_registered_model(model).tags:
        if key.startswith("drift_retrain_"):
            client.delete_registered_model_tag(model, key)
    lake.delete(lake.location(settings().reports_url).join(outputs.REPORT_FOLDER))


@dataclass
class Drill:
    """The points of one drill and what went wrong."""

    points: list[Point]
    problems: list[str] = field(default_factory=list)
    leftovers: dict[int, list[str]] = field(default_factory=dict)


def _drill(runner: Runner, sandbox: Sandbox, *, first: bool) -> Drill:
    """Check the day uninterrupted, then killed at each of its write points and rerun.

    ``first``: the day's first check, which records the retrain request; otherwise a check of a
    day already checked, which asks again for the pending request and records nothing.
    """
    stage = Stage(MONITOR, DAY)
    scratch = sandbox.path.parent / "runs"
    landing = sandbox.files("landing")
    sandbox.restore()
    before = _visible(_folder())
    baseline = stage.run(runner, scratch)
    assert baseline.returncode == 0 and baseline.outcome == "ok", baseline.stderr
    reports = _visible(_folder())
    assert sorted(reports) == sorted(REPORTS), sorted(reports)
    expected = _fields(reports[outputs.VERDICT_NAME])
    assert expected["retrain"] is True and expected["reissue"] is not first, expected["explanation"]
    # A first check records a new request (its time is the run's); a later one leaves it as it is.
    ignored = {triggers.TAG_AT} if first else set()
    request = {k: v for k, v in _request().items() if k not in ignored}
    assert request[triggers.TAG_DAY] == DAY.isoformat(), request
    drill = Drill(baseline.points)
    assert {"lake.write_bytes", "os.replace", "sqlalchemy.commit"} <= {p.primitive for p in drill.points}

    for point in baseline.points:
        label = f"monitor_day({DAY}) killed at {point.number}/{len(baseline.points)} [{point.where}]"
        sandbox.restore()
        killed = stage.run(runner, scratch, kill_at=point.number)
        if not killed.killed:
            drill.problems.append(f"{label}: not killed (exit {killed.returncode}):\n{killed.stderr}")
            continue
        drill.problems += [f"{label}: a reader saw {p}" for p in _after_kill(before, reports)]
        rerun = stage.run(runner, scratch)
        if rerun.returncode != 0 or rerun.outcome != "ok":
            drill.problems.append(f"{label}: the rerun failed ({rerun.returncode}):\n{rerun.stderr}")
            continue
        problems = _after_rerun(expected, request, ignored)
        drill.problems += [f"{label}: after the rerun {p}" for p in problems]
        if sandbox.files("landing") != landing:
            drill.problems.append(f"{label}: the landing zone changed")
        left = sorted(p for p in sandbox.files("reports") if is_temporary(p))
        if left:
            drill.leftovers[point.number] = left
    return drill


def test_a_days_drift_check_is_whole_whatever_write_it_is_killed_at(
    sandbox: Sandbox, shared_scored_world: World
):
    started = time.perf_counter()
    shutil.rmtree(sandbox.home)
    shutil.copytree(shared_scored_world.home, sandbox.home)
    # The MLflow artifacts of the champion stay the world's (read only); the copy's monitoring
    # experiment is created in the copy.
    _forget_checks()
    sandbox.freeze()
    drills = {}
    with Runner(sandbox.env, PRELOAD) as runner:
        drills["first check"] = _drill(runner, sandbox, first=True)
        # The world as the last rerun left it: the day checked, its request pending.
        sandbox.freeze()
        drills["check again"] = _drill(runner, sandbox, first=False)

    for name, drill in drills.items():
        where = sorted({p.where.rsplit("/", 1)[-1] for p in drill.points})
        print(f"\n{MONITOR} ({name}): {len(drill.points)} kill points at {', '.join(where)}")
        print(f"  temporary leftovers: {drill.leftovers}")
    print(f"  {time.perf_counter() - started:.1f} s")
    problems = [p for drill in drills.values() for p in drill.problems]
    assert not problems, "\n".join(problems)
    assert not any(drill.leftovers for drill in drills.values())
