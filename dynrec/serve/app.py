"""The HTTP server: FastAPI routes over a bundle, the micro-batcher and the event store.

Answers to bad input (never a 500): malformed JSON -> 400; a well-formed request with a wrong field
(k out of range, unknown mode, a mode the bundle lacks, neither user_id nor history, an unknown field)
-> 422; a body over the limit -> 413; a full queue -> 503 with Retry-After. Unknown item ids are dropped
and listed in the answer; a history with no known item gets the most popular items, labelled; a history
longer than the model's max_len keeps its most recent max_len items, labelled truncated.
"""

from __future__ import annotations

import json
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError

from dynrec.errors import ConfigError
from dynrec.serve.batcher import MicroBatcher, Overloaded
from dynrec.serve.bundle import Bundle, load_bundle
from dynrec.serve.metrics import CONTENT_TYPE, Metrics
from dynrec.serve.middleware import BodyLimit, ObserveRequests
from dynrec.serve.ranking import NO_ITEMS, Query, Ranked, Ranker
from dynrec.serve.schemas import (
    EventsRequest,
    EventsResponse,
    Health,
    RecommendRequest,
    RecommendResponse,
)
from dynrec.serve.store import EventStore

ENDPOINTS = ("/recommend", "/events", "/healthz", "/metrics", "/docs", "/openapi.json")


@dataclass
class ServeSettings:
    max_batch: int = 64  # requests per forward pass; larger amortises more, a batch takes longer
    max_wait_ms: float = 2.0  # how long the first request of a batch waits for company
    queue_size: int = 128  # requests waiting for the model before new ones get 503 (about 2 passes of work)
    db: str = "events.sqlite"  # the SQLite event store
    max_body_bytes: int = 256 * 1024  # larger request bodies get 413
    stored_history: int = 1000  # most recent stored events read per user (the exclusion set; the model reads max_len)
    model_thread: bool = False  # run the model in its own thread: the loop never waits, but passes slow (GIL)

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue_size", "max_body_bytes", "stored_history"):
            if getattr(self, name) < 1:
                raise ConfigError(f"serve {name.replace('_', '-')}: {getattr(self, name)} must be at least 1")
        if self.max_wait_ms < 0:
            raise ConfigError(f"serve max-wait-ms: {self.max_wait_ms} must be 0 or more")


def _known(raw: list[str], index: dict[str, int]) -> tuple[np.ndarray, list[str]]:
    """Internal ids of the known raw ids (order kept) and the distinct unknown ones."""
    ids = [index.get(item, 0) for item in raw]
    unknown = list(dict.fromkeys(item for item, i in zip(raw, ids, strict=True) if i == 0))
    return np.array([i for i in ids if i], dtype=np.int64), unknown


