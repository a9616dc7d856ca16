"""The scoring engine: feature lookup, routing and scoring of payments, batched across requests.

Requests queue their payments with the :class:`~include.mlops.serving.models.ModelSet` current
when they arrived; one task of the event loop takes whatever has queued while it was busy (up to
``MLOPS_SERVING_MAX_BATCH`` payments, whole requests only) and scores it in one go: one online
store read, one pass of each on-demand transformation, one call per model. Alone, a payment is
scored at once (no waiting for a batch to fill); under load the fixed cost of a pass (pandas,
Feast, XGBoost calls) is shared by the payments that waited, which is what keeps the latency flat
as the rate grows. Requests with different model sets (a swap happened between them) are scored
in separate passes, each with its own. When a pass fails, its requests are retried one by one, so
one bad request fails alone.

Above ``MLOPS_SERVING_MAX_PENDING`` waiting payments, :meth:`ScoringEngine.score` refuses with
:class:`Overloaded` (the API answers 503): a queue that only grows would time every request out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.mlops import registry
from include.mlops.serving.models import redact_credentials, single_threaded_scoring
from include.mlops.serving.records import (
    DECISION,
    FRAUD_PROBABILITY,
    LATENCY_MS,
    MODEL_VERSION,
    RECEIVED_AT,
    SERVED_BY,
    THRESHOLD,
    ScoredBatch,
    freshness_column,
)
from include.mlops.serving.routing import route

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np
    import pandas as pd

    from include.mlops.serving.models import ModelSet
    from include.mlops.serving.online import OnlineFeatures

logger = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """More payments wait to be scored than the service accepts (``MLOPS_SERVING_MAX_PENDING``)."""


@dataclass
class _Request:
    payments: list[dict[str, Any]]
    models: ModelSet
    received: dt.datetime
    started: float = field(default_factory=time.perf_counter)
    future: asyncio.Future = field(init=False)


def served_scores(frame: pd.DataFrame, models: ModelSet, canary_share: float) -> tuple[list[str], np.ndarray]:
    """Who serves each payment of ``frame`` (:func:`~include.mlops.serving.routing.route`) and its score."""
    import numpy as np

    has_challenger = models.challenger is not None
    served = [route(c, canary_share, has_challenger) for c in frame["customer_id"]]
    canary = np.fromiter((s == registry.CHALLENGER for s in served), dtype=bool, count=len(served))
    if not canary.any():
        return served, models.champion.scorer(frame)
    scores = np.empty(len(frame), dtype="float64")
    scores[canary] = models.model(registry.CHALLENGER).scorer(frame.loc[canary])
    if (~canary).any():
        scores[~canary] = models.champion.scorer(frame.loc[~canary])
    return served, scores


def score_payments(
    features: OnlineFeatures, models: ModelSet, payments: Sequence[dict[str, Any]], canary_share: float
) -> tuple[list[dict[str, Any]], ScoredBatch]:
    """Score ``payments`` now: the answers, in order, and the batch for shadow scoring and the log.

    Each payment needs the fields of :data:`~include.mlops.serving.records.PAYMENT_FIELDS`.
    """
    frame, freshness = features.lookup(payments)
    served, scores = served_scores(frame, models, canary_share)
    now = dt.datetime.now(dt.UTC)
    answers: list[dict[str, Any]] = []
    columns: dict[str, list[Any]] = {
        name: [] for name in (SERVED_BY, MODEL_VERSION, FRAUD_PROBABILITY, DECISION, THRESHOLD)
    }
    for entity in freshness:
        columns[freshness_column(entity)] = [f.as_of for f in freshness[entity]]
    for i, payment in enumerate(payments):
        model = models.model(served[i])
        score = float(scores[i])
        answer = {
            "transaction_id": payment["transaction_id"],
            FRAUD_PROBABILITY: score,
            DECISION: model.decide(score),
            THRESHOLD: model.threshold,
            MODEL_VERSION: model.version,
            SERVED_BY: served[i],
            "feature_freshness": {
                entity: {"as_of": _iso(f[i].as_of), "age_seconds": f[i].age_seconds(now), "used": f[i].used}
                for entity, f in freshness.items()
            },
        }
        answers.append(answer)
        for name in (SERVED_BY, MODEL_VERSION, FRAUD_PROBABILITY, DECISION, THRESHOLD):
            columns[name].append(answer[name])
    return answers, ScoredBatch(frame, columns, models)


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


class ScoringEngine:
    """Scores queued requests in batches, in the event loop; hands each scored batch to ``sink``.

    :meth:`score` is awaited by the request handlers; :meth:`run` (a task of the same loop, see
    :meth:`start`) takes what has queued and scores it in one pass. The pass runs in the loop's
    own thread, holding it: scoring is CPU work under the GIL, and doing it there leaves no other
    thread to hand the GIL to and back for every request (each such hand-over waits up to the
    interpreter's switch interval while the other thread computes). ``features`` is set once the
    online store is open; nothing is queued before (the service is not ready).
    """

    def __init__(
        self,
        canary_share: float,
        max_batch: int,
        max_pending: int,
        sink: Callable[[ScoredBatch], object] | None = None,
        batch_wait: float = 0.0,
    ) -> None:
        self.features: OnlineFeatures | None = None
        self.canary_share = canary_share
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.batch_wait = batch_wait
        """Seconds a pass may wait for the requests its recent passes suggest are coming."""
        self.sink = sink
        self.batches = 0
        self.scored = 0
        self._queue: collections.deque[_Request] = collections.deque()
        self._pending = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        # Requests per pass, over the last passes: how many to wait for (see _gather).
        self._recent: collections.deque[int] = collections.deque(maxlen=8)

    def start(self) -> None:
        """Start the batching task in the running event loop (the app's, at its start-up)."""
        single_threaded_scoring()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.run(), name="mlops-scoring")

    async def stop(self) -> None:
        """Score what is queued, then end the task."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def score(self, payments: list[dict[str, Any]], models: ModelSet) -> list[dict[str, Any]]:
        """The answers for ``payments`` scored by ``models``, in order, once their batch has run.

        Raises :class:`Overloaded` when too many payments wait already.
        """
        if self._wake is None or self._stopping:
            raise Overloaded("the scoring engine is not running")
        if self._pending + len(payments) > self.max_pending:
            raise Overloaded(f"{self._pending} payments are waiting to be scored; retry shortly")
        request = _Request(payments, models, dt.datetime.now(dt.UTC))
        request.future = asyncio.get_running_loop().create_future()
        self._queue.append(request)
        self._pending += len(payments)
        self._wake.set()
        return await request.future

    async def run(self) -> None:
        """Score what queued while the last pass ran, until stopped and drained."""
        assert self._wake is not None
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._gather()
            group = [self._queue.popleft()]
            rows = len(group[0].payments)
            while self._queue and rows + len(self._queue[0].payments) <= self.max_batch:
                group.append(self._queue.popleft())
                rows += len(group[-1].payments)
            self._pending -= rows
            self._recent.append(len(group))
            for models in {id(r.models): r.models for r in group}.values():
                self._score([r for r in group if r.models is models])
            # Let the answers go out and the requests that arrived meanwhile queue up.
            await asyncio.sleep(0)

    async def _gather(self) -> None:
        """Before a pass: wait, at most ``batch_wait`` seconds, until as many requests have queued
        as recent passes held (one more, every eighth pass).

        Clients that were answered together send their next requests together, but these arrive
        a fraction of a millisecond apart, and a request read while a pass ran needs a few turns
        of the loop to reach the queue; a pass started at once would leave the others to the next
        one, and passes of one or two would stay the rule at a handful of connections (measured:
        1.3 payments a pass at 4 connections). A request alone waits for nobody (its recent passes
        held one), except on the eighth pass, which looks for one more: passes that only ever
        held one would never learn that more clients came.
        """
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)
        expected = max(self._recent, default=1) + (1 if self.batches % 8 == 7 else 0)
        deadline = loop.time() + self.batch_wait
        while len(self._queue) < expected and not self._stopping:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)

    def _score(self, requests: list[_Request]) -> None:
        """Score requests that share a model set; on failure, each one again on its own."""
        try:
            answers, batch = self._score_together(requests)
        except Exception as error:
            if len(requests) > 1:
                for request in requests:
                    self._score([request])
                return
            logger.warning("scoring failed: %s", redact_credentials(f"{type(error).__name__}: {error}"))
            _resolve(requests[0].future, error=error)
            return
        start = 0
        for request in requests:
            _resolve(request.future, answers[start : start + len(request.payments)])
            start += len(request.payments)
        if self.sink is not None:
            self.sink(batch)

    def _score_together(self, requests: list[_Request]) -> tuple[list[dict[str, Any]], ScoredBatch]:
        if self.features is None:
            raise RuntimeError("the online store is not open")
        payments = [p for r in requests for p in r.payments]
        answers, batch = score_payments(self.features, requests[0].models, payments, self.canary_share)
        done = time.perf_counter()
        latency: list[float] = []
        received: list[dt.datetime] = []
        for request in requests:
            latency += [round((done - request.started) * 1000, 3)] * len(request.payments)
            received += [request.received] * len(request.payments)
        batch.answers[LATENCY_MS], batch.answers[RECEIVED_AT] = latency, received
        self.batches += 1
        self.scored += len(payments)
        return answers, batch


def _resolve(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    """Give a request its answers (or error), unless it was cancelled (its client went away)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
