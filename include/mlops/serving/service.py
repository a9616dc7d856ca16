"""The scoring service: the online store, the models, the engine and the background workers together.

:class:`ScoringService` starts in the background: a watcher thread opens the feature store (and
keeps trying until it can), then polls the registry's aliases and loads the champion (and a
distinct challenger), so ``/health`` answers at once and ``/ready`` turns true once both are in.
Scored batches go to shadow scoring (when a distinct challenger is loaded and
``MLOPS_SERVING_SHADOW``) and then to the request log (``MLOPS_SERVING_REQUEST_LOG``).

:func:`serve` is ``python -m include.mlops serve``: the exposure check (a token, or loopback only),
then uvicorn on the app of :func:`~include.mlops.serving.api.create_app`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

from include.mlops.core.serving_settings import ServingSettings
from include.mlops.core.settings import resolve_settings
from include.mlops.features import FEATURE_COLUMNS
from include.mlops.serving.engine import ScoringEngine
from include.mlops.serving.models import ModelWatcher, redact_credentials
from include.mlops.serving.online import OnlineFeatures
from include.mlops.serving.requestlog import RequestLog
from include.mlops.serving.shadow import ShadowScorer

if TYPE_CHECKING:
    from include.mlops.core.settings import Settings
    from include.mlops.serving.models import ModelSet
    from include.mlops.serving.records import ScoredBatch

logger = logging.getLogger(__name__)


class NotReady(RuntimeError):
    """The service has no model or no online store yet (``/ready`` says which)."""


class ScoringService:
    """Everything ``/predict`` needs, started in the background and swapped as the aliases move."""

    def __init__(self, settings: Settings | None = None, serving: ServingSettings | None = None) -> None:
        self.settings = resolve_settings(settings)
        self.serving = serving or ServingSettings.from_env()
        self.models: ModelSet | None = None
        """The model set serving now; replaced whole (one assignment) when the aliases move."""
        self.features: OnlineFeatures | None = None
        self.store_problem: str | None = "the online store has not been opened yet"
        self.request_log = (
            RequestLog(
                self.serving.log_queue,
                self.serving.log_batch_rows,
                self.serving.log_flush_seconds,
                self.settings,
            )
            if self.serving.request_log
            else None
        )
        self.shadow = ShadowScorer(self.serving.log_queue, self._log) if self.serving.shadow else None
        self.engine = ScoringEngine(
            self.serving.canary_share,
            self.serving.max_batch,
            self.serving.max_pending,
            self._sink,
            batch_wait=self.serving.batch_wait_ms / 1000,
        )
        self.watcher = ModelWatcher(self._publish, FEATURE_COLUMNS, self.serving.poll_seconds, self.settings)
        self._lock = threading.Lock()
        self.swaps = 0

    # ----------------------------------------------------------------------------------------------
    # Life cycle

    def start(self) -> None:
        """Start the engine (in the running event loop), the workers and the watcher (which opens
        the store and loads the models, in its thread)."""
        self.engine.start()
        for worker in (self.request_log, self.shadow):
            if worker is not None:
                worker.start()
        self.watcher.start(before_each=self._ensure_store)

    async def stop(self) -> None:
        """Stop following the aliases, score what is queued, shadow-score and write what waits."""
        await asyncio.to_thread(self.watcher.stop)
        await self.engine.stop()
        await asyncio.to_thread(self._stop_workers)

    def _stop_workers(self) -> None:
        for worker in (self.shadow, self.request_log):
            if worker is not None:
                worker.stop()
        # What was frozen at start-up is collectable again (and freed before the interpreter exits).
        gc.unfreeze()

    def _ensure_store(self) -> None:
        """Open the online store once (then the engine can score); later, refresh Feast's registry
        cache (off the request path: it would expire on one)."""
        if self.features is not None:
            self.features.refresh()
            return
        try:
            features = OnlineFeatures(self.settings)
            features.probe()
        except Exception as error:
            self.store_problem = redact_credentials(
                f"the online store cannot be read: {type(error).__name__}: {error}"
            )
            logger.warning("scoring service: %s", self.store_problem)
            return
        self.engine.features = features
        self.features, self.store_problem = features, None
        logger.info("scoring service: online store open (%s profile)", self.settings.profile)
        _settle_memory(collect=True)

    def _publish(self, models: ModelSet) -> None:
        with self._lock:
            if self.models is not None:
                self.swaps += 1
            self.models = models
        _settle_memory()

    # ----------------------------------------------------------------------------------------------
    # Requests

    def ready(self) -> tuple[bool, str]:
        """Whether ``/predict`` can answer, and if not, why."""
        if self.features is None:
            return False, self.store_problem or "the online store is not open"
        if self.models is None:
            return False, self.watcher.problem or "no model is loaded yet"
        return True, "ready"

    async def predict(self, payments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The answers for ``payments``, scored by the models serving when they arrived; raises
        :class:`NotReady` or :class:`~include.mlops.serving.engine.Overloaded`."""
        models = self.models
        if models is None or self.features is None:
            raise NotReady(self.ready()[1])
        return await self.engine.score(payments, models)

    def status(self) -> dict[str, Any]:
        """What ``/ready`` shows: readiness, the versions serving, the strategies' settings."""
        ready, reason = self.ready()
        champion, challenger = (None, None) if self.models is None else self.models.versions
        return {
            "ready": ready,
            "reason": reason,
            "champion_version": champion,
            "challenger_version": challenger,
            "canary_share": self.serving.canary_share if challenger is not None else 0.0,
            "shadow": bool(self.shadow is not None and challenger is not None),
            "swaps": self.swaps,
            "scored_payments": self.engine.scored,
            "scoring_passes": self.engine.batches,
            "registry_problem": self.watcher.problem,
        }

    def _sink(self, batch: ScoredBatch) -> None:
        if self.shadow is not None and batch.models.challenger is not None:
            self.shadow.offer(batch)
        else:
            self._log(batch)

    def _log(self, batch: ScoredBatch) -> None:
        if self.request_log is not None:
            self.request_log.offer(batch)


def _settle_memory(collect: bool = False) -> None:
    """Move what is loaded into the permanent generation (``gc.freeze``): full collections over
    the models' and Feast's objects paused online reads for about 190 ms every few calls. The
    collection before it runs at start-up only: during traffic it would be such a pause."""
    if collect:
        gc.collect()
    gc.freeze()


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: Settings | None = None,
    serving: ServingSettings | None = None,
    access_log: bool = False,
) -> None:
    """Run the service on ``host:port`` until interrupted (``python -m include.mlops serve``).

    Refuses to start (:class:`~include.mlops.core.settings.SettingsError`) without
    ``MLOPS_SERVING_TOKEN`` in the cluster profile, or on a non-loopback address without it.
    """
    s = resolve_settings(settings)
    serving = serving or ServingSettings.from_env()
    warning = serving.check_exposure(host, s.is_cluster)
    if warning:
        logger.warning("scoring service: %s", warning)
    # Scoring runs in the event loop's thread; the background threads (shadow scoring, the request
    # log, the watcher) compute in bursts. A thread that wants the GIL waits up to this interval
    # for one that computes: 5 ms by default, a millisecond here, for the requests' latency.
    sys.setswitchinterval(0.001)
    import uvicorn

    from include.mlops.serving.api import create_app

    app = create_app(ScoringService(s, serving))
    logger.info("scoring service: listening on %s:%s", host, port)
    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info", server_header=False)
