"""Benchmarks: ``make bench``. They print figures and save them; they never pass or fail.

For each size (rows in the measured day: 100k, 1M and 10M unless ``--sizes`` says otherwise) the
bench builds a *world* under ``$MLOPS_HOME/bench/<size>/`` (unmeasured), then runs the pipeline's
stages on day 12, each in a fresh process (so its peak RSS and its start-up are its own), and next
to each a *floor* measured in the same run on the same rows:

==============  =======================================  =============================================
stage           what runs                                floor
==============  =======================================  =============================================
simulate        generate the day, write the drop         write the same table as parquet
ingest          GX validation + atomic lake write        read and write the same parquet
features        ``compute_features_for_day``             DuckDB: read the day, one GROUP BY customer
                                                         (count, sum), write it as parquet
materialize     ``materialize_day`` into the online      one wide ``executemany`` INSERT of the
                store                                    day's snapshot rows into a fresh SQLite file
training        ``train`` (two training days and one     ``xgboost.train`` on a matrix of the same
                OOT day of history), MLflow, registry    shape, same rounds and parameters
scoring         ``score_day`` (champion)                 read the day and the snapshots, join them
                                                         with Arrow, write one score per row
drift           ``monitor_day`` (Evidently, 50k sample)  decile PSI with numpy on the same columns
                                                         and sample, against 5,000 reference rows
==============  =======================================  =============================================

The world: eleven days of history before day 12, written straight into the lake with their
labels (16 day generations, not 66: the simulator keeps the last five days' truth for the
labels), then every day's features and the Feast registry. Its size follows from what day 12 reads:

* The population (``rows / 8`` customers, ``rows / 40`` merchants) is the size's on every day:
  it sizes the snapshots features writes, materialize loads, scoring joins, the online store.
* The last seven days (5-11) hold 3/5 of the size: ingestion wants the day within 0.5x-2x of the
  median of the last seven partitions, and the 1- and 7-day windows read them.
* The four older days (1-4) hold 3/5 of the size up to :data:`OLDER_DAY_ROWS` payments (worlds up
  to 1M are what they always were): an evenly spaced share of a full day's payments, and only
  their labels. They feed the rest of the 30-day windows and training (as of day 9: days 2 and 3,
  out of time day 4), so that the champion scoring and drift need learns from about 1.8M rows at
  any size. Training on production days of the size is ``--training-days``.

Features' windows read daily summaries, not payments: the measured day summarises its own payments
(the full size), then sums eleven days of summaries, which grow with a day's active customers and
distinct customer-merchant pairs. So at 10M the window holds 4.4 days' worth of the size's payments
against 6.6 up to 1M, and a production day in steady state sums 30 full days: the features figure
is a lower bound of a steady-state day at every size, a little lower at 10M. At 10M the world
generates 44M payments instead of 66M.

``seconds`` is the stage's own work; ``wall_seconds`` is the whole process (interpreter, imports,
work): what a task pays. The scaling exponents are least-squares slopes of ``log(seconds)`` (and
of ``log(wall_seconds)``) against ``log(rows)`` over every size run. The *chain* of a day is
ingest, features, materialize, scoring and drift: its process seconds against the sum of their
floors (the goal: within 8x) and its highest peak RSS against 2 GB (:mod:`.bench_report`).

Before building a size the bench estimates its memory (each step's peak RSS, world included,
carried linearly in rows from the two largest sizes measured, in this run or the last saved one
on the same machine, else :data:`~.bench_report.RULE_MIB_PER_MILLION`) and its disk, and skips it,
saying why, when it needs over 80 % of ``MemAvailable`` or of the free disk (``--ignore-fit`` runs
it anyway). A running step is stopped when available memory falls under
:data:`~.bench_report.LOW_MEMORY_MIB`: recorded as skipped, with the stages that need it.

``--training-days N`` instead builds, for each size, a world of ``N + 7`` days at the full size
and trains on ``N`` of them (and one out-of-time day): time, peak RSS and floor, saved to
``$MLOPS_HOME/bench/training.json``. ``--scheduler`` also runs one day's chain (both drops
ingested, features, scoring, drift) under a real local Airflow and compares its wall time with its
tasks' durations on the critical path: the orchestration overhead. Results go to
``$MLOPS_HOME/bench/latest.json`` (saved after each size); ``--markdown`` prints the README's
table rows after the run, ``--markdown-only`` prints them from the saved file. ``--serving``
measures the scoring service alone instead (:mod:`include.devtools.bench_serving`,
``$MLOPS_HOME/bench/serving.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from include.devtools import bench_report as report
from include.devtools.bench_report import DEPENDS, STAGES
from include.mlops.core.settings import PROJECT_ROOT, settings

if TYPE_CHECKING:
    from pathlib import Path

HISTORY_DAYS = 11
DAY = dt.date(2026, 3, 12)
"""The measured day: day 12 of the world."""
FIRST = DAY - dt.timedelta(days=HISTORY_DAYS)
RECENT_DAYS = 7
"""History days at 3/5 of the size: the ingestion's volume check takes the median of the last seven."""
OLDER_DAY_ROWS = 600_000
"""Payments of each older history day at most (3/5 of 1M)."""
TRAIN_AS_OF = DAY - dt.timedelta(days=3)
"""Labels through day 9: training days 2 and 3, out-of-time day 4 (all older days)."""
TRAIN_WINDOW_DAYS = 2
TRAIN_OOT_DAYS = 1
WATCH_SECONDS = 1.0
"""How often a running step's memory is looked at."""

