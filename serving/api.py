"""The HTTP API over the job's results: ``create_app(cfg)`` builds the FastAPI app (run it with ``python -m serving``).

=========================================  ====================================================================
endpoint                                   answer
=========================================  ====================================================================
``GET /users/{user_id}/recommendations``   ranked items (score, reason, title, year, genres) and ``age_ms``;
                                           ``?n=10``, ``&exclude=<id>`` (repeatable), ``&genre=Comedy``: the
                                           first n of the stored list (``model.stored_n``) that pass; 404 for an
                                           unknown user, or with ``?cold_start=true`` the trending items and
                                           ``"cold_start": true``; ``arm``: the user's experiment arm
``GET /experiments``                       each experiment arm's running totals (``rec:experiments``)
``GET /users?limit=20``                    the most recently updated users (``rec:users``)
``GET /items/{item_id}``                   the catalog entry; 404 if unknown
``GET /items/{item_id}/similar?n=10``      the item's nearest neighbours with their titles
``GET /items?q=toy&limit=20``              catalog search by title (case-insensitive substring) or exact id
``GET /trending?n=10``                     the trending items, with the same ``exclude`` and ``genre`` filters
``POST /sessions/recommendations``         an anonymous visitor's recent items ``{"items": [{"item_id", "type",
                                           "value", "ts"}]}`` ranked by the model core from the published model
                                           (:mod:`serving.sessions`); ``?n=``, ``exclude``, ``genre`` as above,
                                           ``?mode=`` a session mode; 400 naming the field and value of bad input
``POST /events``                           one event or a list: 202 ``{"accepted", "rejected": []}``; 422 with
                                           per-record errors when some are invalid (the valid ones are still
                                           produced); 400 body not JSON; 413 too large; 503 Kafka unavailable
``GET /healthz``                           Redis, Kafka and job freshness; 200 or 503 with the details
``GET /metrics``                           Prometheus text format
``GET /`` ``/static/*``                    the live web page
``GET /openapi.json`` ``/docs``            OpenAPI document and Swagger UI, served locally (works offline)
=========================================  ====================================================================

A path or query parameter out of range, and a genre no catalog item has, is a 400 ``{"error", "details"}`` naming
the parameter and the value (422 stays for ``POST /events``, whose body is read and checked record by record).

An id in a path is one percent-encoded segment (``/items/a%2Fb`` is item ``a/b``; :mod:`serving.paths`):
every id the job accepts can be looked up, and no id reaches another route.

Events are validated with :func:`udfs.events.validate_event` (limits from the config) and produced to
``kafka.topics.events`` keyed by ``user_id`` with the value :func:`udfs.events.event_to_json`. The schema
is strict: a missing ``event_id`` or ``ts`` is an error, not filled in by the API.
"""

import asyncio
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, StringConstraints
from redis.exceptions import RedisError, ResponseError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.v2.session import SESSION_MODES
from ingest.producer import event_record
from serving.kafka_io import EventPublisher, KafkaProbe, ProbeResult, PublishError
from serving.metrics import CONTENT_TYPE, ApiMetrics, MetricsMiddleware
from serving.paths import IdPathMiddleware
from serving.sessions import MAX_SESSION_ITEMS, Sessions
from serving.store import (
    CorruptDocument,
    Filters,
    ListDoc,
    Store,
    catalog_view,
    doc_int,
    doc_str,
    entry_view,
    make_client,
)
from udfs.catalog import MAX_GENRE_CHARS
from udfs.events import EVENT_TYPES, REQUIRED, Event, InvalidEvent, Limits, validate_event

logger = logging.getLogger(__name__)

STATIC_DIR = FsPath(__file__).with_name("static")
MAX_N = 100
MAX_EXCLUDE = 100  # ids one recommendations request may exclude
MAX_BATCH = 1000
MAX_BODY_BYTES = 2 * 1024 * 1024
DEFAULT_MAX_AGE_S = 600.0
API_VERSION = "1.0.0"


# --- response documents (for the OpenAPI document; handlers build plain dicts and encode them with orjson) ---------

class ErrorOut(BaseModel):
    error: str = Field(description="what went wrong, naming the field and the value")


class ValidationErrorOut(ErrorOut):
    """400: a path or query parameter is invalid."""

    details: list[dict[str, Any]] = Field(default_factory=list, description="one entry per invalid parameter")


class RankedItem(BaseModel):
    rank: int = Field(description="1-based position")
    item_id: str
    score: float | None
    reason: str | None = Field(description="why the item is recommended, e.g. 'because of 51'")
    title: str | None = Field(description="from the catalog hash; null if the item is not in the catalog")
    year: int | None
    genres: list[str]


