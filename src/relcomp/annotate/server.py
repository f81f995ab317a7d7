"""The judging page's HTTP server: Starlette routes served by uvicorn, behind one guard.

What every request meets (each held by a test in ``tests/test_annotate_server.py``):

- **Host** must name the address the server is bound to (DNS rebinding: a page of another site
  that resolves its own name to 127.0.0.1 is refused). With ``--token`` every request must also
  carry the token (``?token=`` or ``X-Relcomp-Token``).
- **Writes** (POST) must come from the page itself: an ``Origin`` or ``Sec-Fetch-Site`` of another
  site is refused, and the body must be ``application/json`` (so neither a form nor a
  ``text/plain`` post from elsewhere reaches a handler).
- **Bodies** are capped at 64 KiB (by ``Content-Length``, which must be a plain number, and by
  the bytes that arrive), read whole within 10 s, parsed as JSON and checked against a schema;
  anything else is a 4xx with a one-line JSON error, never a traceback.
- **Slow clients**: a connection must send a request head within 10 s of opening (or of its last
  response); at most 800 connections are open at once (then a 503); the listen backlog is 512.
- Every response says ``X-Frame-Options: DENY``, a ``Content-Security-Policy`` of this origin
  only, ``nosniff`` and ``no-store``. Only the page's files, its JSON API and the folder's
  images are served.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import socket
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ConfigError
from .log import MAX_TEXT
from .session import Session, status_of

LOCAL = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 65_536
BODY_S = 10.0        # a request body must arrive whole within this
HEAD_S = 10.0        # and a request head within this of the connection opening or its last response
MAX_STREAMS = 16     # live-panel (server-sent events) connections at once
PAGE_OUTCOMES = (">", "<", "=")
HEADERS = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"),
           (b"referrer-policy", b"no-referrer"),
           (b"content-security-policy", b"default-src 'self'; img-src 'self'; frame-ancestors 'none'; "
                                        b"form-action 'none'; base-uri 'none'")]
FILES = {"/": ("annotate.html", "text/html; charset=utf-8"), "/sorted": ("sorted.html", "text/html; charset=utf-8"),
         "/app.js": ("annotate.js", "text/javascript; charset=utf-8"), "/sorted.js": ("sorted.js", "text/javascript; charset=utf-8"),
         "/app.css": ("annotate.css", "text/css")}


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def host_name(header: str) -> str:
    """The name in a Host header: ``[::1]:8765`` -> ``::1``, ``localhost:80`` -> ``localhost``."""
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """The checks every request passes before a route sees it (an ASGI middleware)."""

    def __init__(self, app, hosts: set[str] | None, token: str | None):
        self.app, self.hosts, self.token = app, hosts, token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            self.check(scope)
        except Refused as e:
            return await JSONResponse({"error": str(e)}, e.status, headers=dict(self.decoded()))(scope, receive, send)

        async def secured(message):
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + HEADERS
            await send(message)
        await self.app(scope, receive, secured)

    @staticmethod
    def decoded() -> list[tuple[str, str]]:
        return [(k.decode(), v.decode()) for k, v in HEADERS]

    def check(self, scope) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = host_name(headers.get("host", "")).lower()
        if self.hosts is not None and host not in self.hosts:
            raise Refused(421, f"this server answers to {', '.join(sorted(self.hosts))}, not to the host {host[:60]!r}")
        if self.token is not None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = headers.get("x-relcomp-token") or (query.get("token") or [""])[0]
            if not secrets_equal(given, self.token):
                raise Refused(403, "a token is required")
        if scope["method"] not in ("GET", "HEAD"):
            self.check_write(headers)

    def check_write(self, headers: dict[str, str]) -> None:
        origin, site = headers.get("origin"), headers.get("sec-fetch-site")
        own = {f"{scheme}://{headers.get('host', '')}" for scheme in ("http", "https")}
        if (origin is not None and origin not in own) or site in ("cross-site", "same-site"):
            raise Refused(403, "writes are taken only from this server's own page")
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise Refused(415, "the body must be application/json")
        length = headers.get("content-length")
        if length is not None and not length.isdigit():
            raise Refused(400, "Content-Length must be a number of bytes")
        if length is not None and int(length) > MAX_BODY:
            raise Refused(413, f"the body is larger than {MAX_BODY:,} bytes")


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


async def read_json(request: Request) -> Any:
    """The body, whole and parsed, or :class:`Refused`."""
    body = bytearray()
    try:
        with anyio.fail_after(BODY_S):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    raise Refused(413, f"the body is larger than {MAX_BODY:,} bytes")
    except TimeoutError:
        raise Refused(408, f"the body did not arrive within {BODY_S:.0f} s") from None
    except ClientDisconnect:
        raise Refused(400, "the body ended before its Content-Length") from None
    try:
        return json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise Refused(400, "the body is not JSON") from None


def field(body: Any, name: str, kind: type, required: bool = True) -> Any:
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise Refused(400, f"{name} must be a {kind.__name__}")
    return value


def judgement(body: Any, session: Session) -> tuple[str, str, str, str]:
    """(a, b, outcome, annotator) of a judge request, checked."""
    a, b, outcome = field(body, "a", str), field(body, "b", str), field(body, "outcome", str)
    annotator = field(body, "annotator", str, required=False) or session.annotator
    if a not in session.index or b not in session.index or a == b:
        raise Refused(400, "a and b must name two images of the folder")
    if outcome not in PAGE_OUTCOMES:
        raise Refused(400, "outcome must be one of > < =")
    if len(annotator) > MAX_TEXT:
        raise Refused(400, f"annotator: at most {MAX_TEXT} characters")
    return a, b, outcome, annotator


def make_app(session: Session, hosts: set[str] | None, token: str | None = None) -> Guard:
    """The page's app behind its guard; ``hosts`` are the names a Host header may give (None: any,
    for a wildcard address behind a token)."""

    async def next_pair(request: Request) -> Response:
        pair = await run_in_threadpool(session.next_pair)
        return JSONResponse({"pair": list(pair) if pair else None, "done": pair is None, "progress": session.progress(),
                             "question": session.question, "annotator": session.annotator,
                             "version": session.model.version if session.model else 0})

    async def judge(request: Request) -> Response:
        a, b, outcome, annotator = judgement(await read_json(request), session)
        line = await run_in_threadpool(session.judge, a, b, outcome, annotator)
        if line is None:
            return JSONResponse({"error": "this pair was judged already", "progress": session.progress()}, 409)
        print(f"{annotator or 'someone'}: {a} {outcome} {b}", flush=True)
        return JSONResponse({"line": line, "progress": session.progress()})

    async def undo(request: Request) -> Response:
        line = field(await read_json(request), "line", str)
        ok = await run_in_threadpool(session.undo, line)
        return JSONResponse({"undone": ok, "progress": session.progress()})

    async def skip(request: Request) -> Response:
        body = await read_json(request)
        await run_in_threadpool(session.release, field(body, "a", str), field(body, "b", str))
        return JSONResponse({"skipped": True})

    async def status(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(status_of, session))

    async def order(request: Request) -> Response:
        m = session.model
        return JSONResponse(m.order() if m else {"version": 0, "items": [], "classes": None, "total": 0})

    routes = [Route("/api/next", next_pair), Route("/api/status", status), Route("/api/order", order),
              Route("/api/judge", judge, methods=["POST"]), Route("/api/undo", undo, methods=["POST"]),
              Route("/api/skip", skip, methods=["POST"])]
    app = Starlette(routes=routes + file_routes(session), exception_handlers={Refused: refused})
    return Guard(app, hosts, token)


async def refused(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, getattr(exc, "status", 400))


def file_routes(session: Session) -> list[Route]:
    """The page's own files, the folder's images and the live panels' event stream."""

    async def page(request: Request) -> Response:
        name, kind = FILES[request.url.path]
        return Response(resources.files("relcomp").joinpath("web", name).read_bytes(), media_type=kind)

    async def image(request: Request) -> Response:
        path = session.image_path(request.path_params["name"])
        if path is None:
            return JSONResponse({"error": "no such image"}, 404)
        return FileResponse(path)

    streams = anyio.Semaphore(MAX_STREAMS)

    async def events(request: Request) -> Response:
        if streams.value == 0:
            return JSONResponse({"error": "too many live panels open"}, 503)
        return StreamingResponse(status_stream(request, session, streams), media_type="text/event-stream")

    return [Route(path, page) for path in FILES] + [Route("/img/{name:path}", image), Route("/api/events", events)]


