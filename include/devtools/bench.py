"""Benchmarks: ``make bench``. They print figures and save them; they never pass or fail.

For each size (rows in the measured day) the bench builds a *world* under
``$MLOPS_HOME/bench/<size>/``: eleven days of history at 3/5 of the size (lake, labels,
feature summaries and snapshots, the Feast registry), written directly, unmeasured. Then it runs
the pipeline's stages on day 12, each in a fresh process (so its peak RSS and its start-up are its
own), and next to each a *floor* measured in the same run on the same rows:

==============  =======================================  =============================================
stage           what runs                                floor
==============  =======================================  =============================================
simulate        generate the day, write the drop         write the same table as parquet
ingest          GX validation + atomic lake write        read and write the same parquet
features        ``compute_features_for_day``             DuckDB: read the day, one GROUP BY customer
                                                         (count, sum), write it as parquet
materialize     ``materialize_day`` into SQLite          one wide ``executemany`` INSERT of the
                                                         day's snapshot rows into a fresh SQLite file
training        ``train`` (two training days and one     ``xgboost.train`` on a matrix of the same
                OOT day of history), MLflow, registry    shape, same rounds and parameters
scoring         ``score_day`` (champion)                 read the day and the snapshots, join them
                                                         with Arrow, write one score per row
drift           ``monitor_day`` (Evidently, 50k sample)  decile PSI with numpy on the same columns
                                                         and sample, against 5,000 reference rows
==============  =======================================  =============================================

``seconds`` is the stage's own work; ``wall_seconds`` is the whole process (interpreter, imports,
work): what a task pays. The scaling exponent is ``log(t2/t1) / log(n2/n1)`` over the work
seconds of the smallest and largest sizes. ``--scheduler`` also runs one day's chain (both
drops ingested, features, scoring, drift) under a real local Airflow and compares its wall time
with its tasks' durations on the critical path: the orchestration overhead. Results go to
``$MLOPS_HOME/bench/latest.json``. ``--serving`` measures the scoring service alone instead
(:mod:`include.devtools.bench_serving`, ``$MLOPS_HOME/bench/serving.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from include.mlops.core.settings import PROJECT_ROOT, settings

HISTORY_DAYS = 11
DAY = dt.date(2026, 3, 12)
"""The measured day: day 12 of the world."""
FIRST = DAY - dt.timedelta(days=HISTORY_DAYS)
TRAIN_AS_OF = DAY - dt.timedelta(days=1)
TRAIN_WINDOW_DAYS = 2
TRAIN_OOT_DAYS = 1

_PARSE = r"""
import json, sys, time, runpy
import airflow.sdk
t = time.perf_counter()
runpy.run_path(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t}))
"""

STAGES = ("simulate", "ingest", "features", "materialize", "training", "scoring", "drift")
CHAIN = ("ingest", "features", "materialize", "scoring", "drift")
"""The stages one day goes through in production (the goal: under 90 s at 1M rows, start-up included)."""


def _run(command: list[str], env: dict[str, str]) -> dict:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark step {command[:3]} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - started
    return result


def _step(name: str, rows: int, env: dict[str, str], *extra: str, day: dt.date = DAY) -> dict:
    """One step of :mod:`include.mlops.bench_stages` in a fresh process."""
    return _run(["-m", "include.devtools.bench_stages", name, str(rows), day.isoformat(), *extra], env)


def _environment(home: Path) -> dict[str, str]:
    env = {**os.environ, "MLOPS_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    for name in list(env):
        # The bench's own stores, whatever the caller's profile points at.
        if (name.startswith("MLOPS_") and name != "MLOPS_HOME") or name == "MLFLOW_TRACKING_URI":
            env.pop(name)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _machine() -> dict:
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory": memory, "python": platform.python_version()}


def measure_size(rows: int, root: Path, log=print) -> dict:
    """Build the world for ``rows`` and measure every stage and its floor on its day 12."""
    home = root / str(rows)
    if home.exists():
        import shutil

        shutil.rmtree(home)
    env = _environment(home)
    started = time.perf_counter()
    world = _step("world", rows, env, FIRST.isoformat())
    log(
        f"world {rows:>9,} rows: {HISTORY_DAYS} days of history at {world['history_rows_per_day']:,} rows "
        f"built in {time.perf_counter() - started:.0f} s (not measured)"
    )
    results: dict = {}
    for stage in STAGES:
        extra: tuple[str, ...] = ()
        if stage == "training":
            extra = (TRAIN_AS_OF.isoformat(), str(TRAIN_WINDOW_DAYS), str(TRAIN_OOT_DAYS))
        measured = _step(stage, rows, env, *extra)
        floor_extra: tuple[str, ...] = ()
        if stage == "training":
            floor_extra = (str(measured["fit_rows"]), str(measured["rounds"]), str(measured["features"]))
        floor = _step(f"{stage}_floor", rows, env, *floor_extra)
        measured.update(
            rows_per_second=measured["rows"] / measured["seconds"],
            floor_seconds=floor["seconds"],
            floor_rows=floor["rows"],
            ratio_to_floor=measured["seconds"] / max(floor["seconds"], 1e-9),
        )
        results[stage] = measured
        log(
            f"{stage:<11} {rows:>9,}: {measured['rows']:>9,} rows {measured['seconds']:7.2f} s "
            f"(process {measured['wall_seconds']:6.2f} s)  {measured['rows_per_second']:>10,.0f} rows/s  "
            f"peak {measured['peak_rss_mib']:6.0f} MiB  floor {floor['seconds']:6.2f} s  "
            f"x{measured['ratio_to_floor']:.1f}"
        )
    chain = sum(results[s]["wall_seconds"] for s in CHAIN)
    results["chain_wall_seconds"] = chain
    log(f"chain       {rows:>9,}: {' + '.join(CHAIN)} = {chain:.1f} s of process wall time")
    return results


def _scaling(per_size: dict[int, dict], log=print) -> dict:
    sizes = sorted(per_size)
    small, large = per_size[sizes[0]], per_size[sizes[-1]]
    out = {}
    for stage in STAGES:
        a, b = small[stage], large[stage]
        if a["rows"] and b["rows"] > a["rows"]:
            out[stage] = math.log(b["seconds"] / a["seconds"]) / math.log(b["rows"] / a["rows"])
            log(f"scaling     {stage:<11} {a['rows']:,} -> {b['rows']:,} rows: exponent {out[stage]:.2f}")
    return out


def parse_times(env: dict[str, str], log=print) -> dict[str, float]:
    times = {}
    for path in sorted((PROJECT_ROOT / "dags").glob("*.py")):
        times[path.name] = _run(["-c", _PARSE, str(path)], env)["seconds"]
        log(f"parse       {path.name:<28} {times[path.name]:.3f} s beyond the Airflow import")
    return times


def orchestration(rows: int, root: Path, log=print) -> dict:
    """Run day 13 of the ``rows`` world (both drops) through ingest -> features -> scoring -> drift
    under a real local Airflow (started and stopped here); compare the chain's wall time with the
    durations of its tasks on the critical path."""
    from include.devtools import local_airflow
    from include.devtools.airflow_api import AirflowClient
    from include.devtools.demo import PRODUCERS, Tracker
    from include.mlops.core import settings as settings_module

    home = root / str(rows)
    day = DAY + dt.timedelta(days=1)
    env = _environment(home)
    _step("simulate", rows, env, day=day)
    _step("simulate_labels", rows, env, day=day)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({**env, "MLOPS_TRAIN_CRON": "none", "MLOPS_AIRFLOW_PORT": "8795"})
    settings_module.settings.cache_clear()
    try:
        local_airflow.up()
        client = AirflowClient(local_airflow.base_url(), local_airflow.USER, local_airflow.password())
        tracker = Tracker(client, log=lambda _line: None)
        dags = (*PRODUCERS, "materialize_features", "score_transactions", "monitor_drift")
        tracker.wait(lambda: set(dags) <= set(client.dag_ids()), "the DAGs to be parsed", 300, every=2)
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

        tracker.wait(ended, "the chain", 900, every=1)
        wall = time.monotonic() - started
        failed = [d for d, state in states().items() if state == "failed"]
        if failed:
            raise RuntimeError(f"the chain failed in {failed}")
        durations: dict[str, float] = {}
        for dag_id in dags:
            for run in client.dag_runs(dag_id):
                if run.get("partition_key") != key:
                    continue
                for ti in client.task_instances(dag_id, run["dag_run_id"]):
                    if ti.get("duration"):
                        durations[f"{dag_id}.{ti['task_id']}"] = float(ti["duration"])
    finally:
        local_airflow.down()
        os.environ.clear()
        os.environ.update(saved)
        settings_module.settings.cache_clear()
    # The two ingestions run side by side; the rest of the chain follows them one DAG at a time.
    per_dag = {d: sum(v for name, v in durations.items() if name.startswith(f"{d}.")) for d in dags}
    tasks = max(per_dag[p] for p in PRODUCERS) + sum(v for d, v in per_dag.items() if d not in PRODUCERS)
    log(
        f"scheduler   {rows:>9,}: chain wall {wall:.1f} s, its tasks on the critical path "
        f"{tasks:.1f} s, overhead {wall - tasks:.1f} s (x{wall / max(tasks, 1e-9):.2f})"
    )
    return {"rows": rows, "wall_seconds": wall, "task_seconds": tasks, "tasks": durations}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench ARGS=...", description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000", help="rows in the measured day, comma-separated")
    parser.add_argument(
        "--scheduler",
        action="store_true",
        help="also measure one day's chain under a local Airflow (smallest size)",
    )
    from include.devtools import bench_serving

    bench_serving.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.serving:
        return bench_serving.run(args, settings().home / "bench")
    sizes = sorted(int(x) for x in args.sizes.split(","))
    root = settings().home / "bench"
    started = time.perf_counter()
    results: dict = {"machine": _machine(), "day": DAY.isoformat(), "sizes": {}}
    print(f"machine: {results['machine']}", flush=True)

    def log(line: str) -> None:
        print(line, flush=True)

    for rows in sizes:
        results["sizes"][rows] = measure_size(rows, root, log)
    if len(sizes) > 1:
        results["scaling_exponent"] = _scaling(results["sizes"], log)
    results["dag_parse_seconds"] = parse_times(_environment(root / "parse"), log)
    if args.scheduler:
        results["orchestration"] = orchestration(sizes[0], root, log)
    results["total_seconds"] = time.perf_counter() - started
    out = root / "latest.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