class RecommendationsOut(BaseModel):
    user_id: str
    cold_start: bool = Field(description="true: the user has no recommendations; these are the trending items")
    count: int
    items: list[RankedItem]
    event_id: str | None = Field(description="the event that produced this result")
    event_ts: int | None = Field(description="event time of that event (epoch ms)")
    processed_at: int | None = Field(description="when the job wrote the result (epoch ms)")
    age_ms: int | None = Field(description="now - processed_at")
    history_size: int | None
    trigger: str | None = Field(description="events (the user acted), catalog (an item of the user's list was "
                                            "withdrawn, deleted or expired, or came back) or final (re-rank at the "
                                            "end of a bounded run); null for cold start")
    mode: str | None = Field(default=None, description="the fusion mode (or single method) that ranked the items "
                                                       "(model.hybrid.mode); null for cold start")
    arm: str | None = Field(default=None, description="the user's arm of the running experiment (experiments.name; "
                                                      "the arm's settings ranked the items); null without an "
                                                      "experiment, and for cold start")
    requested: int = Field(description="the n asked for")
    stored: int = Field(description="items in the stored list the filters chose from (the user's list holds "
                                    "model.stored_n; for cold start, the trending list)")
    complete: bool = Field(description="false when fewer than `requested` items of the stored list pass the filters "
                                       "(then `count` < `requested`)")


class SessionOut(BaseModel):
    count: int
    items: list[RankedItem]
    mode: str = Field(description="the session mode that ranked the items")
    requested: int = Field(description="the n asked for")
    stored: int = Field(description="items ranked (model.stored_n deep) that the filters chose from")
    complete: bool = Field(description="false when fewer than `requested` ranked items pass the filters")
    used: list[str] = Field(description="the session's items the model knows (in the catalog or with a neighbour "
                                        "list), in order of first appearance: the ranking read these")
    unknown: int = Field(description="items of the session the model does not know: ignored")


class ItemOut(BaseModel):
    item_id: str
    title: str | None
    year: int | None
    genres: list[str]


class SimilarOut(BaseModel):
    item_id: str
    title: str | None
    count: int
    neighbors: list[RankedItem]
    updated_at: int | None
    age_ms: int | None


class TrendingOut(BaseModel):
    count: int
    items: list[RankedItem]
    requested: int = Field(description="the n asked for")
    stored: int = Field(description="items in the trending list the filters chose from")
    complete: bool = Field(description="false when fewer than `requested` trending items pass the filters")


class UserOut(BaseModel):
    user_id: str
    processed_at: int
    age_ms: int


class UsersOut(BaseModel):
    total: int
    users: list[UserOut]


class SearchOut(BaseModel):
    query: str
    total: int = Field(description="matches in the catalog (only the first `limit` are listed)")
    items: list[ItemOut]


class Rejection(BaseModel):
    index: int = Field(description="position of the record in the request (0 for a single object)")
    reason: str = Field(description="machine-readable code of udfs.events.InvalidEvent, e.g. missing_field")
    error: str = Field(description="the message, naming the field and the value")
    event_id: str | None = None


class EventsOut(BaseModel):
    accepted: list[str] = Field(description="event ids produced to the events topic")
    rejected: list[Rejection]


class EventsFailedOut(EventsOut):
    error: str
    failed: list[str] = Field(description="ids of valid events that Kafka did not acknowledge")


class HealthOut(BaseModel):
    status: str = Field(description="ok or unavailable")
    checks: dict[str, dict[str, Any]]


def session_json_schema(limits: Limits, max_items: int) -> dict[str, Any]:
    """The JSON Schema of a session (``POST /sessions/recommendations``)."""
    ident = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": limits.max_id_length},
                       {"type": "integer", "minimum": 0}]}
    item = {
        "type": "object",
        "additionalProperties": False,
        "required": ["item_id"],
        "properties": {
            "item_id": ident,
            "type": {"type": "string", "enum": list(EVENT_TYPES), "default": "view"},
            "value": {"type": "number",
                      "description": f"rate: the rating, {limits.min_rating:g}..{limits.max_rating:g} (required); "
                                     "other types: optional positive weight (default model.weights[type])"},
            "ts": {"type": "integer", "minimum": limits.min_ts_ms, "maximum": limits.max_ts_ms,
                   "description": "event time, epoch milliseconds (default: the time of the request)"},
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": item, "maxItems": max_items,
                                 "description": "the visitor's recent events, oldest first (events are ordered by "
                                                "ts, then by their place in this list)"}},
        "example": {"items": [{"item_id": "50", "type": "view"}, {"item_id": "172", "type": "click"},
                              {"item_id": "181", "type": "rate", "value": 4.5}]},
    }


