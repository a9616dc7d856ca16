"""The HTTP face of the scoring service (FastAPI): ``POST /predict``, ``GET /health``, ``GET /ready``.

``/predict`` takes one payment (a JSON object) or a small batch (a JSON array of at most
``MLOPS_SERVING_MAX_BATCH``) and answers one prediction per payment, in order: the fraud
probability, the decision at the serving model's operating threshold (``flag`` or ``pass``; null
when the version records no threshold), the version and the alias that served it, and how old the
customer's and merchant's features were. It needs ``Authorization: Bearer <MLOPS_SERVING_TOKEN>``
when the token is set; ``/health`` (the process is alive) and ``/ready`` (a model and the store
are loaded: 200, else 503 with the reason) stay open for probes.

Every request that is not a valid payment is answered 422 with what is wrong (where, and why; the
offending values are not echoed back); a body over ``MLOPS_SERVING_MAX_BODY_BYTES`` 413; an
overloaded or not yet ready service 503. The schema is at ``/openapi.json`` (``/docs`` renders it).

FastAPI and pydantic are imported inside :func:`create_app` and :func:`api_models`, so importing
the package stays light. Annotations stay evaluated (no ``from __future__ import annotations``):
FastAPI reads the endpoints' types at run time.
"""

import functools
import hmac
import logging
import types
from typing import TYPE_CHECKING, Annotated, Any

from include.mlops.core.schema import TRANSACTIONS, Column
from include.mlops.serving.engine import Overloaded
from include.mlops.serving.models import FLAG, PASS, redact_credentials
from include.mlops.serving.records import PAYMENT_FIELDS
from include.mlops.serving.service import NotReady

if TYPE_CHECKING:
    from include.mlops.serving.service import ScoringService

logger = logging.getLogger(__name__)

ID_MAX_LENGTH = 128
"""Longest id (transaction, customer, merchant) a request may carry."""


@functools.cache
def api_models(max_batch: int) -> types.SimpleNamespace:
    """The request and response models (pydantic), for a batch limit of ``max_batch`` payments:
    ``Payment``, ``Body`` (a payment or a batch of them), ``Prediction`` and ``Answer``."""
    from pydantic import Discriminator, Field, Tag

    payment = _payment_model()
    batch = Annotated[list[payment], Field(min_length=1, max_length=max_batch)]  # type: ignore[valid-type]

    def kind(value: Any) -> str:
        return "batch" if isinstance(value, list) else "payment"

    body = Annotated[
        Annotated[payment, Tag("payment")] | Annotated[batch, Tag("batch")],  # type: ignore[valid-type]
        Discriminator(kind),
    ]
    prediction = _prediction_model()
    return types.SimpleNamespace(
        Payment=payment, Body=body, Prediction=prediction, Answer=prediction | list[prediction]
    )


def _payment_model() -> type:
    """``Payment``: every transaction column of the data contract, typed and bounded as the
    contract says; the feature service's fields required (the timestamp defaults to now), the
    others optional (kept in the request log)."""
    import datetime as dt

    from pydantic import BaseModel, ConfigDict, create_model

    class PaymentBase(BaseModel):
        model_config = ConfigDict(extra="forbid")

        def as_payment(self, now: dt.datetime) -> dict[str, Any]:
            """The payment as the engine takes it (the timestamp in UTC, ``now`` when absent)."""
            out = self.model_dump()
            out["event_timestamp"] = (out["event_timestamp"] or now).astimezone(dt.UTC)
            return out

    fields = {c.name: _payment_field(c) for c in TRANSACTIONS.columns}
    return create_model(  # type: ignore[call-overload,no-any-return]
        "Payment",
        __base__=PaymentBase,
        __doc__="A card payment to score: its ids and the fields the feature service needs.",
        **fields,
    )


def _payment_field(column: Column) -> tuple[Any, Any]:
    """The pydantic type and field of a transaction column (required when the features need it)."""
    from typing import Literal

    import pyarrow as pa
    from pydantic import AwareDatetime, Field, StrictBool, StringConstraints

    doc = column.doc
    if column.name == TRANSACTIONS.timestamp_column:
        return AwareDatetime | None, Field(default=None, description=f"{doc} With its offset; default: now.")
    kind: Any
    if column.domain is not None:
        kind = Literal[column.domain]  # type: ignore[valid-type]
    elif pa.types.is_floating(column.type):
        bounds = {"ge": column.min_value, "le": column.max_value}
        kind = Annotated[float, Field(allow_inf_nan=False, strict=True, **bounds)]
    elif pa.types.is_boolean(column.type):
        kind = StrictBool
    else:
        kind = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX_LENGTH)]
    if column.name in PAYMENT_FIELDS:
        return kind, Field(description=doc)
    return kind | None, Field(default=None, description=doc)


