"""HTTP hygiene for the worker's web server: what a hostile or broken client may not do to it.

The worker's API runs on faust's aiohttp server. aiohttp alone answers a malformed
request with a 400 whose body quotes the parser's message (which may hold the
offending header, a bearer token included), logs a traceback for each, and waits
for a half-sent request as long as the client likes. This module closes those
doors, for every route of the worker (``/v1``, ``/metrics``, ``/status``):

- **Generic refusals.** A request the HTTP parser refuses (a header line over
  8 KiB, a NUL in a header, a bad request line...) is answered ``400`` with a fixed
  body and the connection closed; the parser's message is never echoed nor logged.
- **One log line per refusal, rate-limited** (:class:`RefusalLog`): at most
  ``burst`` lines per ``window_s`` (default 10 per 10 s), then one line saying how
  many were not logged. No traceback for a malformed request.
- **Read timeouts.** A connection must deliver a request's headers within
  ``FLOWBREAKER_HTTP_HEADER_TIMEOUT_S`` (default 5 s) of connecting (on a kept-alive
  connection, of the request's first byte), else it is closed; the API reads a body within
  ``FLOWBREAKER_HTTP_BODY_TIMEOUT_S`` (default 10 s, :meth:`ControlPlane._read_body`),
  else ``408`` and the connection is closed. A slow-loris client holds a socket
  for seconds, not minutes.
- **Per-token rate limits** (:class:`TokenBuckets`, used by the API for every
  authenticated call): ``FLOWBREAKER_API_RATE_PER_S`` (default 2000: a runtime host
  checks every outbound action of its agents) calls a second per principal and
  worker, with bursts of ``FLOWBREAKER_API_BURST`` (default 4000); calls that write
  (freeze, release, feedback, approve, deny, fallbacks, and a check that opens an
  approval request) also take from ``FLOWBREAKER_API_WRITE_RATE_PER_S`` (default 10)
  with bursts of ``FLOWBREAKER_API_WRITE_BURST`` (default 50). Beyond either:
  ``429`` with ``Retry-After``.

>>> log = RefusalLog(burst=2, window_s=10.0, clock=iter([0.0, 1.0, 2.0, 3.0, 11.0]).__next__)
>>> [log.allow() for _ in range(4)], log.allow(), log.suppressed
([True, True, False, False], True, 0)
>>> b = TokenBuckets(rate_per_s=1.0, burst=2, clock=iter([0.0, 0.0, 0.0, 0.5, 1.0]).__next__)
>>> [b.take("alice") for _ in range(3)], b.take("alice"), b.take("alice")
([0.0, 0.0, 1.0], 0.5, 0.0)
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from typing import Any, Callable, Mapping

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_runner import AppRunner
from aiohttp.web_server import Server

__all__ = ["RefusalLog", "TokenBuckets", "GuardedRunner", "install", "HttpLimits", "MAX_AUTHORIZATION"]

log = logging.getLogger("flowbreaker.http")

#: the longest ``Authorization`` header the API reads (a bearer token is at most 512 characters)
MAX_AUTHORIZATION = 1024


def _env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(environ.get(name, default))
    except (TypeError, ValueError):
        return default
    return value if value > 0 else default


class HttpLimits:
    """The server's limits, from the environment (defaults in the module docstring)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.header_timeout_s = _env_float(env, "FLOWBREAKER_HTTP_HEADER_TIMEOUT_S", 5.0)
        self.body_timeout_s = _env_float(env, "FLOWBREAKER_HTTP_BODY_TIMEOUT_S", 10.0)
        self.rate_per_s = _env_float(env, "FLOWBREAKER_API_RATE_PER_S", 2000.0)
        self.burst = _env_float(env, "FLOWBREAKER_API_BURST", 4000.0)
        self.write_rate_per_s = _env_float(env, "FLOWBREAKER_API_WRITE_RATE_PER_S", 10.0)
        self.write_burst = _env_float(env, "FLOWBREAKER_API_WRITE_BURST", 50.0)
        self.max_open_approvals = int(_env_float(env, "FLOWBREAKER_MAX_OPEN_APPROVALS_PER_AGENT", 20))


