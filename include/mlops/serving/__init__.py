"""Real-time scoring: a payment scored from Feast's online store with the registry's champion.

``python -m include.mlops serve`` runs it. What a request goes through:

* :mod:`.api`: the HTTP face (FastAPI): ``POST /predict``, ``GET /health``, ``GET /ready``, the
  bearer token, request validation and limits;
* :mod:`.service`: :class:`ScoringService`, which opens the store, follows the aliases and wires
  the rest; :func:`serve` runs it under uvicorn;
* :mod:`.engine`: :class:`ScoringEngine`, which batches queued requests and scores them;
* :mod:`.online`: :class:`OnlineFeatures`, the feature service's features for live payments;
* :mod:`.routing`: which model serves a payment (the canary's sticky share of customers);
* :mod:`.models`: the loaded versions and :class:`ModelWatcher`, the blue-green swap on an alias move;
* :mod:`.shadow`: the other model's score, off the response path;
* :mod:`.records` and :mod:`.requestlog`: the request log's rows, written to the lake per day;
* :mod:`.workers`: the bounded background queue both use.

Nothing heavy is imported with the package: FastAPI, pandas, Feast, MLflow and XGBoost load when
the service starts.
"""

from include.mlops.serving.api import ID_MAX_LENGTH, BodyLimit, api_models, create_app
from include.mlops.serving.engine import Overloaded, ScoringEngine, score_payments, served_scores
from include.mlops.serving.models import (
    FLAG,
    PASS,
    IncompatibleModel,
    ModelSet,
    ModelWatcher,
    ServingModel,
    load_model,
    read_aliases,
    redact_credentials,
    single_threaded_scoring,
)
from include.mlops.serving.online import Freshness, OnlineFeatures
from include.mlops.serving.records import (
    DECISION,
    FRAUD_PROBABILITY,
    FRESHNESS_ENTITIES,
    LATENCY_MS,
    LOG_SCHEMA,
    MODEL_VERSION,
    OPTIONAL_PAYMENT_FIELDS,
    PAYMENT_FIELDS,
    RECEIVED_AT,
    SERVED_BY,
    THRESHOLD,
    ScoredBatch,
    freshness_column,
    log_table,
    merge,
)
from include.mlops.serving.requestlog import (
    RequestLog,
    read_request_log,
    request_log_days,
    request_log_partition,
)
from include.mlops.serving.routing import canary_bucket, route, serves_canary
from include.mlops.serving.service import NotReady, ScoringService, serve
from include.mlops.serving.shadow import ShadowScorer, shadow_scores
from include.mlops.serving.workers import WARN_EVERY_SECONDS, BackgroundWorker

__all__ = [
    "DECISION",
    "FLAG",
    "FRAUD_PROBABILITY",
    "FRESHNESS_ENTITIES",
    "ID_MAX_LENGTH",
    "LATENCY_MS",
    "LOG_SCHEMA",
    "MODEL_VERSION",
    "OPTIONAL_PAYMENT_FIELDS",
    "PASS",
    "PAYMENT_FIELDS",
    "RECEIVED_AT",
    "SERVED_BY",
    "THRESHOLD",
    "WARN_EVERY_SECONDS",
    "BackgroundWorker",
    "BodyLimit",
    "Freshness",
    "IncompatibleModel",
    "ModelSet",
    "ModelWatcher",
    "NotReady",
    "OnlineFeatures",
    "Overloaded",
    "RequestLog",
    "ScoredBatch",
    "ScoringEngine",
    "ScoringService",
    "ServingModel",
    "ShadowScorer",
    "api_models",
    "canary_bucket",
    "create_app",
    "freshness_column",
    "load_model",
    "log_table",
    "merge",
    "read_aliases",
    "read_request_log",
    "redact_credentials",
    "request_log_days",
    "request_log_partition",
    "route",
    "score_payments",
    "serve",
    "served_scores",
    "serves_canary",
    "shadow_scores",
    "single_threaded_scoring",
]
