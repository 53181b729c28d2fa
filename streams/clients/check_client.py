"""The pre-action check as an agent runtime embeds it: ``CheckClient.check(action)`` before every
outbound or destructive tool call.

``check`` sends the proposed action (the contract's event fields) to
``POST /v1/check`` of any worker (it is routed to the one that owns the agent)
and returns a :class:`CheckResult`: ``allow``, ``needs_approval`` (with the
approval request's id: wait for it with :meth:`CheckClient.wait_for_approval`,
then check again with ``approval_id`` set) or ``deny``.

When it works, when it fails:

- *Frozen agents are refused locally.* With a :class:`streams.clients.guard.FreezeGuard`
  (``guard=``), an agent the guard holds frozen gets ``deny`` without a network
  call; agents the server reported frozen are remembered for ``frozen_ttl_s``
  seconds too (a small bounded cache).
- *No answer in time* (``timeout_s``, default 0.25 s: connection refused, timeout,
  503 while partitions move, any 5xx): the client answers itself, by policy:
  ``deny`` (fail closed) for actions whose sensitivity is in ``fail_closed``
  (default ``restricted``), ``allow`` (fail open) otherwise. Every fallback is
  counted in :attr:`CheckClient.stats` and reported to ``POST /v1/fallbacks`` by a
  background thread once a worker answers again, which writes it to the audit
  trail. Reports go in as many calls as they need, each at most 100 reports and
  ``report_body_limit`` bytes (16 KiB, what every worker takes), so a long outage's
  backlog arrives whole. At most ``max_reports`` wait; older ones are dropped and
  the number dropped is reported too, as is a report a worker refuses as invalid.
- *A 4xx answer* (bad token, wrong role, invalid action) is a configuration or
  caller error, not an outage: :class:`CheckError` is raised.

The client is thread-safe: each thread keeps its own keep-alive connection.
From an asyncio event loop, :meth:`CheckClient.acheck` gives the same answers
without blocking the loop or a thread hop (aiohttp keep-alive connections of
that loop; :meth:`CheckClient.aclose` them at the end): what the MCP gateway uses.
It remembers which worker answered for an agent (``X-Flowbreaker-Owner``) and
asks that one first next time, so most checks skip the forwarding hop; after a
rebalance the old owner forwards (or answers 503 and the next worker is tried).

>>> c = CheckClient("http://127.0.0.1:9", "token", fail_closed=("restricted",))
>>> c.fallback_verdict({"sensitivity": "restricted"}), c.fallback_verdict({"sensitivity": "internal"})
('deny', 'allow')
>>> c.close()
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping
from urllib.parse import quote, urlsplit

__all__ = ["CheckClient", "CheckResult", "CheckError", "MAX_REPORTS_PER_CALL", "REPORT_BODY_LIMIT"]

log = logging.getLogger("flowbreaker.check_client")

#: reports in one ``POST /v1/fallbacks`` (the server takes at most 100)
MAX_REPORTS_PER_CALL = 100
#: bytes in one ``POST /v1/fallbacks``: the limit of any worker since the API exists (16 KiB); newer workers
#: take more (docs/api.md), and a worker that takes less makes the client halve it
REPORT_BODY_LIMIT = 16 * 1024


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class CheckError(RuntimeError):
    """flowbreaker answered, but refused the request (4xx): ``status`` and its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass
class CheckResult:
    verdict: str                         # allow | needs_approval | deny
    score: float | None = None
    reasons: list[str] = field(default_factory=list)
    approval_request_id: str | None = None
    approval_rejected: str | None = None
    source: str = "flowbreaker"          # flowbreaker | local (frozen cache) | fallback
    fallback_cause: str | None = None    # timeout | unreachable | unavailable | error

    @property
    def allowed(self) -> bool:
        return self.verdict == "allow"


def _answer(status: int, data: bytes) -> tuple[str | None, dict]:
    """A worker's answer: ``(why it failed, {})`` for a 5xx (``unavailable`` for 503, else ``error``: try the
    next worker), else ``(None, its JSON body or {})``."""
    if status >= 500:
        return ("unavailable" if status == 503 else "error"), {}
    try:
        return None, json.loads(data) if data else {}
    except ValueError:
        return None, {}


