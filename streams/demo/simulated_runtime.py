"""The reference agent runtime (``flowbreaker runtime``): simulated agents that obey freezes.

Agents take tasks from the task queue topic ``agent-tasks`` (key ``agent_id``;
value: a task as JSON, see :func:`task_to_dict`), execute them step by step and
publish one contract action event per step to ``agent-actions`` (``ts`` = now,
in the operator's zone). An embedded :class:`streams.clients.guard.FreezeGuard` is
asked before every task and before every tool call:

- a frozen agent takes no task from its queue: its tasks wait (``held``), none
  is dropped, and none starts until a ``release``;
- a freeze that lands in the middle of a task stops it before its next tool
  call: the task is ``aborted`` (the rest of its steps never run) and is not
  resumed after the release.

``--feed`` also runs a task producer: the simulator's fleet
(:mod:`models.simulate`) doing its normal work at a modest rate, with an
incident injected every so often, so a demo has traffic.

Judging this traffic: the agents work ``--speed`` times faster than the simulated
people and the feed keeps them busier than a real fleet, so a model trained on
``flowbreaker simulate``'s real-paced history sees every agent as hyperactive.
Train on this pace instead (:func:`paced_history`): ``flowbreaker runtime
--history-out H.jsonl`` with the same ``--agents --seed --rate --speed``, then
``flowbreaker train --input H.jsonl``. ``flowbreaker demo`` does that.

Every agent's counts (tasks executed, held while frozen, aborted by a freeze,
tool calls blocked) are logged as they change and printed at exit; with
``--journal FILE`` each of these moments is also a JSON line (what the demo and
the tests read).

When it works, when it fails: tasks are taken off Kafka into memory and their
offsets committed then, so a crash loses the tasks not yet started (a
reference runtime, not an orchestrator). Until the guard has read
``agent-control`` to its end no agent acts. A failed publish of an action is
retried on the next tick; the step is not counted as done until it is sent.

>>> guard = FreezeGuard()
>>> sent = []
>>> rt = Runtime(guard, sent.append, speed=1000.0)
>>> rt.submit(task_from_dict({"task_id": "t1", "agent_id": "a1", "kind": "demo", "steps": [
...     {"operator_id": "ops", "tool": "crm.query", "action": "read", "resource": "crm://x",
...      "sensitivity": "internal"}]}))
>>> _ = guard.apply({"command": "freeze", "agent_id": "a1", "incident_id": "inc-1"})
>>> rt.run_for(0.05); sent, rt.counts("a1")["held"]
([], 1)
>>> _ = guard.apply({"command": "release", "agent_id": "a1", "incident_id": "inc-1"})
>>> rt.run_for(0.05); [e["event_id"] for e in sent], rt.counts("a1")["executed"]
(['rt-t1.0'], 1)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

from detector.errors import UsageError
from streams.clients.guard import FreezeGuard
from streams.settings import Settings, SettingsError, add_kafka_arguments

__all__ = [
    "RTask", "Runtime", "Journal", "Feed", "task_to_dict", "task_from_dict", "TaskError",
    "DEFAULT_INCIDENT_KINDS", "configure_parser", "run",
]

log = logging.getLogger("flowbreaker.runtime")

DEFAULT_GROUP = "flowbreaker-runtime"
#: incidents that play out within a minute or two at demo speed (slow_drip and
#: privilege_creep take hours of simulated time)
DEFAULT_INCIDENT_KINDS = ("bulk_read_broadcast", "mass_fanout", "mass_delete", "prompt_injection",
                          "instruction_change")
_STEP_FIELDS = ("operator_id", "instruction_hash", "requested_by", "tool", "action", "resource", "sensitivity",
                "records", "bytes", "destinations", "approval_id", "parent", "delay_s")
_REQUIRED_STEP = ("operator_id", "tool", "action", "resource", "sensitivity")


# ---------------------------------------------------------------------- tasks


class TaskError(ValueError):
    """A task message that cannot be executed."""


@dataclass(frozen=True)
class RTask:
    """A task of an agent's queue: ordered steps (event fields minus ids and time)."""

    task_id: str
    agent_id: str
    kind: str
    steps: tuple[Mapping[str, Any], ...]
    utc_offset_minutes: int = 0
    zulu: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)


def task_to_dict(task) -> dict:
    """The JSON form on ``agent-tasks`` of a :class:`models.simulate.Task` (or an :class:`RTask`).

    ``{"task_id", "agent_id", "kind", "utc_offset_minutes", "zulu", "steps": [{"operator_id",
    "instruction_hash", "requested_by", "tool", "action", "resource", "sensitivity", "records",
    "bytes", "destinations", "approval_id", "parent", "delay_s"}, ...]}``; ``parent`` is the index
    of the step whose data this one carries on, ``delay_s`` the think time before the step. Fields
    that are None are left out. The simulator's ``harmful`` labels are not carried: the runtime
    does not know what is an incident.
    """
    steps = []
    for s in task.steps:
        get = (lambda k, s=s: s.get(k)) if isinstance(s, Mapping) else (lambda k, s=s: getattr(s, k, None))
        step = {}
        for k in _STEP_FIELDS:
            v = get(k)
            if v is not None:
                step[k] = list(v) if k == "destinations" else v
        steps.append(step)
    return {"task_id": task.task_id, "agent_id": task.agent_id, "kind": task.kind,
            "utc_offset_minutes": int(getattr(task, "utc_offset_minutes", 0)),
            "zulu": bool(getattr(task, "zulu", True)), "steps": steps}