_PARSE = r"""
import json, sys, time, runpy
import airflow.sdk
t = time.perf_counter()
runpy.run_path(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


class StepFailed(RuntimeError):
    """A step's process failed; the message ends with its stderr."""


class StepStopped(StepFailed):
    """A step was stopped because the machine ran short of memory."""


def _run(command: list[str], env: dict[str, str]) -> dict:
    """Run ``python COMMAND`` and return the JSON of its last line, with ``wall_seconds``.

    Raises :class:`StepStopped` when it had to be stopped for memory, :class:`StepFailed` when it failed.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,  # its own group, so that stopping it stops what it started
    )
    try:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=WATCH_SECONDS)
                break
            except subprocess.TimeoutExpired:
                reason = report.short_of_memory(proc.pid)
                if reason:
                    raise StepStopped(reason) from None
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    if proc.returncode != 0:
        raise StepFailed(f"benchmark step {command[:3]} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - started
    return result


def _step(name: str, rows: int, env: dict[str, str], *extra: str, day: dt.date = DAY) -> dict:
    """One step of :mod:`include.devtools.bench_stages` in a fresh process."""
    return _run(["-m", "include.devtools.bench_stages", name, str(rows), day.isoformat(), *extra], env)


def _environment(home: Path) -> dict[str, str]:
    env = {**os.environ, "MLOPS_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    for name in list(env):
        # The bench's own stores, whatever the caller's profile points at.
        if (name.startswith("MLOPS_") and name != "MLOPS_HOME") or name == "MLFLOW_TRACKING_URI":
            env.pop(name)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


_machine = report.machine  # the serving bench describes the machine the same way


def world_args(rows: int) -> tuple[str, ...]:
    """The world step's arguments for a ``rows`` day: first day, rows of a recent and an older day,
    the first recent day."""
    history = max(rows * 3 // 5, 1000)
    older_until = DAY - dt.timedelta(days=RECENT_DAYS)
    return (FIRST.isoformat(), str(history), str(min(history, OLDER_DAY_ROWS)), older_until.isoformat())


def step_rows(step: str, rows: int) -> int:
    """What a step's memory grows with in a ``rows`` world: the rows of the (older) days the default
    training reads for training and its floor, the size for every other step."""
    if step.startswith("training"):
        return (TRAIN_WINDOW_DAYS + TRAIN_OOT_DAYS) * int(world_args(rows)[2])
    return rows


def training_plan(rows: int, days: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The world and training arguments for training on ``days`` full ``rows`` days and one OOT day.

    Training as of the last history day ``A`` learns from ``A-5-days .. A-6`` and judges on ``A-5``
    (the last day whose labels are all in); the day before the first training day holds the first
    snapshot: ``days + 7`` days in all.
    """
    as_of = DAY - dt.timedelta(days=1)
    first = as_of - dt.timedelta(days=days + 6)
    return (first.isoformat(), str(rows)), (as_of.isoformat(), str(days), "1")


