"""How a task imports Great Expectations: quietly, and without loading ``scipy.stats`` it never uses.

Importing ``great_expectations`` runs its package ``__init__``, which imports the whole library:
the data context, every core expectation, every metric. Importing a submodule instead saves
nothing, since Python runs the package ``__init__`` first. One of those expectations,
``ExpectColumnKLDivergenceToBeLessThan``, does ``from scipy import stats`` at its top, and
``scipy.stats`` alone was about a quarter of the import on a 2-core machine (it parses the
docstrings of some 500 functions as it loads). No expectation the project's suites use reaches
it, so :func:`defer_unused_modules` registers it as a lazy module: the name is bound at once
and the module runs the first time something reads one of its attributes, or imports it (an
``import scipy.stats`` elsewhere loads it as usual).

This is the lazy-import recipe of the Python documentation (``importlib.util.LazyLoader``, see
"Implementing lazy imports"), applied to one module before GX is imported. It has two limits.
It does nothing when ``scipy.stats`` or GX is already imported (another library came first).
And LazyLoader in Python 3.11 is not thread-safe: two threads that touch the deferred module
for the first time at the same moment can see it half loaded; the ingest task touches it from
no thread at all. ``tests/unit/test_startup.py`` checks, in a fresh process, that validating a
good and a bad day never loads it and that it loads normally when used.
"""

from __future__ import annotations

import importlib.util
import logging
import sys

DEFERRED_MODULES = ("scipy.stats",)
"""Modules GX imports but no expectation of the project's suites uses: loaded on first use."""


def quiet_great_expectations() -> None:
    """Let only GX's warnings and errors through to the log.

    Importing GX logs about 200 INFO lines (the registration of every expectation and metric),
    which would bury the project's own lines in a task's log. The level is set on GX's own logger
    before it is imported; the root logger is left alone.
    """
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def defer_unused_modules() -> tuple[str, ...]:
    """Register each of :data:`DEFERRED_MODULES` as a lazy module, before GX is imported.

    A module already imported, or any module once GX is, is left as it is. Returns the names
    deferred by this call.
    """
    if "great_expectations" in sys.modules:
        return ()
    return tuple(name for name in DEFERRED_MODULES if _defer(name))


def _defer(name: str) -> bool:
    """Bind ``name`` in ``sys.modules`` (and on its parent package) to a module that loads on first use."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)  # imports the parent package, not the module
    if spec is None or spec.loader is None:
        return False
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)  # lazy: the module's code runs on first attribute access
    parent, _, child = name.rpartition(".")
    if parent:
        # What the import system does for a loaded submodule; without it, ``from scipy import
        # stats`` would go through scipy's module __getattr__, which imports (and loads) it.
        setattr(sys.modules[parent], child, module)
    return True


def prepare_great_expectations() -> None:
    """What to call before GX is first imported in a process: quiet logs, unused modules deferred."""
    quiet_great_expectations()
    defer_unused_modules()
