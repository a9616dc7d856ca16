"""Benchmarks: ``make bench``. They print figures and save them; they never pass or fail.

Each stage runs in a fresh process (so its peak RSS is its own) on simulated days of the given
sizes, next to a floor measured in the same run on the same rows: the raw work the stage wraps.
Results go to ``$MLOPS_HOME/bench/latest.json``.

Stages measured so far: simulate (floor: writing the same table as parquet) and ingest (GX
validation + atomic lake write; floor: reading and writing the same parquet), plus the parse time
of every DAG file beyond the Airflow import.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from include.mlops.settings import PROJECT_ROOT, settings

if TYPE_CHECKING:
    from pathlib import Path

_STAGE = r"""
import datetime as dt, json, resource, sys, time
from include.mlops.settings import settings
stage, rows, day = sys.argv[1], int(sys.argv[2]), dt.date.fromisoformat(sys.argv[3])
out = {}
if stage == "simulate":
    from include.mlops.simulator import SimulationConfig, transactions_for_day, write_drop
    t = time.perf_counter()
    table = transactions_for_day(day, SimulationConfig(rows_per_day=rows))
    write_drop(settings().landing_url, "transactions", day, table)
    out["seconds"] = time.perf_counter() - t
    out["rows"] = table.num_rows
elif stage == "simulate_floor":
    import pyarrow.parquet as pq
    from include.mlops.simulator import SimulationConfig, transactions_for_day
    table = transactions_for_day(day, SimulationConfig(rows_per_day=rows))
    t = time.perf_counter()
    pq.write_table(table, "/dev/null")
    out["seconds"] = time.perf_counter() - t
    out["rows"] = table.num_rows
elif stage == "ingest":
    from include.mlops.simulator import SimulationConfig, transactions_for_day, write_drop
    drop = transactions_for_day(day, SimulationConfig(rows_per_day=rows))
    write_drop(settings().landing_url, "transactions", day, drop)
    import great_expectations  # the import is task start-up, measured apart
    from include.mlops.ingest import ingest_day
    t = time.perf_counter()
    result = ingest_day("transactions", day)
    out["seconds"] = time.perf_counter() - t
    out["rows"] = result.rows
elif stage == "ingest_floor":
    import pyarrow.parquet as pq, glob
    path = glob.glob(f"{settings().landing_url}/transactions/dt={day}/*.parquet")[0]
    t = time.perf_counter()
    table = pq.read_table(path)
    pq.write_table(table, "/dev/null", compression="zstd")
    out["seconds"] = time.perf_counter() - t
    out["rows"] = table.num_rows
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

_PARSE = r"""
import json, sys, time, runpy
import airflow.sdk
t = time.perf_counter()
runpy.run_path(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def _run(code: str, *args: str, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark step {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(sizes: list[int], home: Path) -> dict:
    env = {**os.environ, "MLOPS_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    results: dict = {"machine": f"{os.cpu_count()} CPUs", "stages": {}, "dag_parse_seconds": {}}
    day = "2026-03-02"
    for stage, floor in (("simulate", "simulate_floor"), ("ingest", "ingest_floor")):
        per_size = {}
        for rows in sizes:
            measured = _run(_STAGE, stage, str(rows), day, env=env)
            base = _run(_STAGE, floor, str(rows), day, env=env)
            measured.update(
                rows_per_second=measured["rows"] / measured["seconds"],
                floor_seconds=base["seconds"],
                ratio_to_floor=measured["seconds"] / max(base["seconds"], 1e-9),
            )
            per_size[rows] = measured
            print(
                f"{stage:<10} {rows:>9,} rows: {measured['seconds']:7.2f} s  "
                f"{measured['rows_per_second']:>10,.0f} rows/s  peak {measured['peak_rss_mib']:6.0f} MiB  "
                f"floor {base['seconds']:.2f} s  x{measured['ratio_to_floor']:.1f}",
                flush=True,
            )
        if len(sizes) > 1:
            small, large = per_size[sizes[0]], per_size[sizes[-1]]
            exponent = math.log(large["seconds"] / small["seconds"]) / math.log(large["rows"] / small["rows"])
            per_size["scaling_exponent"] = exponent
            print(f"{stage:<10} scaling exponent {sizes[0]:,} -> {sizes[-1]:,}: {exponent:.2f}", flush=True)
        results["stages"][stage] = per_size
    for path in sorted((PROJECT_ROOT / "dags").glob("*.py")):
        seconds = _run(_PARSE, str(path), env=env)["seconds"]
        results["dag_parse_seconds"][path.name] = seconds
        print(f"parse {path.name:<28} {seconds:.3f} s beyond the Airflow import", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench ARGS=...", description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000", help="rows per day, comma-separated")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    home = settings().home / "bench" / "work"
    started = time.perf_counter()
    results = run(sizes, home)
    results["total_seconds"] = time.perf_counter() - started
    out = settings().home / "bench" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
