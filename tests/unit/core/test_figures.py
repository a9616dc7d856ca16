"""Figures drawn from several threads at once all come out (matplotlib's text layout is not
thread-safe: without the lock, two threads laying out log-scale tick labels corrupt its mathtext
parser and most figures fail)."""

from __future__ import annotations

import io
import threading

import numpy as np

from include.mlops.core.figures import drawing, new_figure

THREADS = 4
FIGURES = 6


def _draw_log_figures(pngs: list[bytes], errors: list[BaseException]) -> None:
    x = np.logspace(-5, 0, 50)
    for _ in range(FIGURES):
        try:
            with drawing():
                fig, ax = new_figure()
                ax.plot(x, x)
                ax.set(xscale="log", yscale="log")  # tick labels are mathtext: $10^{-3}$
                fig.tight_layout()
                out = io.BytesIO()
                fig.savefig(out, format="png")
            pngs.append(out.getvalue())
        except Exception as error:  # asserted below
            errors.append(error)


def test_threads_drawing_log_axes_side_by_side_all_succeed() -> None:
    pngs: list[bytes] = []
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_draw_log_figures, args=(pngs, errors)) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:2]
    assert len(pngs) == THREADS * FIGURES
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 1000 for p in pngs)


def test_the_drawing_lock_is_re_entrant() -> None:
    with drawing(), drawing():
        fig, _ = new_figure(2, 2)
    assert fig.get_size_inches().tolist() == [2.0, 2.0]
