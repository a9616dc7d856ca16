"""The pipeline's command line: ``python -m include.mlops COMMAND ...``.

Every command is a thin wrapper around a function of the package, so the DAGs, the Kubernetes pod
and a person at a terminal run the same code. Developer tools (simulator, demo, benchmarks, local
Airflow) are ``python -m include.devtools``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


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

    result = rollback(args.version, reason=args.reason, force=args.force)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_settings(args: argparse.Namespace) -> int:
    from include.mlops.core import knobs

    if args.markdown:
        print(knobs.markdown_table())
    else:
        print(json.dumps(knobs.effective(), indent=2))
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from include.mlops import features

    if args.action == "apply":
        print(json.dumps(features.apply_definitions(), indent=2))
        return 0
    plan = features.plan_definitions()
    print(f"Feast plan of the definitions against {plan['registry']} (project {plan['project']}):")
    print("\n".join(f"  {change}" for change in plan["changes"]) or "  no changes")
    print(f"  ({plan['unchanged']} objects unchanged)")
    if args.check and plan["changes"]:
        print(f"The registry differs from the definitions: `{features.DEPLOY_COMMAND}` deploys them.")
        return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from include.mlops.core.settings import SettingsError
    from include.mlops.serving import serve

    try:
        serve(host=args.host, port=args.port, access_log=args.access_log)
    except SettingsError as error:
        logging.getLogger("include.mlops.serving").error("the scoring service does not start: %s", error)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: one sub-command per function of the package."""
    parser = argparse.ArgumentParser(prog="python -m include.mlops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    rollback.add_argument(
        "--force", action="store_true", help="roll back even to a version the promotion gate rejected"
    )
    rollback.set_defaults(func=_cmd_rollback)

    show = commands.add_parser("settings", help="print every setting's effective value, by concern")
    show.add_argument("--markdown", action="store_true", help="print the README's table of every setting")
    show.set_defaults(func=_cmd_settings)

    feast = commands.add_parser("features", help="deploy the Feast definitions (apply), or plan it")
    feast.add_argument("action", choices=("apply", "plan"), help="apply: deploy feature_repo/; plan: dry run")
    feast.add_argument("--check", action="store_true", help="plan: exit 1 when the registry would change")
    feast.set_defaults(func=_cmd_features)

    serve = commands.add_parser("serve", help="the real-time scoring service (POST /predict, /ready)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (not loopback: a token)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--access-log", action="store_true", help="log every request line (default: off)")
    serve.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command (``argv``, default the process's arguments); returns the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    # Outside Airflow nobody configures logging: the pipeline's INFO lines go to stderr (the task
    # that runs this as a subprocess relays them into its own log).
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
