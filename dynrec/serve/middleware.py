"""ASGI middleware: a bound on request body size (413) and request metrics.

Both are plain ASGI callables rather than Starlette's BaseHTTPMiddleware, which adds a task and a queue
to every request.
"""

from __future__ import annotations

import json
import time

from dynrec.serve.metrics import Metrics


async def send_json(send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Answers 413 to a request whose body exceeds max_bytes: at once when Content-Length says so, else as
    soon as the streamed body passes the limit (the app then sees a disconnect; its answer is dropped)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> dict:
        return {"detail": f"request body larger than the server's limit of {self.max_bytes} bytes"}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_json(send, 413, self._too_large(), [(b"connection", b"close")])
            return
        received, answered, started = 0, False, False

        async def limited_receive():
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not started:
                    answered = True
                    await send_json(send, 413, self._too_large(), [(b"connection", b"close")])
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if not answered:
                started = True
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


class ObserveRequests:
    """Counts every HTTP request by endpoint and status and records its latency."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tic, status = time.perf_counter(), 500

        async def observed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.request(scope["path"], status, time.perf_counter() - tic)