def parse_session(payload: Any, limits: Limits, max_items: int, now_ms: int) -> list[Event]:
    """The events of a session body (see :func:`session_json_schema`); ``InvalidEvent`` names the field and value
    (``items[3]`` is the fourth event)."""
    if not isinstance(payload, dict):
        raise InvalidEvent("not_an_object", f"the body must be a JSON object {{\"items\": [...]}}, got "
                                            f"{type(payload).__name__}")
    extra = sorted(k for k in payload if k != "items")
    if extra:
        raise InvalidEvent("unknown_field", f"unknown field(s) {', '.join(repr(k)[:40] for k in extra[:5])} "
                                            "(the body holds only items)")
    items = payload.get("items")
    if not isinstance(items, list):
        raise InvalidEvent("missing_field" if items is None else "wrong_type",
                           f"items {items!r:.60} must be a list of {{item_id, type, value, ts}} objects")
    if len(items) > max_items:
        raise InvalidEvent("too_many", f"items holds {len(items)} events, more than {max_items}")
    events = []
    for i, obj in enumerate(items):
        where = f"items[{i}]"
        if not isinstance(obj, dict):
            raise InvalidEvent("not_an_object", f"{where} {obj!r:.60} must be an object {{item_id, type, value, ts}}")
        extra = sorted(k for k in obj if k not in ("item_id", "type", "value", "ts"))
        if extra:
            raise InvalidEvent("unknown_field",
                               f"{where}: unknown field(s) {', '.join(repr(k)[:40] for k in extra[:5])}")
        if "item_id" not in obj:
            raise InvalidEvent("missing_field", f"{where}: missing field item_id")
        # the event id breaks ties of ts in the core's canonical order: zero-padded, its string order is the list's
        event_id = f"{i:06d}"
        record = {"event_id": event_id, "user_id": "session", "item_id": obj["item_id"],
                  "type": obj.get("type", "view"), "ts": obj.get("ts", now_ms)}
        if obj.get("value") is not None:
            record["value"] = obj["value"]
        try:
            events.append(validate_event(record, limits))
        except InvalidEvent as exc:
            text = str(exc)
            for said in (f" in event {event_id}", f" for event {event_id}"):
                text = text.replace(said, "")
            raise InvalidEvent(exc.reason, f"{where}: {text.replace(f' event {event_id} ', ' event ')}") from None
    return events


def event_json_schema(limits: Limits) -> dict[str, Any]:
    """The JSON Schema of one event (the rules of :mod:`udfs.events`, without the cross-field ones)."""
    ident = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": limits.max_id_length},
                       {"type": "integer", "minimum": 0}]}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(REQUIRED),
        "properties": {
            "event_id": {**ident, "description": "unique id of the event (the API does not fill it in)"},
            "user_id": ident,
            "item_id": ident,
            "type": {"type": "string", "enum": list(EVENT_TYPES)},
            "value": {"type": "number",
                      "description": f"rate: the rating, {limits.min_rating:g}..{limits.max_rating:g}; "
                                     "other types: optional positive weight"},
            "ts": {"type": "integer", "minimum": limits.min_ts_ms, "maximum": limits.max_ts_ms,
                   "description": "event time, epoch milliseconds (the API does not fill it in)"},
        },
        "example": {"event_id": "web-3f2a", "user_id": "196", "item_id": "242", "type": "rate", "value": 4,
                    "ts": 1764514800123},
    }


# --- helpers ---------------------------------------------------------------------------------------------------------

def arm_view(doc: str) -> dict[str, Any] | None:
    """An arm's totals as the job wrote them (``operators.redis_sink.ArmsToRedis``) -> :class:`ArmOut` (None: not
    such a document)."""
    try:
        d = json.loads(doc)
        events = int(d["events"])
        out = {"experiment": str(d["experiment"]), "arm": str(d["arm"]), "events": events, "hits": int(d["hits"]),
               "hit_rate": d["hits"] / events if events else None, "ndcg": d["ndcg"] / events if events else None,
               "lists": int(d["lists"]), "mean_age_ms": d["age_sum_ms"] / events if events else None,
               "updated_at": int(d["updated_at"])}
    except (ValueError, KeyError, TypeError):
        return None
    return out


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"error": message, **extra}, status)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _no_ids() -> list[str]:
    """The default of ``exclude``. Pydantic inspects a default factory's signature on every request: that of the
    builtin ``list`` is parsed from its text each time, a function's is read from ``__signature__`` at once."""
    return []


_no_ids.__signature__ = inspect.Signature()  # type: ignore[attr-defined]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed")


def _event_id_of(obj: Any) -> str | None:
    raw = obj.get("event_id") if isinstance(obj, dict) else None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return None
    return str(raw)[:200]


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(x) for x in err.get("loc", ())]
        where = f"{loc[0]} parameter {'.'.join(loc[1:])}" if len(loc) > 1 else ".".join(loc) or "request"
        shown = repr(err.get("input"))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        parts.append(f"{where}: {err.get('msg', 'invalid')} (got {shown})")
    return "invalid request: " + "; ".join(parts)


class ArmOut(BaseModel):
    experiment: str
    arm: str
    events: int = Field(description="engagements of the arm's users scored against the list served before them")
    hits: int = Field(description="of those, the engaged item was in that list's first model.top_n")
    hit_rate: float | None = Field(description="hits / events; null before any event")
    ndcg: float | None = Field(description="mean of 1/log2(rank+1) per hit (0 per miss); null before any event")
    lists: int = Field(description="lists served to the arm's users")
    mean_age_ms: float | None = Field(description="mean event time from a list's newest event to the scored event")
    updated_at: int = Field(description="when the job wrote these totals (epoch ms)")


class ExperimentsOut(BaseModel):
    arms: list[ArmOut] = Field(description="each arm's running totals (make ab-report: with intervals and a test)")


