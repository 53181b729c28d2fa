"""The control-plane HTTP API (``/v1``), served by every worker on faust's aiohttp web server.

:func:`mount_api` adds the routes to a worker's faust app (``create_app`` calls
it). The document of record is ``/v1/openapi.json`` (:mod:`streams.api.openapi`);
``docs/api.md`` explains the routes, roles, routing and audit trail.

How a request is handled
------------------------
1. *Authenticate* the bearer token (:mod:`streams.api.auth`): none or unknown -> 401.
2. *Authorise*: the role must have the route's permission -> else 403.
3. *Validate* path parameters, body size (-> 413), JSON (-> 400 saying where it
   broke) and fields (-> 400 naming the field and the bound; values are never
   echoed, so a secret pasted into a field does not come back).
4. *Route*: a request about an agent is answered by the worker that owns the
   agent's partition of ``agent-actions`` (murmur2 of the ``agent_id`` key, as
   Kafka's default partitioner, modulo the partition count). Which worker owns
   which partition is the consumer group's own assignment: faust puts each
   member's web URL (``canonical_url``, ``--advertised-url``) into its group
   metadata and hands the map to every member, so no directory topic is needed.
   A worker that does not own the partition forwards the request once (header
   ``X-Flowbreaker-Forwarded``) and relays the answer; a forwarded request that
   lands on a non-owner (a rebalance in between) gets 503 with ``Retry-After``.
   Breakers, incidents and approvals are folded on every worker
   (:mod:`streams.api.control_feed`), so those reads are answered locally.
5. *Act and audit*: every call of a state-changing route is appended to
   ``agent-audit`` (:mod:`streams.api.audit_trail`) with its result, refused calls
   included (401 and 403 summarised per client address and minute, so a flood
   of bad calls cannot flood the trail). A manual freeze takes the automatic
   freeze's path (breaker open and outbox in the agent's table state, then
   published, signed); a release too.

Tokens are re-read when the tokens file changes and on ``SIGHUP``
(:class:`streams.api.auth.ReloadingRegistry`). With ``--metrics-auth``,
``/metrics`` and ``/status`` need a token too (role ``monitor``, ``viewer``,
``analyst`` or ``lead``).

Any unexpected error is a 500 whose body says only that it was logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from math import expm1
from typing import Any, Awaitable, Callable

import msgspec
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web
from aiokafka.partitioner import murmur2

from detector import approvals as approvals_core
from detector.approvals import REJECTIONS
from detector.baseline import Z95
from detector.events import EventError, decode_event
from detector.features import FEATURES
from detector.gate import DENY, NEEDS_APPROVAL, Gate
from detector.manifest import ManifestGate
from streams.api import console, openapi
from streams.api.approvals import ApprovalService, ApprovalStore, TooManyOpenRequests, view
from streams.api.audit_trail import Auditor, RefusalSummary, record
from streams.api.auth import PERMISSIONS, Principal, TokenRegistry, allowed, open_registry
from streams.api import http_guard
from streams.api.broker_probe import BrokerProbe
from streams.clients.commands import ControlMetrics
from streams.api.control_feed import ControlFeed

__all__ = ["mount_api", "ControlPlane", "ApiError", "FORWARD_HEADER"]

log = logging.getLogger("flowbreaker.api")

FORWARD_HEADER = "X-Flowbreaker-Forwarded"
#: approval ids flowbreaker issues: ``apr-`` and 128 random bits (streams/api/approvals.py). Only ids found in the
#: approvals record count; this shape only says which ids may be kept while that record is still being read
_OWN_APPROVAL_ID = re.compile(r"apr-[0-9a-f]{32}\Z")
FORWARD_TIMEOUT_S = 10.0
PUBLISH_WAIT_S = 10.0
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
_RESULT = {400: "invalid", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 408: "invalid",
           409: "conflict", 429: "rate_limited",
           413: "invalid", 503: "unavailable"}


class ApiError(Exception):
    """An answer other than success: status, a stable code, a message for humans (never a secret)."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: float | None = None,
                 result: str | None = None, extra: dict | None = None, audited: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after
        self.result = result or _RESULT.get(status, "error")
        self.extra = extra or {}
        self.audited = audited


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def _json(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=_encode(data), status=status, content_type="application/json", headers=headers)


def _error_response(err: ApiError) -> web.Response:
    headers = {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(round(err.retry_after))))
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="flowbreaker"'
    body = {"status": err.status, "code": err.code, "message": err.message, **err.extra}
    return _json({"error": body}, err.status, headers)


def _iso(t: float) -> str:
    from detector.timestamps import iso_utc

    return iso_utc(t)


