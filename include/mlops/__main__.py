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
    from include.mlops.settings import settings
    from include.mlops.simulator import SimulationConfig, simulate

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


def _cmd_demo(args: argparse.Namespace) -> int:
    from include.mlops.demo import main

    return main(args.rest)


def _cmd_settings(args: argparse.Namespace) -> int:
    from include.mlops.settings import settings

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

    demo = commands.add_parser(
        "demo", help="run the pipeline on simulated days under a local Airflow", add_help=False
    )
    demo.add_argument("rest", nargs=argparse.REMAINDER, help="options of the demo (--help for them)")
    demo.set_defaults(func=_cmd_demo)

    show = commands.add_parser("settings", help="print the effective settings as environment variables")
    show.set_defaults(func=_cmd_settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "demo":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "demo":
        args.rest = [*args.rest, *unknown]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