def task_from_dict(d: Mapping | bytes | str) -> RTask:
    """Parse a task message; raises :class:`TaskError` naming what is wrong."""
    if isinstance(d, (bytes, str)):
        try:
            d = json.loads(d)
        except (ValueError, UnicodeDecodeError) as err:
            raise TaskError(f"not JSON: {err}") from None
    if not isinstance(d, Mapping):
        raise TaskError("a task must be a JSON object")
    for key in ("task_id", "agent_id"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise TaskError(f"{key}: required non-empty string")
    steps = d.get("steps")
    if not isinstance(steps, list) or not steps:
        raise TaskError("steps: required non-empty list")
    for i, s in enumerate(steps):
        if not isinstance(s, Mapping):
            raise TaskError(f"steps[{i}]: must be an object")
        for key in _REQUIRED_STEP:
            if not isinstance(s.get(key), str):
                raise TaskError(f"steps[{i}].{key}: required string")
        parent = s.get("parent")
        if parent is not None and not (isinstance(parent, int) and 0 <= parent < i):
            raise TaskError(f"steps[{i}].parent: must be the index of an earlier step")
    known = {"task_id", "agent_id", "kind", "steps", "utc_offset_minutes", "zulu"}
    return RTask(task_id=d["task_id"], agent_id=d["agent_id"], kind=str(d.get("kind") or "task"),
                 steps=tuple(dict(s) for s in steps), utc_offset_minutes=int(d.get("utc_offset_minutes") or 0),
                 zulu=bool(d.get("zulu", True)), extra={k: v for k, v in d.items() if k not in known})


def now_rfc3339(offset_minutes: int = 0, zulu: bool = True, at: datetime | None = None) -> str:
    """``at`` (default: now), RFC 3339 with milliseconds, in the given zone (``Z`` for UTC when ``zulu``).

    >>> now_rfc3339(120, at=datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
    '2026-03-02T11:00:00.000+02:00'
    """
    zone = timezone(timedelta(minutes=offset_minutes))
    ts = (at.astimezone(zone) if at is not None else datetime.now(zone)).isoformat(timespec="milliseconds")
    if zulu and ts.endswith("+00:00"):
        ts = ts[:-6] + "Z"
    return ts


def step_event(task: RTask, i: int, ts: str, id_prefix: str = "rt-") -> dict:
    """The contract action event of step ``i`` of ``task`` performed at ``ts``."""
    s = task.steps[i]
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"{id_prefix}{task.task_id}.{i}",
        "ts": ts,
        "agent_id": task.agent_id,
        "operator_id": s["operator_id"],
    }
    if s.get("requested_by"):
        ev["requested_by"] = s["requested_by"]
    ev["task_id"] = task.task_id
    if s.get("instruction_hash"):
        ev["instruction_hash"] = s["instruction_hash"]
    ev["tool"] = s["tool"]
    ev["action"] = s["action"]
    ev["resource"] = s["resource"]
    ev["sensitivity"] = s["sensitivity"]
    ev["records"] = int(s.get("records") or 0)
    ev["bytes"] = int(s.get("bytes") or 0)
    ev["destinations"] = list(s.get("destinations") or ())
    if s.get("approval_id") and str(s["approval_id"]).startswith("apr-"):
        # the simulator's change tickets (APR-2026-...) stand for an outside approval system that a deployment
        # cannot verify: flowbreaker refuses them (docs/api.md), so the runtime asks through the check instead
        ev["approval_id"] = s["approval_id"]
    if s.get("parent") is not None:
        ev["parent_event_id"] = f"{id_prefix}{task.task_id}.{s['parent']}"
    return ev


# ---------------------------------------------------------------------- journal


class Journal:
    """JSON lines of what the agents did and were told, for the demo and the tests.

    Every line: ``{"at": RFC 3339, "t": epoch seconds, "event": ..., "agent_id": ..., ...}``; events
    ``ready``, ``frozen``, ``released``, ``task_started``, ``task_finished``, ``task_held``,
    ``task_aborted``, ``incident_injected``, ``stats``. Thread-safe; ``path=None`` writes nothing.
    """

    def __init__(self, path: str | Path | None = None, stream: TextIO | None = None) -> None:
        self._lock = threading.Lock()
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8", buffering=1) if path else stream

    def write(self, event: str, **fields: Any) -> None:
        if self._fh is None:
            return
        t = time.time()
        line = json.dumps({"at": datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds"),
                           "t": round(t, 3), "event": event, **fields}, default=str)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None and self._fh not in (sys.stdout, sys.stderr):
                self._fh.close()
            self._fh = None


# ---------------------------------------------------------------------- the runtime


@dataclass
class _Agent:
    agent_id: str
    queue: deque = field(default_factory=deque)
    current: RTask | None = None
    step: int = 0
    due: float = 0.0
    held_ids: set = field(default_factory=set)
    awaiting: str | None = None          # approval request the current step waits for
    awaiting_since: float = 0.0
    approval_id: str | None = None       # approval granted for the current step
    counts: dict = field(default_factory=lambda: {"executed": 0, "held": 0, "aborted": 0, "blocked_calls": 0,
                                                  "events": 0, "resumed": 0})