def _json_body(model: type[BaseModel]) -> dict:
    """The OpenAPI requestBody of an endpoint that parses `model` from the raw body itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status_code=422, detail=detail)


def create_app(bundle: Bundle, settings: ServeSettings) -> FastAPI:
    """The FastAPI app serving `bundle`; the batcher and the store start with the app's lifespan."""
    ranker = Ranker(bundle.scorers(), bundle.popularity)
    batcher: MicroBatcher[Query, Ranked] = MicroBatcher(
        ranker.rank, key=lambda query: query.mode, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
        queue_size=settings.queue_size, in_thread=settings.model_thread)
    metrics = Metrics(ENDPOINTS, batcher.depth)
    batcher.observe = metrics.batch
    store = EventStore(settings.db)
    default_mode = "cki" if "cki" in bundle.modes else "static"

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await store.open()
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            await store.close()

    app = FastAPI(title="dynrec", version="1", lifespan=lifespan,
                  description="Per-user recommendations from a dynrec bundle: static, dynamic (generated head) "
                              "or online CKI (static and generated heads spliced per request).")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in error.errors()]
        malformed = any(e.get("type") == "json_invalid" for e in errors)
        return JSONResponse({"detail": errors}, status_code=400 if malformed else 422)

    # The body is parsed by pydantic straight from the bytes (FastAPI's documented Request + openapi_extra
    # pattern): the same validation and errors as a typed parameter, for about 90 us less per request.
    @app.post("/recommend", response_model=RecommendResponse, openapi_extra=_json_body(RecommendRequest),
              responses={400: {"description": "malformed JSON"}, 413: {"description": "body too large"},
                         422: {"description": "invalid field"}, 503: {"description": "overloaded; retry later"}})
    async def recommend(raw: Request) -> Response:
        """Top-k items for a user's stored events and/or a given history."""
        try:
            request = RecommendRequest.model_validate_json(await raw.body())
        except ValidationError as error:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)],
                                         body=None) from None
        if request.user_id is None and not request.history:
            raise _unprocessable("give user_id (stored events), history, or both")
        mode = request.mode or default_mode
        if mode not in bundle.modes:
            raise _unprocessable(f"mode {mode!r} needs a dynamic bundle (a model with a head generator); "
                                 f"this bundle serves: {', '.join(bundle.modes)}")
        if request.k > bundle.n_items:
            raise _unprocessable(f"k={request.k} is more than the catalogue's {bundle.n_items} items")
        stored = await store.history(request.user_id, settings.stored_history) if request.user_id else []
        known, unknown = _known(stored + request.history, bundle.item_index)
        candidates, unknown_candidates = (None, []) if request.candidates is None else \
            _known(request.candidates, bundle.item_index)
        history = known[-bundle.max_len :]
        query = Query(mode, history, request.k, known if request.exclude_seen else NO_ITEMS, candidates)
        if len(history) == 0:
            ranked, used = ranker.popular(query), "popularity"
        else:
            try:
                ranked, used = await batcher.submit(query), mode
            except Overloaded as error:
                raise HTTPException(503, f"overloaded: {error}; retry later", headers={"Retry-After": "1"}) from None
        metrics.answer(used)
        answer = {  # RecommendResponse's fields, written directly: ~60 us less than building pydantic objects
            "items": [{"item": bundle.item_ids[i], "score": s}
                      for i, s in zip(ranked.items.tolist(), ranked.scores.tolist(), strict=True)],
            "mode": used, "fallback": used == "popularity", "history_used": len(history),
            "truncated": len(known) > len(history), "stored_events": len(stored), "unknown_items": unknown,
            "unknown_candidates": unknown_candidates}
        return Response(json.dumps(answer), media_type="application/json")

    @app.post("/events", response_model=EventsResponse,
              responses={400: {"description": "malformed JSON"}, 413: {"description": "body too large"},
                         422: {"description": "invalid field"}})
    async def events(request: EventsRequest) -> EventsResponse:
        """Append a user's interactions (oldest first); answered only after they are committed to disk."""
        stored = await store.append(request.user_id, request.items)
        unknown = list(dict.fromkeys(i for i in request.items if i not in bundle.item_index))
        return EventsResponse(user_id=request.user_id, stored=stored, unknown_items=unknown)

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        """Liveness and what is being served."""
        name = bundle.model_config.name + (" (dynamic)" if "cki" in bundle.modes else "")
        return Health(status="ok", model=name, modes=list(bundle.modes), default_mode=default_mode,
                      n_items=bundle.n_items, max_len=bundle.max_len, bundle_sha256=bundle.manifest_sha256)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        """Counters and histograms in the Prometheus text format."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ObserveRequests, metrics=metrics)
    return app


def serve(bundle_path: str | Path, host: str = "127.0.0.1", port: int = 8000, threads: int = 1,
          settings: ServeSettings | None = None) -> None:
    """Verify and load the bundle, bind host:port (0 picks a free port), print the address, serve until stopped."""
    bundle = load_bundle(bundle_path)
    if threads > 0:
        torch.set_num_threads(threads)
    app = create_app(bundle, settings or ServeSettings())
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so; with proto 0, Nagle's algorithm
    # and delayed ACKs held every response back by tens of milliseconds (1,050 -> 340 requests/s here).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    bound = sock.getsockname()[1]
    print(f"dynrec: serving {bundle_path} on http://{host}:{bound} (docs at /docs)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, backlog=2048))
    server.run(sockets=[sock])
