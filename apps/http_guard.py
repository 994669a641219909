"""HTTP guards of `rewardflow serve-reward` against slow or abusive clients.

uvicorn 0.54 gives none of its HTTP protocols a deadline for a request's headers or body, and its
default (httptools) one no header limit, so the reward server runs `GuardedH11Protocol` and
`RequestGuard`. A request's line and headers must arrive within the read timeout (else 408 and
the connection is closed) and stay under the header cap (else 431); its body must arrive within
the read timeout of its headers (else 408). A client that leaves before its answer is one log
line; an unexpected error answers 503 with a short detail, never a 500 or a traceback.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from http import HTTPStatus
from typing import Any

import h11
from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

# uvicorn's server logger: its handler writes to the server's stderr.
log = logging.getLogger("uvicorn.error")

def _client(peer) -> str:
    return f"{peer[0]}:{peer[1]}" if peer else "unknown"


def _json_response(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, for answers outside any request cycle."""
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a read deadline. uvicorn 0.54 arms no timer while a request's
    line and headers arrive (its keep-alive timer runs only between requests, and any byte cancels
    it), so one connection trickling a header byte a second is held forever. Here the request line
    and headers must be complete within `read_timeout_s` of the connection opening or the request
    starting, else 408 and close; so must the rest of a body the app answered without reading.
    Headers over `max_header_bytes` (h11's incomplete-event limit, which uvicorn answers with 400)
    get 431. The body's own deadline is RequestGuard's: the app answers that one.
    `protocol_for(read_timeout_s, max_header_bytes)` makes the subclass with a server's limits."""

    read_timeout_s = 10.0
    max_header_bytes = 16 << 10

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _reading_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])

    def _watch(self) -> None:
        """Arm the deadline while the client owes us something only it can finish: the first
        request, a started request's headers, or the body of an answered request."""
        conn = self.conn
        fresh = conn.their_state is h11.IDLE and self.cycle is None
        draining = conn.our_state is h11.DONE and conn.their_state is h11.SEND_BODY
        if self.transport.is_closing() or not (fresh or draining or self._reading_headers()):
            self._disarm()
        elif self.read_deadline is None:
            self.read_deadline = self.loop.call_later(self.read_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _timed_out(self) -> None:
        self.read_deadline = None
        if self.transport.is_closing():
            return
        if self._reading_headers():
            log.info("serve-reward: client %s sent no complete request headers within request_read_timeout_s=%g; "
                     "answered 408", _client(self.client), self.read_timeout_s)
            self.transport.write(_json_response(
                408, f"request headers not received within request_read_timeout_s={self.read_timeout_s:g}"))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > self.max_header_bytes:
            self.transport.write(_json_response(
                431, f"request line and headers exceed max_header_bytes={self.max_header_bytes}"))
            self.transport.close()
        else:
            super().send_400_response(msg)


def protocol_for(read_timeout_s: float, max_header_bytes: int) -> type[GuardedH11Protocol]:
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"read_timeout_s": read_timeout_s, "max_header_bytes": max_header_bytes})


class RequestReadTimeout(Exception):
    """The request body did not arrive in time (raised from `receive`, answered 408 by RequestGuard)."""


class _Exchange:
    """One request's `receive` and `send` as RequestGuard sees them."""

    def __init__(self, scope, receive, send, timeout_s: float):
        self.scope, self._receive, self._send = scope, receive, send
        self.deadline = time.monotonic() + timeout_s
        self.body_done = self.started = self.answered = self.gone = False
        self.watcher: asyncio.Task | None = None

    async def receive(self) -> dict:
        if self.body_done:
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), max(0.0, self.deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise RequestReadTimeout() from None
        if message["type"] == "http.disconnect":
            self.left()
        elif not message.get("more_body", False):
            # The app computes the answer without reading again: watch for the client leaving.
            self.body_done = True
            self.watcher = asyncio.create_task(self._watch())
        return message

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.left()

    def left(self) -> None:
        if not (self.gone or self.answered):
            self.gone = True
            log.info("serve-reward: client %s disconnected before the answer (%s %s)",
                     _client(self.scope.get("client")), self.scope["method"], self.scope["path"])

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.answered = True
        await self._send(message)

    async def answer(self, status: int, detail: str) -> None:
        if self.started or self.gone:
            return
        body = json.dumps({"detail": detail}).encode()
        await self.send({"type": "http.response.start", "status": status,
                         "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                     (b"content-length", str(len(body)).encode())]})
        await self.send({"type": "http.response.body", "body": body})

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()


def _header_bytes(scope) -> int:
    """The size of a request's line and headers as sent (to within the spelling of the version)."""
    line = len(scope["method"]) + len(scope.get("raw_path") or scope["path"]) + len(scope["query_string"]) + 12
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"]) + 2


class RequestGuard:
    """ASGI middleware: headers that arrived whole but exceed `max_header_bytes` get 431 (h11 limits
    only headers still arriving), the request body must arrive within `read_timeout_s` of the
    headers (else 408 and close), a client that leaves before its answer is one log line, and an
    exception that reaches it is a 503 with the exception's type and one log line: never a 500
    with a traceback."""

    def __init__(self, app, read_timeout_s: float, max_header_bytes: int):
        self.app, self.read_timeout_s, self.max_header_bytes = app, read_timeout_s, max_header_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        exchange = _Exchange(scope, receive, send, self.read_timeout_s)
        if _header_bytes(scope) > self.max_header_bytes:
            return await exchange.answer(431, f"request line and headers exceed max_header_bytes={self.max_header_bytes}")
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except ClientDisconnect:
            exchange.left()
        except RequestReadTimeout:
            log.info("serve-reward: client %s sent no complete body within request_read_timeout_s=%g; answered 408",
                     _client(scope.get("client")), self.read_timeout_s)
            await exchange.answer(408, f"request body not received within request_read_timeout_s={self.read_timeout_s:g}")
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            log.warning("serve-reward: %s %s failed: %s: %s; answered 503", scope["method"], scope["path"],
                        type(e).__name__, first)
            log.debug("serve-reward: the failure's traceback", exc_info=True)
            await exchange.answer(503, f"reward server error ({type(e).__name__}); see the server log")
        finally:
            exchange.close()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {declared} bytes exceeds max_body_bytes={limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request body exceeds max_body_bytes={limit}")
    return bytes(body)


async def parse_body(request: Request, model: type[BaseModel], limit: int) -> Any:
    raw = await read_body(request, limit)
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            raise HTTPException(400, f"malformed JSON: {first['msg']}") from None
        loc = ".".join(str(p) for p in first["loc"]) or "body"
        more = f" (and {e.error_count() - 1} more errors)" if e.error_count() > 1 else ""
        raise HTTPException(422, f"{loc}: {first['msg']}{more}") from None