class Runtime:
    """Simulated agents executing their queues under a :class:`FreezeGuard`.

    ``emit(event_dict)`` publishes one action event (raise to signal a failed
    publish: the step is retried). ``speed`` divides the tasks' think times;
    ``max_step_delay`` caps one wait (seconds, after dividing). ``clock`` is
    monotonic seconds; ``wallclock`` (default: the real time) stamps the events
    (a virtual clock pair makes a history offline, see :func:`paced_history`). Drive it with :meth:`tick` (or :meth:`run`); feed it with
    :meth:`submit` from any thread.
    """

    def __init__(self, guard: FreezeGuard, emit: Callable[[dict], Any], *, speed: float = 10.0,
                 max_step_delay: float = 5.0, id_prefix: str = "rt-", journal: Journal | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], datetime] | None = None, checker: Any = None,
                 approval_wait_s: float = 300.0, approval_poll_s: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.guard = guard
        self.emit = emit
        self.speed = speed
        self.max_step_delay = max_step_delay
        self.id_prefix = id_prefix
        self.journal = journal or Journal()
        self.clock = clock
        self.wallclock = wallclock  # the events' ts; None: the real time
        #: a :class:`streams.clients.check_client.CheckClient` (or alike): asked before every outbound action
        self.checker = checker
        self.approval_wait_s = approval_wait_s
        self.approval_poll_s = approval_poll_s
        self.agents: dict[str, _Agent] = {}
        self._inbox: deque[RTask] = deque()  # appended by any thread, drained by the tick thread
        self._wake = threading.Event()
        guard.add_listener(self._on_guard_change)

    # ----------------------------------------------------------------- input

    def submit(self, task: RTask) -> None:
        """Queue ``task`` for its agent (thread-safe)."""
        self._inbox.append(task)
        self._wake.set()

    def _on_guard_change(self, command: dict, frozen: bool) -> None:
        agent = command["agent_id"]
        a = self.agents.get(agent)
        waiting = len(a.queue) if a else 0
        if frozen:
            log.warning("agent %s FROZEN (incident %s, by %s): stops taking tasks; reason: %s", agent,
                        command.get("incident_id"), command.get("issued_by"), command.get("reason"))
            self.journal.write("frozen", agent_id=agent, incident_id=command.get("incident_id"),
                               reason=command.get("reason"), issued_by=command.get("issued_by"),
                               issued_at=command.get("issued_at"))
        else:
            log.warning("agent %s RELEASED by %s (incident %s): resumes, %d tasks waiting", agent,
                        command.get("issued_by"), command.get("incident_id"), waiting)
            self.journal.write("released", agent_id=agent, incident_id=command.get("incident_id"),
                               reason=command.get("reason"), issued_by=command.get("issued_by"), waiting=waiting)
        self._wake.set()

    # ----------------------------------------------------------------- scheduling

    def _delay(self, task: RTask, i: int) -> float:
        d = float(task.steps[i].get("delay_s") or 0.0) / self.speed
        return min(max(0.0, d), self.max_step_delay)

    def tick(self, now: float | None = None) -> float:
        """Advance every agent whose next move is due; return when the next one is due."""
        now = self.clock() if now is None else now
        while self._inbox:
            task = self._inbox.popleft()
            a = self.agents.get(task.agent_id)
            if a is None:
                a = self.agents[task.agent_id] = _Agent(task.agent_id)
            a.queue.append(task)
        next_due = now + 0.25
        for a in self.agents.values():
            self._advance(a, now)
            if a.current is not None:
                next_due = min(next_due, a.due)
        return next_due

    def _advance(self, a: _Agent, now: float) -> None:
        may = self.guard.may_proceed
        if a.current is None:
            if not a.queue:
                return
            if not may(a.agent_id):  # before every task
                for t in a.queue:
                    if t.task_id not in a.held_ids:
                        a.held_ids.add(t.task_id)
                        a.counts["held"] += 1
                        log.info("agent %s frozen: holds task %s (%s); %d held so far", a.agent_id, t.task_id,
                                 t.kind, a.counts["held"])
                        self.journal.write("task_held", agent_id=a.agent_id, task_id=t.task_id, kind=t.kind,
                                           held=a.counts["held"])
                return
            task = a.queue.popleft()
            resumed = task.task_id in a.held_ids
            if resumed:
                a.held_ids.discard(task.task_id)
                a.counts["resumed"] += 1
            a.current, a.step, a.due = task, 0, now + self._delay(task, 0)
            log.info("agent %s takes task %s (%s, %d steps)%s", a.agent_id, task.task_id, task.kind,
                     len(task.steps), " after its release" if resumed else "")
            self.journal.write("task_started", agent_id=a.agent_id, task_id=task.task_id, kind=task.kind,
                               steps=len(task.steps), resumed=resumed)
        task = a.current
        if now < a.due:
            return
        if not may(a.agent_id):  # before every tool call
            a.counts["blocked_calls"] += 1
            a.counts["aborted"] += 1
            log.warning("agent %s frozen mid-task: task %s (%s) aborted before step %d/%d", a.agent_id,
                        task.task_id, task.kind, a.step + 1, len(task.steps))
            self.journal.write("task_aborted", agent_id=a.agent_id, task_id=task.task_id, kind=task.kind,
                               step=a.step, steps=len(task.steps))
            a.current, a.awaiting, a.approval_id = None, None, None
            return
        tz = task.utc_offset_minutes
        at = self.wallclock() if self.wallclock is not None else None
        event = step_event(task, a.step, now_rfc3339(tz, task.zulu, at), self.id_prefix)
        if self.checker is not None and (event["action"] == "send" or event["destinations"]):
            if not self._gate(a, task, event, now):
                return
        try:
            self.emit(event)
        except Exception as err:  # publish failed (buffer full, broker away): retry this step shortly
            log.warning("agent %s: publishing %s failed (%r); retrying", a.agent_id, event["event_id"], err)
            a.due = now + 0.5
            return
        a.counts["events"] += 1
        a.step += 1
        a.approval_id = None
        if a.step >= len(task.steps):
            a.counts["executed"] += 1
            self.journal.write("task_finished", agent_id=a.agent_id, task_id=task.task_id, kind=task.kind,
                               steps=len(task.steps))
            a.current = None
        else:
            a.due = now + self._delay(task, a.step)

    def _end_task(self, a: _Agent, task: RTask, event: str, **fields: Any) -> None:
        a.counts["refused"] = a.counts.get("refused", 0) + 1
        self.journal.write(event, agent_id=a.agent_id, task_id=task.task_id, kind=task.kind, step=a.step,
                           steps=len(task.steps), **fields)
        a.current, a.awaiting, a.approval_id = None, None, None

    def _gate(self, a: _Agent, task: RTask, event: dict, now: float) -> bool:
        """The pre-action check of an outbound step: True to perform it now. On ``needs_approval`` the
        step is held (not published) and waits for the approval, polled every ``approval_poll_s``;
        denied, expired or undecided after ``approval_wait_s``: the task is abandoned."""
        from streams.clients.check_client import CheckError

        if a.awaiting is not None:
            try:
                rec = self.checker.approval(a.awaiting)
            except (TimeoutError, CheckError) as err:
                rec = {"state": "pending"}
                log.warning("agent %s: approval %s status unknown (%s)", a.agent_id, a.awaiting, err)
            state = rec.get("state")
            if state == "pending":
                if now - a.awaiting_since > self.approval_wait_s:
                    log.warning("agent %s: approval %s undecided after %.0f s: task %s abandoned", a.agent_id,
                                a.awaiting, self.approval_wait_s, task.task_id)
                    self._end_task(a, task, "action_refused", approval_id=a.awaiting, state="undecided",
                                   event_id=event["event_id"])
                else:
                    a.due = now + self.approval_poll_s
                return False
            if state != "approved":
                log.warning("agent %s: approval %s %s: task %s abandoned, the action never ran", a.agent_id,
                            a.awaiting, state, task.task_id)
                self._end_task(a, task, "action_refused", approval_id=a.awaiting, state=state,
                               by=rec.get("decided_by"), reason=rec.get("decision_reason"),
                               event_id=event["event_id"])
                return False
            log.warning("agent %s: approval %s granted by %s: performing %s", a.agent_id, a.awaiting,
                        rec.get("decided_by"), event["event_id"])
            self.journal.write("approval_granted", agent_id=a.agent_id, task_id=task.task_id,
                               approval_id=a.awaiting, by=rec.get("decided_by"), reason=rec.get("decision_reason"),
                               valid_until=rec.get("valid_until"), event_id=event["event_id"])
            a.approval_id, a.awaiting = a.awaiting, None
        if a.approval_id is not None and not event.get("approval_id"):
            event["approval_id"] = a.approval_id
        try:
            res = self.checker.check(event)
        except CheckError as err:  # misconfigured (token, role) or invalid: do not act unchecked
            log.error("agent %s: the pre-action check refused the request (%s): task %s abandoned", a.agent_id,
                      err, task.task_id)
            self._end_task(a, task, "action_denied", reasons=[str(err)], event_id=event["event_id"])
            return False
        if res.verdict == "allow":
            return True
        if res.verdict == "needs_approval" and res.approval_request_id:
            a.awaiting, a.awaiting_since, a.due = res.approval_request_id, now, now + self.approval_poll_s
            log.warning("agent %s: %s %s held for approval %s: %s", a.agent_id, event["action"], event["tool"],
                        res.approval_request_id, "; ".join(res.reasons))
            self.journal.write("action_held", agent_id=a.agent_id, task_id=task.task_id, kind=task.kind,
                               approval_id=res.approval_request_id, event_id=event["event_id"],
                               tool=event["tool"], action=event["action"], resource=event["resource"],
                               sensitivity=event["sensitivity"], records=event["records"],
                               destinations=event["destinations"][:3],
                               destination_count=len(event["destinations"]), reasons=res.reasons,
                               score=res.score)
            return False
        log.warning("agent %s: %s %s denied by the pre-action check (%s): task %s abandoned", a.agent_id,
                    event["action"], event["tool"], "; ".join(res.reasons), task.task_id)
        self._end_task(a, task, "action_denied", reasons=res.reasons, event_id=event["event_id"],
                       approval_rejected=res.approval_rejected)
        return False

    def run(self, stop: threading.Event, until: float | None = None) -> None:
        """Tick until ``stop`` is set (or monotonic time ``until``)."""
        while not stop.is_set():
            now = self.clock()
            if until is not None and now >= until:
                return
            wait = min(max(0.0, self.tick(now) - self.clock()), 0.25)
            self._wake.wait(wait)
            self._wake.clear()

    def run_for(self, seconds: float) -> None:
        """Tick for ``seconds`` of the clock (tests, examples)."""
        self.run(threading.Event(), until=self.clock() + seconds)

    # ----------------------------------------------------------------- counts

    def counts(self, agent_id: str) -> dict:
        a = self.agents.get(agent_id)
        return dict(a.counts) if a else dict(_Agent(agent_id).counts)

    def stats(self) -> dict[str, dict]:
        """Per agent: executed, held (tasks not taken while frozen), aborted (stopped mid-task by a
        freeze), blocked_calls, events, resumed (held tasks taken after a release), queued, frozen."""
        out = {}
        for agent_id, a in sorted(self.agents.items()):
            out[agent_id] = dict(a.counts, queued=len(a.queue), frozen=self.guard.is_frozen(agent_id),
                                 awaiting=a.awaiting)
        return out

    #: what the columns of :meth:`format_stats` count, printed under the table
    STATS_LEGEND = (
        "tasks: executed = run to the end, held = kept waiting while the agent was frozen, aborted = cut off by a",
        "freeze, resumed = held tasks run after a release, queued = waiting now; blocked = tool calls refused while",
        "frozen. state at the end: FROZEN, WAITING apr-... (an action held for an approval nobody has decided; the",
        "agent takes no other task meanwhile) or ok.",
    )

    def format_stats(self) -> str:
        """One line per agent, then :data:`STATS_LEGEND` (under 120 columns)."""
        stats = self.stats()
        head = f"{'agent':<24} {'executed':>8} {'held':>6} {'aborted':>7} {'blocked':>7} {'resumed':>7} " \
               f"{'queued':>6}  state"
        lines = [head]
        for agent_id, s in stats.items():
            lines.append(f"{agent_id:<24} {s['executed']:>8} {s['held']:>6} {s['aborted']:>7} "
                         f"{s['blocked_calls']:>7} {s['resumed']:>7} {s['queued']:>6}  "
                         f"{_state(s)}")
        return "\n".join(lines + list(self.STATS_LEGEND))


