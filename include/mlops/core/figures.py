"""matplotlib figures that may be drawn from several threads of one process.

The gate's plots and the training run's feature importance are matplotlib ``Figure`` objects,
never pyplot's global state. That is not enough when two threads draw at once: matplotlib's
mathtext parser (pyparsing) belongs to the process, and two threads laying out log-scale tick
labels (``$\\mathdefault{10^{-3}}$``) at the same moment corrupt it. Every later figure of that
process then fails with ``ParseException``, so one race costs all the plots the worker draws
after it. Airflow runs tasks as processes, but promotions (and the tests) may run side by side
in threads: every figure is built and drawn inside :func:`drawing`.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

_DRAWING = threading.RLock()
"""Held while a figure is built and drawn (re-entrant: a drawing helper may call another)."""


@contextmanager
def drawing() -> Iterator[None]:
    """Hold the process's drawing lock: build, lay out and save figures inside it."""
    with _DRAWING:
        yield


def new_figure(width: float = 6, height: float = 5) -> tuple[Any, Any]:
    """A new figure and its axes, outside pyplot (no display, no global state).

    Call it inside :func:`drawing`: the figure is drawn when it is saved, and that is when
    matplotlib parses its tick labels.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()