def _with_floor(stage: str, rows: int, env: dict[str, str], measured: dict) -> dict:
    """``measured`` with its rows/s and the floor of ``stage`` on the same rows."""
    measured["rows_per_second"] = measured["rows"] / max(measured["seconds"], 1e-9)
    extra: tuple[str, ...] = ()
    if stage == "training":
        extra = (str(measured["fit_rows"]), str(measured["rounds"]), str(measured["features"]))
    try:
        floor = _step(f"{stage}_floor", rows, env, *extra)
    except StepFailed as error:
        measured.update(floor_seconds=None, ratio_to_floor=None, floor_error=str(error)[-1500:])
        return measured
    measured.update(
        floor_seconds=floor["seconds"],
        floor_rows=floor["rows"],
        floor_peak_rss_mib=floor["peak_rss_mib"],
        ratio_to_floor=measured["seconds"] / max(floor["seconds"], 1e-9),
        layout_floor_seconds=floor.get("layout_seconds"),
    )
    return measured


def _attempt(name: str, rows: int, env: dict[str, str], *extra: str) -> dict:
    """A step's result, or ``{"skipped": why}`` (stopped for memory) or ``{"error": stderr}``."""
    try:
        return _step(name, rows, env, *extra)
    except StepStopped as error:
        return {"skipped": str(error)}
    except StepFailed as error:
        return {"error": str(error)[-1500:]}


def _measure_stage(stage: str, rows: int, env: dict[str, str], done: dict) -> dict:
    """One stage of day 12 and its floor, unless a stage it needs did not run."""
    needs = [d for d in DEPENDS[stage] if "seconds" not in done.get(d, {})]
    if needs:
        return {"skipped": f"needs {', '.join(needs)}, which did not run"}
    extra: tuple[str, ...] = ()
    if stage == "training":
        extra = (TRAIN_AS_OF.isoformat(), str(TRAIN_WINDOW_DAYS), str(TRAIN_OOT_DAYS))
    measured = _attempt(stage, rows, env, *extra)
    if "seconds" not in measured:
        return measured
    if stage == "training":
        measured["days"] = TRAIN_WINDOW_DAYS + TRAIN_OOT_DAYS
    return _with_floor(stage, rows, env, measured)


def measure_size(rows: int, root: Path, log=print) -> dict:
    """Build the world for ``rows`` and measure every stage and its floor on its day 12."""
    home = root / str(rows)
    if home.exists():
        shutil.rmtree(home)
    env = _environment(home)
    world = _attempt("world", rows, env, *world_args(rows))
    if "wall_seconds" not in world:
        log(f"world    {rows:>9,} rows: not built: {world.get('skipped') or world.get('error')}")
        return world
    log(
        f"world    {rows:>9,} rows: {HISTORY_DAYS} days of history at {world['history_rows_per_day']:,} rows "
        f"({world['older_rows_per_day']:,} on days 1-{HISTORY_DAYS - RECENT_DAYS}), built in "
        f"{world['wall_seconds']:.0f} s, peak {world['peak_rss_mib']:.0f} MiB (not measured)"
    )
    results: dict[str, Any] = {"world": world}
    for stage in STAGES:
        results[stage] = _measure_stage(stage, rows, env, results)
        log(report.stage_line(stage, rows, results[stage]))
    results["chain"] = report.chain_totals(results)
    results["chain_wall_seconds"] = results["chain"]["process_seconds"]
    log(report.chain_sentence(rows, results["chain"]))
    results["footprint"] = report.footprint(results, home)
    return results


def measure_sizes(sizes: list[int], root: Path, ignore_fit: bool, log=print) -> dict:
    """Every size that fits (smallest first), saved to ``root/latest.json`` after each."""
    results: dict[str, Any] = {"machine": report.machine(), "day": DAY.isoformat(), "sizes": {}}
    log(f"machine: {results['machine']}")
    # This run's footprints, over those of the last saved run on a machine like this one.
    known = report.previous_footprints(root, results["machine"])
    for rows in sizes:
        free = report.available_mib(), report.free_disk_bytes(root)
        check = report.fit(rows, known, *free, report.Scaling(rows_of=step_rows))
        if not check["fits"] and not ignore_fit:
            log(f"skipped  {rows:>9,} rows: {check['reason']}")
            results["sizes"][rows] = {"skipped": check["reason"], "estimate": check}
        else:
            results["sizes"][rows] = {**measure_size(rows, root, log), "estimate": check}
            if "footprint" in results["sizes"][rows]:
                known[rows] = results["sizes"][rows]["footprint"]
        report.save(results, root / "latest.json")
    exponents = report.scaling({r: s for r, s in results["sizes"].items() if "chain" in s})
    results["scaling_exponent"], results["scaling_exponent_process"] = exponents["work"], exponents["process"]
    return results