class _State:
    """What the handlers share; the Redis client is made in the app's lifespan (it belongs to the event loop)."""

    def __init__(self, cfg: Mapping[str, Any], redis_client: Any, producer: Any, max_age_s: float,
                 kafka_timeout_s: float, use_script: bool) -> None:
        self.cfg = cfg
        self.limits = Limits.from_config(cfg)
        self.prefix = str(cfg["redis"]["prefix"])
        self.redis_addr = f"{cfg['redis']['host']}:{cfg['redis']['port']}"
        self.max_age_s = max_age_s
        self.use_script = use_script
        self._given_client = redis_client
        self.client: Any = None
        self.store_: Store | None = None
        bootstrap = str(cfg["kafka"]["bootstrap"])
        self.events_topic = str(cfg["kafka"]["topics"]["events"])
        self.publisher = EventPublisher(bootstrap, self.events_topic, int(cfg["kafka"]["partitions"]),
                                        producer=producer, timeout_s=kafka_timeout_s)
        self.probe = KafkaProbe(bootstrap, self.events_topic, timeout_s=min(kafka_timeout_s, 3.0))
        self.metrics = ApiMetrics()

    @property
    def store(self) -> Store:
        if self.store_ is None:  # the app is used without its lifespan (e.g. a TestClient outside `with`)
            self.open()
        assert self.store_ is not None
        return self.store_

    def open(self) -> None:
        if self._given_client is not None:
            self.client = self._given_client
        else:
            self.client = make_client(self.cfg["redis"])
        self.store_ = Store(self.client, self.prefix, use_script=self.use_script)

    async def close(self) -> None:
        if self.client is not None and self._given_client is None:
            await self.client.aclose()
        self.client, self.store_ = None, None
        await run_in_threadpool(self.publisher.close)
        await run_in_threadpool(self.probe.close)


def _check_redis_client(client: Any) -> None:
    import redis

    if isinstance(client, redis.Redis):
        raise TypeError("redis_client must be a redis.asyncio.Redis (the API is async), got a synchronous "
                        "redis.Redis; create one with redis.asyncio.Redis(host=..., port=..., decode_responses=True)")


def _swagger_dir() -> FsPath | None:
    try:
        import swagger_ui
    except ImportError:
        return None
    path = FsPath(swagger_ui.__file__).with_name("static")
    return path if (path / "swagger-ui-bundle.js").is_file() else None


_FALLBACK_DOCS = """<!doctype html><html><head><meta charset="utf-8"><title>flinkrec API</title>
<style>body{font:15px system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#1f2937}
code{background:#f3f4f6;padding:.1rem .3rem;border-radius:4px}li{margin:.3rem 0}</style></head>
<body><h1>flinkrec API</h1><p>Swagger UI is not installed (<code>pip install swagger-ui-py</code>); the operations of
<a href="/openapi.json">/openapi.json</a>:</p><ul id="ops"></ul><script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const ul = document.getElementById('ops');
  for (const [path, ops] of Object.entries(doc.paths)) for (const [method, op] of Object.entries(ops)) {
    const li = document.createElement('li');
    li.innerHTML = '<code></code> ';
    li.firstChild.textContent = method.toUpperCase() + ' ' + path;
    li.append(op.summary || '');
    ul.append(li);
  }
});
</script></body></html>"""


def _drop_default_422(schema: dict[str, Any]) -> None:
    """Remove the 422 FastAPI documents for every operation with parameters: invalid parameters are a 400 here
    (``ValidationErrorOut``), so a 422 with FastAPI's own error shape would document an answer never given."""
    default = "#/components/schemas/HTTPValidationError"
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            content = op.get("responses", {}).get("422", {}).get("content", {})
            if content.get("application/json", {}).get("schema", {}).get("$ref") == default:
                del op["responses"]["422"]
    schemas = schema.get("components", {}).get("schemas", {})
    if default not in orjson.dumps(schema).decode():
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


# --- the app ---------------------------------------------------------------------------------------------------------

