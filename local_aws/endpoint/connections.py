"""What aiohttp's server leaves to us: a deadline for request heads, and a clean stop.

Slow heads: aiohttp times request bodies out (the app's body timeout) but waits for a
request line and headers forever, so a client sending a byte a second holds a connection
and its memory for good. `_Handler` gives each request head `header_timeout_seconds` from
its first byte (a new connection's from its opening), then answers 408 and closes.
Idle keep-alive connections are closed after KEEPALIVE_SECONDS.

A clean stop: aiohttp's own shutdown stops reading every connection at once, so a request
whose headers had arrived but whose body was still on its way waited for bytes it would
never read and got 408 after the body timeout (the stop then took 30 s). `drain` instead
keeps reading what it has started: it closes idle connections (no request read: the client
sees the connection closed before its request was read), lets each request in progress
finish and answers it with `Connection: close`, and answers a request that arrives on an
open connection meanwhile with 503 and Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from local_aws.endpoint.app import container_error, runtime_error
from local_aws.endpoint.metrics import WorkerMetrics

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 60.0
DRAIN_POLL_SECONDS = 0.02
_TIMEOUT_BODY = json.dumps(
    {"error": "RequestTimeout", "message": "the request's headers were not sent in time"}
).encode()
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nContent-Length: " + str(len(_TIMEOUT_BODY)).encode()
    + b"\r\n\r\n" + _TIMEOUT_BODY
)  # fmt: skip


class _Handler(RequestHandler):
    __slots__ = ("_connections", "_head_started", "_head_timer")

    def __init__(self, connections: Connections, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections = connections
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = 0.0

    def reading_a_request(self) -> bool:
        return self._request_in_progress or bool(self._messages)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        self._connections.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and not self.reading_a_request():
            self._start_head_timer()  # the first byte of a request head
        super().data_received(data)
        if self.reading_a_request():
            self._cancel_head_timer()

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_started = self._loop.time()
            self._head_timer = self._loop.call_later(
                self._connections.header_timeout_seconds, self._head_timed_out
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # Bytes that arrived while a request was starting were its body, not a new head.
        if self.reading_a_request() or self.transport is None:
            return
        self.transport.write(_TIMEOUT_RESPONSE)
        self._connections.metrics.observe_request(408, self._loop.time() - self._head_started)
        self.force_close()


class Connections:
    """The worker's connections: builds their protocol and stops them cleanly."""

    def __init__(
        self, app: web.Application, metrics: WorkerMetrics, header_timeout_seconds: float
    ) -> None:
        self.metrics = metrics
        self.header_timeout_seconds = header_timeout_seconds
        self.draining = False
        self._handlers: set[_Handler] = set()
        app.middlewares.append(self._refuse_while_draining)
        app.on_response_prepare.append(self._close_after_response_while_draining)

    def protocol_factory(
        self, server: web.Server, loop: asyncio.AbstractEventLoop
    ) -> Callable[[], _Handler]:
        def protocol() -> _Handler:
            handler = _Handler(
                self, server, loop=loop, access_log=None, keepalive_timeout=KEEPALIVE_SECONDS
            )
            self._handlers.add(handler)
            return handler

        return protocol

    def forget(self, handler: _Handler) -> None:
        self._handlers.discard(handler)

    async def drain(self, grace_seconds: float) -> None:
        """Finish the requests being read or answered, close the rest, within the grace."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        await asyncio.sleep(0)  # reads the loop already holds arrive first
        while True:
            open_handlers = {h for h in self._handlers if h.transport is not None}
            self._handlers = open_handlers
            for handler in open_handlers:
                if not handler.reading_a_request():
                    handler.force_close()
            if not any(handler.transport is not None for handler in open_handlers):
                return
            if loop.time() >= deadline:
                log.warning(
                    "%d request(s) still in progress after %.0fs; closing them",
                    sum(handler.transport is not None for handler in open_handlers),
                    grace_seconds,
                )
                return
            await asyncio.sleep(DRAIN_POLL_SECONDS)

    @web.middleware
    async def _refuse_while_draining(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if not self.draining:
            return await handler(request)
        message = "the endpoint is stopping; retry after a second"
        self.metrics.observe_request(503, 0.0)
        if request.path.startswith("/endpoints/"):
            return runtime_error(503, "ServiceUnavailable", {"message": message})
        return container_error(503, message)

    async def _close_after_response_while_draining(
        self, _request: web.Request, response: web.StreamResponse
    ) -> None:
        if self.draining:
            response.force_close()  # close after this response...
            response.headers["Connection"] = "close"  # ...and say so (headers are ready by now)