class RefusalLog:
    """At most ``burst`` log lines per ``window_s``; :meth:`allow` says whether to write this one, and the
    first line of a new window says how many the last one left out (``suppressed``)."""

    def __init__(self, *, burst: int = 10, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.window_s, self.clock = burst, window_s, clock
        self._start = None
        self._count = 0
        self.suppressed = 0
        self.total = 0

    def allow(self) -> bool:
        now = self.clock()
        self.total += 1
        if self._start is None or now - self._start >= self.window_s:
            if self.suppressed:
                log.warning("%d more refused connections were not logged in the last %.0f s", self.suppressed,
                            self.window_s)
            self._start, self._count, self.suppressed = now, 0, 0
        if self._count < self.burst:
            self._count += 1
            return True
        self.suppressed += 1
        return False

    def line(self, msg: str, *args: Any) -> None:
        if self.allow():
            log.warning(msg, *args)


#: one per process: every connection's refusals share the budget
REFUSALS = RefusalLog()


class TokenBuckets:
    """A token bucket per key (a principal): :meth:`take` returns 0.0 when a call may go ahead, else the
    seconds until it may (for ``Retry-After``). Bounded: the least recently used keys go first."""

    def __init__(self, *, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.rate, self.burst, self.clock, self.max_keys = rate_per_s, burst, clock, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str) -> float:
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


class _GuardedHandler(RequestHandler):
    """aiohttp's connection handler with a header deadline and generic, rate-limited refusals."""

    header_timeout_s = 5.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._fb_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._fb_arm()

    def _fb_arm(self) -> None:
        if self._fb_deadline is None:
            self._fb_deadline = self._loop.call_later(self.header_timeout_s, self._fb_too_slow)

    def _fb_disarm(self) -> None:
        if self._fb_deadline is not None:
            self._fb_deadline.cancel()
            self._fb_deadline = None

    def _fb_too_slow(self) -> None:
        self._fb_deadline = None
        if self.transport is None or self._force_close:
            return
        if self._request_in_progress:  # a handler is reading the body: the body timeout is its business
            return
        peer = self.transport.get_extra_info("peername")
        REFUSALS.line("closed a connection from %s: no complete request headers within %.0f s",
                      peer[0] if peer else "?", self.header_timeout_s)
        self.force_close()

    def data_received(self, data: bytes) -> None:
        idle = not self._request_in_progress and not self._messages
        if idle:
            self._fb_arm()  # the first bytes of a new request on a kept-alive connection start its clock
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            self._fb_disarm()  # a whole request head arrived

    def connection_lost(self, exc: BaseException | None) -> None:
        self._fb_disarm()
        super().connection_lost(exc)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status == 500 and exc is not None and not _is_protocol_error(exc):
            return super().handle_error(request, status, exc, message)  # a bug: logged with its traceback
        REFUSALS.line("refused a malformed request from %s: %d %s", request.remote or "?", status,
                      type(exc).__name__ if exc is not None else "bad request")
        resp = web.json_response({"error": {"status": status, "code": "bad_request",
                                            "message": "malformed HTTP request"}}, status=status)
        resp.force_close()
        return resp


def _is_protocol_error(exc: BaseException) -> bool:
    from aiohttp.http_exceptions import HttpProcessingError

    return isinstance(exc, HttpProcessingError)


class _GuardedServer(Server):
    header_timeout_s = 5.0

    def __call__(self) -> RequestHandler:
        handler = _GuardedHandler(self, loop=self._loop, **self._kwargs)
        handler.header_timeout_s = self.header_timeout_s
        return handler


class GuardedRunner(AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections are :class:`_GuardedHandler` s."""

    def __init__(self, app: web.Application, *, header_timeout_s: float = 5.0, **kwargs: Any) -> None:
        kwargs.setdefault("access_log", None)
        # a body the handler did not read is drained for at most this long before the connection closes
        kwargs.setdefault("lingering_time", 1.0)
        # an idle kept-alive connection is closed after this long (aiohttp: 75 s); clients reconnect
        kwargs.setdefault("keepalive_timeout", 15.0)
        super().__init__(app, **kwargs)
        self.header_timeout_s = header_timeout_s

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer
        server.header_timeout_s = self.header_timeout_s  # type: ignore[attr-defined]
        return server


def install(web_driver: Any, limits: HttpLimits) -> None:
    """Put a :class:`GuardedRunner` under faust's aiohttp web driver (before the worker starts serving)."""
    runner = getattr(web_driver, "_runner", None)
    if not isinstance(runner, AppRunner):
        log.warning("web driver %r has no aiohttp runner: HTTP read timeouts not installed", type(web_driver))
        return
    web_driver._runner = GuardedRunner(web_driver.web_app, header_timeout_s=limits.header_timeout_s)