class _Unavailable(Exception):
    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CheckClient:
    def __init__(self, urls: str | Iterable[str], token: str, *, timeout_s: float = 0.25,
                 fail_closed: Iterable[str] = ("restricted",), guard: Any = None, frozen_ttl_s: float = 5.0,
                 report_urls: str | Iterable[str] | None = None, report_timeout_s: float = 5.0,
                 report_every_s: float = 1.0, max_reports: int = 10_000,
                 report_body_limit: int = REPORT_BODY_LIMIT) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("CheckClient needs at least one worker URL")
        self.report_urls = self.urls if report_urls is None else (
            [report_urls] if isinstance(report_urls, str) else list(report_urls))
        self._auth = f"Bearer {token}"
        self.timeout_s = timeout_s
        self.fail_closed = frozenset(fail_closed)
        self.guard = guard
        self.frozen_ttl_s = frozen_ttl_s
        self.report_timeout_s = report_timeout_s
        self.report_every_s = report_every_s
        self.report_body_limit = report_body_limit
        self._frozen: OrderedDict[str, float] = OrderedDict()   # agent -> monotonic expiry
        self._owners: OrderedDict[str, str] = OrderedDict()     # agent -> URL of the worker that answered
        self._reports: deque[dict] = deque(maxlen=max_reports)
        self._dropped = 0
        self._local = threading.local()
        self._aio: tuple[Any, Any] | None = None   # (event loop, aiohttp session) of acheck
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._reporter: threading.Thread | None = None
        self.stats = {"checks": 0, "answered": 0, "local_denies": 0, "fallback_allow": 0, "fallback_deny": 0,
                      "reported": 0, "dropped": 0}

    # ------------------------------------------------------------------ transport
    def _conn(self, url: str, timeout: float) -> http.client.HTTPConnection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(url)
        if conn is None:
            parts = urlsplit(url)
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = conns[url] = cls(parts.hostname, parts.port, timeout=timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop(self, url: str) -> None:
        conn = getattr(self._local, "conns", {}).pop(url, None)
        if conn is not None:
            conn.close()

    def _request(self, method: str, path: str, body: bytes | None, timeout: float,
                 urls: list[str] | None = None, prefer: str | None = None) -> tuple[int, dict]:
        """One request, trying ``prefer`` then the workers in turn until ``timeout``; raises _Unavailable."""
        urls = urls or self.urls
        deadline = time.monotonic() + timeout
        order = self._order(urls, prefer)
        cause = "unreachable"
        for url in order:
            left = deadline - time.monotonic()
            if left <= 0:
                cause = "timeout"
                break
            headers = {"Authorization": self._auth, "Content-Type": "application/json", "Connection": "keep-alive"}
            for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile: once more, fresh
                conn = self._conn(url, left)
                try:
                    conn.request(method, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except (socket.timeout, TimeoutError):
                    self._drop(url)
                    cause = "timeout"
                    break
                except (ConnectionError, http.client.HTTPException, OSError) as err:
                    self._drop(url)
                    fresh_failure = attempt == 1 or isinstance(err, ConnectionRefusedError)
                    cause = "unreachable"
                    if fresh_failure:
                        break
                    continue
                failed, payload = _answer(resp.status, data)
                if failed:
                    cause = failed
                    break
                self._local.answered_by = resp.getheader("X-Flowbreaker-Owner") or url
                return resp.status, payload
        raise _Unavailable(cause)

    def _order(self, urls: list[str], prefer: str | None) -> list[str]:
        """The workers to try, in turn: ``prefer`` first, then round robin."""
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(urls)
        order = [urls[(start + i) % len(urls)] for i in range(len(urls))]
        if prefer is not None:
            order = [prefer] + [u for u in order if u != prefer]
        return order

    def _asession(self) -> Any:
        """The aiohttp session of the running event loop (made on first use; one per loop)."""
        import asyncio

        import aiohttp

        loop = asyncio.get_running_loop()
        if self._aio is None or self._aio[0] is not loop or self._aio[1].closed:
            # at most 100 checks at once per worker (a thread each before); TCP_NODELAY is aiohttp's default
            connector = aiohttp.TCPConnector(limit_per_host=100, keepalive_timeout=30.0)
            self._aio = (loop, aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                                     skip_auto_headers=("User-Agent", "Accept-Encoding"),
                                                     auto_decompress=False))
        return self._aio[1]

    async def _arequest(self, method: str, path: str, body: bytes | None, timeout: float,
                        prefer: str | None = None) -> tuple[int, dict, str]:
        """:meth:`_request` on the event loop: (status, payload, the worker that answered); raises _Unavailable."""
        import aiohttp

        session = self._asession()
        headers = {"Authorization": self._auth, "Content-Type": "application/json"}
        deadline = time.monotonic() + timeout
        cause = "unreachable"
        for url in self._order(self.urls, prefer):
            left = deadline - time.monotonic()
            if left <= 0:
                cause = "timeout"
                break
            for attempt in (0, 1):  # a kept-alive connection the server closed meanwhile: once more, fresh
                try:
                    async with session.request(method, url + path, data=body, headers=headers, allow_redirects=False,
                                               timeout=aiohttp.ClientTimeout(total=left)) as resp:
                        data = await resp.read()
                except TimeoutError:
                    cause = "timeout"
                    break
                except (aiohttp.ClientError, OSError) as err:
                    cause = "unreachable"
                    if attempt == 1 or isinstance(err, aiohttp.ClientConnectorError):
                        break
                    continue
                failed, payload = _answer(resp.status, data)
                if failed:
                    cause = failed
                    break
                return resp.status, payload, resp.headers.get("X-Flowbreaker-Owner") or url
        raise _Unavailable(cause)

    async def aclose(self) -> None:
        """Close the event loop's session of :meth:`acheck` (call it on that loop)."""
        aio, self._aio = self._aio, None
        if aio is not None and not aio[1].closed:
            await aio[1].close()

    # ------------------------------------------------------------------ the check
    def fallback_verdict(self, action: Mapping[str, Any]) -> str:
        return "deny" if action.get("sensitivity") in self.fail_closed else "allow"

    def _locally_frozen(self, agent: str) -> bool:
        if self.guard is not None and self.guard.is_frozen(agent):
            return True
        until = self._frozen.get(agent)
        if until is None:
            return False
        if until < time.monotonic():
            with self._lock:
                self._frozen.pop(agent, None)
            return False
        return True

    def _remember_owner(self, agent: str, url: str | None) -> None:
        if url is None or self._owners.get(agent) == url:
            return
        with self._lock:
            self._owners[agent] = url.rstrip("/")
            while len(self._owners) > 100_000:
                self._owners.popitem(last=False)

    def _remember_frozen(self, agent: str) -> None:
        with self._lock:
            self._frozen.pop(agent, None)
            self._frozen[agent] = time.monotonic() + self.frozen_ttl_s
            while len(self._frozen) > 10_000:
                self._frozen.popitem(last=False)

    def check(self, action: Mapping[str, Any]) -> CheckResult:
        """The verdict for a proposed ``action`` (a dict of the contract's event fields)."""
        first = self._begin(action)
        if isinstance(first, CheckResult):
            return first
        agent, body, owner = first
        try:
            status, payload = self._request("POST", "/v1/check", body, self.timeout_s, prefer=owner)
        except _Unavailable as na:
            return self._unanswered(action, agent, owner, na.cause)
        return self._answered(agent, status, payload, getattr(self._local, "answered_by", None))

    async def acheck(self, action: Mapping[str, Any]) -> CheckResult:
        """:meth:`check` for a caller on an asyncio event loop (a gateway): the same answers, local freeze cache,
        owner routing, failover, fallback and reports, over keep-alive connections of one aiohttp session of
        that loop (:meth:`aclose` it at the end; one loop at a time: on another loop a new session is made).
        The loop does not block and the check is not handed to a thread and back (two thread wake-ups per
        check)."""
        first = self._begin(action)
        if isinstance(first, CheckResult):
            return first
        agent, body, owner = first
        try:
            status, payload, answered_by = await self._arequest("POST", "/v1/check", body, self.timeout_s,
                                                                prefer=owner)
        except _Unavailable as na:
            return self._unanswered(action, agent, owner, na.cause)
        return self._answered(agent, status, payload, answered_by)

    def _begin(self, action: Mapping[str, Any]) -> CheckResult | tuple[Any, bytes, str | None]:
        """A local answer (a frozen agent), or what to send: (agent, body, the worker to ask first)."""
        self.stats["checks"] += 1
        agent = action.get("agent_id")
        if isinstance(agent, str) and self._locally_frozen(agent):
            self.stats["local_denies"] += 1
            return CheckResult("deny", reasons=["the agent is frozen (local cache)"], source="local")
        body = json.dumps(action, separators=(",", ":")).encode()
        owner = self._owners.get(agent) if isinstance(agent, str) else None
        return agent, body, owner

    def _unanswered(self, action: Mapping[str, Any], agent: Any, owner: str | None, cause: str) -> CheckResult:
        if owner is not None:
            self._owners.pop(agent, None)
        return self._fallback(action, cause)

    def _answered(self, agent: Any, status: int, payload: dict, answered_by: str | None) -> CheckResult:
        if isinstance(agent, str):  # ask the worker that answered (the agent's owner) directly next time
            self._remember_owner(agent, answered_by)
        if status != 200:
            err = payload.get("error") or {}
            raise CheckError(status, str(err.get("message") or f"HTTP {status}"))
        self.stats["answered"] += 1
        res = CheckResult(payload.get("verdict", "deny"), payload.get("score"), list(payload.get("reasons") or []),
                          payload.get("approval_request_id"), payload.get("approval_rejected"))
        if res.verdict == "deny" and "the agent is frozen" in res.reasons and isinstance(agent, str):
            self._remember_frozen(agent)
        return res

    def _fallback(self, action: Mapping[str, Any], cause: str) -> CheckResult:
        verdict = self.fallback_verdict(action)
        self.stats["fallback_" + verdict] += 1
        report = {"agent_id": str(action.get("agent_id") or "?")[:128], "verdict": verdict, "cause": cause,
                  "event_id": str(action.get("event_id") or "")[:128] or None, "tool": _short(action.get("tool"), 256),
                  "action": _short(action.get("action"), 16), "sensitivity": _short(action.get("sensitivity"), 16),
                  "at": _now_iso()}
        with self._lock:
            if len(self._reports) == self._reports.maxlen:
                self._dropped += 1
                self.stats["dropped"] += 1
            self._reports.append(report)
        self._ensure_reporter()
        mode = "closed" if verdict == "deny" else "open"
        log.warning("flowbreaker check unavailable (%s): failing %s for %s", cause, mode, report["agent_id"])
        return CheckResult(verdict, reasons=[f"no answer from flowbreaker ({cause}): fail-{mode} by policy"],
                           source="fallback", fallback_cause=cause)

    # ------------------------------------------------------------------ fallback reports
    def _ensure_reporter(self) -> None:
        if self._reporter is None or not self._reporter.is_alive():
            with self._lock:
                if self._reporter is None or not self._reporter.is_alive():
                    self._reporter = threading.Thread(target=self._report_loop, name="flowbreaker-fallbacks",
                                                      daemon=True)
                    self._reporter.start()

    def _report_loop(self) -> None:
        while not self._stop.wait(self.report_every_s):
            if self._reports:
                self.flush_reports()

    def _take_batch(self, limit: int) -> tuple[list[dict], int]:
        """The oldest waiting reports that fit one ``POST /v1/fallbacks``: at most ``MAX_REPORTS_PER_CALL``
        and, encoded, at most ``limit`` bytes; with the dropped count."""
        batch: list[dict] = []
        size = len(b'{"fallbacks":[],"dropped":2147483648}')
        with self._lock:
            while self._reports and len(batch) < MAX_REPORTS_PER_CALL:
                n = len(_encode(self._reports[0])) + 1
                if batch and size + n > limit:
                    break
                batch.append(self._reports.popleft())
                size += n
            dropped, self._dropped = (self._dropped, 0) if batch else (0, self._dropped)
        return batch, dropped

    def flush_reports(self) -> int:
        """Send waiting fallback reports now, in as many calls as they need; returns how many were recorded.

        A worker that does not answer (or answers 5xx, 401, 403) keeps them waiting for the next flush. A
        report the server refuses as invalid (400, 413) is never retried for ever: it is counted as dropped
        (``stats["dropped"]``, logged, and the count reported with the next batch), so a bad report cannot
        hold back the ones behind it."""
        sent = 0
        limit = self.report_body_limit
        while True:
            batch, dropped = self._take_batch(limit)
            if not batch:  # a count of dropped reports travels with the next batch
                return sent
            payload: dict[str, Any] = {"fallbacks": batch}
            if dropped:
                payload["dropped"] = dropped
            try:
                status, answer = self._request("POST", "/v1/fallbacks", _encode(payload), self.report_timeout_s,
                                               self.report_urls)
            except _Unavailable:
                status, answer = 0, {}
            if status == 200:
                sent += len(batch)
                self.stats["reported"] += len(batch)
                continue
            if status in (400, 413) and len(batch) > 1:
                # too large for this server (413: remembered), or one invalid report among them: halve what one
                # call carries, and try again, down to the report that cannot be recorded
                limit = max(1, len(_encode(batch)) // 2)
                if status == 413:
                    self.report_body_limit = max(1024, limit)
                with self._lock:
                    self._reports.extendleft(reversed(batch))
                    self._dropped += dropped
                continue
            if status in (400, 413):  # this one report cannot be recorded: counted, never silently lost
                why = str((answer.get("error") or {}).get("message") or status)
                log.error("fallback report for %s refused by flowbreaker (%s): counted as dropped",
                          batch[0].get("agent_id"), why)
                with self._lock:
                    self._dropped += dropped + 1
                    self.stats["dropped"] += 1
                continue
            if status in (401, 403):
                log.error("fallback reports refused (HTTP %d): check the runtime's token and role; %d waiting",
                          status, len(self._reports) + len(batch))
            with self._lock:  # put them back, oldest first
                self._reports.extendleft(reversed(batch))
                self._dropped += dropped
            return sent

    # ------------------------------------------------------------------ approvals
    def approval(self, approval_id: str) -> dict:
        """The approval record (raises CheckError on 4xx, TimeoutError if no worker answers)."""
        try:
            status, payload = self._request("GET", "/v1/approvals/" + quote(approval_id, safe=""), None,
                                            self.report_timeout_s)
        except _Unavailable as na:
            raise TimeoutError(f"no flowbreaker worker answered ({na.cause})") from None
        if status != 200:
            err = payload.get("error") or {}
            raise CheckError(status, str(err.get("message") or f"HTTP {status}"))
        return payload

    def wait_for_approval(self, approval_id: str, timeout_s: float = 900.0, poll_s: float = 1.0) -> dict:
        """Block until the request is decided (or expired); return its record. ``state`` says which:
        ``approved`` (attach ``approval_id`` to the action and check again), ``denied`` or ``expired``.
        Raises TimeoutError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                rec = self.approval(approval_id)
                if rec.get("state") != "pending":
                    return rec
            except TimeoutError:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"approval {approval_id} still pending after {timeout_s:.0f}s")
            time.sleep(min(poll_s, left))

    def close(self) -> None:
        self._stop.set()
        for conn in getattr(self._local, "conns", {}).values():
            conn.close()
        self._local.conns = {}


def _short(value: Any, n: int) -> str | None:
    return None if value is None else str(value)[:n]