def create_app(cfg: Mapping[str, Any], redis_client: Any = None, producer: Any = None, *,
               max_age_s: float = DEFAULT_MAX_AGE_S, kafka_timeout_s: float = 10.0, use_script: bool = True,
               static_dir: str | FsPath | None = None, session_max_items: int = MAX_SESSION_ITEMS) -> FastAPI:
    """Build the API over the Redis layout and the events topic of ``cfg`` (from :func:`config.load_config`).

    ``redis_client``: an existing ``redis.asyncio.Redis`` (not closed by the app; by default one is made from
    the ``redis`` section). ``producer``: an existing ``KafkaProducer`` (not closed; by default one is made on
    the first ``POST /events``). ``max_age_s``: ``/healthz`` reports 503 when the newest recommendation is older
    (0 disables the freshness rule). ``use_script``: read a document and its catalog hashes in one round trip
    with a Lua script (else GET + pipelined HGETALL). ``session_max_items``: the most events a session may hold.
    """
    if redis_client is not None:
        _check_redis_client(redis_client)
    state = _State(cfg, redis_client, producer, max_age_s, kafka_timeout_s, use_script)
    sessions = Sessions(cfg["model"], state.prefix, int(cfg["model"]["stored_n"]), use_script=use_script)
    static = FsPath(static_dir) if static_dir is not None else STATIC_DIR

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.open()
        logger.info("serving Redis %s prefix %r, events topic %s", state.redis_addr, state.prefix, state.events_topic)
        await run_in_threadpool(sessions.warm_up)  # the session kernels compiled before the first request
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="flinkrec serving API",
        version=API_VERSION,
        description="Real-time recommendations computed by the Flink job, read from Redis; events in to Kafka.",
        docs_url=None, redoc_url=None, lifespan=lifespan,
        # FastAPI's own OpenTelemetry hooks (unused here: /metrics is Prometheus) cost a check on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.serving = state
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(IdPathMiddleware)  # outermost: routing and the metrics see the id-preserving path

    # --- errors ----------------------------------------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(request: Request, exc: RequestValidationError) -> Response:
        details = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        return _json({"error": _describe_validation(exc), "details": details}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        return _json({"error": message}, exc.status_code)

    @app.exception_handler(RedisError)
    async def on_redis_error(request: Request, exc: RedisError) -> Response:
        if isinstance(exc, ResponseError):  # Redis answered, but refused the command (e.g. WRONGTYPE): a data problem
            logger.error("Redis at %s refused a command during %s %s: %s", state.redis_addr, request.method,
                         request.url.path, exc)
            return _error(500, f"Redis at {state.redis_addr} refused the command: {exc}")
        logger.warning("Redis at %s failed during %s %s: %r", state.redis_addr, request.method, request.url.path, exc)
        return _error(503, f"Redis at {state.redis_addr} is not available: {exc}")

    @app.exception_handler(CorruptDocument)
    async def on_corrupt(request: Request, exc: CorruptDocument) -> Response:
        logger.error("%s", exc)
        return _error(500, f"stored data does not follow the layout: {exc}")

    # --- recommendations ---------------------------------------------------------------------------------------
    id_max = state.limits.max_id_length
    as_segment = ("as one path segment, percent-encoded (`/` as `%2F`, `%` as `%25`, `?` as `%3F`, `#` as `%23`, "
                  "as encodeURIComponent does)")
    UserId = Annotated[str, Path(min_length=1, max_length=id_max, description=f"user id, {as_segment}",
                                 examples=["196", "shop/Ana María?#%"])]
    ItemId = Annotated[str, Path(min_length=1, max_length=id_max, description=f"item id, {as_segment}",
                                 examples=["242", "books/978 0?#%"])]
    TopN = Annotated[int, Query(ge=1, le=MAX_N, description="how many items (1..100)")]

    ExcludedId = Annotated[str, StringConstraints(min_length=1, max_length=id_max)]
    Exclude = Annotated[list[ExcludedId], Query(
        default_factory=_no_ids, max_length=MAX_EXCLUDE, examples=[["50", "181"]],
        description=f"an item id to leave out; repeat the parameter for more (`exclude=50&exclude=181`, each value "
                    f"one whole id: ids may hold commas), at most {MAX_EXCLUDE}")]
    Genre = Annotated[str | None, Query(
        min_length=1, max_length=MAX_GENRE_CHARS, examples=["Comedy"],
        description="only items of this genre, spelt as in the catalog (exact, case-sensitive: `Sci-Fi`); a genre no "
                    "catalog item has is a 400")]

    def ranked(found: ListDoc) -> list[dict[str, Any]]:
        return [entry_view(i + 1, e, c) for i, (e, c) in enumerate(zip(found.entries, found.catalog, strict=True))]

    async def unknown_genre(genre: str) -> Response | None:
        """A 400 naming ``genre`` when no catalog item has it, else None."""
        known = await state.store.genres()
        if genre in known:
            return None
        near = sorted(g for g in known if g.casefold() == genre.casefold())
        hint = (f"; did you mean {near[0]!r}? (genres are case-sensitive)" if near
                else f" (known: {', '.join(sorted(known)[:40])}{', ...' if len(known) > 40 else ''})" if known
                else f" (the catalog in Redis has no genres: {state.prefix}items is empty or its items list none)")
        msg = f"{genre!r:.80} is not a genre of any catalog item"
        return _json({"error": f"invalid request: query parameter genre: {msg}{hint}",
                      "details": [{"type": "unknown_genre", "loc": ["query", "genre"], "msg": msg + hint,
                                   "input": genre}]}, 400)

    @app.get("/users/{user_id:id}/recommendations", response_model=None, tags=["recommendations"],
             summary="A user's ranked recommendations with titles, filtered per request",
             description=(f"The first `n` items of the user's stored list (`model.stored_n` deep: "
                          f"{state.cfg['model']['stored_n']} here) that "
                          "are not in `exclude` and, with `genre`, list that genre; the list keeps the job's order "
                          "and ranks are renumbered 1..count. When fewer pass, `complete` is false and `count` < "
                          "`n`. The same filters apply to the trending items of `cold_start`."),
             responses={200: {"model": RecommendationsOut}, 404: {"model": ErrorOut},
                        400: {"model": ValidationErrorOut,
                              "description": "a parameter out of range (n 1..100, more than 100 excluded ids, an "
                                             "id or genre too long) or an unknown genre, named with its value"},
                        503: {"model": ErrorOut}})
    async def recommendations(user_id: UserId, exclude: Exclude, n: TopN = 10, genre: Genre = None,
                              cold_start: Annotated[bool, Query(
            description="a user without recommendations gets the trending items instead of a 404")] = False,
            ) -> Response:
        if genre is not None and (refused := await unknown_genre(genre)) is not None:
            return refused
        filters = Filters(frozenset(exclude), genre)
        found = await state.store.recommendations(user_id, n, filters)
        if found is None:
            if cold_start:
                trending = await state.store.trending(n, filters)
                if trending is not None and trending.stored:  # filters may leave none: 200 with count 0
                    items = ranked(trending)
                    for it in items:
                        it["reason"] = it["reason"] or "trending"
                    return _json({"user_id": user_id, "cold_start": True, "count": len(items), "items": items,
                                  "event_id": None, "event_ts": None, "processed_at": None, "age_ms": None,
                                  "history_size": 0, "trigger": None, "mode": None, "arm": None, "requested": n,
                                  "stored": trending.stored, "complete": len(items) == n})
                return _error(404, f"no recommendations for user {user_id!r} and no trending items yet "
                                   "(the job has not written any)", user_id=user_id)
            return _error(404, f"no recommendations for user {user_id!r} (unknown user, or none of their events "
                               "processed yet; ?cold_start=true returns trending items instead)", user_id=user_id)
        doc = found.doc
        processed_at = doc_int(doc, "processed_at")
        age_ms = max(0, _now_ms() - processed_at) if processed_at is not None else None
        if age_ms is not None:
            state.metrics.rec_age.observe(age_ms / 1000)
        items = ranked(found)
        return _json({"user_id": doc_str(doc, "user_id") or user_id, "cold_start": False, "count": len(items),
                      "items": items, "event_id": doc_str(doc, "event_id"), "event_ts": doc_int(doc, "event_ts"),
                      "processed_at": processed_at, "age_ms": age_ms, "history_size": doc_int(doc, "history_size"),
                      "trigger": doc_str(doc, "trigger"), "mode": doc_str(doc, "mode"), "arm": doc_str(doc, "arm"),
                      "requested": n,
                      "stored": found.stored, "complete": len(items) == n})

    @app.get("/experiments", response_model=None, tags=["recommendations"],
             summary="The running experiment's arms: events, hits, NDCG, lists served",
             description="Each arm's running totals as the job keeps them in the Redis hash `experiments` "
                         "(docs/design.md, Experiments); an empty list without an experiment.",
             responses={200: {"model": ExperimentsOut}, 503: {"model": ErrorOut}})
    async def experiments() -> Response:
        raw = await state.store.client.hgetall(f"{state.prefix}experiments")
        return _json({"arms": [arm for _, doc in sorted(raw.items()) if (arm := arm_view(doc)) is not None]})

    @app.get("/users", response_model=None, tags=["recommendations"],
             summary="The most recently updated users",
             responses={200: {"model": UsersOut}, 400: {"model": ValidationErrorOut}, 503: {"model": ErrorOut}})
    async def users(limit: Annotated[int, Query(ge=1, le=1000, description="how many users")] = 20) -> Response:
        newest, total = await state.store.users(limit)
        now = _now_ms()
        return _json({"total": total, "users": [{"user_id": u, "processed_at": ts, "age_ms": max(0, now - ts)}
                                                 for u, ts in newest]})

    @app.get("/trending", response_model=None, tags=["recommendations"],
             summary="The trending items, filtered per request",
             description="The first `n` trending items not in `exclude` and, with `genre`, of that genre, in the "
                         "job's order. When fewer pass, `complete` is false and `count` < `n`.",
             responses={200: {"model": TrendingOut}, 400: {"model": ValidationErrorOut}, 503: {"model": ErrorOut}})
    async def trending(exclude: Exclude, n: TopN = 10, genre: Genre = None) -> Response:
        if genre is not None and (refused := await unknown_genre(genre)) is not None:
            return refused
        found = await state.store.trending(n, Filters(frozenset(exclude), genre))
        items = ranked(found) if found is not None else []
        return _json({"count": len(items), "items": items, "requested": n,
                      "stored": found.stored if found is not None else 0, "complete": len(items) == n})

    SessionMode = Annotated[Literal[SESSION_MODES] | None, Query(  # type: ignore[valid-type]
        description=f"how the session is ranked (default: the job's mode model.hybrid.mode, {sessions.mode} here; "
                    "learned and usercf rank as weighted: a session has no neighbours and the job does not publish "
                    "the learned combiner's item statistics)")]

    @app.post("/sessions/recommendations", response_model=None, tags=["recommendations"],
              summary="Recommendations for an anonymous session from its recent items",
              description=(
                  "Ranks the visitor's recent events with the model core (`core.v2.session`) as it ranks a user whose "
                  "history they are: item-CF over the item neighbour lists in Redis, content over the catalog, the "
                  "trending items, fused as the mode says, with the same scores and reasons; no user-CF. Items "
                  "neither in the catalog nor with a neighbour list are ignored (`unknown`), the session's own items "
                  "are not recommended (model.hybrid.exclude_types). The first `n` of the "
                  f"{state.cfg['model']['stored_n']} best (`model.stored_n`) that pass `exclude` and `genre`."),
              responses={200: {"model": SessionOut},
                         400: {"model": ValidationErrorOut,
                               "description": "the body is not a session (not JSON, a field of an event invalid, "
                                              f"more than {session_max_items} events) or a query parameter out of "
                                              "range, named with its value"},
                         413: {"model": ErrorOut, "description": f"body larger than {MAX_BODY_BYTES} bytes"},
                         503: {"model": ErrorOut}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "$ref": "#/components/schemas/Session"}}}}})
    async def session_recommendations(request: Request, exclude: Exclude, n: TopN = 10, genre: Genre = None,
                                      mode: SessionMode = None) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"request body of {len(body)} bytes is larger than {MAX_BODY_BYTES}")
        try:
            payload = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            return _json({"error": f"invalid request: the body is not JSON: {exc}",
                          "details": [{"type": "bad_json", "loc": ["body"], "msg": str(exc)}]}, 400)
        try:
            events = parse_session(payload, state.limits, session_max_items, _now_ms())
        except InvalidEvent as exc:
            return _json({"error": f"invalid request: body {exc}",
                          "details": [{"type": exc.reason, "loc": ["body"], "msg": str(exc)}]}, 400)
        if genre is not None and (refused := await unknown_genre(genre)) is not None:
            return refused
        answer = await sessions.rank(state.store.client, events,
                                     mode, n, Filters(frozenset(exclude), genre))
        return _json({"count": len(answer.items), "items": answer.items, "mode": mode or sessions.mode,
                      "requested": n, "stored": answer.stored, "complete": len(answer.items) == n,
                      "used": answer.used, "unknown": len(answer.unknown)})

    # --- items -----------------------------------------------------------------------------------------------------
    @app.get("/items", response_model=None, tags=["items"], summary="Search the catalog by title",
             responses={200: {"model": SearchOut}, 400: {"model": ValidationErrorOut}, 503: {"model": ErrorOut}})
    async def search_items(
            q: Annotated[str, Query(min_length=1, max_length=200, description="part of a title, or an item id")],
            limit: Annotated[int, Query(ge=1, le=100, description="how many matches")] = 20) -> Response:
        found, total = await state.store.search_items(q, limit)
        return _json({"query": q, "total": total, "items": found})

    @app.get("/items/{item_id:id}", response_model=None, tags=["items"], summary="One catalog entry",
             responses={200: {"model": ItemOut}, 404: {"model": ErrorOut}, 400: {"model": ValidationErrorOut},
                        503: {"model": ErrorOut}})
    async def item(item_id: ItemId) -> Response:
        fields = await state.store.item(item_id)
        if fields is None:
            return _error(404, f"item {item_id!r} is not in the catalog ({state.prefix}item:{item_id})",
                          item_id=item_id)
        return _json(catalog_view(item_id, fields))

    @app.get("/items/{item_id:id}/similar", response_model=None, tags=["items"],
             summary="The nearest neighbours of an item, with titles",
             responses={200: {"model": SimilarOut}, 404: {"model": ErrorOut}, 400: {"model": ValidationErrorOut},
                        503: {"model": ErrorOut}})
    async def similar(item_id: ItemId, n: TopN = 10) -> Response:
        found = await state.store.similar(item_id, n)
        if found is None:
            fields = await state.store.item(item_id)
            if fields is None:
                return _error(404, f"item {item_id!r} is not in the catalog and has no similar items",
                              item_id=item_id)
            return _error(404, f"no similar items computed for item {item_id!r} yet", item_id=item_id)
        updated_at = doc_int(found.doc, "updated_at")
        neighbors = ranked(found)
        own = await state.store.item(item_id)
        return _json({"item_id": item_id, "title": (own or {}).get("title"), "count": len(neighbors),
                      "neighbors": neighbors, "updated_at": updated_at,
                      "age_ms": max(0, _now_ms() - updated_at) if updated_at is not None else None})

    # --- events ------------------------------------------------------------------------------------------------
    @app.post("/events", response_model=None, status_code=202, tags=["events"],
              summary="Send one event or a list of events to the events topic",
              responses={202: {"model": EventsOut, "description": "every event valid and produced"},
                         400: {"model": ErrorOut, "description": "the body is not JSON, or an empty list"},
                         413: {"model": ErrorOut, "description": f"more than {MAX_BATCH} events or "
                                                                 f"{MAX_BODY_BYTES} bytes"},
                         422: {"model": EventsOut, "description": "some events invalid; the valid ones "
                                                                 "were produced"},
                         503: {"model": EventsFailedOut, "description": "Kafka did not take the events"}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "anyOf": [{"$ref": "#/components/schemas/Event"},
                            {"type": "array", "items": {"$ref": "#/components/schemas/Event"},
                             "minItems": 1, "maxItems": MAX_BATCH}]}}}}})
    async def post_events(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _error(413, f"request body of {declared} bytes is larger than {MAX_BODY_BYTES}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return _error(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            payload = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            return _error(400, f"request body is not JSON: {exc}", reason="bad_json")
        records = payload if isinstance(payload, list) else [payload]
        if not records:
            return _error(400, "request body is an empty list; send one event object or a non-empty list",
                          reason="empty_batch")
        if len(records) > MAX_BATCH:
            return _error(413, f"request holds {len(records)} events, more than {MAX_BATCH}; split the batch")
        valid: list[Event] = []
        rejected: list[dict[str, Any]] = []
        for i, obj in enumerate(records):
            try:
                valid.append(validate_event(obj, state.limits))
            except InvalidEvent as exc:
                rejected.append({"index": i, "reason": exc.reason, "error": str(exc), "event_id": _event_id_of(obj)})
        if valid:
            try:
                await run_in_threadpool(state.publisher.publish, [event_record(e) for e in valid])
            except PublishError as exc:
                sent = set(exc.sent)
                accepted = [e.event_id for i, e in enumerate(valid) if i in sent]
                failed = [e.event_id for i, e in enumerate(valid) if i not in sent]
                state.metrics.events.labels("accepted").inc(len(accepted))
                state.metrics.events.labels("failed").inc(len(failed))
                state.metrics.events.labels("rejected").inc(len(rejected))
                logger.warning("POST /events: %s", exc)
                return _json({"error": str(exc), "accepted": accepted, "failed": failed, "rejected": rejected}, 503)
        state.metrics.events.labels("accepted").inc(len(valid))
        state.metrics.events.labels("rejected").inc(len(rejected))
        if rejected:
            logger.info("POST /events: %d accepted, %d rejected (first: %s)", len(valid), len(rejected),
                        rejected[0]["error"])
        return _json({"accepted": [e.event_id for e in valid], "rejected": rejected}, 422 if rejected else 202)

    # --- operations ----------------------------------------------------------------------------------------------
    async def redis_check() -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await state.store.ping()
            newest = await state.store.newest_update()
        except (RedisError, OSError) as exc:
            ms = round((time.perf_counter() - started) * 1000, 2)
            return {"redis": {"ok": False, "address": state.redis_addr, "latency_ms": ms,
                              "error": f"{type(exc).__name__}: {exc}"},
                    "job": {"ok": False, "error": "unknown: Redis is not available"}}
        ms = round((time.perf_counter() - started) * 1000, 2)
        job: dict[str, Any] = {"max_age_s": state.max_age_s or None}
        if newest is None:
            job.update(ok=False, users=0, error=f"no recommendations written yet ({state.prefix}users is empty)")
        else:
            user, ts, total = newest
            age_ms = _now_ms() - ts
            job.update(users=total, newest_user=user, newest_processed_at=ts, age_ms=age_ms,
                       ok=not state.max_age_s or age_ms <= state.max_age_s * 1000)
            if not job["ok"]:
                job["error"] = (f"newest recommendation is {age_ms / 1000:.0f} s old, more than "
                                f"{state.max_age_s:g} s: is the Flink job running?")
        return {"redis": {"ok": True, "address": state.redis_addr, "latency_ms": ms}, "job": job}

    @app.get("/healthz", response_model=None, tags=["operations"],
             summary="Redis and Kafka reachable, and the job's results fresh",
             responses={200: {"model": HealthOut}, 503: {"model": HealthOut}})
    async def healthz() -> Response:
        redis_part, kafka = await asyncio.gather(redis_check(), run_in_threadpool(state.probe.check))
        assert isinstance(kafka, ProbeResult)
        checks: dict[str, dict[str, Any]] = dict(redis_part)
        checks["kafka"] = {"ok": kafka.ok, "bootstrap": state.probe.bootstrap, "latency_ms": round(kafka.latency_ms, 2)}
        if kafka.error:
            checks["kafka"]["error"] = kafka.error
        else:
            checks["kafka"]["events_topic"] = {"name": state.events_topic, "exists": kafka.topic_exists}
        ok = all(c["ok"] for c in checks.values())
        return _json({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics (text format 0.0.4)",
             response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics() -> Response:
        try:
            newest = await state.store.newest_update()
        except (RedisError, OSError):
            newest = None
        state.metrics.job_age.set((_now_ms() - newest[1]) / 1000 if newest else float("nan"))
        if newest:
            state.metrics.job_users.set(newest[2])
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    # --- page and docs -------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(static / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=static), name="static")
    swagger = _swagger_dir()
    if swagger is not None:
        app.mount("/docs-assets", StaticFiles(directory=swagger), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if swagger is None:
            return HTMLResponse(_FALLBACK_DOCS)
        return get_swagger_ui_html(openapi_url="/openapi.json", title="flinkrec API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["Event"] = event_json_schema(state.limits)
            schema["components"]["schemas"]["Session"] = session_json_schema(state.limits, session_max_items)
            _drop_default_422(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
