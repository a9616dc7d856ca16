"""What the service records of each scored payment: the request log's rows and their schema.

A row of the request log holds the payment as the transactions table has it, when it was
received, the feature service's features, the answer (who served it, which version, the
probability, the decision and its threshold), both models' scores and versions as the
predictions partition names them (:data:`~include.mlops.core.schema.SCORE_CHAMPION` ...), the
latency and the freshness of the features. So the drift monitor can read online traffic like a
day of batch predictions, and the rows join the labels by ``transaction_id`` once they arrive.

pyarrow only at import; pandas inside the functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from include.mlops import registry
from include.mlops.core.schema import (
    CHALLENGER_VERSION,
    CHAMPION_VERSION,
    NO_CHALLENGER,
    SCORE_CHALLENGER,
    SCORE_CHAMPION,
    TIMESTAMP,
    TRANSACTIONS,
)
from include.mlops.features import ENTITY_KEYS, FEATURE_COLUMNS, REQUEST_FIELDS

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from include.mlops.serving.models import ModelSet

PAYMENT_FIELDS: tuple[str, ...] = ("transaction_id", *ENTITY_KEYS, *REQUEST_FIELDS)
"""What a live payment must carry: its id, the entities' keys and the request fields."""

OPTIONAL_PAYMENT_FIELDS: tuple[str, ...] = tuple(n for n in TRANSACTIONS.names if n not in PAYMENT_FIELDS)
"""The other transaction columns: a request may carry them (the log keeps them, null otherwise)."""

SERVED_BY = "served_by"
MODEL_VERSION = "model_version"
FRAUD_PROBABILITY = "fraud_probability"
DECISION = "decision"
THRESHOLD = "threshold"
RECEIVED_AT = "received_at"
LATENCY_MS = "latency_ms"


def freshness_column(entity: str) -> str:
    """The log column of when the snapshot of ``entity`` (``customer``, ``merchant``) was taken."""
    return f"{entity}_features_as_of"


FRESHNESS_ENTITIES: tuple[str, ...] = tuple(k.removesuffix("_id") for k in ENTITY_KEYS)
"""The entities whose freshness is recorded (one per join key)."""


LOG_SCHEMA = pa.schema(
    [
        *(pa.field(c.name, c.type, nullable=c.name in OPTIONAL_PAYMENT_FIELDS) for c in TRANSACTIONS.columns),
        pa.field(RECEIVED_AT, TIMESTAMP, nullable=False),
        *(pa.field(name, pa.float64()) for name in FEATURE_COLUMNS),
        pa.field(SERVED_BY, pa.string(), nullable=False),
        pa.field(MODEL_VERSION, pa.int64(), nullable=False),
        pa.field(FRAUD_PROBABILITY, pa.float64(), nullable=False),
        pa.field(DECISION, pa.string()),
        pa.field(THRESHOLD, pa.float64()),
        pa.field(SCORE_CHAMPION, pa.float64()),
        pa.field(CHAMPION_VERSION, pa.int64(), nullable=False),
        pa.field(SCORE_CHALLENGER, pa.float64()),
        pa.field(CHALLENGER_VERSION, pa.int64(), nullable=False),
        pa.field(LATENCY_MS, pa.float64(), nullable=False),
        *(pa.field(freshness_column(e), TIMESTAMP) for e in FRESHNESS_ENTITIES),
    ]
)
"""The request log's columns, in order."""


@dataclass
class ScoredBatch:
    """Payments scored together: their features, the answers, and (after shadow scoring) both scores.

    ``frame`` is the feature lookup's frame (payments and features); ``answers`` holds one list per
    answer column (:data:`SERVED_BY` ... and the freshness columns), in the payments' order.
    """

    frame: pd.DataFrame
    answers: dict[str, list[Any]]
    models: ModelSet
    scores: dict[str, Any] = field(default_factory=dict)
    """:data:`SCORE_CHAMPION`, :data:`SCORE_CHALLENGER` as arrays, when known."""

    def __len__(self) -> int:
        return len(self.frame)


def merge(batches: Sequence[ScoredBatch]) -> ScoredBatch:
    """One batch of several scored by the same model set, in order (scores only if all have them)."""
    import numpy as np
    import pandas as pd

    if len(batches) == 1:
        return batches[0]
    frame = pd.concat([b.frame for b in batches], ignore_index=True)
    answers = {name: [v for b in batches for v in b.answers[name]] for name in batches[0].answers}
    scores = {}
    if all(b.scores for b in batches):
        scores = {name: np.concatenate([b.scores[name] for b in batches]) for name in batches[0].scores}
    return ScoredBatch(frame, answers, batches[0].models, scores)


def log_table(batches: Sequence[ScoredBatch]) -> pa.Table:
    """The request log's rows of scored batches, in order (:data:`LOG_SCHEMA`).

    Converted together, at flush time: the conversion's fixed cost is paid once per file, not once
    per batch. A score a batch does not have (no shadow scoring, or no challenger) is NaN; a
    missing challenger's version is :data:`~include.mlops.core.schema.NO_CHALLENGER`.
    """
    import pandas as pd

    frames = [b.frame for b in batches]
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    n = len(frame)
    columns: dict[str, Any] = {}
    for name in TRANSACTIONS.names:
        columns[name] = frame[name].to_numpy() if name in frame else [None] * n
    meta: dict[str, list[Any]] = {}
    for batch in batches:
        for name, values in _answer_columns(batch).items():
            meta.setdefault(name, []).extend(values)
    columns[RECEIVED_AT] = meta.pop(RECEIVED_AT)
    features = frame[list(FEATURE_COLUMNS)].astype("float64")
    for name in FEATURE_COLUMNS:
        columns[name] = features[name].to_numpy()
    columns.update(meta)
    return pa.Table.from_pandas(pd.DataFrame(columns), schema=LOG_SCHEMA, preserve_index=False)


def _answer_columns(batch: ScoredBatch) -> dict[str, list[Any]]:
    """One batch's log columns after the payment and its features, as lists, in schema order."""
    n = len(batch)
    champion, challenger = batch.models.versions
    served = batch.answers[SERVED_BY]
    probability = batch.answers[FRAUD_PROBABILITY]
    # Without shadow scoring each model has the scores of the payments it served, NaN elsewhere.
    own = {
        alias: [p if s == alias else math.nan for s, p in zip(served, probability, strict=True)]
        for alias in (registry.CHAMPION, registry.CHALLENGER)
    }
    columns: dict[str, list[Any]] = {RECEIVED_AT: list(batch.answers[RECEIVED_AT])}
    for name in (SERVED_BY, MODEL_VERSION, FRAUD_PROBABILITY, DECISION, THRESHOLD):
        columns[name] = list(batch.answers[name])
    columns[SCORE_CHAMPION] = list(batch.scores.get(SCORE_CHAMPION, own[registry.CHAMPION]))
    columns[CHAMPION_VERSION] = [champion] * n
    columns[SCORE_CHALLENGER] = list(batch.scores.get(SCORE_CHALLENGER, own[registry.CHALLENGER]))
    columns[CHALLENGER_VERSION] = [NO_CHALLENGER if challenger is None else challenger] * n
    columns[LATENCY_MS] = list(batch.answers[LATENCY_MS])
    for entity in FRESHNESS_ENTITIES:
        columns[freshness_column(entity)] = list(batch.answers[freshness_column(entity)])
    return columns
