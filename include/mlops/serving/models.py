"""The models the service scores with, and the watcher that keeps them in step with the registry.

Blue-green from the aliases: the :class:`ModelWatcher` polls the registry's champion and challenger
every ``MLOPS_SERVING_POLL_SECONDS``. When one moves (a promotion, a rollback, a new challenger)
the new version is loaded in the watcher's thread, next to the one serving, and the service's
:class:`ModelSet` is replaced in one assignment. A request takes the set that is current when it
arrives and is scored by it to the end, so in-flight requests finish on the old version and the
next ones get the new one; nothing is reloaded on the request path and no request fails in the
swap. A version that cannot be loaded (or needs features the service cannot give) is not swapped
in: the old one keeps serving and the watcher tries again at its next poll.

MLflow, pandas and XGBoost are imported inside the functions (through the registry).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.core.settings import resolve_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import numpy as np
    import pandas as pd

    from include.mlops.core.settings import Settings

logger = logging.getLogger(__name__)

FLAG = "flag"
"""The decision for a payment scored at or above its model's operating threshold."""

PASS = "pass"
"""The decision for a payment scored below it."""


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")
_OPTION_PASSWORD = re.compile(r"(password=)[^,;&\s]+", re.IGNORECASE)


def redact_credentials(text: str) -> str:
    """``text`` with the passwords in it replaced by ``***`` (of URLs, and Feast's Redis
    ``password=`` option): errors of the registry or the online store quote their addresses,
    and ``/ready`` (open to probes) and the log show them."""
    return _OPTION_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


class IncompatibleModel(RuntimeError):
    """A version needs input columns the feature service does not serve: it cannot be swapped in."""


@dataclass(frozen=True)
class ServingModel:
    """One loaded version: its scorer, input columns and operating threshold."""

    version: int
    uri: str
    columns: tuple[str, ...]
    threshold: float | None
    """The score at or above which a payment is flagged; ``None`` when the version records none."""
    scorer: Callable[[pd.DataFrame], np.ndarray]

    def decide(self, score: float) -> str | None:
        """:data:`FLAG` or :data:`PASS` at the operating threshold; ``None`` without one."""
        if self.threshold is None:
            return None
        return FLAG if score >= self.threshold else PASS


@dataclass(frozen=True)
class ModelSet:
    """The versions serving now: the champion, and a challenger distinct from it (or ``None``)."""

    champion: ServingModel
    challenger: ServingModel | None = None

    def model(self, alias: str) -> ServingModel:
        """The model an alias names (:data:`registry.CHAMPION` or :data:`registry.CHALLENGER`)."""
        if alias == registry.CHALLENGER and self.challenger is not None:
            return self.challenger
        if alias == registry.CHAMPION:
            return self.champion
        raise KeyError(f"no model serves as {alias!r}")

    @property
    def versions(self) -> tuple[int, int | None]:
        """``(champion version, challenger version or None)``."""
        return self.champion.version, None if self.challenger is None else self.challenger.version


def load_model(
    client: Any, version: int, served_columns: Iterable[str], settings: Settings | None = None
) -> ServingModel:
    """Load ``version`` of the registered model for serving.

    Raises :class:`IncompatibleModel` when it needs a column outside ``served_columns`` (what the
    feature service gives). A version without an operating threshold loads: its decisions are
    ``None`` (the :class:`ModelWatcher` warns once per version).
    """
    s = resolve_settings(settings)
    uri = registry.model_uri(version, s)
    columns = tuple(registry.feature_columns(uri))
    missing = sorted(set(columns) - set(served_columns))
    if missing:
        raise IncompatibleModel(
            f"{s.model_name} v{version} needs features the service does not serve: {missing}"
        )
    threshold = registry.operating_threshold(client, s.model_name, version)
    return ServingModel(version, uri, columns, threshold, registry.load_scorer(uri))