async def status_stream(request: Request, session: Session, streams: anyio.Semaphore):
    """Server-sent events: the status whenever it changes, a comment every 15 s to keep the line."""
    async with streams:
        seen, quiet = -1, 0.0
        while not await request.is_disconnected():
            if session.changes != seen:
                seen = session.changes
                yield f"data: {json.dumps(await run_in_threadpool(status_of, session))}\n\n"
                quiet = 0.0
            elif quiet >= 15:
                yield ": still here\n\n"
                quiet = 0.0
            await asyncio.sleep(0.25)
            quiet += 0.25


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1, and a connection must send a whole request head within HEAD_S of
    opening or of its last response: uvicorn itself times out only an idle kept-alive connection,
    not one that never sends a byte or sends its head a byte at a time."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.head_deadline = None
        self.arm()

    def arm(self) -> None:
        self.disarm()
        self.head_deadline = self.loop.call_later(HEAD_S, self.too_slow)

    def disarm(self) -> None:
        if getattr(self, "head_deadline", None) is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def too_slow(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's head arrived
            self.disarm()

    def on_response_complete(self) -> None:
        self.arm()  # before: the next pipelined request, if any, disarms it
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        self.disarm()
        super().connection_lost(exc)


class Server:
    """The bound socket and the uvicorn server of a session (``serve()`` blocks)."""

    def __init__(self, session: Session, host: str = "127.0.0.1", port: int = 8765, token: str | None = None):
        if not 0 <= port <= 65535:
            raise ConfigError(f"--port must be 0 to 65535, got {port}")
        if host not in LOCAL and not token:
            raise ConfigError(f"--host {host} makes the page reachable from other machines: give --token SECRET "
                              "(every request must then carry it)")
        self.socket = bind(host, port)
        self.host, self.port = host, self.socket.getsockname()[1]
        wildcard = host in ("0.0.0.0", "::", "")
        hosts = None if wildcard else ({host.lower()} | (set(LOCAL) if host in LOCAL else set()))
        self.token = token
        self.app = make_app(session, hosts, token)
        config = uvicorn.Config(self.app, http=GuardedH11, loop="asyncio", lifespan="off", log_level="warning",
                                access_log=False, server_header=False, timeout_keep_alive=5, limit_concurrency=800,
                                backlog=512, timeout_graceful_shutdown=2)
        self.uvicorn = uvicorn.Server(config)

    def url(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{name}:{self.port}/" + (f"?token={quote(self.token, safe='')}" if self.token else "")

    def serve(self) -> None:
        self.uvicorn.run(sockets=[self.socket])

    def stop(self) -> None:
        self.uvicorn.should_exit = True


def bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"--host {host}: not an address of this machine ({e})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(512)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host") from None
    sock.set_inheritable(False)
    return sock
