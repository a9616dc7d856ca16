"""The project's command line: ``python -m include.mlops COMMAND ...``.

Every command is a thin wrapper around a function of the package, so the DAGs, the Kubernetes pod
and a person at a terminal run the same code.
"""

from __future__ import annotations

import argparse
import datetime as dt
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


def _cmd_train(args: argparse.Namespace) -> int:
    from include.mlops.training import train

    result = train(
        as_of=args.as_of,
        window_days=args.window_days,
        oot_days=args.oot_days,
        reason=args.reason,
        airflow_run_id=args.airflow_run_id,
    )
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from include.mlops.promotion import rollback

    print(json.dumps(rollback(args.version, reason=args.reason), indent=2, default=str))
    return 0


def _cmd_mlflow_ui(args: argparse.Namespace) -> int:
    import os

    from include.mlops.core.settings import settings

    s = settings()
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", s.mlflow_tracking_uri,
        "--host", "127.0.0.1", "--port", str(args.port),
    ]  # fmt: skip
    print(f"MLflow UI on http://127.0.0.1:{args.port} (tracking {s.mlflow_tracking_uri}); Ctrl-C stops it")
    os.execv(sys.executable, command)
    return 0


def _cmd_settings(args: argparse.Namespace) -> int:
    from include.mlops.core.settings import settings

    print(json.dumps(settings().as_env(), indent=2, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m include.mlops", description=__doc__)
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

    # `demo` and `bench` own their options (`... demo --help`): main() hands them the rest of the line.
    commands.add_parser("demo", help="run the pipeline on simulated days under local Airflow", add_help=False)

    train = commands.add_parser("train", help="train, log and register a challenger (both backends run this)")
    train.add_argument("--as-of", type=_date, required=True, help="train with the data known on this day")
    train.add_argument("--window-days", type=int, default=14, help="fully labelled days to train on")
    train.add_argument("--oot-days", type=int, default=3, help="out-of-time days to evaluate on")
    train.add_argument("--reason", default="manual", help="why this training runs (an MLflow tag)")
    train.add_argument("--airflow-run-id", default=None, help="the Airflow run that started it")
    train.set_defaults(func=_cmd_train)

    rollback = commands.add_parser("rollback", help="move the champion alias back to an earlier version")
    rollback.add_argument("version", type=int, help="the registered model version to serve again")
    rollback.add_argument("--reason", required=True, help="why (recorded on the model)")
    rollback.set_defaults(func=_cmd_rollback)

    ui = commands.add_parser("mlflow-ui", help="serve the MLflow UI on the embedded tracking store")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=_cmd_mlflow_ui)

    commands.add_parser("bench", help="benchmarks (print figures, never pass/fail)", add_help=False)

    show = commands.add_parser("settings", help="print the effective settings as environment variables")
    show.set_defaults(func=_cmd_settings)
    return parser


OWN_OPTIONS = {"demo": "include.devtools.demo", "bench": "include.devtools.bench"}
"""Commands that parse their own options, by the module whose ``main(argv)`` runs them."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in OWN_OPTIONS:
        import importlib

        return importlib.import_module(OWN_OPTIONS[argv[0]]).main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