def single_threaded_scoring() -> None:
    """Make XGBoost predict on the calling thread alone (its global configuration is per thread).

    A payment's prediction is microseconds of work; by default XGBoost hands it to one OpenMP
    thread per core and waits for them all, which on a busy 2-core machine took 20 ms at the median
    for one row against 1 ms on the calling thread. The service's parallelism is across payments.
    """
    import xgboost

    xgboost.set_config(nthread=1)


def read_aliases(client: Any, name: str) -> tuple[int | None, int | None]:
    """``(champion, challenger)`` versions as the registry's aliases name them now (``None``: no alias).

    A challenger pointing at the champion counts as none. Registry errors are raised.
    """
    champion = registry.alias_version(client, name, registry.CHAMPION)
    challenger = registry.alias_version(client, name, registry.CHALLENGER)
    return champion, None if challenger == champion else challenger


class ModelWatcher:
    """Polls the aliases and swaps in a new :class:`ModelSet` when they move (a background thread).

    ``publish`` receives each new set; ``served_columns`` is what the feature service gives.
    """

    def __init__(
        self,
        publish: Callable[[ModelSet], None],
        served_columns: Iterable[str],
        poll_seconds: float,
        settings: Settings | None = None,
    ) -> None:
        self.settings = resolve_settings(settings)
        self.publish = publish
        self.served_columns = tuple(served_columns)
        self.poll_seconds = poll_seconds
        self.current: ModelSet | None = None
        self.problem: str | None = "the registry has not been read yet"
        """Why the watcher could not bring the set in step at its last poll (``None``: in step)."""
        self._loaded: dict[int, ServingModel] = {}
        self._warned: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None

    def poll(self) -> bool:
        """Read the aliases once; load and publish a new set if they moved. Returns whether it swapped.

        Never raises: a registry or loading error is logged and kept in :attr:`problem`, and the
        current set keeps serving.
        """
        try:
            if self._client is None:
                self._client = registry.configure_mlflow(self.settings)
            champion, challenger = read_aliases(self._client, self.settings.model_name)
            if champion is None:
                self.problem = f"registered model {self.settings.model_name!r} has no champion alias yet"
                return False
            wanted = (champion, challenger)
            if self.current is not None and self.current.versions == wanted:
                self.problem = None
                return False
            models = ModelSet(self._model(champion), None if challenger is None else self._model(challenger))
        except Exception as error:
            problem = redact_credentials(f"{type(error).__name__}: {error}")
            if problem != self.problem:
                # Once per new problem, not at every poll while it lasts.
                logger.warning("model watcher: keeping the models serving now: %s", problem)
            self.problem = problem
            return False
        before = None if self.current is None else self.current.versions
        self._loaded = {m.version: m for m in (models.champion, models.challenger) if m is not None}
        self.current, self.problem = models, None
        self.publish(models)
        logger.info("model watcher: serving champion v%s, challenger %s (was %s)", *_shown(wanted), before)
        return True

    def _model(self, version: int) -> ServingModel:
        """The loaded model of ``version``: reused when it already serves, loaded otherwise."""
        if version in self._loaded:
            return self._loaded[version]
        model = load_model(self._client, version, self.served_columns, self.settings)
        if model.threshold is None and version not in self._warned:
            self._warned.add(version)
            logger.warning(
                "%s v%s records no operating threshold (version tag %r): its answers carry no decision",
                self.settings.model_name,
                version,
                registry.OPERATING_THRESHOLD_TAG,
            )
        return model

    def start(self, before_each: Callable[[], None] | None = None) -> None:
        """Poll now and then every ``poll_seconds`` in a daemon thread; ``before_each`` runs first
        each time (the service refreshes Feast's registry cache there)."""

        def loop() -> None:
            while not self._stop.is_set():
                if before_each is not None:
                    try:
                        before_each()
                    except Exception as error:
                        logger.warning("model watcher: %s: %s", type(error).__name__, error)
                self.poll()
                self._stop.wait(self.poll_seconds)

        self._thread = threading.Thread(target=loop, name="mlops-model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (waits for a load in progress to end)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


def _shown(versions: tuple[int, int | None]) -> tuple[int, str]:
    champion, challenger = versions
    return champion, "none" if challenger is None else f"v{challenger}"