def _state(s: Mapping) -> str:
    """An agent's state at the end, for :meth:`Runtime.format_stats`: frozen first, then an undecided approval.

    >>> _state({"frozen": True, "awaiting": "apr-1"}), _state({"frozen": False, "awaiting": "apr-1"})
    ('FROZEN', 'WAITING apr-1')
    >>> _state({"frozen": False, "awaiting": None})
    'ok'
    """
    if s.get("frozen"):
        return "FROZEN"
    return f"WAITING {s['awaiting']}" if s.get("awaiting") else "ok"


# ---------------------------------------------------------------------- the task feed


class Feed:
    """Produces the simulated fleet's tasks at ``rate`` per second, with an incident every
    ``incident_every`` seconds (the first after ``incident_after``; 0 = never).

    ``send(task_dict)`` publishes one task. Deterministic in ``seed`` and ``stream`` apart from
    timing (a history uses another ``stream`` than the live feed, so task ids differ).
    ``due(now, at)`` returns the tasks due by monotonic time ``now`` (``at``: the instant they are
    made for); ``run(stop)`` sends them in real time.
    """

    def __init__(self, send: Callable[[dict], Any] | None = None, *, n_agents: int = 12, seed: int = 0,
                 rate: float = 2.0, incident_every: float = 60.0, incident_after: float | None = None,
                 kinds: Sequence[str] = DEFAULT_INCIDENT_KINDS, journal: Journal | None = None,
                 clock: Callable[[], float] = time.monotonic, stream: str = "live",
                 export_every: float = 0.0, export_after: float | None = None) -> None:
        from models.simulate import INCIDENT_KINDS, Fleet

        bad = [k for k in kinds if k not in INCIDENT_KINDS]
        if bad:
            raise ValueError(f"unknown incident kind {bad[0]!r}; known: {', '.join(INCIDENT_KINDS)}")
        if rate <= 0:
            raise ValueError("the feed rate must be > 0")
        self.fleet = Fleet.make(n_agents=n_agents, seed=seed)
        self.agents = list(self.fleet.agents)
        self.send = send
        self.rate = rate
        self.incident_every = incident_every
        self.incident_after = incident_every if incident_after is None else incident_after
        self.kinds = list(kinds)
        self.rng = random.Random(f"flowbreaker-feed/{seed}/{stream}")
        self.journal = journal or Journal()
        self.clock = clock
        self.sent = 0
        self.incidents = 0
        self._next_task: float | None = None
        self._next_incident = float("inf")
        #: a legitimate export (a send that needs an analyst's approval) every ``export_every`` s
        self.export_every = export_every
        self.export_after = export_every if export_after is None else export_after
        self.exports = 0
        self._next_export = float("inf")

    def normal(self, at: datetime | None = None) -> dict:
        agent = self.rng.choices(self.agents, weights=[a.activity for a in self.agents])[0]
        task = self.fleet.normal_task(agent, at or datetime.now(timezone.utc), self.rng)
        return task_to_dict(task)

    def export(self, agent_id: str | None = None, at: datetime | None = None) -> dict:
        """A legitimate export: confidential records the agent reads every day, sent to an external auditor
        it never wrote to (the kind of send the pre-action check holds for an analyst)."""
        from models.simulate.roles import record_source
        from models.simulate.roles import send_tool as role_send_tool

        at = at or datetime.now(timezone.utc)
        if agent_id is not None:
            agent = next(a for a in self.agents if a.agent_id == agent_id)
        else:
            agent = self.rng.choice(self.agents)
        base = task_to_dict(self.fleet.normal_task(agent, at, self.rng))
        first = base["steps"][0]
        # a few confidential records, as the agent reads them every day: only the send is unusual
        tool, res, sens, per = record_source(self.fleet, agent, self.rng)
        n = self.rng.randint(2, 5)
        common = {k: first[k] for k in ("operator_id", "requested_by", "instruction_hash") if first.get(k)}
        send_tool = role_send_tool(agent)
        dest = (f"http:https://upload.external-audit.example/exports/{self.rng.randint(1000, 9999)}"
                if send_tool == "http.post" else f"email:exports{self.rng.randint(10, 99)}@external-audit.example")
        steps = [dict(common, tool=tool, action="read", resource=res, sensitivity=sens, records=n,
                      bytes=n * per, delay_s=2.0),
                 dict(common, tool=send_tool, action="send", resource=dest, sensitivity=sens,
                      records=n, bytes=n * per // 2, destinations=[dest], parent=0, delay_s=5.0)]
        self.exports += 1
        return dict(base, task_id=f"export-{base['task_id']}", kind="approved_export", steps=steps)

    def incident(self, kind: str | None = None, agent_id: str | None = None, at: datetime | None = None) -> dict:
        kind = kind or self.kinds[self.incidents % len(self.kinds)]
        if agent_id is not None:
            agent = next(a for a in self.agents if a.agent_id == agent_id)
        else:
            from models.simulate.incidents import INCIDENT_ROLES  # the simulator's staging, one table

            roles = INCIDENT_ROLES.get(kind, ())  # any agent when none of those roles is in the fleet
            fits = [a for a in self.agents if a.role in roles] or self.agents
            agent = self.rng.choice(fits)
        task = self.fleet.incident_task(kind, agent, at or datetime.now(timezone.utc), self.rng)
        if kind == "instruction_change":  # the new configuration stays for the agent's later tasks
            new_hash = task.steps[0].instruction_hash
            self.agents = [dataclasses.replace(a, instruction_hash=new_hash) if a.agent_id == agent.agent_id else a
                           for a in self.agents]
        self.incidents += 1
        return task_to_dict(task)

    def next_due(self) -> float:
        """Monotonic time of the next task (after the first call of :meth:`due`)."""
        return min(self._next_task if self._next_task is not None else 0.0, self._next_incident,
                   self._next_export)

    def due(self, now: float, at: datetime | None = None) -> list[dict]:
        """The tasks (incidents first) due by ``now``; the first call starts the schedule."""
        if self._next_task is None:
            self._next_task = now
            self._next_incident = now + self.incident_after if self.incident_every > 0 else float("inf")
            self._next_export = now + self.export_after if self.export_every > 0 else float("inf")
        out = []
        if now >= self._next_export:
            self._next_export = now + self.export_every
            task = self.export(at=at)
            task["_export"] = True
            out.append(task)
        if now >= self._next_incident:
            self._next_incident = now + self.incident_every
            task = self.incident(at=at)
            task["_incident"] = True
            out.append(task)
        while now >= self._next_task:
            out.append(self.normal(at))
            self._next_task += self.rng.expovariate(self.rate)
            if self._next_task < now - 1.0:  # fell behind (paused): do not burst
                self._next_task = now
        return out

    def run(self, stop: threading.Event) -> None:
        """Send the due tasks in real time until ``stop`` is set."""
        while not stop.is_set():
            for task in self.due(self.clock()):
                if task.pop("_incident", False):
                    log.warning("feed: injected incident %s on %s (task %s)", task["kind"], task["agent_id"],
                                task["task_id"])
                    self.journal.write("incident_injected", agent_id=task["agent_id"], task_id=task["task_id"],
                                       kind=task["kind"], steps=len(task["steps"]))
                if task.pop("_export", False):
                    log.warning("feed: legitimate export by %s (task %s)", task["agent_id"], task["task_id"])
                    self.journal.write("export_injected", agent_id=task["agent_id"], task_id=task["task_id"],
                                       records=task["steps"][0]["records"],
                                       destination=task["steps"][1]["destinations"][0])
                self.send(task)
                self.sent += 1
            stop.wait(max(0.0, self.next_due() - self.clock()))


def paced_history(*, n_agents: int, seed: int, rate: float, speed: float, seconds: float, end: datetime,
                  sessions: int = 1, session_every: float = 3 * 3600.0, max_step_delay: float = 5.0,
                  id_prefix: str = "hist-") -> list[dict]:
    """The action events the fleet would produce at this pace (``rate``, ``speed``), without
    incidents: a training history for a model that has to judge the runtime's traffic (whose
    rates per minute depend on the pace, not on the simulated people).

    ``sessions`` runs of ``seconds`` each, the last one ending at ``end``, their starts
    ``session_every`` seconds apart; each starts cold (empty queues, the agents idle for hours
    before), as a live runtime does, and together they cover the hours of the day. Runs the same
    :class:`Feed` and :class:`Runtime` code on a virtual clock, without Kafka (about half a second
    per simulated hour of 24 agents). Events are in time order.

    >>> evs = paced_history(n_agents=5, seed=0, rate=1.0, speed=10.0, seconds=60, sessions=2,
    ...                     end=datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc))
    >>> instants = [datetime.fromisoformat(e["ts"].replace("Z", "+00:00")) for e in evs]
    >>> len(evs) > 40, instants == sorted(instants), str(instants[-1] <= datetime(2026, 3, 2, 12, tzinfo=timezone.utc))
    (True, True, 'True')
    """
    if sessions < 1 or seconds <= 0 or (sessions > 1 and session_every < seconds):
        raise ValueError("need sessions >= 1, seconds > 0 and session_every >= seconds")
    events: list[dict] = []
    feed = None
    for k in reversed(range(sessions)):
        start = end - timedelta(seconds=seconds + k * session_every)
        now = [0.0]
        runtime = Runtime(FreezeGuard(), events.append, speed=speed, max_step_delay=max_step_delay,
                          id_prefix=id_prefix, clock=lambda: now[0],
                          wallclock=lambda start=start: start + timedelta(seconds=now[0]))
        if feed is None:
            feed = Feed(n_agents=n_agents, seed=seed, rate=rate, incident_every=0, stream="history")
        feed._next_task = None  # a new session: the schedule starts again at its start
        while now[0] < seconds:
            for task in feed.due(now[0], start + timedelta(seconds=now[0])):
                runtime.submit(task_from_dict(task))
            wake = runtime.tick(now[0])
            now[0] = max(now[0] + 1e-3, min(wake, feed.next_due(), seconds))
    return events


# ---------------------------------------------------------------------- Kafka plumbing


def _consume_tasks(settings, group: str, runtime: Runtime, stop: threading.Event, ready: threading.Event) -> None:
    from streams.kafka_admin import group_consumer

    consumer = group_consumer(settings, settings.topic("tasks"), group=group, client_id="flowbreaker-runtime",
                              enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=200)
    from kafka.errors import CommitFailedError, RebalanceInProgressError

    bad = 0
    uncommitted = False
    try:
        while not stop.is_set():
            batches = consumer.poll(timeout_ms=200)
            if not ready.is_set() and consumer.assignment():
                ready.set()
            for records in batches.values():
                for rec in records:
                    try:
                        runtime.submit(task_from_dict(rec.value))
                    except TaskError as err:
                        bad += 1
                        log.error("skipping a bad task at %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, err)
            uncommitted = uncommitted or bool(batches)
            if uncommitted:
                try:
                    consumer.commit()  # taken into memory: see the module doc
                    uncommitted = False
                except (CommitFailedError, RebalanceInProgressError) as err:
                    # a rebalance under way: commit again after the next poll (the group's join completes there)
                    log.warning("commit of the tasks taken deferred: %s", err)
    finally:
        consumer.close(autocommit=False)
        if bad:
            log.warning("%d bad task messages skipped", bad)


def _write_history(args: argparse.Namespace) -> int:
    events = paced_history(n_agents=args.agents, seed=args.seed, rate=args.rate, speed=args.speed,
                           seconds=args.history_minutes * 60, sessions=args.history_sessions,
                           session_every=args.history_every * 3600, max_step_delay=args.max_step_delay,
                           end=datetime.now(timezone.utc))
    try:
        Path(args.history_out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.history_out, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
    except OSError as err:
        raise UsageError(f"cannot write {args.history_out}: {err.strerror}") from None
    print(f"runtime: {len(events)} actions of {args.agents} agents at {args.rate:g} tasks/s, speed x{args.speed:g} "
          f"({args.history_sessions} sessions of {args.history_minutes:g} min) -> {args.history_out}",
          file=sys.stderr)
    return 0


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group", default=None,
                   help=f"consumer group on the task queue (default: the topic prefix + {DEFAULT_GROUP})")
    p.add_argument("--speed", type=float, default=10.0,
                   help="divide the tasks' think times by this (default %(default)s)")
    p.add_argument("--max-step-delay", type=float, default=5.0,
                   help="longest wait between two steps, seconds (default %(default)s)")
    p.add_argument("--event-prefix", default="rt-", help="prefix of the action events' ids (default %(default)s)")
    p.add_argument("--journal", type=Path, help="append JSON lines of task starts/holds/aborts, freezes, releases")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until signalled)")
    p.add_argument("--stats-every", type=float, default=30.0,
                   help="log the per-agent counts this often, seconds (0 = only at exit)")
    p.add_argument("--guard-max-staleness", type=float, default=None, metavar="SECONDS",
                   help="hold every agent when agent-control was not confirmed current for this long "
                        "(default 5)")
    feed = p.add_argument_group("task feed (simulated fleet)")
    feed.add_argument("--feed", action="store_true", help="also produce the simulated fleet's tasks")
    feed.add_argument("--agents", type=int, default=12, help="fleet size (default %(default)s)")
    feed.add_argument("--seed", type=int, default=0, help="fleet seed (default %(default)s)")
    feed.add_argument("--rate", type=float, default=2.0, help="normal tasks per second (default %(default)s)")
    feed.add_argument("--incident-every", type=float, default=60.0,
                      help="seconds between injected incidents (0 = none; default %(default)s)")
    feed.add_argument("--incident-after", type=float, default=None,
                      help="seconds before the first incident (default: --incident-every)")
    feed.add_argument("--incidents", default=",".join(DEFAULT_INCIDENT_KINDS),
                      help="comma list of incident kinds to cycle through (default %(default)s)")
    feed.add_argument("--export-every", type=float, default=0.0,
                      help="seconds between legitimate exports that need an approval (0 = none)")
    feed.add_argument("--export-after", type=float, default=None,
                      help="seconds before the first export (default: --export-every)")
    chk = p.add_argument_group("pre-action check (docs/api.md)")
    chk.add_argument("--check-url", action="append", default=[], metavar="URL",
                     help="a worker's API: check every outbound action there first (repeat for more workers)")
    chk.add_argument("--check-token-file", type=Path, metavar="FILE",
                     help="the runtime's bearer token (default env FLOWBREAKER_RUNTIME_TOKEN)")
    chk.add_argument("--approval-wait", type=float, default=300.0,
                     help="seconds a held action waits for its approval before the task is abandoned (default 300)")
    hist = p.add_argument_group("training history at this pace (no Kafka)")
    hist.add_argument("--history-out", type=Path, metavar="FILE.jsonl",
                      help="only write the actions the fleet makes at this pace (--agents, --seed, --rate, --speed) "
                           "without incidents, for `flowbreaker train`, and exit")
    hist.add_argument("--history-sessions", type=int, default=12, help="cold-started sessions (default 12)")
    hist.add_argument("--history-minutes", type=float, default=20.0, help="minutes per session (default 20)")
    hist.add_argument("--history-every", type=float, default=6.0, help="hours between sessions (default 6)")
    add_kafka_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_args(args)
        if args.speed <= 0 or args.max_step_delay < 0:
            raise UsageError("--speed must be > 0 and --max-step-delay >= 0")
        if args.feed and (args.agents < 1 or args.rate <= 0):
            raise UsageError("--agents must be >= 1 and --rate > 0")
        kinds = [k.strip() for k in args.incidents.split(",") if k.strip()]
        from models.simulate import INCIDENT_KINDS

        bad = [k for k in kinds if k not in INCIDENT_KINDS]
        if bad:
            raise UsageError(f"unknown incident kind {bad[0]!r}; known: {', '.join(INCIDENT_KINDS)}")
        if args.history_out is not None and (args.history_sessions < 1 or args.history_minutes <= 0
                                             or args.history_every * 60 < args.history_minutes):
            raise UsageError("--history-sessions >= 1, --history-minutes > 0, --history-every >= one session")
    except SettingsError as err:
        raise UsageError(str(err)) from None
    if args.history_out is not None:
        return _write_history(args)
    try:
        from streams.clients.signing import keyring_for

        keys = keyring_for(settings)  # the guard verifies releases (streams/clients/signing.py)
    except SettingsError as err:
        raise UsageError(str(err)) from None
    if keys is None:
        raise UsageError("no command signing keys: the freeze guard verifies releases with them (--signing-keys "
                         "FILE or FLOWBREAKER_SIGNING_KEYS: the workers' key file)")
    checker = None
    if args.check_url:
        import os

        from streams.clients.check_client import CheckClient

        if args.check_token_file is not None:
            try:
                token = args.check_token_file.read_text().strip()
            except OSError as err:
                raise UsageError(f"cannot read {args.check_token_file}: {err.strerror}") from None
        else:
            token = os.environ.get("FLOWBREAKER_RUNTIME_TOKEN", "").strip()
        if not token:
            raise UsageError("--check-url needs a token (--check-token-file or FLOWBREAKER_RUNTIME_TOKEN)")
        checker = CheckClient(args.check_url, token, timeout_s=1.0)
    from kafka import KafkaProducer

    from streams.kafka_admin import ensure_topics

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    ensure_topics(settings, topics=["actions", "control", "tasks"], timeout_s=60.0)  # KafkaUnavailable: exit 1
    topics = settings.topics()
    journal = Journal(args.journal)
    producer = KafkaProducer(client_id="flowbreaker-runtime", linger_ms=5, max_block_ms=10000,
                             **settings.kafka_python_config())

    def send_action(ev: dict) -> None:
        producer.send(topics["actions"], key=ev["agent_id"].encode(), value=json.dumps(ev).encode())

    def send_task(task: dict) -> None:
        producer.send(topics["tasks"], key=task["agent_id"].encode(), value=json.dumps(task).encode())

    feed = None
    if args.feed:
        feed = Feed(send_task, n_agents=args.agents, seed=args.seed, rate=args.rate,
                    incident_every=args.incident_every, incident_after=args.incident_after, kinds=kinds,
                    journal=journal, export_every=args.export_every, export_after=args.export_after)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %d: stopping", signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    group = args.group or settings.topic_prefix + DEFAULT_GROUP
    guard = FreezeGuard(settings.bootstrap, keys=keys, topic=topics["control"],
                        client_id="flowbreaker-runtime-guard", max_staleness_s=args.guard_max_staleness,
                        consumer_config=settings.kafka_python_config())
    # the guard acknowledges the commands it enacts on agent-control-acks (streams/clients/acks.py; flowbreaker drill)
    import os

    from streams.clients.acks import GuardAcker

    acker = GuardAcker(settings, by=f"runtime:{os.uname().nodename}:{os.getpid()}").attach(guard)
    runtime = Runtime(guard, send_action, speed=args.speed, max_step_delay=args.max_step_delay,
                      id_prefix=args.event_prefix, journal=journal, checker=checker,
                      approval_wait_s=args.approval_wait)
    threads: list[threading.Thread] = []
    started = time.monotonic()
    code = 0
    try:
        guard.start()
        while True:
            try:
                if guard.wait_ready(1.0):
                    break
            except RuntimeError as err:  # the follower died before catching up
                log.error("%s", err)
                return 1
            if stop.is_set():
                return 0
            log.info("waiting for the freeze guard to read %s", topics["control"])
        consuming = threading.Event()
        threads.append(threading.Thread(target=_consume_tasks, args=(settings, group, runtime, stop, consuming),
                                        name="runtime-tasks", daemon=True))
        if feed is not None:
            threads.append(threading.Thread(target=feed.run, args=(stop,), name="runtime-feed", daemon=True))
        for t in threads:
            t.start()
        if not consuming.wait(30.0):
            log.warning("no partition of %s assigned after 30 s (more runtimes in group %s than partitions?); "
                        "taking tasks once one is", topics["tasks"], group)
        frozen = guard.frozen()
        log.info("runtime ready: guard caught up (%d frozen: %s), taking tasks from %s%s", len(frozen),
                 ", ".join(sorted(frozen)) or "none", topics["tasks"], ", feeding tasks" if feed else "")
        journal.write("ready", frozen=sorted(frozen))
        until = started + args.duration if args.duration > 0 else None
        next_stats = time.monotonic() + args.stats_every if args.stats_every > 0 else float("inf")
        while not stop.is_set():
            now = time.monotonic()
            if until is not None and now >= until:
                break
            if guard.error is not None:  # following nothing any more: acting on a stale frozen set is unsafe
                log.error("the freeze guard stopped (%r): stopping the agents", guard.error)
                code = 1
                break
            runtime.run(stop, until=min(until or float("inf"), next_stats, now + 1.0))
            if time.monotonic() >= next_stats:
                next_stats += args.stats_every
                log.info("per-agent counts:\n%s", runtime.format_stats())
    finally:
        stop.set()
        for t in threads:
            t.join(10.0)
        guard.stop()
        acker.close()
        if checker is not None:
            checker.close()
        producer.flush(10.0)
        producer.close(timeout=10.0)
        for s, handler in previous.items():
            signal.signal(s, handler)
        stats = runtime.stats()
        journal.write("stats", agents=stats, fed=feed.sent if feed else 0)
        journal.close()
        print(f"runtime: {sum(s['executed'] for s in stats.values())} tasks executed by {len(stats)} agents in "
              f"{time.monotonic() - started:.0f} s" + (f"; {feed.sent} tasks fed, {feed.incidents} incidents"
                                                      if feed else ""))
        print(runtime.format_stats())
        sys.stdout.flush()
    return code
