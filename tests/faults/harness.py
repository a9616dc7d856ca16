"""Kill a stage at each of its write points and check what every reader sees, then rerun it.

A :class:`Stage` runs a stage function in a child process (``child.py`` with this interpreter,
``PYTHONPATH`` = the project root, the world's ``MLOPS_*`` environment) that dies with SIGKILL at
its k-th write point. A :class:`Sandbox` holds the world the stage starts from: a pristine copy,
restored at the same path before each run so that every path written into an output (a report's
URLs) is the same from run to run.

:func:`kill_everywhere` is the whole drill: one uninterrupted run counts the write points and
gives the expected outputs; then for k = 1..N the world is restored, the stage is killed at point
k, the readers' view is checked (:func:`check_readers`), the stage is rerun to completion and its
outputs must equal the uninterrupted run's (:func:`converged`); the landing zone must never change.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Iterable, Mapping

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("child.py")
STORES = ("landing", "lake", "quarantine", "reports")
"""The folders of a home that hold data (MLflow and Feast's own files are not compared)."""

TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{32}-")
"""The temporary name of a write in progress (``lake.write_bytes``)."""

RUN_TIMEOUT_S = 300


# --------------------------------------------------------------------------------------------------
# Running a stage in a child process


@dataclass(frozen=True)
class Point:
    """A write point reached by a run: its number, the primitive and the path it writes."""

    number: int
    primitive: str
    path: str

    @property
    def where(self) -> str:
        """The point without its run-specific parts (temporary names), to compare runs."""
        return f"{self.primitive} {TEMPORARY.sub('.tmp-*-', self.path)}"


@dataclass(frozen=True)
class Run:
    """What a child run did: its exit status, the points it reached and the stage's outcome."""

    returncode: int
    points: list[Point]
    outcome: str | None
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


def _child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without project settings, then the world's."""
    base = {
        name: value
        for name, value in os.environ.items()
        if not (name.startswith("MLOPS_") and not name.startswith("MLOPS_TEST_"))
        and name != "MLFLOW_TRACKING_URI"
    }
    base.update(env)
    base["PYTHONPATH"] = str(PROJECT_ROOT)
    base.setdefault("PYTHONHASHSEED", "0")
    return base


class Runner:
    """The child process that runs stages: ``child.py`` with the modules to import once, forking a
    fresh process per run (so that a run costs the stage's time, not the imports')."""

    def __init__(self, env: Mapping[str, str], preload: Iterable[str] = ()) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), *preload],
            cwd=PROJECT_ROOT,
            env=_child_environment(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = self._reply()
        self.ready.pop("ready", None)

    def _reply(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the stage runner exited ({self.process.wait(timeout=RUN_TIMEOUT_S)})")
        return json.loads(line)

    def run(self, spec: Path) -> int:
        """Run the stage of ``spec`` in a fork; its exit status (negative: the signal)."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{spec}\n")
        self.process.stdin.flush()
        return int(self._reply()["returncode"])

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Stage:
    """A stage function called as ``target(*args, day)`` in a child process."""

    target: str
    day: dt.date
    args: tuple[str, ...] = ()
    tolerate: tuple[str, ...] = ()
    """Exception class names that are an expected outcome (a quarantined drop raises)."""

    def run(self, runner: Runner, scratch: Path, kill_at: int = 0, *, warm_up: bool = False) -> Run:
        """Run the stage to completion (``kill_at`` 0) or until it dies at write point ``kill_at``.

        ``warm_up``: run it inside the runner itself, without hooks (see ``child.py``).
        """
        scratch.mkdir(parents=True, exist_ok=True)
        tag = f"{time.monotonic_ns()}"
        spec, events, result, stderr = (
            scratch / f"{tag}.{n}" for n in ("spec.json", "events.tsv", "result.json", "stderr.txt")
        )
        spec.write_text(
            json.dumps(
                {
                    "target": self.target,
                    "args": list(self.args),
                    "day": self.day.isoformat(),
                    "kill_at": kill_at,
                    "events": str(events),
                    "result": str(result),
                    "stderr": str(stderr),
                    "tolerate": list(self.tolerate),
                    "warm_up": warm_up,
                }
            )
        )
        returncode = runner.run(spec)
        points = []
        if events.exists():
            for line in events.read_text().splitlines():
                number, primitive, path = line.split("\t", 2)
                points.append(Point(int(number), primitive, path))
        reply = json.loads(result.read_text()) if result.exists() else {}
        error = stderr.read_text()[-4000:] if stderr.exists() else ""
        assert not reply.get("feast_unhooked"), f"{self.target} uses Feast: name feast in the preload"
        return Run(returncode, points, reply.get("outcome"), error)


# --------------------------------------------------------------------------------------------------
# The world a stage starts from


@dataclass
class Sandbox:
    """A world at ``path`` (its ``home``) with a pristine copy to restore it from."""

    path: Path
    pristine: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.path / "home"

    def freeze(self) -> None:
        """Keep the world as it is now as the state every run starts from."""
        shutil.rmtree(self.pristine, ignore_errors=True)
        shutil.copytree(self.path, self.pristine, symlinks=True)

    def restore(self) -> None:
        """Put the world back as it was when frozen, at the same path."""
        shutil.rmtree(self.path)
        shutil.copytree(self.pristine, self.path, symlinks=True)

    def files(self, store: str) -> dict[str, bytes]:
        """Every file of a store, by path relative to the home, temporary and hidden ones included."""
        return tree(self.home, store)


def tree(home: Path, store: str) -> dict[str, bytes]:
    root = home / store
    if not root.exists():
        return {}
    return {p.relative_to(home).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def snapshot(home: Path, stores: Iterable[str] = STORES) -> dict[str, bytes]:
    """Every file of the data stores of a home, by path relative to the home."""
    files: dict[str, bytes] = {}
    for store in stores:
        files.update(tree(home, store))
    return files


def is_temporary(path: str) -> bool:
    return bool(TEMPORARY.search(path.rsplit("/", 1)[-1]))


# --------------------------------------------------------------------------------------------------
# What readers see


def is_report(path: str) -> bool:
    """A Great Expectations result or Data Docs page: it holds run ids and times, compared by presence."""
    return path.endswith("/validation.json") or "/docs/" in path


def check_whole(path: str, data: bytes, allowed: list[bytes]) -> str | None:
    """Why a file that a reader can see is not one of the whole versions it may be; None if it is."""
    if is_report(path):
        if path.endswith(".json"):
            try:
                json.loads(data)
            except ValueError as exc:
                return f"{path}: not valid JSON ({exc}), {len(data)} bytes"
        elif not data and all(allowed):
            return f"{path}: empty"
        return None
    if any(data == whole for whole in allowed):
        return None
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        except Exception as exc:
            return f"{path}: unreadable parquet ({type(exc).__name__}: {exc}), {len(data)} bytes"
        return f"{path}: a parquet file of {rows} rows that is neither the old nor the new file"
    return f"{path}: {len(data)} bytes that are neither the old nor the new file"


def check_readers(
    home: Path,
    before: Mapping[str, bytes],
    after: Mapping[str, bytes],
    readers: Iterable[Callable[[], list[str]]] = (),
) -> list[str]:
    """What is wrong with what readers see in ``home`` now (after a kill); empty when all is well.

    Every file that a reader can see (not temporary, not hidden) must be a whole version of
    itself: as it was before the stage (``before``) or as the uninterrupted run left it
    (``after``). ``readers`` run the project's own readers over the day and return their problems.
    """
    problems: list[str] = []
    now = snapshot(home, ("lake", "quarantine", "reports"))
    for path, data in now.items():
        name = path.rsplit("/", 1)[-1]
        if name.startswith((".", "_")):
            continue
        allowed = [v for v in (before.get(path), after.get(path)) if v is not None]
        if not allowed:
            problems.append(f"{path}: a file that neither the old nor the new state has")
            continue
        problem = check_whole(path, data, allowed)
        if problem:
            problems.append(problem)
    for reader in readers:
        problems.extend(reader())
    return problems


def partition_problems(folder_url: str, rows: Iterable[int | None]) -> list[str]:
    """What ``lake.read_table`` and ``lake.data_files`` see of a partition, against the row counts
    it may have (``None``: the partition may be absent)."""
    from include.mlops import lake

    folder = lake.location(folder_url)
    allowed = set(rows)
    problems = []
    files = lake.data_files(folder)
    for file in files:
        if is_temporary(file.path) or file.name.startswith("."):
            problems.append(f"lake.data_files({folder.url}) lists a temporary file {file.name}")
    try:
        table = lake.read_table(folder)
    except Exception as exc:
        return [*problems, f"lake.read_table({folder.url}) failed: {type(exc).__name__}: {exc}"]
    seen = None if table is None else table.num_rows
    if seen not in allowed:
        problems.append(
            f"lake.read_table({folder.url}) saw {seen} rows, expected one of {sorted(allowed, key=str)}"
        )
    if table is not None and len(files) != 1:
        problems.append(f"lake.data_files({folder.url}) sees {len(files)} files: {[f.name for f in files]}")
    return problems


def glob_problems(
    lake_root: Path, pattern: str, before: Mapping[str, bytes], after: Mapping[str, bytes]
) -> list[str]:
    """The files a glob reader (Feast's offline store) matches: none temporary, each whole."""
    problems = []
    for file in sorted(lake_root.rglob("*")):
        relative = file.relative_to(lake_root).as_posix()
        if not file.is_file() or not fnmatch.fnmatch(relative, pattern):
            continue
        key = f"lake/{relative}"
        if is_temporary(relative):
            problems.append(f"the glob {pattern} matches a temporary file {relative}")
            continue
        allowed = [v for v in (before.get(key), after.get(key)) if v is not None]
        problem = check_whole(key, file.read_bytes(), allowed) if allowed else f"{key}: unexpected file"
        if problem:
            problems.append(problem)
    return problems


# --------------------------------------------------------------------------------------------------
# Convergence


def converged(expected: Mapping[str, bytes], actual: Mapping[str, bytes]) -> list[str]:
    """How a rerun's outputs differ from the uninterrupted run's (temporary leftovers aside)."""
    problems = []
    expected_paths = {p for p in expected if not is_temporary(p)}
    actual_paths = {p for p in actual if not is_temporary(p)}
    for path in sorted(expected_paths - actual_paths):
        problems.append(f"{path}: missing after the rerun")
    for path in sorted(actual_paths - expected_paths):
        problems.append(f"{path}: left after the rerun, absent from the uninterrupted run")
    for path in sorted(expected_paths & actual_paths):
        if is_report(path):
            if path.endswith(".json"):
                try:
                    json.loads(actual[path])
                except ValueError:
                    problems.append(f"{path}: not valid JSON after the rerun")
        elif expected[path] != actual[path]:
            problems.append(
                f"{path}: differs from the uninterrupted run "
                f"({len(actual[path])} bytes, not {len(expected[path])})"
            )
    return problems


# --------------------------------------------------------------------------------------------------
# The drill


@dataclass
class Drill:
    """The result of :func:`kill_everywhere`: the points tried and every problem found."""

    points: list[Point]
    outcome: str
    problems: list[str] = field(default_factory=list)
    leftovers: dict[int, list[str]] = field(default_factory=dict)
    """Temporary files left after each rerun (by kill point): never read, only disk."""
    seconds: float = 0.0

    def report(self) -> str:
        return "\n".join(self.problems)

    def summary(self) -> str:
        """The points tried, the time taken and the temporary files left (for ``pytest -s``)."""
        return (
            f"{len(self.points)} kill points in {self.seconds:.1f} s; temporary leftovers: {self.leftovers}"
        )


def kill_everywhere(
    sandbox: Sandbox,
    stage: Stage,
    readers: Callable[[Mapping[str, bytes], Mapping[str, bytes]], list[str]] = lambda before, after: [],
    *,
    preload: Iterable[str] = (),
    warm_up: bool = False,
    extra_stores: tuple[str, ...] = (),
    after_baseline: Callable[[], None] = lambda: None,
    after_rerun: Callable[[], list[str]] = lambda: [],
) -> Drill:
    """Kill ``stage`` at each of its write points in turn; check readers, rerun, check convergence.

    ``readers(before, after)`` runs the project's readers over the world (with its settings in
    the environment) after a kill and returns their problems; ``before`` and ``after`` are the
    stores' files before the stage and after an uninterrupted run. ``preload``: the modules the
    runner imports once; ``warm_up``: run the stage once in the runner first (only for stages that
    keep no connection open to a file that a restore replaces). ``extra_stores``: folders of the
    home compared besides :data:`STORES`. ``after_baseline()`` runs once the uninterrupted run is
    done (to read what readers outside the stores should see); ``after_rerun()`` returns how the
    world differs from it after each rerun.
    """
    with Runner(sandbox.env, preload) as runner:
        if warm_up:
            sandbox.restore()
            stage.run(runner, sandbox.path.parent / f"{sandbox.path.name}-runs", warm_up=True)
        return _drill(runner, sandbox, stage, readers, (*STORES, *extra_stores), after_baseline, after_rerun)


def _drill(
    runner: Runner,
    sandbox: Sandbox,
    stage: Stage,
    readers: Callable[[Mapping[str, bytes], Mapping[str, bytes]], list[str]],
    stores: tuple[str, ...],
    after_baseline: Callable[[], None],
    after_rerun: Callable[[], list[str]],
) -> Drill:
    started = time.perf_counter()
    scratch = sandbox.path.parent / f"{sandbox.path.name}-runs"
    sandbox.restore()
    before = snapshot(sandbox.home)
    landing = sandbox.files("landing")
    baseline = stage.run(runner, scratch)
    assert baseline.returncode == 0 and baseline.outcome is not None, (
        f"the uninterrupted run of {stage.target} failed ({baseline.returncode}):\n{baseline.stderr}"
    )
    after = snapshot(sandbox.home)
    expected = snapshot(sandbox.home, stores)
    after_baseline()
    drill = Drill(baseline.points, baseline.outcome)
    assert drill.points, f"{stage.target} reached no write point: the hooks miss its writes"
    name = f"{stage.target}({', '.join((*stage.args, stage.day.isoformat()))})"

    for point in baseline.points:
        k = point.number
        label = f"{name} killed at {k}/{len(baseline.points)} [{point.where}]"
        sandbox.restore()
        killed = stage.run(runner, scratch, kill_at=k)
        if not killed.killed:
            drill.problems.append(f"{label}: not killed (exit {killed.returncode}):\n{killed.stderr}")
            continue
        if killed.points[-1].where != point.where:
            drill.problems.append(f"{label}: died at another point, {killed.points[-1].where}")
        for problem in check_readers(sandbox.home, before, after) + readers(before, after):
            drill.problems.append(f"{label}: a reader saw {problem}")
        if sandbox.files("landing") != landing:
            drill.problems.append(f"{label}: the landing zone changed")
        rerun = stage.run(runner, scratch)
        if rerun.returncode != 0 or rerun.outcome != baseline.outcome:
            drill.problems.append(
                f"{label}: the rerun ended {rerun.outcome or rerun.returncode}, not {baseline.outcome}:\n"
                f"{rerun.stderr}"
            )
            continue
        actual = snapshot(sandbox.home, stores)
        drill.problems.extend(f"{label}: after the rerun {p}" for p in converged(expected, actual))
        drill.problems.extend(f"{label}: after the rerun {p}" for p in after_rerun())
        if sandbox.files("landing") != landing:
            drill.problems.append(f"{label}: the landing zone changed after the rerun")
        left = sorted(p for p in actual if is_temporary(p))
        if left:
            drill.leftovers[k] = left
    drill.seconds = time.perf_counter() - started
    return drill