def parse_times(env: dict[str, str], log=print) -> dict[str, float]:
    times = {}
    for path in sorted((PROJECT_ROOT / "dags").glob("*.py")):
        times[path.name] = _run(["-c", _PARSE, str(path)], env)["seconds"]
        log(f"parse       {path.name:<28} {times[path.name]:.3f} s beyond the Airflow import")
    return times


def _chain_durations(client: Any, dags: tuple[str, ...], key: str) -> dict[str, float]:
    """The duration of every task of the runs of ``dags`` for partition ``key``."""
    durations: dict[str, float] = {}
    for dag_id in dags:
        for run in client.dag_runs(dag_id):
            if run.get("partition_key") != key:
                continue
            for ti in client.task_instances(dag_id, run["dag_run_id"]):
                if ti.get("duration"):
                    durations[f"{dag_id}.{ti['task_id']}"] = float(ti["duration"])
    return durations


def _run_chain(day: dt.date) -> tuple[float, dict[str, float]]:
    """Trigger both producers of ``day`` on the running local Airflow; the chain's wall time and task
    durations."""
    from include.devtools import local_airflow
    from include.devtools.airflow_api import AirflowClient
    from include.devtools.replay import PRODUCERS, Tracker

    client = AirflowClient(local_airflow.base_url(), local_airflow.USER, local_airflow.password())
    tracker = Tracker(client, log=lambda _line: None)
    dags = (*PRODUCERS, "materialize_features", "score_transactions", "monitor_drift")

    def parsed() -> bool:
        return set(dags) <= set(client.dag_ids())

    tracker.wait(parsed, "the DAGs to be parsed", time.monotonic() + 300, every=2)
    for dag_id in dags:
        client.unpause(dag_id)
    key = day.isoformat()
    started = time.monotonic()
    for producer in PRODUCERS:
        client.trigger(producer, partition_key=key)

    def states() -> dict[str, str | None]:
        return {d: tracker.states(d, [key]).get(key) for d in dags}

    def ended() -> bool:
        now = states()
        return "failed" in now.values() or now["monitor_drift"] == "success"

    tracker.wait(ended, "the chain", time.monotonic() + 900, every=1)
    wall = time.monotonic() - started
    failed = [d for d, state in states().items() if state == "failed"]
    if failed:
        raise RuntimeError(f"the chain failed in {failed}")
    return wall, _chain_durations(client, dags, key)


def orchestration(rows: int, root: Path, log=print) -> dict:
    """Run day 13 of the ``rows`` world (both drops) through ingest -> features -> scoring -> drift
    under a real local Airflow (started and stopped here); compare the chain's wall time with the
    durations of its tasks on the critical path."""
    from include.devtools import local_airflow
    from include.devtools.replay import PRODUCERS
    from include.mlops.core import settings as settings_module

    day = DAY + dt.timedelta(days=1)
    env = _environment(root / str(rows))
    _step("simulate", rows, env, day=day)
    _step("simulate_labels", rows, env, day=day)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({**env, "MLOPS_TRAIN_CRON": "none", "MLOPS_AIRFLOW_PORT": "8795"})
    settings_module.settings.cache_clear()
    try:
        local_airflow.up()
        wall, durations = _run_chain(day)
    finally:
        local_airflow.down()
        os.environ.clear()
        os.environ.update(saved)
        settings_module.settings.cache_clear()
    # The two ingestions run side by side; the rest of the chain follows them one DAG at a time.
    dags = {name.split(".", 1)[0] for name in durations}
    per_dag = {d: sum(v for name, v in durations.items() if name.startswith(f"{d}.")) for d in dags}
    producers = [per_dag.get(p, 0.0) for p in PRODUCERS]
    tasks = max(producers) + sum(v for d, v in per_dag.items() if d not in PRODUCERS)
    log(
        f"scheduler   {rows:>9,}: chain wall {wall:.1f} s, its tasks on the critical path "
        f"{tasks:.1f} s, overhead {wall - tasks:.1f} s (x{wall / max(tasks, 1e-9):.2f})"
    )
    return {"rows": rows, "wall_seconds": wall, "task_seconds": tasks, "tasks": durations}


