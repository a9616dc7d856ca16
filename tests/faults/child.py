"""The child process of the fault harness: run one stage, killed with SIGKILL at its k-th write.

Run as ``python tests/faults/child.py MODULE...`` with the project root on ``PYTHONPATH`` and the
world's ``MLOPS_*`` environment: it imports the modules named (the seconds of importing Great
Expectations, MLflow or Feast are paid once), then serves runs: for each line ``SPEC`` read from
stdin it forks, the fork installs the hooks and runs the stage, and the exit status of the fork
(negative: the signal that ended it) goes to stdout as one JSON line. ``SPEC`` is a JSON file:

* ``target``: the stage function, ``module:function``; it is called as ``target(*args, day)``;
* ``args`` and ``day`` (ISO date);
* ``kill_at``: the write point to die at (1-based), or 0 to run to completion;
* ``events``: a file that receives one line per write point reached, ``N<TAB>primitive<TAB>path``,
  written before the point runs (so the last line of a killed run names where it died);
* ``result``: a file that receives ``{"outcome": "ok" | <exception class name>}`` at the end;
* ``tolerate``: exception class names that are an expected outcome of the stage (a quarantined
  drop raises);
* ``stderr``: a file that receives the fork's standard output and error (a traceback when the stage
  fails);
* ``warm_up``: run the stage here, without hooks and without forking (once, before the runs, so
  that the forks inherit what the stage imports and caches on first use).

A write point is the entry of a call that changes the stores: ``lake.write_bytes`` (before the
temporary file), ``os.replace`` (the temporary file written, not yet renamed), ``lake.delete``, and
for the feature store the writes of Feast's registry (a file, or SQLAlchemy commits) and online
store.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import json
import os
import signal
import sys
import threading
import traceback


class _Points:
    """Counts the write points reached and dies at ``kill_at``."""

    def __init__(self, events: str, kill_at: int) -> None:
        self.fd = os.open(events, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.kill_at = kill_at
        self.count = 0
        self.feast_hooked = False

    def reached(self, primitive: str, path: object) -> None:
        self.count += 1
        os.write(self.fd, f"{self.count}\t{primitive}\t{path}\n".encode())
        if self.count == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def _wrap(points: _Points, owner: object, name: str, primitive: str, path_of) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def hooked(*args, **kwargs):
        points.reached(primitive, path_of(*args, **kwargs))
        return original(*args, **kwargs)

    setattr(owner, name, hooked)


def _install(points: _Points) -> None:
    from include.mlops import lake

    points.feast_hooked = "feast" in sys.modules
    _wrap(points, lake, "write_bytes", "lake.write_bytes", lambda loc, *a, **k: loc.path)
    _wrap(points, lake, "delete", "lake.delete", lambda loc, *a, **k: loc.path)
    _wrap(points, os, "replace", "os.replace", lambda src, dst, *a, **k: dst)
    _install_feast(points)
    _install_sqlalchemy(points)


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "UPSERT", "CREATE", "DROP", "ALTER")


def _install_sqlalchemy(points: _Points) -> None:
    """Each commit of a SQLAlchemy engine (Feast's SQL registry, MLflow) that writes, before it
    happens; the commits of read-only transactions change nothing and are no write point."""
    if "sqlalchemy" not in sys.modules:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def executed(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith(_WRITES):
            conn.info["fault_writes"] = True

    def commit(conn) -> None:
        if conn.info.pop("fault_writes", False):
            points.reached("sqlalchemy.commit", conn.engine.url)

    event.listen(Engine, "before_cursor_execute", executed)
    event.listen(Engine, "commit", commit)
    event.listen(Engine, "rollback", lambda conn: conn.info.pop("fault_writes", None))


def _install_feast(points: _Points) -> None:
    """The writes of Feast's file registry and the project's SQLite online store, when the runner
    preloaded Feast (a stage that uses Feast must name it: importing it here would cost every run
    seconds)."""
    if "feast" not in sys.modules:
        return
    from feast.infra.registry.file import FileRegistryStore

    from include.mlops.features.online_stores import BatchedSqliteOnlineStore

    _wrap(
        points,
        FileRegistryStore,
        "_write_registry",
        "feast.registry",
        lambda self, *a, **k: self._filepath,
    )
    _wrap(
        points,
        BatchedSqliteOnlineStore,
        "online_write_arrow",
        "feast.online_write",
        lambda self, config, table, *a, **k: table.name,
    )


def run(spec: dict) -> None:
    """Run one stage with the hooks installed (in the fork)."""
    points = _Points(spec["events"], int(spec["kill_at"]))
    _install(points)
    _call(spec, points)


def _call(spec: dict, points: _Points | None) -> None:
    module, function = spec["target"].split(":")
    target = getattr(importlib.import_module(module), function)
    try:
        target(*spec["args"], dt.date.fromisoformat(spec["day"]))
        outcome = "ok"
    except Exception as exc:
        if type(exc).__name__ not in spec.get("tolerate", []):
            raise
        outcome = type(exc).__name__
    with open(spec["result"], "w") as handle:
        json.dump(
            {
                "outcome": outcome,
                "points": points.count if points else 0,
                # Feast imported by the stage itself: its writes were not hooked (preload it).
                "feast_unhooked": points is not None and not points.feast_hooked and "feast" in sys.modules,
            },
            handle,
        )


def _fork(spec: dict) -> int:
    """Run ``spec`` in a fork; its exit status, negative when a signal ended it."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            err = os.open(spec["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(err, 1)  # what the stage prints must not reach the runner's replies
            os.dup2(err, 2)
            run(spec)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main(preload: list[str]) -> int:
    from include.mlops.features.store import quiet_feast_import

    quiet_feast_import()
    for module in preload:
        importlib.import_module(module)
    print(json.dumps({"ready": True, "threads": threading.active_count()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        with open(line.strip()) as handle:
            spec = json.load(handle)
        if spec.get("warm_up"):
            # Once, here and without hooks: what the stage imports and caches on first use is then
            # inherited by every fork (the caller restores the world before its runs).
            _call(spec, None)
            print(json.dumps({"returncode": 0}), flush=True)
            continue
        print(json.dumps({"returncode": _fork(spec)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
