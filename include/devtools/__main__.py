"""The developer command line: ``python -m include.devtools COMMAND ...``.

Tools around the pipeline, never imported by it: the simulator that makes the data, the demo
that replays weeks under a real scheduler, the benchmarks, a local Airflow and the MLflow UI.
The pipeline's own commands are ``python -m include.mlops`` (train, rollback, settings).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import sys


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _cmd_simulate(args: argparse.Namespace) -> int:
    from include.devtools.simulator import SimulationConfig, simulate
    from include.mlops.core.settings import settings

    config = SimulationConfig(
        seed=settings().seed if args.seed is None else args.seed,
        rows_per_day=args.rows_per_day,
        drift_from=args.drift_from,
    )
    out = args.out or settings().landing_url
    summary = simulate(
        args.start,
        args.days,
        config,
        out,
        fmt=args.format,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(json.dumps({"out": out, "days": summary}, indent=2))
    return 0


def _cmd_mlflow_ui(args: argparse.Namespace) -> int:
    import os
    from urllib.parse import urlparse

    from include.mlops.core.settings import settings

    s = settings()
    # By default where the task pages' "MLflow run" buttons lead (MLOPS_MLFLOW_UI_URL).
    url = urlparse(s.mlflow_ui_url)
    host = args.host or url.hostname or "127.0.0.1"
    port = args.port or url.port or 5000
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", s.mlflow_tracking_uri,
        "--host", host, "--port", str(port),
        # One worker serves a person browsing; MLflow's default of four costs memory on a laptop.
        "--workers", "1",
    ]  # fmt: skip
    # Browsing needs no MLflow server jobs: their runner and seven queue consumers took about
    # 440 MiB beside the UI's 520 MiB.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    print(
        f"MLflow UI on http://{host}:{port} (tracking {s.mlflow_tracking_uri}); Ctrl-C stops it", flush=True
    )
    os.execv(sys.executable, command)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m include.devtools", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = commands.add_parser("simulate", help="write simulated daily drops into the landing zone")
    sim.add_argument("--start", type=_date, required=True, help="first day, YYYY-MM-DD")
    sim.add_argument("--days", type=int, default=1, help="number of consecutive days (default 1)")
    sim.add_argument("--rows-per-day", type=int, default=20_000, help="average transactions a day")
    sim.add_argument("--drift-from", type=_date, default=None, help="inject drift from this day on")
    sim.add_argument("--seed", type=int, default=None, help="random seed (default MLOPS_SEED, 7)")
    sim.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    sim.add_argument("--out", default=None, help="landing URL (default MLOPS_LANDING_URL)")
    sim.set_defaults(func=_cmd_simulate)

    ui = commands.add_parser("mlflow-ui", help="serve the MLflow UI on the embedded tracking store")
    ui.add_argument("--host", default=None, help="address (default: the host of MLOPS_MLFLOW_UI_URL)")
    ui.add_argument("--port", type=int, default=None, help="port (default: the port of MLOPS_MLFLOW_UI_URL)")
    ui.set_defaults(func=_cmd_mlflow_ui)

    # These own their options (`... demo --help`): main() hands them the rest of the line.
    for name, (_, text) in OWN_OPTIONS.items():
        commands.add_parser(name, help=text, add_help=False)
    return parser


OWN_OPTIONS = {
    "demo": ("include.devtools.demo", "run the pipeline on simulated days under a local Airflow"),
    "demo-cluster": (
        "include.devtools.cluster",
        "the demo on the cluster profile: PostgreSQL, Redis, S3, an MLflow server, Celery workers",
    ),
    "bench": ("include.devtools.bench", "benchmarks (print figures, never pass/fail)"),
    "airflow": (
        "include.devtools.local_airflow",
        "the local Airflow and MLflow UI: up, down, status, run -- CLI ARGS (prepares the home first)",
    ),
    "dashboards": ("include.devtools.dashboards", "rebuild the Evidently workspace from the lake, serve it"),
}
"""Commands that parse their own options, by the module whose ``main(argv)`` runs them."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in OWN_OPTIONS:
        return importlib.import_module(OWN_OPTIONS[argv[0]][0]).main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