def train_at_scale(rows: int, days: int, root: Path, log=print) -> dict:
    """Build ``days + 7`` full ``rows`` days and train on ``days`` of them (and one OOT day)."""
    home = root / f"training-{rows}"
    if home.exists():
        shutil.rmtree(home)
    env = _environment(home)
    world_a, train_a = training_plan(rows, days)
    world = _attempt("world", rows, env, *world_a)
    if "wall_seconds" not in world:
        log(f"world    {rows:>9,} rows: not built: {world.get('skipped') or world.get('error')}")
        return world
    log(
        f"world    {rows:>9,} rows: {days + 7} days of {world['history_rows_per_day']:,} rows built in "
        f"{world['wall_seconds']:.0f} s, peak {world['peak_rss_mib']:.0f} MiB (not measured)"
    )
    measured = _attempt("training", rows, env, *train_a)
    if "seconds" in measured:
        measured["days"] = days + 1
        measured = _with_floor("training", rows, env, measured)
    log(report.stage_line("training", rows, measured))
    return {"world": world, "training": measured, "disk_bytes": report.disk_bytes(home)}


def measure_training(sizes: list[int], days: int, root: Path, ignore_fit: bool, log=print) -> dict:
    """``--training-days``: training at scale for each size that fits, saved to ``root/training.json``."""
    results: dict[str, Any] = {"machine": report.machine(), "day": DAY.isoformat()}
    results.update(training_days=days, sizes={})
    log(f"machine: {results['machine']}")
    previous = report.previous_footprints(root, results["machine"])
    for rows in sizes:
        # Full days, days + 7 of them; training is watched as it runs (streaming: not linear in rows).
        scaling = report.Scaling(("world",), None, 5 / 3, (days + 7) / (1 + 0.6 * HISTORY_DAYS))
        check = report.fit(rows, previous, report.available_mib(), report.free_disk_bytes(root), scaling)
        if not check["fits"] and not ignore_fit:
            log(f"skipped  {rows:>9,} rows: {check['reason']}")
            results["sizes"][rows] = {"skipped": check["reason"], "estimate": check}
        else:
            results["sizes"][rows] = {**train_at_scale(rows, days, root, log), "estimate": check}
        report.save(results, root / "training.json")
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make bench ARGS=...", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000,10000000", help="rows of the measured days")
    parser.add_argument("--scheduler", action="store_true", help="also one day's chain under a local Airflow")
    parser.add_argument("--training-days", type=int, default=0, help="instead: train on N full days a size")
    parser.add_argument(
        "--ignore-fit", action="store_true", help="run every size, even one estimated not to fit"
    )
    parser.add_argument("--markdown", action="store_true", help="also print the README's table rows")
    parser.add_argument(
        "--markdown-only",
        action="store_true",
        help="print the README's rows of the saved latest.json, run nothing",
    )
    from include.devtools import bench_serving

    bench_serving.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = settings().home / "bench"
    if args.serving:
        from include.devtools import bench_serving

        return bench_serving.run(args, root)
    if args.markdown_only:
        print("\n".join(report.markdown(json.loads((root / "latest.json").read_text()))))
        return 0
    sizes = sorted({int(x) for x in args.sizes.split(",")})
    log = functools.partial(print, flush=True)
    started = time.perf_counter()
    if args.training_days:
        results = measure_training(sizes, args.training_days, root, args.ignore_fit, log)
        if args.markdown:
            print("\n".join(report.training_markdown(results)))
        return 0
    results = measure_sizes(sizes, root, args.ignore_fit, log)
    results["dag_parse_seconds"] = parse_times(_environment(root / "parse"), log)
    ran = [r for r, s in results["sizes"].items() if "chain" in s]
    if args.scheduler and ran:
        results["orchestration"] = orchestration(min(ran), root, log)
    results["total_seconds"] = time.perf_counter() - started
    out = root / "latest.json"
    report.save(results, out)
    print("\n".join(["", *report.summary(results)]))
    if args.markdown:
        print("\n".join(["", *report.markdown(results)]))
    print(f"saved {out}")
    failed = [
        s for s in results["sizes"].values() if "error" in s or any("error" in s.get(t, {}) for t in STAGES)
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