def _prediction_model() -> type:
    import datetime as dt
    from typing import Literal

    from pydantic import BaseModel, Field

    class EntityFreshness(BaseModel):
        """The snapshot the store holds for an entity (null: unknown entity), and whether it served."""

        as_of: dt.datetime | None
        age_seconds: float | None
        used: bool = Field(
            description="whether its features were used: from its time until the view's TTL after it"
        )

    class Prediction(BaseModel):
        """The answer for one payment."""

        transaction_id: str
        fraud_probability: float
        decision: Literal[FLAG, PASS] | None = Field(  # type: ignore[valid-type]
            description="at the serving version's operating threshold; null when it records none"
        )
        threshold: float | None
        model_version: int
        served_by: str = Field(description="the alias of the model that served it (canary: the challenger)")
        feature_freshness: dict[str, EntityFreshness]

    return Prediction


def create_app(service: "ScoringService") -> Any:
    """The FastAPI app of ``service``; the service starts and stops with the app (its lifespan)."""
    import contextlib

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="Card-fraud scoring",
        description=__doc__.split("\n\n")[1],
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=service.serving.max_body_bytes, paths=("/predict",))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _unparsable_body)
    _add_probes(app, service)
    _add_predict(app, service)
    return app


def _authenticator(service: "ScoringService") -> Any:
    """The dependency that checks ``/predict``'s bearer token (none when no token is set)."""
    from fastapi import Depends
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    bearer = HTTPBearer(auto_error=False, description="MLOPS_SERVING_TOKEN")

    # Async, as every handler here: FastAPI runs a plain function in its thread pool, and that
    # hand-over between threads costs more than the check itself.
    async def authenticated(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        token = service.serving.token
        if token is None:
            return
        given = b"" if credentials is None else credentials.credentials.encode()
        if (
            credentials is None
            or credentials.scheme.lower() != "bearer"
            or not hmac.compare_digest(given, token.encode())
        ):
            raise _http_error(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})

    return authenticated


def _add_probes(app: Any, service: "ScoringService") -> None:
    from fastapi.responses import JSONResponse

    @app.get("/health", summary="the process is alive")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready", summary="a model and the online store are loaded (503 until then)")
    async def ready() -> JSONResponse:
        status = service.status()
        return JSONResponse(status, status_code=200 if status["ready"] else 503)


def _add_predict(app: Any, service: "ScoringService") -> None:
    import datetime as dt

    from fastapi import Depends
    from fastapi.responses import JSONResponse

    models = api_models(service.serving.max_batch)
    authenticated = _authenticator(service)

    @app.post("/predict", response_model=models.Answer, summary="score one payment or a batch")
    async def predict(body: models.Body, _auth: Annotated[None, Depends(authenticated)]) -> JSONResponse:  # type: ignore[name-defined]
        single = not isinstance(body, list)
        now = dt.datetime.now(dt.UTC)
        payments = [p.as_payment(now) for p in ([body] if single else body)]
        try:
            answers = await service.predict(payments)
        except (NotReady, Overloaded) as error:
            return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "1"})
        except Exception as error:
            logger.warning("/predict failed: %s", redact_credentials(f"{type(error).__name__}: {error}"))
            return JSONResponse({"detail": "scoring failed; see the service's log"}, status_code=500)
        return JSONResponse(answers[0] if single else answers)


def _http_error(status: int, detail: str, headers: dict[str, str]) -> Exception:
    from fastapi import HTTPException

    return HTTPException(status_code=status, detail=detail, headers=headers)


async def _validation_error(_request: Any, error: Any) -> Any:
    """422 with where and why each value is wrong, without echoing the values (they may be huge,
    NaN, which JSON cannot carry back, or secrets pasted in the wrong field)."""
    from fastapi.responses import JSONResponse

    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in error.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def _unparsable_body(request: Any, error: Any) -> Any:
    """422 for a ``/predict`` body that is not JSON at all (FastAPI says 400 when it cannot even
    decode it: not UTF-8, nested too deep), like every other body that is not payments."""
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import JSONResponse

    if error.status_code == 400 and request.url.path == "/predict":
        detail = [
            {
                "loc": ["body"],
                "msg": "the body is not JSON (UTF-8, nested at most a few levels)",
                "type": "json_invalid",
            }
        ]
        return JSONResponse({"detail": detail}, status_code=422)
    return await http_exception_handler(request, error)


class BodyLimit:
    """ASGI middleware: a request body on ``paths`` over ``limit`` bytes is answered 413 unread.

    The body is read here (up to the limit) and handed on whole: uvicorn itself sets no limit.
    """

    def __init__(self, app: Any, limit: int, paths: tuple[str, ...]) -> None:
        self.app, self.limit, self.paths = app, limit, paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Pass the request on with its body, or answer 413 (400 for a bad Content-Length)."""
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _plain(send, 400 if not declared.isdigit() else 413, "request body too large or malformed")
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _plain(send, 413, f"request body over {self.limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _plain(send: Any, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