# ---------------------------------------------------------------------- field validation
def _reason(body: dict, key: str = "reason", required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_field", f"{key}: required, a string of 1 to {openapi.MAX_REASON} characters")
    if not value.strip():
        raise ApiError(400, "invalid_field", f"{key}: must not be blank")
    if len(value) > openapi.MAX_REASON:
        raise ApiError(400, "invalid_field", f"{key}: at most {openapi.MAX_REASON} characters, got {len(value)}")
    return value


def _ident(value: Any, key: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= openapi.MAX_ID:
        raise ApiError(400, "invalid_field", f"{key}: a string of 1 to {openapi.MAX_ID} characters")
    return value


def _choice(value: Any, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
    if value is None and default is not None:
        return default
    if value not in choices:
        raise ApiError(400, "invalid_field", f"{key}: one of {', '.join(choices)}")
    return value


def _only(body: dict, keys: tuple[str, ...]) -> None:
    unknown = [k for k in body if k not in keys]
    if unknown:
        # the name is not echoed: a secret pasted as a key must not come back
        raise ApiError(400, "unknown_field", f"unknown field ({len(unknown)}); allowed: {', '.join(keys)}")


def _event_error(err: EventError) -> str:
    """The decoder's reason without the offending value (enum and timestamp reasons quote it)."""
    from detector.events import ACTIONS, SENSITIVITIES

    if err.code == "enum":
        allowed = ACTIONS if err.field == "action" else SENSITIVITIES
        return f"{err.field}: not one of {', '.join(allowed)}"
    if err.code == "timestamp":
        return f"{err.field}: not an RFC 3339 timestamp with a UTC offset"
    return str(err)


def _int_query(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{key}: an integer from {lo} to {hi}") from None
    if not lo <= value <= hi:
        raise ApiError(400, "invalid_query", f"{key}: an integer from {lo} to {hi}")
    return value


# ---------------------------------------------------------------------- metrics
class ApiMetrics:
    """The API's Prometheus metrics, in the worker's registry (labels bounded: route names, status codes,
    verdicts and rejection kinds are fixed sets)."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        reg = registry if registry is not None else CollectorRegistry()
        self.registry = reg
        self.requests = Counter("flowbreaker_api_requests_total", "API requests by route and status.",
                                ("route", "status"), registry=reg)
        self.forwarded = Counter("flowbreaker_api_forwarded_total",
                                 "API requests forwarded to the worker that owns the agent.", ("route",),
                                 registry=reg)
        self.check_seconds = Histogram("flowbreaker_check_seconds",
                                       "Pre-action check time on the owning worker.",
                                       buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
                                       registry=reg)
        self.verdicts = Counter("flowbreaker_check_verdicts_total", "Pre-action check verdicts.", ("verdict",),
                                registry=reg)
        self.rejections = Counter("flowbreaker_approval_rejections_total",
                                  "Approval ids that did not cover the action they came with.", ("reason",),
                                  registry=reg)
        self.fallbacks = Counter("flowbreaker_check_fallbacks_total",
                                 "Checks a runtime answered itself (no answer in time), as reported.",
                                 ("verdict", "cause"), registry=reg)
        self.audit = Counter("flowbreaker_audit_records_total", "Audit records written.", ("what", "result"),
                             registry=reg)
        self.audit_failures = Counter("flowbreaker_audit_failures_total", "Audit records the broker did not take.",
                                      registry=reg)
        self.stream_approvals = Counter("flowbreaker_stream_approvals_total",
                                        "Actions on the stream carrying an approval_id, by whether it covered them "
                                        "(ok, a rejection, or unverified while the approvals are still being read).",
                                        ("result",), registry=reg)
        self.loop_lag = Histogram("flowbreaker_event_loop_lag_seconds",
                                  "How late a 50 ms timer fires on the worker's event loop (what every API "
                                  "request waits behind).",
                                  buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=reg)
        for v in openapi.VERDICTS:
            self.verdicts.labels(v)
        for r in REJECTIONS:
            self.rejections.labels(r)
        for r in ("ok", "unverified", *REJECTIONS):
            self.stream_approvals.labels(r)
        self.refusals_summarised = Counter("flowbreaker_audit_refusals_summarised_total",
                                           "Refused calls (401/403) counted in a per-client summary record "
                                           "instead of a record each.", registry=reg)


# ---------------------------------------------------------------------- routes
@dataclass
class Ctx:
    request: web.Request
    route: "Route"
    principal: Principal | None = None
    params: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""
    body: Any = None
    target: dict[str, str | None] = field(default_factory=dict)
    reason: str | None = None


@dataclass
class Route:
    method: str
    path: str
    name: str
    permission: str | None
    handler: Callable[[Ctx], Awaitable[web.Response]]
    act: str | None = None                         # audit ``what`` (state-changing routes)
    body_limit: int = 0                            # 0: no body read
    parse: Callable[[Ctx], None] | None = None     # validates ctx.body, fills ctx.target
    owner: Callable[[Ctx], Awaitable[str | None]] | None = None  # agent whose owner answers


class ControlPlane:
    """The API of one worker: routes, the control feed, approvals, audit."""

    def __init__(self, app: Any, processor: Any, settings: Any, registry: TokenRegistry, *,
                 keys: Any, metrics_registry: Any = None) -> None:
        self.app = app
        self.processor = processor
        self.settings = settings
        self.registry = registry
        self.keys = keys
        topics = settings.topics()
        counts = processor.counts
        self.metrics = ApiMetrics(metrics_registry)
        self.control_metrics = ControlMetrics(self.metrics.registry)
        #: FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S: refused calls of one client are summarised per this window
        self.refusals = RefusalSummary(window_s=_env_float("FLOWBREAKER_AUDIT_REFUSAL_WINDOW_S", 60.0))
        self.metrics_auth = bool(getattr(settings, "metrics_auth", False))
        self.store = ApprovalStore()
        self.feed = ControlFeed(settings, {k: topics[k] for k in ("control", "incidents", "approvals")}, counts,
                                probation_s=processor.engine.policy.thresholds.probation_s,
                                on_approval=self._approval_from_topic, keys=keys, metrics=self.control_metrics)
        self.approvals = ApprovalService(app, self.store, topics["approvals"], counts[topics["approvals"]],
                                         keys=keys)
        self.auditor = Auditor(app, topics["audit"], counts[topics["audit"]])
        self.feedback_topic = topics["feedback"]
        self.feedback_partitions = counts[topics["feedback"]]
        self.actions_topic = topics["actions"]
        # the learned check with the agents' intended-use manifests over it (the engine's book, read per check)
        self.gate = ManifestGate(Gate(processor.engine))
        self._session: ClientSession | None = None
        self._background: set[asyncio.Future] = set()
        from streams.api.verdicts import VerdictApi

        self.verdicts = VerdictApi(self)  # alert episodes and analysts' verdicts (issue 18)
        self.routes = self._routes()
        #: read timeouts, per-token rate limits, open approval requests per agent (streams/api/http_guard.py)
        self.limits = http_guard.HttpLimits()
        self.buckets = http_guard.TokenBuckets(rate_per_s=self.limits.rate_per_s, burst=self.limits.burst)
        #: /v1/check does not answer from memory while the broker is gone (streams/api/broker_probe.py)
        self.broker = BrokerProbe(settings, topics["control"])
        #: calls that write (state-changing routes, checks that open an approval request): a smaller budget
        self.write_buckets = http_guard.TokenBuckets(rate_per_s=self.limits.write_rate_per_s,
                                                     burst=self.limits.write_burst)

    # ------------------------------------------------------------------ wiring
    @property
    def url(self) -> str:
        return str(self.app.conf.canonical_url).rstrip("/")

    def mount(self) -> None:
        web_app = self.app.web.web_app
        http_guard.install(self.app.web, self.limits)
        for route in self.routes:
            web_app.router.add_route(route.method, route.path, self._endpoint(route))
        web_app.on_cleanup.append(self._close)
        console.mount(web_app)  # GET /console/: the SOC's page, static files that talk to these routes
        self.auditor.worker = self.url

        feed = self.feed
        self.verdicts.mount()
        # approval ids on the stream are checked inside the engine (the same rule replay --approvals uses)
        self.processor.engine.approvals = self

        @self.app.task
        async def control_feed() -> None:
            await feed.run()

        @self.app.task
        async def broker_probe() -> None:
            await self.broker.run()

        @self.app.task
        async def loop_lag() -> None:
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.05)
                self.metrics.loop_lag.observe(max(0.0, time.perf_counter() - t - 0.05))

        @self.app.task
        async def control_plane_ticks() -> None:
            # SIGHUP re-reads the tokens file (mode's worker leaves SIGHUP alone: by default it would kill us)
            if hasattr(self.registry, "reload"):
                try:
                    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.registry.reload)
                except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
                    pass
            while True:
                await asyncio.sleep(1.0)
                stats = self.processor.stats  # the control index's health, on /status
                stats["control_feed_restarts"] = self.feed.restarts
                stats["control_feed_skipped"] = self.feed.invalid
                stats["control_feed_caught_up"] = self.feed.caught_up.is_set()
                if hasattr(self.registry, "maybe_reload"):
                    self.registry.maybe_reload()  # also without requests: a revocation is logged promptly
                await self._write_refusal_summaries()

    async def _write_refusal_summaries(self, force: bool = False) -> None:
        for rec in self.refusals.due(int(time.time() * 1000), force=force):
            rec["worker"] = self.url
            try:
                await self._audit(rec)
            except Exception:  # noqa: BLE001 - counted and logged in _audit
                pass

    def page_denied(self, request: web.Request) -> web.Response | None:
        """For ``/metrics`` and ``/status``: None when the page may be served, else the 401/403 answer
        (always None without ``--metrics-auth``)."""
        if not self.metrics_auth:
            return None
        principal = self.registry.authenticate(request.headers.get("Authorization"))
        if principal is None:
            return _error_response(ApiError(401, "unauthenticated", "a valid bearer token is required"))
        if not allowed(principal.role, "metrics"):
            return _error_response(ApiError(403, "forbidden", f"role {principal.role!r} may not read metrics"))
        return None

    async def _close(self, _web_app: Any = None) -> None:
        await self._write_refusal_summaries(force=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _routes(self) -> list[Route]:
        agent_owner = self._owner_from_path
        return [
            Route("GET", "/v1/openapi.json", "openapi", None, self.h_openapi),
            Route("GET", "/v1/whoami", "whoami", "whoami", self.h_whoami),
            Route("GET", "/v1/agents/{agent_id}", "agent", "read", self.h_agent, owner=agent_owner),
            Route("GET", "/v1/breakers", "breakers", "read", self.h_breakers),
            Route("GET", "/v1/incidents/{incident_id}", "incident", "read", self.h_incident),
            Route("POST", "/v1/agents/{agent_id}/freeze", "freeze", "freeze", self.h_freeze, act="freeze",
                  body_limit=openapi.MAX_BODY, parse=self.p_freeze, owner=agent_owner),
            Route("POST", "/v1/agents/{agent_id}/release", "release", "release", self.h_release, act="release",
                  body_limit=openapi.MAX_BODY, parse=self.p_release, owner=agent_owner),
            Route("POST", "/v1/decisions/{event_id}/feedback", "feedback", "feedback", self.h_feedback,
                  act="feedback", body_limit=openapi.MAX_BODY, parse=self.p_feedback, owner=self._owner_from_body),
            Route("POST", "/v1/check", "check", "check", self.h_check, body_limit=openapi.MAX_CHECK_BODY,
                  parse=self.p_check, owner=self._owner_from_body),
            Route("GET", "/v1/approvals", "approvals", "read", self.h_approvals),
            Route("GET", "/v1/approvals/{approval_id}", "approval", "approval_status", self.h_approval),
            Route("POST", "/v1/approvals/{approval_id}/approve", "approve", "approve", self.h_decide, act="approve",
                  body_limit=openapi.MAX_BODY, parse=self.p_decide, owner=self._owner_of_approval),
            Route("POST", "/v1/approvals/{approval_id}/deny", "deny", "approve", self.h_decide, act="deny",
                  body_limit=openapi.MAX_BODY, parse=self.p_decide, owner=self._owner_of_approval),
            Route("POST", "/v1/fallbacks", "fallbacks", "report_fallback", self.h_fallbacks, act="check_fallback",
                  body_limit=openapi.MAX_FALLBACKS_BODY, parse=self.p_fallbacks),
            *self.verdicts.routes(),
        ]

    def _endpoint(self, route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            status = 500
            try:
                resp = await self._handle(route, request)
                status = resp.status
                return resp
            except ApiError as err:
                status = err.status
                return _error_response(err)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the API's last line: log it, say nothing of it
                log.exception("%s %s failed", request.method, route.path)
                status = 500
                return _error_response(ApiError(500, "internal", "internal error (logged on the worker)"))
            finally:
                self.metrics.requests.labels(route.name, str(status)).inc()

        return endpoint

    async def _handle(self, route: Route, request: web.Request) -> web.Response:
        ctx = Ctx(request, route)
        ctx.target.update(request.match_info)
        try:
            if route.permission is not None:
                header = request.headers.get("Authorization")
                if header is not None and len(header) > http_guard.MAX_AUTHORIZATION:
                    raise ApiError(400, "invalid_header", "the Authorization header is too long")  # never quoted
                ctx.principal = self.registry.authenticate(header)
                if ctx.principal is None:
                    raise ApiError(401, "unauthenticated", "a valid bearer token is required")
                wait = self.buckets.take(ctx.principal.name)
                if wait > 0:
                    raise ApiError(429, "rate_limited", "too many calls with this token; retry later",
                                   retry_after=wait)
                if not allowed(ctx.principal.role, route.permission):
                    roles = ", ".join(sorted(PERMISSIONS[route.permission]))
                    raise ApiError(403, "forbidden", f"role {ctx.principal.role!r} may not {route.name} "
                                                     f"(allowed: {roles})")
                if route.act is not None:  # a write its role allows: the smaller budget too
                    wait = self.write_buckets.take(ctx.principal.name)
                    if wait > 0:
                        raise ApiError(429, "rate_limited", "too many changes with this token; retry later",
                                       retry_after=wait)
            for key, value in request.match_info.items():
                ctx.params[key] = _ident(value, key)  # type: ignore[assignment]
            if route.body_limit:
                ctx.raw = await self._read_body(request, route.body_limit)
                if route.parse is not None:
                    route.parse(ctx)
            if route.owner is not None:
                agent = await route.owner(ctx)
                url = self._owner_url(agent) if agent is not None else None
                if url is not None:
                    self.metrics.forwarded.labels(route.name).inc()
                    return await self._forward(request, ctx.raw, url)
            return await route.handler(ctx)
        except ApiError as err:
            if route.act is not None and not err.audited:
                await self._audit_refusal(ctx, err)
            raise

    async def _read_body(self, request: web.Request, limit: int) -> bytes:
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "too_large", f"request body is larger than {limit} bytes")
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                return await self._read_body_now(request, limit)
        except TimeoutError:
            http_guard.REFUSALS.line("closed a connection from %s: request body not received within %.0f s",
                                     request.remote or "?", self.limits.body_timeout_s)
            if request.transport is not None:
                request.transport.close()  # the rest of the body is not waited for
            raise ApiError(408, "timeout", "request body not received in time") from None

    async def _read_body_now(self, request: web.Request, limit: int) -> bytes:
        chunks, size = [], 0
        while True:
            chunk = await request.content.read(min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", f"request body is larger than {limit} bytes")
        return b"".join(chunks)

    @staticmethod
    def _json_body(ctx: Ctx) -> dict:
        if not ctx.raw.strip():
            raise ApiError(400, "invalid_json", "request body is empty; a JSON object is required")
        try:
            body = _decode(ctx.raw)
        except msgspec.DecodeError as err:
            where = str(err).removeprefix("JSON is malformed: ")
            raise ApiError(400, "invalid_json", f"request body is not valid JSON ({where})") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "request body must be a JSON object")
        return body

    # ------------------------------------------------------------------ routing
    def partition_of(self, agent_id: str) -> int:
        return (murmur2(agent_id.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF) % self.processor.n_actions

    def _owner_url(self, agent_id: str) -> str | None:
        """``None`` if this worker answers for the agent, else the URL of the worker that does."""
        p = self.partition_of(agent_id)
        proc = self.processor
        if proc.ready and p in proc.assigned and p in proc.expect:
            return None
        url = self._owner_of_partition(p)
        if url is None or url.rstrip("/") == self.url:
            raise ApiError(503, "rebalancing", "the agent's partition has no ready owner right now; retry",
                           retry_after=1)
        return url.rstrip("/")

    def _owner_of_partition(self, p: int) -> str | None:
        assignor = self.app.assignor
        try:
            dist = assignor.external_topics_metadata()
        except AttributeError:  # pragma: no cover - another assignor
            dist = {}
        for url, topics in (dist or {}).items():
            if p in topics.get(self.actions_topic, ()):
                return url
        table = self.processor.table
        if table is not None:
            changelog = table.changelog_topic.get_topic_name()
            for url, topics in (assignor.tables_metadata() or {}).items():
                if p in topics.get(changelog, ()):
                    return url
        return None

    def _client(self) -> ClientSession:
        if self._session is None or self._session.closed:
            self._session = ClientSession(connector=TCPConnector(limit=64, keepalive_timeout=30),
                                          timeout=ClientTimeout(total=FORWARD_TIMEOUT_S))
        return self._session

    async def _forward(self, request: web.Request, raw: bytes, url: str) -> web.Response:
        if request.headers.get(FORWARD_HEADER):
            raise ApiError(503, "rebalancing", "the agent's partition is moving between workers; retry",
                           retry_after=1)
        headers = {FORWARD_HEADER: self.url, "Content-Type": "application/json"}
        auth = request.headers.get("Authorization")
        if auth is not None:
            headers["Authorization"] = auth
        target = url + str(request.rel_url)
        try:
            async with self._client().request(request.method, target, data=raw or None, headers=headers) as resp:
                body = await resp.read()
                out = web.Response(body=body, status=resp.status,
                                   content_type=resp.content_type or "application/json")
                if "Retry-After" in resp.headers:
                    out.headers["Retry-After"] = resp.headers["Retry-After"]
                out.headers["X-Flowbreaker-Owner"] = url
                return out
        except (ClientError, asyncio.TimeoutError) as err:
            log.warning("forwarding %s %s to %s failed: %r", request.method, request.path, url, err)
            raise ApiError(503, "owner_unreachable", "the worker that owns this agent did not answer; retry",
                           retry_after=1) from None

    async def _owner_from_path(self, ctx: Ctx) -> str | None:
        return ctx.params["agent_id"]

    async def _owner_from_body(self, ctx: Ctx) -> str | None:
        return ctx.target.get("agent_id")

    async def _owner_of_approval(self, ctx: Ctx) -> str | None:
        rec = await self._approval(ctx.params["approval_id"])
        ctx.target["agent_id"] = rec["agent_id"]
        return rec["agent_id"]

    # ------------------------------------------------------------------ the stream's side of approvals
    #: an action may run a little after its check and the hosts' clocks differ: so much later still counts
    STREAM_GRACE_S = approvals_core.STREAM_GRACE_S

    def screen(self, ev: Any) -> str | None:
        """The engine's approvals source (:attr:`detector.engine.Engine.approvals`): ``None`` if
        ``ev.approval_id`` signs ``ev`` off (judged by :func:`detector.approvals.screen` at the action's
        own time, with :data:`detector.approvals.STREAM_GRACE_S` of grace, against the approvals topic),
        else the rejection, audited here; the engine then scores the action as unapproved. Until the
        approvals topic has been read an id this system could have issued cannot be checked yet and is kept
        (counted ``unverified``); any other id (not ``apr-`` and 32 hex digits) is refused at once."""
        rejected = approvals_core.screen(self.store.get, ev)
        if rejected == "forged" and not self.feed.caught_up.is_set() and _OWN_APPROVAL_ID.match(ev.approval_id):
            self.metrics.stream_approvals.labels("unverified").inc()
            return None
        self.metrics.stream_approvals.labels(rejected or "ok").inc()
        if rejected is None:
            return None
        task = asyncio.ensure_future(self._audit_quietly(record(
            who="flowbreaker", role=None, what="approval_rejected", result="refused", status=None,
            at_ms=int(time.time() * 1000), agent_id=ev.agent_id, event_id=ev.event_id,
            approval_id=ev.approval_id[: openapi.MAX_ID], why=rejected, automatic=True,
            detail="on the stream: the action is scored as unapproved", worker=self.url)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return rejected

    async def _audit_quietly(self, rec: dict) -> None:
        try:
            await self._audit(rec)
        except Exception:  # noqa: BLE001 - counted and logged in _audit
            pass

    # ------------------------------------------------------------------ owner-side helpers
    def _approval_from_topic(self, rec: dict) -> bool:
        """An ``agent-approvals`` record into the store only when a worker signed it (any producer could
        write one: an "approved" record of its own would otherwise be an approval). Others are refused;
        the control feed counts and logs them (``flowbreaker_control_records_rejected_total``)."""
        verdict = self.keys.verify(rec)
        if verdict != "ok":
            raise ValueError(f"approval record {str(rec.get('approval_id'))[:64]!r} not signed by a worker: {verdict}")
        return self.store.apply(rec)

    def _agent_state(self, agent_id: str):
        return self.processor.agent_state(agent_id, self.partition_of(agent_id))

    async def _approval(self, approval_id: str) -> dict:
        rec = self.store.get(approval_id)
        if rec is None:
            await self.feed.sync(1.0)
            rec = self.store.get(approval_id)
        if rec is None:
            raise ApiError(404, "unknown_approval", "no such approval request")
        return rec

    def _require_feed(self) -> None:
        if not self.feed.caught_up.is_set():
            raise ApiError(503, "starting", "this worker is still reading the control topics; retry",
                           retry_after=1)

    async def _audit(self, rec: dict) -> None:
        try:
            await self.auditor.write(rec)
        except Exception as exc:  # noqa: BLE001 - counted and logged; the caller decides what it means
            self.metrics.audit_failures.inc()
            log.error("audit record %s/%s not written: %r", rec.get("what"), rec.get("result"), exc)
            raise
        self.metrics.audit.labels(rec["what"], rec["result"]).inc()

    async def _audit_refusal(self, ctx: Ctx, err: ApiError) -> None:
        p = ctx.principal
        fields = dict(why=ctx.reason, agent_id=ctx.target.get("agent_id"), incident_id=ctx.target.get("incident_id"),
                      event_id=ctx.target.get("event_id"), approval_id=ctx.target.get("approval_id"),
                      detail=f"{err.code}: {err.message}", worker=self.url)
        if err.result in ("unauthenticated", "forbidden", "rate_limited"):
            # who cannot even authenticate (or calls what their role may not) is summarised per client: a flood
            # of refused calls writes at most two records per client and window (streams/api/audit_trail.py). A rule's
            # refusal of an authorised call (two-person rule: result "refused") stays a record of its own.
            rec = self.refusals.note(ctx.request.remote or "unknown", who=p.name if p else "anonymous",
                                     role=p.role if p else None, what=ctx.route.act or "-", result=err.result,
                                     status=err.status, at_ms=int(time.time() * 1000), **fields)
            if rec is None:
                self.metrics.refusals_summarised.inc()
                return
        else:
            rec = record(who=p.name if p else "anonymous", role=p.role if p else None, what=ctx.route.act or "-",
                         result=err.result, status=err.status, at_ms=int(time.time() * 1000), **fields)
        try:
            await self._audit(rec)
        except Exception:  # noqa: BLE001 - the refusal stands; the failure is counted and logged
            pass

    # ------------------------------------------------------------------ parsers
    def p_freeze(self, ctx: Ctx) -> None:
        body = self._json_body(ctx)
        _only(body, ("reason", "severity"))
        ctx.reason = _reason(body)
        ctx.body = {"reason": ctx.reason, "severity": _choice(body.get("severity"), "severity", openapi.SEVERITIES,
                                                              "high")}

    def p_release(self, ctx: Ctx) -> None:
        body = self._json_body(ctx)
        _only(body, ("reason", "incident_id", "verdict"))
        ctx.reason = _reason(body)
        ctx.body = {"reason": ctx.reason, "incident_id": _ident(body.get("incident_id"), "incident_id", False),
                    "verdict": None if body.get("verdict") is None
                    else _choice(body.get("verdict"), "verdict", openapi.RELEASE_VERDICTS)}
        ctx.target["incident_id"] = ctx.body["incident_id"]

    def p_feedback(self, ctx: Ctx) -> None:
        body = self._json_body(ctx)
        if isinstance(body.get("agent_id"), str) and len(body["agent_id"]) <= openapi.MAX_ID:
            ctx.target["agent_id"] = body["agent_id"]  # named in the audit record even if the rest is invalid
        _only(body, ("agent_id", "verdict", "reason"))
        ctx.reason = _reason(body)
        ctx.body = {"agent_id": _ident(body.get("agent_id"), "agent_id"),
                    "verdict": _choice(body.get("verdict"), "verdict", openapi.FEEDBACK_VERDICTS),
                    "reason": ctx.reason}
        ctx.target["agent_id"] = ctx.body["agent_id"]

    def p_check(self, ctx: Ctx) -> None:
        if not ctx.raw.strip():
            raise ApiError(400, "invalid_json", "request body is empty; a proposed action is required")
        try:
            ev = decode_event(ctx.raw)
        except EventError as err:
            code = "invalid_json" if err.code in ("not_json", "encoding", "not_object") else "invalid_field"
            raise ApiError(400, code, f"not a valid action: {_event_error(err)}") from None
        ctx.body = ev
        ctx.target["agent_id"] = ev.agent_id
        ctx.target["event_id"] = ev.event_id

    def p_decide(self, ctx: Ctx) -> None:
        body = self._json_body(ctx)
        approve = ctx.route.act == "approve"
        _only(body, ("reason", "ttl_s") if approve else ("reason",))
        ctx.reason = _reason(body)
        ttl = body.get("ttl_s")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))
                                or not 1 <= ttl <= 7 * 24 * 3600):
            raise ApiError(400, "invalid_field", "ttl_s: a number of seconds from 1 to 604800")
        ctx.body = {"reason": ctx.reason, "ttl_s": float(ttl) if ttl is not None else None}

    def p_fallbacks(self, ctx: Ctx) -> None:
        body = self._json_body(ctx)
        _only(body, ("fallbacks", "dropped"))
        items = body.get("fallbacks")
        if not isinstance(items, list) or not 1 <= len(items) <= openapi.MAX_FALLBACKS:
            raise ApiError(400, "invalid_field", f"fallbacks: a list of 1 to {openapi.MAX_FALLBACKS} reports")
        dropped = body.get("dropped", 0)
        if isinstance(dropped, bool) or not isinstance(dropped, int) or not 0 <= dropped <= 2 ** 31:
            raise ApiError(400, "invalid_field", "dropped: a non-negative integer")
        out = []
        keys = ("agent_id", "event_id", "tool", "action", "sensitivity", "verdict", "cause", "at")
        limits = {"event_id": openapi.MAX_ID, "tool": 256, "action": 16, "sensitivity": 16, "at": 64}
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ApiError(400, "invalid_field", f"fallbacks[{i}]: an object")
            unknown = [k for k in item if k not in keys]
            if unknown:
                raise ApiError(400, "unknown_field", f"fallbacks[{i}]: unknown field; allowed: {', '.join(keys)}")
            rec = {"agent_id": _ident(item.get("agent_id"), f"fallbacks[{i}].agent_id"),
                   "verdict": _choice(item.get("verdict"), f"fallbacks[{i}].verdict", ("allow", "deny")),
                   "cause": _choice(item.get("cause"), f"fallbacks[{i}].cause",
                                    ("timeout", "unreachable", "unavailable", "error"))}
            for k, n in limits.items():
                v = item.get(k)
                if v is not None and (not isinstance(v, str) or len(v) > n):
                    raise ApiError(400, "invalid_field", f"fallbacks[{i}].{k}: a string of at most {n} characters")
                rec[k] = v
            out.append(rec)
        ctx.body = {"fallbacks": out, "dropped": dropped}

    # ------------------------------------------------------------------ handlers: reads
    async def h_openapi(self, ctx: Ctx) -> web.Response:
        return _json(openapi.document())

    async def h_whoami(self, ctx: Ctx) -> web.Response:
        p = ctx.principal
        return _json({"name": p.name, "role": p.role,
                      "permissions": sorted(k for k, roles in PERMISSIONS.items() if p.role in roles)})

    async def h_agent(self, ctx: Ctx) -> web.Response:
        agent = ctx.params["agent_id"]
        st = self._agent_state(agent)
        if st is None:
            raise ApiError(404, "unknown_agent", "no such agent")
        eng = self.processor.engine
        b = st.breaker
        th = eng.policy.thresholds
        loc, scale = st.baseline.loc, st.baseline.scale
        feats = {f.name: {"typical": round(expm1(loc[i]), 4), "p95": round(expm1(loc[i] + Z95 * scale[i]), 4)}
                 for i, f in enumerate(FEATURES)}
        keep = ("event_id", "ts", "tool", "action", "resource", "sensitivity", "records", "bytes",
                "destination_count", "destination_classes", "task_id", "approval_id", "score", "severity")
        last = [{k: e.get(k) for k in keep} for e in reversed(eng.traces.snapshot(agent)[-20:])]
        scope = eng.manifests.scope_for(agent) if eng.manifests is not None else None
        budget = th.risk_budget * (0.5 if b.state == "half_open" else 1.0)
        return _json({
            "agent_id": agent, "operator_id": st.operator_id, "partition": self.partition_of(agent),
            "breaker": {"state": b.state, "incident_id": b.incident_id,
                        "opened_at": _iso(b.opened_t) if b.incident_id else None,
                        "probation_until": _iso(b.probation_until) if b.state == "half_open" else None,
                        "trips": b.trips},
            "risk": {"value": round(b.risk, 4), "budget": budget, "as_of": _iso(b.risk_t) if b.risk_t else None},
            "baseline": {"observations": round(st.baseline.n, 1), "features": feats},
            "last_decisions": last,
            "model_version": eng.model_version,
            "manifest": ({"label": scope.label, "clauses": scope.clauses} if scope is not None else None),
        })

    async def h_breakers(self, ctx: Ctx) -> web.Response:
        state = ctx.request.query.get("state", "open")
        if state not in ("open", "half_open"):
            raise ApiError(400, "invalid_query", "state: open or half_open")
        limit = _int_query(ctx.request, "limit", 100, 1, openapi.MAX_LIMIT)
        self._require_feed()
        await self.feed.sync(0.5)
        items = self.feed.breakers_in(state, time.time(), limit=limit)
        return _json({"state": state, "count": len(items), "breakers": items})

    async def h_incident(self, ctx: Ctx) -> web.Response:
        iid = ctx.params["incident_id"]
        raw = self.feed.incident(iid)
        if raw is None:
            self._require_feed()
            await self.feed.sync(1.0)
            raw = self.feed.incident(iid)
        if raw is None:
            raise ApiError(404, "unknown_incident", "no such incident (or older than this worker's index keeps)")
        return web.Response(body=raw, content_type="application/json")

    async def h_approvals(self, ctx: Ctx) -> web.Response:
        q = ctx.request.query
        state = q.get("state")
        if state is not None and state not in ("pending", "approved", "denied", "expired"):
            raise ApiError(400, "invalid_query", "state: pending, approved, denied or expired")
        agent = q.get("agent_id")
        if agent is not None:
            _ident(agent, "agent_id")
        limit = _int_query(ctx.request, "limit", 100, 1, openapi.MAX_LIMIT)
        self._require_feed()
        await self.feed.sync(0.5)
        items = self.store.listing(state, time.time(), agent_id=agent, limit=limit)
        return _json({"state": state, "count": len(items), "approvals": items})

    async def h_approval(self, ctx: Ctx) -> web.Response:
        rec = await self._approval(ctx.params["approval_id"])
        return _json(view(rec, time.time()))

    # ------------------------------------------------------------------ handlers: acts
    async def h_freeze(self, ctx: Ctx) -> web.Response:
        agent = ctx.params["agent_id"]
        p = ctx.principal
        st = self._agent_state(agent)
        if st is None:
            raise ApiError(404, "unknown_agent", "no such agent")
        if st.breaker.state == "open":
            ctx.target["incident_id"] = st.breaker.incident_id
            raise ApiError(409, "already_frozen", "the agent is already frozen",
                           extra={"incident_id": st.breaker.incident_id})
        d = self.processor.engine.freeze_manual(agent, at=time.time(), by=p.name, reason=ctx.body["reason"],
                                                severity=ctx.body["severity"])
        if d is None:  # pragma: no cover - checked just above, no await in between
            raise ApiError(409, "already_frozen", "the agent is already frozen")
        d.incident["frozen_by_role"] = p.role
        iid = d.freeze["incident_id"]
        self.feed.apply_incident(None, d.incident)  # the two-person rule must see it before it is published
        await self.processor.apply_manual_freeze(d, self.partition_of(agent), worker=self.url)
        published = await self._published(agent, iid)
        return _json({"agent_id": agent, "incident_id": iid, "state": "open", "frozen_by": p.name,
                      "severity": ctx.body["severity"], "issued_at": d.freeze["issued_at"], "published": published})

    async def h_release(self, ctx: Ctx) -> web.Response:
        agent = ctx.params["agent_id"]
        p = ctx.principal
        st = self._agent_state(agent)
        if st is None:
            raise ApiError(404, "unknown_agent", "no such agent")
        b = st.breaker
        if b.state != "open":
            raise ApiError(409, "not_frozen", f"the agent is not frozen (breaker {b.state})")
        iid = b.incident_id or ""
        wanted = ctx.body["incident_id"]
        if wanted is not None and wanted != iid:
            raise ApiError(409, "other_incident", "the agent is frozen for another incident",
                           extra={"incident_id": iid})
        ctx.target["incident_id"] = iid
        meta = self.feed.incident_meta(iid) or self.processor.outbox_incident(agent, iid)
        if meta is None and iid.startswith("man-"):
            raise ApiError(503, "incident_unknown", "the incident record is not available yet; retry",
                           retry_after=1)
        if meta is not None and meta.get("severity") == "critical" and meta.get("frozen_by") == p.name:
            raise ApiError(403, "two_person_rule", "a critical incident is released by another lead than the one "
                                                   "who froze it", result="refused")
        now = time.time()
        cmd = self.processor.engine.release(agent, at=now, by=p.name, reason=ctx.body["reason"])
        if cmd is None:  # pragma: no cover - checked above, no await in between
            raise ApiError(409, "not_frozen", "the agent is not frozen")
        audit = record(who=p.name, role=p.role, what="release", why=ctx.body["reason"], result="ok", status=200,
                       at_ms=int(now * 1000), agent_id=agent, incident_id=iid,
                       detail="; ".join(x for x in (f"severity {meta.get('severity')}" if meta else "",
                                                    f"verdict {ctx.body['verdict']}" if ctx.body["verdict"] else "")
                                        if x) or None, worker=self.url)
        await self.processor.apply_manual_release(agent, cmd, _encode(audit))
        published = await self._published(agent, iid)
        verdict = await self.verdicts.on_release(ctx, agent, iid, now)  # on agent-verdicts, signed (issue 18)
        return _json({"agent_id": agent, "incident_id": iid, "state": "half_open", "released_by": p.name,
                      "issued_at": cmd["issued_at"], "published": published,
                      "verdict": verdict["verdict"] if verdict else None,
                      "verdict_id": verdict["verdict_id"] if verdict else None})

    async def _published(self, agent: str, incident_id: str) -> bool:
        deadline = time.monotonic() + PUBLISH_WAIT_S
        while not self.processor.published(agent, incident_id):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    async def h_feedback(self, ctx: Ctx) -> web.Response:
        body, p = ctx.body, ctx.principal
        event_id = ctx.params["event_id"]
        agent = body["agent_id"]
        if self._agent_state(agent) is None:
            raise ApiError(404, "unknown_agent", "no such agent")
        now = time.time()
        rec = {"event_id": event_id, "agent_id": agent, "verdict": body["verdict"], "reason": body["reason"],
               "by": p.name, "at": _iso(now)}
        key = agent.encode()
        fut = await self.app.producer.send(self.feedback_topic, key, _encode(rec),
                                           (murmur2(key) & 0x7FFFFFFF) % self.feedback_partitions, None, None)
        await fut
        await self._audit(record(who=p.name, role=p.role, what="feedback", why=body["reason"], result="ok",
                                 status=200, at_ms=int(now * 1000), agent_id=agent, event_id=event_id,
                                 detail=body["verdict"], worker=self.url))
        return _json(rec)

    async def h_decide(self, ctx: Ctx) -> web.Response:
        from detector.approvals import ApprovalError

        p = ctx.principal
        aid = ctx.params["approval_id"]
        approve = ctx.route.act == "approve"
        await self._approval(aid)
        now = time.time()
        try:
            rec = await self.approvals.decide(aid, approve=approve, by=p.name, reason=ctx.body["reason"], now=now,
                                              ttl_s=ctx.body.get("ttl_s"))
        except KeyError:
            raise ApiError(404, "unknown_approval", "no such approval request") from None
        except ApprovalError as err:
            raise ApiError(409, "not_pending", str(err)) from None
        await self._audit(record(who=p.name, role=p.role, what=ctx.route.act, why=ctx.body["reason"], result="ok",
                                 status=200, at_ms=int(now * 1000), agent_id=rec["agent_id"], approval_id=aid,
                                 detail=(f"valid until {rec['valid_until']}" if approve else None), worker=self.url))
        return _json(view(rec, now))

    async def h_fallbacks(self, ctx: Ctx) -> web.Response:
        p = ctx.principal
        now_ms = int(time.time() * 1000)
        items = ctx.body["fallbacks"]
        for it in items:
            self.metrics.fallbacks.labels(it["verdict"], it["cause"]).inc()
        recs = [record(who=p.name, role=p.role, what="check_fallback", result="ok", status=200, at_ms=now_ms,
                       agent_id=it["agent_id"], event_id=it.get("event_id"),
                       why=f"no answer from flowbreaker in time ({it['cause']})",
                       detail=f"runtime answered {it['verdict']} for {it.get('sensitivity')} {it.get('action')} "
                              f"{it.get('tool')} at {it.get('at')}", worker=self.url) for it in items]
        if ctx.body["dropped"]:
            recs.append(record(who=p.name, role=p.role, what="check_fallback", result="ok", status=200, at_ms=now_ms,
                               why="fallbacks the runtime could not keep", detail=f"{ctx.body['dropped']} dropped",
                               worker=self.url))
        await asyncio.gather(*(self._audit(r) for r in recs))
        return _json({"recorded": len(recs)})

    async def h_check(self, ctx: Ctx) -> web.Response:
        t0 = time.perf_counter()
        ev = ctx.body
        if not self.broker.fresh():  # nothing decided now could be recorded: the runtime's fallback applies
            raise ApiError(503, "broker_unavailable", "the Kafka broker does not answer; apply your fallback "
                                                      "policy and report it (POST /v1/fallbacks)", retry_after=1)
        self._agent_state(ev.agent_id)  # loaded from the table if this worker has not seen it yet
        now = time.time()
        probe = ev.replace(approval_id=None) if ev.approval_id is not None else ev
        verdict, score, why, broken = self.gate.check_both(probe)
        metrics = getattr(self.processor, "metrics", None)
        if broken and metrics is not None:
            metrics.scope_violations("check", broken)
        reasons = list(why)
        approval_id = None
        rejected = None
        if verdict != DENY and ev.approval_id is not None:
            self._require_feed()
            rejected = self.approvals.check(ev, now)
            if rejected is not None:
                self.metrics.rejections.labels(rejected).inc()
            if rejected is None:
                verdict, reasons = "allow", [f"covered by approval {ev.approval_id}"] + reasons
            elif rejected == "pending":
                verdict, approval_id = NEEDS_APPROVAL, ev.approval_id
                reasons = ["the approval request is still pending"] + reasons
            elif rejected in ("forged", "denied"):
                verdict = DENY
                reasons = [f"approval_id rejected: {rejected}"] + reasons
            else:  # expired, out_of_scope: judged as if it carried none
                reasons = [f"approval_id rejected: {rejected}"] + reasons
            if rejected not in (None, "pending"):
                await self._audit(record(
                    who=ctx.principal.name, role=ctx.principal.role, what="approval_rejected", result="refused",
                    status=200, at_ms=int(now * 1000), agent_id=ev.agent_id, event_id=ev.event_id,
                    approval_id=ev.approval_id[: openapi.MAX_ID], why=rejected,
                    detail=f"{ev.action} {ev.tool}; verdict {verdict}", worker=self.url))
        if verdict == NEEDS_APPROVAL and approval_id is None:
            self._require_feed()
            if self.store.pending_like(probe, now) is None:  # a new request: an audit record, an analyst's time
                if self.store.open_for(ev.agent_id, now) >= self.limits.max_open_approvals:
                    raise ApiError(429, "too_many_approval_requests", f"agent already has "
                                   f"{self.limits.max_open_approvals} open approval requests; decide them or let "
                                   "them expire before asking for more", retry_after=60)
                wait = self.write_buckets.take(ctx.principal.name)
                if wait > 0:
                    raise ApiError(429, "rate_limited", "too many approval requests with this token; retry later",
                                   retry_after=wait)
            try:
                rec, created = await self.approvals.open_request(probe, reasons=reasons, score=score,
                                                                 by=ctx.principal.name, now=now,
                                                                 max_open=self.limits.max_open_approvals)
            except TooManyOpenRequests as err:
                raise ApiError(429, "too_many_approval_requests", str(err), retry_after=60) from None
            approval_id = rec["approval_id"]
            if created:
                await self._audit(record(
                    who=ctx.principal.name, role=ctx.principal.role, what="approval_request", result="ok",
                    status=200, at_ms=int(now * 1000), agent_id=ev.agent_id, event_id=ev.event_id,
                    approval_id=approval_id, why="; ".join(reasons)[: openapi.MAX_REASON],
                    detail=f"{ev.action} {ev.tool} to {len(ev.destinations)} destinations, {ev.records} records",
                    worker=self.url))
        self.metrics.verdicts.labels(verdict).inc()
        self.metrics.check_seconds.observe(time.perf_counter() - t0)
        return _json({"verdict": verdict, "score": round(score, 4), "reasons": reasons,
                      "approval_request_id": approval_id, "approval_rejected": rejected})


def approvals_setting_error(environ: Any) -> str | None:
    """Why the environment asks for approvals this worker will not honour, or None. Approval ids flowbreaker
    did not issue are never taken at their word: ``FLOWBREAKER_STRICT_APPROVALS`` may only be unset or true.

    >>> approvals_setting_error({}), approvals_setting_error({"FLOWBREAKER_STRICT_APPROVALS": "1"})
    (None, None)
    >>> approvals_setting_error({"FLOWBREAKER_STRICT_APPROVALS": "0"})[:35]
    'FLOWBREAKER_STRICT_APPROVALS=0: app'
    """
    strict = str(environ.get("FLOWBREAKER_STRICT_APPROVALS", "")).strip().lower()
    if strict in ("", "1", "true", "yes", "on"):
        return None
    return (f"FLOWBREAKER_STRICT_APPROVALS={strict[:16]}: approval ids flowbreaker did not issue are never taken "
            "at their word (external approvers are not supported); unset it")


def mount_api(app: Any, processor: Any, settings: Any, *, metrics: Any = None) -> ControlPlane:
    """Add the ``/v1`` routes and the control feed to a worker's faust app (before it starts).

    Tokens come from ``settings.tokens`` (``--tokens``, ``FLOWBREAKER_TOKENS``) or
    ``FLOWBREAKER_API_TOKENS``; a file that cannot be used is a usage error (exit 2).
    """
    from streams.api.auth import TokenFileError
    from detector.errors import UsageError
    from streams.settings import SettingsError

    try:
        registry = open_registry(getattr(settings, "tokens", None))
        from streams.clients.signing import keyring_for

        keys = keyring_for(settings)
    except (TokenFileError, SettingsError) as err:
        raise UsageError(str(err)) from None
    why = approvals_setting_error(os.environ)
    if why is not None:
        raise UsageError(why)
    if keys is None or not keys.can_sign:
        raise UsageError("no command signing key: the worker signs every freeze and release (--signing-keys FILE "
                         "or FLOWBREAKER_SIGNING_KEYS, the private file with an active key: flowbreaker keys new FILE)")
    if not len(registry):
        log.warning("no API tokens configured: every /v1 route but the OpenAPI document answers 401")
    cp = ControlPlane(app, processor, settings, registry, keys=keys,
                      metrics_registry=getattr(metrics, "registry", None))
    cp.mount()
    processor.control_plane = cp
    processor.keys = keys
    processor.control_metrics = cp.control_metrics
    for key in ("control_rejected", "releases_ignored", "control_feed_restarts", "control_feed_skipped"):
        processor.stats.setdefault(key, 0)
    processor.stats.setdefault("control_feed_caught_up", False)
    return cp
