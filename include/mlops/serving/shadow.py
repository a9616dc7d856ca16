"""Shadow scoring: the model that did not serve a payment scores it too, off the response path.

With a distinct challenger loaded, every scored batch goes through :class:`ShadowScorer` before the
request log: the challenger scores the payments the champion served, and the champion scores the
canary's payments, so every logged payment has both models' scores side by side (as batch
scoring's predictions have). It runs in its own thread on batches, after the answers have gone
out; a full queue skips shadow scoring for those payments (logged without the other score would
read as a gap, so they are dropped with a warning, like any lost log record).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from include.mlops import registry
from include.mlops.core.schema import SCORE_CHALLENGER, SCORE_CHAMPION
from include.mlops.serving.models import single_threaded_scoring
from include.mlops.serving.records import FRAUD_PROBABILITY, SERVED_BY, merge
from include.mlops.serving.workers import BackgroundWorker

if TYPE_CHECKING:
    from collections.abc import Callable

    from include.mlops.serving.records import ScoredBatch

logger = logging.getLogger(__name__)


def shadow_scores(batch: ScoredBatch) -> dict:
    """Both models' scores for every payment of ``batch`` (its served scores kept as they are).

    Needs a distinct challenger in ``batch.models``.
    """
    import numpy as np

    champion, challenger = batch.models.champion, batch.models.challenger
    if challenger is None:
        raise ValueError("shadow scoring needs a distinct challenger")
    served = np.asarray(batch.answers[SERVED_BY], dtype=object)
    probability = np.asarray(batch.answers[FRAUD_PROBABILITY], dtype="float64")
    by_challenger = served == registry.CHALLENGER
    scores = {SCORE_CHAMPION: probability.copy(), SCORE_CHALLENGER: probability.copy()}
    if (~by_challenger).any():
        scores[SCORE_CHALLENGER][~by_challenger] = challenger.scorer(batch.frame.loc[~by_challenger])
    if by_challenger.any():
        scores[SCORE_CHAMPION][by_challenger] = champion.scorer(batch.frame.loc[by_challenger])
    return scores


class ShadowScorer(BackgroundWorker):
    """Adds the other model's scores to each batch, then hands it on (to the request log)."""

    def __init__(self, capacity: int, forward: Callable[[ScoredBatch], object]) -> None:
        super().__init__("shadow scoring", capacity)
        self.forward = forward
        self.scored_rows = 0

    def setup(self) -> None:
        """Score on this thread alone (:func:`~include.mlops.serving.models.single_threaded_scoring`)."""
        single_threaded_scoring()

    def handle_all(self, items: list[ScoredBatch]) -> None:
        """Score what queued in one pass per model set (a pass has a fixed cost), forward it."""
        for models in {id(i.models): i.models for i in items}.values():
            self.handle(merge([i for i in items if i.models is models]))

    def handle(self, item: ScoredBatch) -> None:
        """Score ``item`` with the other model, log both scores, forward it."""
        if item.models.challenger is not None:
            item.scores = shadow_scores(item)
            self.scored_rows += len(item)
            champion, challenger = item.models.versions
            logger.debug(
                "shadow: %s payments, champion v%s mean %.5f, challenger v%s mean %.5f",
                len(item),
                champion,
                float(item.scores[SCORE_CHAMPION].mean()),
                challenger,
                float(item.scores[SCORE_CHALLENGER].mean()),
            )
        self.forward(item)
