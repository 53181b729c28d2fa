"""``flowbreaker demo``: the live demo, one command.

It starts what is not running yet, in order, and stops at the end only what it
started, each by its own pid:

1. Kafka (``scripts/kafka.sh start``) when nothing answers on ``--bootstrap``
   (a 127.0.0.1 address), with its data under ``--workdir``;
2. the topics (:func:`streams.kafka_admin.ensure_topics`);
3. a model of the simulated fleet's normal work at the demo's pace (the runtime's
   own code on a virtual clock, :func:`streams.demo.simulated_runtime.paced_history`, then
   ``flowbreaker train``; a few seconds);
4. one worker (``flowbreaker worker`` with ``examples/policy.toml`` and that
   model), unless the worker group already has members;
5. the actuator (log sink, plus ``--webhook`` if given), unless its group has members;
6. the reference runtime with its task feed (the same simulated fleet working,
   an incident injected every ``--incident-every`` seconds), unless its group has members;
   when the demo started the worker, the runtime asks it (``POST /v1/check``) before
   every outbound action: a ``needs_approval`` action is held, not performed, until
   an analyst decides, and the feed adds a legitimate export every
   ``--export-every`` seconds so there is something to approve. The demo makes
   its own analyst and runtime tokens (``--workdir``/api/*.token, mode 600; the
   worker gets only their hashes) and prints, for every held action, the
   ``flowbreaker approvals approve ID --reason ...`` command to run;
7. Prometheus (``scripts/prometheus.sh start``) when that script exists, unless
   ``--no-prometheus`` or one is running already.

Every run starts clean unless ``--keep`` (or ``FLOWBREAKER_DEMO_KEEP=1``) says to
go on from the last one: the broker it starts gets an empty data dir (the last
run's topics, freezes, approvals and worker state are deleted first); on a broker
that was already running, which is not the demo's to empty, the run uses topics
of its own (``demo-RUN-``, unless ``--topic-prefix`` names them). The simulated
runtime's event ids carry the run's id, since its task feed repeats (one seed),
so no id is ever used twice.

Then it shows what a SOC wants to see: throughput, alerts as they happen with
their top reason, every freeze with the incident's trace summary (trigger,
attribution, last actions), which agents are frozen and that they stopped
(tasks held, no action since the freeze). Ctrl-C (or ``--duration``) ends it.

When it fails: a component that does not come up within its timeout stops the
demo (exit 1) after what was started is stopped again; the component's log is
under ``--workdir`` (default ``var/demo``). Prometheus is optional: if it cannot
start, the demo goes on without it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Callable

from detector.errors import UsageError
from detector.timestamps import clock_utc
from streams.settings import Settings, add_kafka_arguments
from streams.demo.mcp_agent import start as start_mcp_agent  # one agent through the MCP gateway (issue 19)

__all__ = ["configure_parser", "run", "SocView"]

REPO_DIR = Path(__file__).resolve().parents[2]  # streams/demo/live.py -> the repository
KAFKA_SH = REPO_DIR / "scripts" / "kafka.sh"
PROMETHEUS_SH = REPO_DIR / "scripts" / "prometheus.sh"
POLICY = REPO_DIR / "examples" / "policy.toml"
#: the training history: cold-started sessions at the demo's pace, spread over the hours of three days
HISTORY_SESSIONS, HISTORY_SESSION_S, HISTORY_EVERY_S = 12, 20 * 60.0, 6 * 3600.0
#: run a sub-command of this checkout with this interpreter (``python -m streams.cli.main`` would load the CLI twice)
CLI = [sys.executable, "-c", "import sys; from streams.cli.main import main; sys.exit(main())"]


class DemoError(RuntimeError):
    """A component did not come up: the message says which and where its log is."""


# ---------------------------------------------------------------------- processes


@dataclass
class Child:
    """A process the demo started: stopped by its own pid (SIGTERM, then SIGKILL)."""

    name: str
    proc: subprocess.Popen
    out: Path
    err: Path
    stop_timeout: float = 20.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stdout(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.err.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        return self.proc.returncode


def spawn(name: str, args: list[str], logdir: Path, *, env: dict | None = None, stop_timeout: float = 20.0) -> Child:
    """Start ``args`` in its own session (a Ctrl-C in the terminal reaches only the demo, which then
    stops its children in order), output to ``logdir/<name>.out|.err``."""
    logdir.mkdir(parents=True, exist_ok=True)
    out, err = logdir / f"{name}.out", logdir / f"{name}.err"
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    full_env["PYTHONPATH"] = str(REPO_DIR) + os.pathsep + full_env.get("PYTHONPATH", "")
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(args, cwd=REPO_DIR, env=full_env, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                                start_new_session=True)
    return Child(name, proc, out, err, stop_timeout)


def _short_path(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (shorter lines), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _script(path: Path, *args: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(path), *args], cwd=REPO_DIR, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, start_new_session=True)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kafka_answers(settings: Settings, timeout_s: float = 3.0) -> bool:
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(client_id="flowbreaker-demo", request_timeout_ms=int(timeout_s * 1000),
                                 bootstrap_timeout_ms=int(timeout_s * 1000), **settings.kafka_python_config())
    except Exception:  # noqa: BLE001 - any failure means: not answering
        return False
    try:
        admin.list_topics()
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        admin.close()


def _group_active(settings: Settings, group: str) -> bool:
    """True if consumer group ``group`` has members (the component runs somewhere)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(client_id="flowbreaker-demo", request_timeout_ms=10000,
                             **settings.kafka_python_config())
    try:
        info = admin.describe_groups([group]).get(group) or {}
        return bool(info.get("members"))
    except Exception:  # noqa: BLE001 - cannot tell: assume not running, we start one
        return False
    finally:
        admin.close()


def _wait(what: str, check: Callable[[], bool], timeout: float, child: Child | None, stop: threading.Event) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if stop.is_set():
            raise KeyboardInterrupt
        if child is not None and not child.alive():
            raise DemoError(f"{child.name} exited with {child.proc.returncode} while starting; its log "
                            f"({child.err}):\n{child.tail()}")
        if time.monotonic() > deadline:
            log_hint = f" (log: {child.err})" if child else ""
            raise DemoError(f"{what} did not happen within {timeout:.0f}s{log_hint}")
        time.sleep(0.2)


# ---------------------------------------------------------------------- the SOC view


#: the widest line the demo prints (a status line, an alert, a trace entry): wider text is cut with "…"
WIDTH = 120
_ESC = re.compile(r"\x1b\[[0-9;]*m")


def clip(line: str, width: int = WIDTH) -> str:
    """``line`` cut to ``width`` visible columns (colour codes do not count), ending in ``…`` when cut.

    >>> clip("x" * 200)[-3:], len(clip("x" * 200)), clip("short")
    ('xx…', 120, 'short')
    >>> cut = clip(_Style(True)("y" * 10, "31"), 5)
    >>> _ESC.sub("", cut), cut.endswith("\\x1b[0m")
    ('yyyy…', True)
    """
    if len(_ESC.sub("", line)) <= width:
        return line
    out, seen, i = [], 0, 0
    while i < len(line) and seen < width - 1:
        m = _ESC.match(line, i)
        if m:
            out.append(m.group(0))
            i = m.end()
            continue
        out.append(line[i])
        seen += 1
        i += 1
    return "".join(out) + "…" + ("\x1b[0m" if _ESC.search(line) else "")


def wrap(head: str, text: str, width: int = WIDTH) -> list[str]:
    """``head`` then ``text`` wrapped at word boundaries to ``width``, continuation lines indented
    under the text (the start-up lines: ``topics      agent-actions (8), ...``)."""
    lines = textwrap.wrap(text, width=width, initial_indent=head, subsequent_indent=" " * len(head),
                          break_long_words=False, break_on_hyphens=False) or [head]
    return [clip(x, width) for x in lines]  # a word longer than the line (a URL, a path) is cut


def _count(n: object, noun: str) -> str:
    """``1 record``, ``3 records``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


class _Style:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text


@dataclass
class _FrozenAgent:
    incident_id: str | None
    since: float
    reason: str = ""
    actions_after: int = 0
    held: int = 0
    aborted: str | None = None


@dataclass
class SocView:
    """Turns decisions, incidents, control commands and the runtime journal into terminal lines:
    every time in UTC (``HH:MM:SS``), every number with its unit or name, no line over :data:`WIDTH`.

    Feed it with the ``on_*`` methods; ``status_lines()`` summarises. ``write`` prints one line.

    >>> out = []
    >>> view = SocView(write=out.append, clock=lambda: 1772442000.0)
    >>> view.on_journal({"event": "action_held", "agent_id": "fin-agent-002", "approval_id": "apr-1",
    ...     "action": "send", "tool": "sftp.put", "sensitivity": "confidential", "records": 40,
    ...     "destinations": ["sftp:acme"], "destination_count": 1, "reasons": [], "score": 0.5})
    >>> print("\\n".join(out))
    09:00:00 HELD     fin-agent-002        not performed: send sftp.put [confidential, 40 records] -> sftp:acme
             why: score 0.50, no reason given by the check
             to run it: flowbreaker approvals approve apr-1 --reason '...'
    """

    write: Callable[[str], None] = print
    color: bool = False
    max_alerts_per_s: float = 3.0
    window_s: float = 10.0
    decided: int = 0
    alerts: int = 0
    freezes: int = 0
    frozen: dict[str, _FrozenAgent] = field(default_factory=dict)
    _times: deque = field(default_factory=deque)
    _alert_budget: float = 3.0
    _alert_t: float = field(default_factory=time.monotonic)
    _suppressed: int = 0
    started: float = field(default_factory=time.monotonic)
    held: int = 0
    approved: int = 0
    #: agents with an action held for an approval nobody has decided yet: agent -> (approval id, since)
    waiting: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: wall clock for the line stamps (the tests pass a fixed one)
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.s = _Style(self.color)

    def _stamp(self) -> str:
        return clock_utc(self.clock())

    def _line(self, tag: str, color: str, agent: str, text: str, max_lines: int = 1) -> None:
        """``HH:MM:SS TAG      agent                text``; text that does not fit goes on up to
        ``max_lines - 1`` more lines under itself, and the last line is cut to the width."""
        head = f"{self._stamp()} {tag:<8} {agent:<20} "
        lines = wrap(head, text)
        lines[max_lines - 1:] = [clip(" ".join(lines[max_lines - 1:]).replace("  ", " ").rstrip())] \
            if len(lines) > max_lines else lines[max_lines - 1:]
        first = lines[0][len(head):]
        self.write(f"{self._stamp()} {self.s(f'{tag:<8}', color)} {agent:<20} {first}")
        for line in lines[1:]:
            self.write(" " * len(head) + line.lstrip())

    def _note(self, prefix: str, text: str, max_lines: int = 2) -> None:
        """An indented line under an event (``why:``, ``to run it:``), wrapped like :meth:`_line`."""
        lines = wrap(prefix, text)
        if len(lines) > max_lines:
            lines[max_lines - 1:] = [clip(" " * len(prefix) + " ".join(x.strip() for x in lines[max_lines - 1:]))]
        for line in lines:
            self.write(line)

    # -- inputs
    def on_decision(self, rec: dict) -> None:
        now = time.monotonic()
        self.decided += 1
        self._times.append(now)
        agent = rec.get("agent_id", "?")
        f = self.frozen.get(agent)
        if f is not None:
            f.actions_after += 1
        action = rec.get("action_taken")
        if action not in ("alert", "freeze"):
            return
        self.alerts += 1
        # bounded output: a burst of alerts is summarised, not scrolled past
        self._alert_budget = min(self.max_alerts_per_s * 2,
                                 self._alert_budget + (now - self._alert_t) * self.max_alerts_per_s)
        self._alert_t = now
        if self._alert_budget < 1.0:
            self._suppressed += 1
            return
        self._alert_budget -= 1.0
        reasons = rec.get("reasons") or []
        top = reasons[0] if reasons else {}
        sev = rec.get("severity", "?")
        color = {"critical": "1;31", "high": "31", "medium": "33"}.get(sev, "0")
        more = f" (+{self._suppressed} more alerts not shown)" if self._suppressed else ""
        self._suppressed = 0
        self._line("FREEZE" if action == "freeze" else "ALERT", color, agent,
                   f"{sev} score {rec.get('score', 0):.2f}{more}: "
                   f"{top.get('detail') or top.get('feature') or 'no reason given by the detector'}",
                   max_lines=2)

    def on_incident(self, inc: dict) -> None:
        s = self.s
        att = inc.get("attribution") or {}
        reasons = inc.get("reasons") or []
        score = inc.get("score")
        scored = f", score {score:.2f}" if isinstance(score, (int, float)) else ""
        lines = [s(f"┏━ INCIDENT {inc.get('incident_id')}  agent {inc.get('agent_id')}  "
                   f"severity {inc.get('severity', '?')}{scored}", "1;31")]
        lines.append(f"┃ trigger     {inc.get('trigger_event_id') or '(manual freeze)'} "
                     f"at {clock_utc(inc.get('opened_at') or '')} UTC")
        for r in reasons[:3]:
            said = wrap("┃ reason      ", str(r.get("detail") or r.get("feature")))[:2]
            lines += said[:1] + ["┃" + x[1:] for x in said[1:]]
        lines.append(f"┃ attribution operator {att.get('operator_id')}, requested by "
                     f"{att.get('requested_by') or '-'}, task {att.get('task_id') or '-'}")
        lines.append(f"┃             instructions {att.get('instruction_hash') or '-'}")
        if len(att.get("instruction_hashes_seen") or ()) > 1:
            lines.append(f"┃             instruction hashes seen: {', '.join(att['instruction_hashes_seen'])}")
        chain = att.get("parent_chain") or []
        if len(chain) > 1:
            lines.append(f"┃ data flow   {' <- '.join(chain[:4])}")
        trace = inc.get("trace") or []
        lines.append(f"┃ last {min(5, len(trace))} of the {len(trace)} actions kept (time UTC, action, tool, "
                     "resource [sensitivity, records] -> destinations, score):")
        for e in trace[-5:]:
            dests = e.get("destinations") or []
            extra = ""
            if dests:
                extra = f" -> {', '.join(dests[:2])}" + (f" (+{e['destination_count'] - 2})"
                                                         if e.get("destination_count", 0) > 2 else "")
            lines.append(f"┃   {clock_utc(e.get('ts', ''))} {e.get('action', ''):<6} {e.get('tool', ''):<20} "
                         f"{e.get('resource', '')} [{e.get('sensitivity', '')}, {e.get('records', 0)}]{extra}"
                         f"  score {e.get('score', 0):.2f}")
        lines.append(s("┗━", "1;31"))
        for line in lines:
            self.write(clip(line))

    def on_command(self, cmd: dict, frozen: bool) -> None:
        agent = cmd["agent_id"]
        if frozen:
            self.freezes += 1
            self.frozen[agent] = _FrozenAgent(cmd.get("incident_id"), time.monotonic(), cmd.get("reason") or "")
            self._line("FROZEN", "1;35", agent, f"incident {cmd.get('incident_id')} by {cmd.get('issued_by')}: "
                                                "its tasks and tool calls stop")
        else:
            f = self.frozen.pop(agent, None)
            held = f" ({f.held} waiting tasks resume)" if f and f.held else ""
            self._line("RELEASED", "1;32", agent, f"by {cmd.get('issued_by')}{held}: {cmd.get('reason')}")

    def on_journal(self, e: dict) -> None:
        kind, agent = e.get("event"), e.get("agent_id") or "?"
        f = self.frozen.get(agent)
        if kind == "task_aborted":
            if f is not None:
                f.aborted = e.get("task_id")
            self._line("STOPPED", "35", agent, f"task {e.get('task_id')} ({e.get('kind')}) cut off before step "
                                               f"{e.get('step', 0) + 1} of {e.get('steps')}")
        elif kind == "task_held" and f is not None:
            f.held = max(f.held, int(e.get("held") or 0))
        elif kind == "incident_injected":
            for line in wrap(f"{self._stamp()} [simulator] ", f"incident '{e.get('kind')}' injected on {agent} "
                                                               f"(task {e.get('task_id')}, {e.get('steps')} steps)"):
                self.write(self.s(line, "2"))
        elif kind == "export_injected":
            for line in wrap(f"{self._stamp()} [simulator] ", f"legitimate export of {e.get('records')} records by "
                                                               f"{agent} to {e.get('destination')} "
                                                               f"(task {e.get('task_id')})"):
                self.write(self.s(line, "2"))
        elif kind == "action_held":
            self.held += 1
            self.waiting[agent] = (str(e.get("approval_id")), time.monotonic())
            dests = e.get("destinations") or []
            more = f" (+{e['destination_count'] - len(dests)})" if e.get("destination_count", 0) > len(dests) else ""
            reasons = e.get("reasons") or []
            score = e.get("score")
            scored = f"score {score:.2f}" if isinstance(score, (int, float)) else "no score"
            self._line("HELD", "1;33", agent, f"not performed: {e.get('action')} {e.get('tool')} "
                                              f"[{e.get('sensitivity')}, {_count(e.get('records'), 'record')}] -> "
                                              f"{', '.join(dests) or '-'}{more}", max_lines=2)
            if not reasons:
                self._note("         why: ", f"{scored}, no reason given by the check")
            for i, why in enumerate(reasons[:3]):
                self._note("         why: ", why + (f" ({scored})" if i == 0 else ""))
            self.write(clip(f"         to run it: flowbreaker approvals approve {e.get('approval_id')} --reason '...'"))
        elif kind == "approval_granted":
            self.approved += 1
            self.waiting.pop(agent, None)
            until = clock_utc(e.get("valid_until") or "")
            self._line("APPROVED", "1;32", agent, f"{e.get('approval_id')} by {e.get('by')} (valid until {until} "
                                                  f"UTC): the held action runs now; {e.get('reason')}", max_lines=2)
        elif kind == "action_refused":
            self.waiting.pop(agent, None)
            by = f" by {e.get('by')}: {e.get('reason')}" if e.get("by") else ""
            self._line("REFUSED", "1;31", agent, f"approval {e.get('approval_id')} {e.get('state')}{by}; task "
                                                 f"{e.get('task_id')} abandoned, the action never ran", max_lines=2)
        elif kind == "action_denied":
            self._line("DENIED", "1;31", agent, f"by the pre-action check, task {e.get('task_id')} abandoned: "
                                                f"{'; '.join(e.get('reasons') or []) or '-'}", max_lines=2)

    # -- summary
    def rate(self) -> float:
        now = time.monotonic()
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        span = min(self.window_s, max(1e-9, now - self.started))
        return len(self._times) / span

    def status_lines(self) -> list[str]:
        """The running totals, then one line per frozen agent (whether it stopped, how many of its
        tasks wait, for how long) and one per agent whose held action waits for an approval."""
        held = f" | held {self.held}, approved {self.approved}" if self.held else ""
        lines = [clip(f"{self._stamp()} {self.s('──', '2')} {self.rate():.1f} decisions/s (last "
                      f"{self.window_s:.0f} s) | decisions {self.decided} | alerts {self.alerts} | "
                      f"freezes {self.freezes} | frozen now {len(self.frozen)}{held}")]
        now = time.monotonic()
        for agent, f in sorted(self.frozen.items()):
            acted = "no action since the freeze" if f.actions_after == 0 else \
                f"{_count(f.actions_after, 'action')} since the freeze!"
            lines.append(clip(f"         {'':<8} {agent:<20} frozen for {now - f.since:.0f} s: {acted}, "
                              f"{_count(f.held, 'task')} waiting"))
        for agent, (approval, since) in sorted(self.waiting.items()):
            lines.append(clip(f"         {'':<8} {agent:<20} waiting {now - since:.0f} s for approval {approval}: "
                              "task paused"))
        return lines


# ---------------------------------------------------------------------- the demo


class Demo:
    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.args = args
        self.settings = settings
        self.workdir = Path(args.workdir).resolve()
        self.logdir = self.workdir / "logs"
        self.started: list[tuple[str, Callable[[], object]]] = []  # (name, how to stop it), in start order
        self.children: dict[str, Child] = {}
        self.stop = threading.Event()
        self.journal_path: Path | None = None
        self.web_port: int | None = None
        self.model: Path | None = None
        self.out = sys.stdout
        #: the API tokens the demo made for itself (files under workdir/api; only their hashes in tokens.toml)
        self.tokens_file: Path | None = None
        self.token_files: dict[str, Path] = {}
        self.prometheus_url: str | None = None  # the Prometheus this demo started (the drill times its alert)
        #: names this run: the simulated runtime's event ids, and the topics when the broker is not the demo's
        self.run_id = time.strftime("%H%M%S", time.gmtime()) + secrets.token_hex(2)
        #: the topic prefix was chosen (--topic-prefix or FLOWBREAKER_TOPIC_PREFIX): the demo uses it as told
        self.prefix_given = getattr(args, "topic_prefix", None) is not None \
            or os.environ.get("FLOWBREAKER_TOPIC_PREFIX") is not None

    def say(self, text: str, *, cut: bool = True) -> None:
        """Print ``text``, each line cut to :data:`WIDTH` columns (``cut=False`` for error reports,
        whose log lines must stay whole)."""
        lines = text.split("\n")
        self.out.write("\n".join(clip(x) if cut else x for x in lines) + "\n")
        self.out.flush()

    def say_wrapped(self, head: str, text: str) -> None:
        """A start-up line whose text is too long for one line: wrapped, continuations under the text."""
        for line in wrap(f"{head:<12}", text):
            self.say(line)

    # -- starting
    def start_kafka(self) -> None:
        s = self.settings
        if _kafka_answers(s):
            self.say(f"kafka       already running at {s.bootstrap}")
            if not self.args.keep and not self.prefix_given:
                # not ours to empty: this run gets topics (and so a worker state and consumer groups) of its own
                s.topic_prefix = f"demo-{self.run_id}-"
                self.say_wrapped("", f"this run uses fresh topics {s.topic_prefix}* so nothing of an earlier run "
                                     "carries over (--keep: the unprefixed topics as they are; --topic-prefix: yours)")
            return
        host, _, port = s.bootstrap_servers[0].rpartition(":")
        if host not in ("127.0.0.1", "localhost") or not port.isdigit() or len(s.bootstrap_servers) != 1:
            raise DemoError(f"no Kafka answers at {s.bootstrap}, and only a local one (127.0.0.1) can be started")
        data = Path(self.args.kafka_dir).resolve() if self.args.kafka_dir else self.workdir / f"kafka-{port}"
        env = {"FLOWBREAKER_KAFKA_PORT": port, "FLOWBREAKER_PYTHON": sys.executable, "FLOWBREAKER_KAFKA_DIR": str(data)}
        if not self.args.keep and not self.args.kafka_dir and data.exists():
            # the demo's own broker dir: topics, frozen agents, used event ids and worker state of the last run
            if _script(KAFKA_SH, "status", env=env, timeout=30).returncode == 0:
                raise DemoError(f"a broker of an earlier demo still runs from {data} but does not answer at "
                                f"{s.bootstrap}; stop it (FLOWBREAKER_KAFKA_DIR={data} scripts/kafka.sh stop)")
            shutil.rmtree(data)
            self.say(f"kafka       a fresh broker: the last run's data is gone (--keep keeps it): {_short_path(data)}")
        self.say(f"kafka       starting a local broker on 127.0.0.1:{port} (scripts/kafka.sh; the first run "
                 "fetches the jars)")
        proc = _script(KAFKA_SH, "start", env=env, timeout=self.args.kafka_timeout)
        if proc.returncode != 0:
            raise DemoError(f"scripts/kafka.sh start failed: {proc.stderr.strip()[-600:]}")
        self.started.append(("kafka", lambda: _script(KAFKA_SH, "stop", env=env, timeout=90)))
        status = _script(KAFKA_SH, "status", env=env, timeout=30).stdout.strip()
        self.say(f"kafka       started: {status}")

    def name_app(self) -> None:
        """The worker's app id follows the topic prefix: its state changelog and consumer group are named after
        it, one per set of topics, or a worker would recover another prefix's agents (and skip their offsets as
        already scored)."""
        if not os.environ.get("FLOWBREAKER_APP_ID") and self.settings.topic_prefix:
            self.settings.app_id = f"{self.settings.topic_prefix}flowbreaker"

    def ensure_topics(self) -> None:
        from streams.kafka_admin import ensure_topics

        counts = ensure_topics(self.settings, timeout_s=60.0)
        self.say_wrapped("topics", "ready (partitions): " + ", ".join(f"{t} ({n})" for t, n in counts.items()))

    def train_model(self) -> None:
        """A model of the fleet's normal work at the demo's own pace
        (see :func:`streams.demo.simulated_runtime.paced_history`)."""
        from datetime import datetime, timezone

        from streams.cli.main import main
        from streams.demo.simulated_runtime import paced_history

        a = self.args
        model, history = self.workdir / "model", self.workdir / "history.jsonl"
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        events = paced_history(n_agents=a.agents, seed=a.seed, rate=a.rate, speed=a.speed,
                               seconds=HISTORY_SESSION_S, sessions=HISTORY_SESSIONS, session_every=HISTORY_EVERY_S,
                               end=datetime.now(timezone.utc))
        with open(history, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
        shutil.rmtree(model, ignore_errors=True)
        try:
            rc = main(["train", "--input", str(history), "--policy", str(POLICY), "--out", str(model), "--quiet"])
        except SystemExit as exc:
            rc = exc.code
        if rc != 0:
            self.say(f"model       training failed (exit {rc}): the worker runs on online baselines only")
            return
        self.say_wrapped("model", f"trained on {len(events)} normal actions of the {a.agents}-agent fleet at this "
                         f"pace ({HISTORY_SESSIONS} sessions of {HISTORY_SESSION_S / 60:.0f} min over "
                         f"{HISTORY_SESSIONS * HISTORY_EVERY_S / 86400:.0f} days); training took "
                         f"{time.monotonic() - t0:.1f} s")
        self.model = model

    def make_signing_keys(self) -> None:
        """The key that signs freeze and release commands (``streams/clients/signing.py``): when none is configured,
        a fresh one in ``workdir/signing-keys.toml`` (mode 600), named in ``FLOWBREAKER_SIGNING_KEYS`` for the
        demo's own guard and every component it starts."""
        if os.environ.get("FLOWBREAKER_SIGNING_KEYS") or os.environ.get("FLOWBREAKER_SIGNING_KEYS_INLINE"):
            return
        from streams.clients.signing import new_key_file, public_key_file

        path = self.workdir / "signing-keys.toml"
        if not path.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(new_key_file())
        os.environ["FLOWBREAKER_SIGNING_KEYS"] = str(path)
        # the actuator and the runtime verify with the public keys only: they cannot sign (README, security model)
        self.public_keys = path.with_name(path.name + ".pub")
        self.public_keys.write_text(public_key_file(path))
        self.say(f"signing     freeze and release commands are signed with the key in {_short_path(path)}")

    def make_tokens(self) -> None:
        """Fresh bearer tokens for an analyst and the runtime: the worker gets their hashes, the tokens
        themselves go to files only this user may read (never printed)."""
        import secrets

        from streams.api.auth import hash_token

        d = self.workdir / "api"
        d.mkdir(parents=True, exist_ok=True)
        lines = []
        for role, name in (("analyst", "demo-analyst"), ("runtime", "demo-runtime"), ("lead", "demo-lead")):
            token = secrets.token_urlsafe(32)
            path = d / f"{role}.token"
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
            self.token_files[role] = path
            lines += ["[[token]]", f'name = "{name}"', f'role = "{role}"', f'sha256 = "{hash_token(token)}"', ""]
        self.tokens_file = d / "tokens.toml"
        self.tokens_file.write_text("\n".join(lines))

    def _child(self, name: str, args: list[str], stop_timeout: float = 20.0) -> Child:
        child = spawn(name, CLI + args, self.logdir, stop_timeout=stop_timeout)
        self.children[name] = child
        self.started.append((name, child.stop))
        return child

    def start_worker(self) -> None:
        s = self.settings
        if _group_active(s, s.app_id):
            self.say(f"worker      already running (consumer group {s.app_id!r} has members)")
            return
        port = self.args.web_port
        if _port_open("127.0.0.1", port):
            port = _free_port()
        self.web_port = port
        args = ["worker", *self._kafka_flags(), "--app-id", s.app_id, "--web-port", str(port),
                "--datadir", str(self.workdir / f"worker-{port}"), "--policy", str(POLICY)]
        if self.model is not None:
            args += ["--model", str(self.model)]
        self.make_tokens()
        args += ["--tokens", str(self.tokens_file)]
        child = self._child("worker", args, stop_timeout=40.0)
        _wait("the worker's ready line", lambda: "flowbreaker worker ready" in child.stdout(),
              self.args.component_timeout, child, self.stop)
        self.say(f"worker      started, pid {child.pid}: http://127.0.0.1:{port}/metrics  /status")
        lead = self.token_files["lead"].read_text().strip()  # the console takes it from the fragment, never sent
        self.say(f"console     http://127.0.0.1:{port}/console/#token={lead}  (demo-lead)", cut=False)

    def _verify_keys(self) -> list[str]:
        """``--signing-keys`` with the public key file the demo made (none when keys were configured outside)."""
        pub = getattr(self, "public_keys", None)
        return ["--signing-keys", str(pub)] if pub is not None else []

    def start_actuator(self) -> None:
        group = f"{self.settings.topic_prefix}flowbreaker-actuator"
        if _group_active(self.settings, group):
            self.say(f"actuator    already running (group {group!r})")
            return
        args = ["actuator", *self._kafka_flags(), "--group", group, *self._verify_keys()]
        for url in self.args.webhook:
            args += ["--webhook", url]
        child = self._child("actuator", args)
        _wait("the actuator's start", lambda: "actuator:" in child.tail(), self.args.component_timeout, child,
              self.stop)
        sinks = "log" + (f" + webhook {', '.join(self.args.webhook)}" if self.args.webhook else "")
        self.say_wrapped("actuator", f"started, pid {child.pid}: sinks {sinks} (enacted commands: "
                                     f"{_short_path(child.out)})")

    def start_runtime(self) -> None:
        group = f"{self.settings.topic_prefix}flowbreaker-runtime"
        if _group_active(self.settings, group):
            self.say(f"runtime     already running (group {group!r}): no feed started")
            return
        self.journal_path = self.workdir / "journal.jsonl"
        self.journal_path.unlink(missing_ok=True)
        a = self.args
        args = ["runtime", *self._kafka_flags(), "--group", group, "--feed", "--agents", str(a.agents), "--seed",
                str(a.seed), "--rate", str(a.rate), "--speed", str(a.speed), "--incident-every",
                str(a.incident_every), "--journal", str(self.journal_path), "--stats-every", "60",
                "--event-prefix", f"rt-{self.run_id}-"]  # the feed's task ids repeat from run to run (its seed)
        if a.incident_after is not None:
            args += ["--incident-after", str(a.incident_after)]
        checked = self.web_port is not None and "runtime" in self.token_files and not a.no_check
        if checked:  # the pre-action check before every outbound action, and now and then an export to approve
            args += ["--check-url", f"http://127.0.0.1:{self.web_port}", "--check-token-file",
                     str(self.token_files["runtime"]), "--approval-wait", str(a.approval_wait)]
            # the deletes (no destinations, not checked) first: the stream's freeze shows early, then the
            # outbound incidents, which the check holds before any data leaves
            from streams.demo.simulated_runtime import DEFAULT_INCIDENT_KINDS

            kinds = ["mass_delete"] + [k for k in DEFAULT_INCIDENT_KINDS if k != "mass_delete"]
            args += ["--incidents", ",".join(kinds)]
            if a.export_every > 0:
                args += ["--export-every", str(a.export_every), "--export-after",
                         str(a.export_after if a.export_after is not None else a.export_every / 2)]
        child = self._child("runtime", [*args, *self._verify_keys()])
        journal = self.journal_path

        def ready() -> bool:
            try:
                return '"event": "ready"' in journal.read_text()
            except OSError:
                return False

        _wait("the runtime's readiness", ready, self.args.component_timeout, child, self.stop)
        self.say_wrapped("runtime", f"started, pid {child.pid}: {a.agents} simulated agents, {a.rate:g} tasks/s, "
                                    f"speed x{a.speed:g}, an incident every {a.incident_every:g} s")
        if checked:
            self.say_wrapped("", f"outbound actions are checked first (POST /v1/check); a legitimate export "
                                 f"every {a.export_every:g} s needs an analyst's approval")

    def start_prometheus(self) -> None:
        if self.args.no_prometheus or not PROMETHEUS_SH.exists():
            return
        env = {"FLOWBREAKER_PROM_PORT": str(self.args.prometheus_port)}
        if self.web_port is not None:
            env["FLOWBREAKER_PROM_TARGETS"] = f"127.0.0.1:{self.web_port}"
        try:
            if _script(PROMETHEUS_SH, "status", env=env, timeout=30).returncode == 0:
                self.say(f"prometheus  already running at http://127.0.0.1:{self.args.prometheus_port}")
                return
            if _port_open("127.0.0.1", self.args.prometheus_port):
                self.say(f"prometheus  port {self.args.prometheus_port} is taken: skipped")
                return
            proc = _script(PROMETHEUS_SH, "start", env=env, timeout=self.args.component_timeout + 120)
        except subprocess.TimeoutExpired:
            _script(PROMETHEUS_SH, "stop", env=env, timeout=60)
            self.say("prometheus  did not start in time: skipped")
            return
        if proc.returncode != 0:
            self.say(f"prometheus  could not start ({proc.stderr.strip().splitlines()[-1:] or ['?']}): skipped")
            return
        self.started.append(("prometheus", lambda: _script(PROMETHEUS_SH, "stop", env=env, timeout=60)))
        self.prometheus_url = f"http://127.0.0.1:{self.args.prometheus_port}"
        self.say(f"prometheus  started: {proc.stdout.strip()}")
        self.say_wrapped("dashboards", "dashboards/grafana/*.json: import them into Grafana (datasource: this "
                                       "Prometheus) or provision them with dashboards/provisioning/ (README, "
                                       "'For the SOC')")

    def run_drill(self) -> None:
        """One freeze drill (flowbreaker drill) through the running worker, runtime and actuator; its report."""
        if self.args.no_drill or self.web_port is None or "lead" not in self.token_files:
            return
        report = self.workdir / "drill"
        args = [*CLI, "drill", *self._kafka_flags(), "--url", f"http://127.0.0.1:{self.web_port}", "--token-file",
                str(self.token_files["lead"]), "--report", str(report)]
        if self.prometheus_url is not None:
            args += ["--prometheus", self.prometheus_url]
        self.say("drill       rehearsing a freeze end to end as flowbreaker-drill-1 (flowbreaker drill) ...")
        env = dict(os.environ, PYTHONPATH=str(REPO_DIR))
        try:
            done = subprocess.run(args, cwd=REPO_DIR, env=env, capture_output=True, text=True,
                                  timeout=self.args.component_timeout + 180, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.say("drill       did not finish in time: skipped")
            return
        md = report / "drill.md"
        if not md.exists():
            self.say_wrapped("drill", f"could not run: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            return
        lines = md.read_text().splitlines()
        self.say(f"drill       {lines[0].lstrip('# ')}  (report: {_short_path(md)})")
        for line in lines:
            if line.startswith("| ") and not line.startswith("| step") and not line.startswith("|---"):
                step, secs, target, result = [c.strip() for c in line.strip("|").split("|")][:4]
                self.say(f"            {step:<18} {secs:>7} s  (target {target} s)  {result}")

    def _kafka_flags(self) -> list[str]:
        flags = ["--bootstrap", self.settings.bootstrap]
        if self.settings.topic_prefix:
            flags += ["--topic-prefix", self.settings.topic_prefix]
        return flags

    # -- stopping
    def stop_all(self) -> None:
        for name, stop in reversed(self.started):
            self.say(f"stopping    {name}" + (f" (pid {self.children[name].pid})" if name in self.children else ""))
            try:
                stop()
            except Exception as err:  # noqa: BLE001 - keep stopping the others
                self.say(f"stopping    {name} failed: {err!r}")
        self.started.clear()

    # -- watching
    def watch(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from streams.clients.guard import FreezeGuard

        view = SocView(write=self.say, color=self.out.isatty())
        commands: Queue = Queue()
        s = self.settings
        guard = FreezeGuard(s.bootstrap, topic=s.topic("control"), client_id="flowbreaker-demo",
                            consumer_config=s.kafka_python_config())
        guard.start()
        if not guard.wait_ready(60.0):
            raise DemoError(f"could not read {s.topic('control')}")
        for agent, cmd in sorted(guard.frozen().items()):
            view.frozen[agent] = _FrozenAgent(cmd.get("incident_id"), time.monotonic(), cmd.get("reason") or "")
            self.say(f"frozen      {agent} already (incident {cmd.get('incident_id')}, since "
                     f"{clock_utc(cmd.get('issued_at') or '')} UTC)")
        guard.add_listener(lambda cmd, frozen: commands.put((cmd, frozen)))

        consumer = KafkaConsumer(group_id=None, client_id="flowbreaker-demo", enable_auto_commit=False,
                                 **s.kafka_python_config())
        tps = []
        for topic in (s.topic("decisions"), s.topic("incidents")):
            tps += [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        journal = open(self.journal_path, "a+", encoding="utf-8") if self.journal_path else None
        if journal is not None:
            journal.seek(0)
        decisions, incidents = s.topic("decisions"), s.topic("incidents")
        self.say(view.s("watching    decisions, incidents and freezes (times UTC); Ctrl-C stops everything the "
                        "demo started.", "1"))
        self.say("            Release a frozen agent (in another terminal):")
        keys = os.environ.get("FLOWBREAKER_SIGNING_KEYS")
        if keys:
            self.say(f"            export FLOWBREAKER_SIGNING_KEYS={_short_path(Path(keys))}")
        self.say(f"            flowbreaker release AGENT --reason '...' --by YOUR_NAME {' '.join(self._kafka_flags())}")
        if self.web_port is not None and "analyst" in self.token_files:
            self.say("            Act as the analyst on held actions (list, approve ID, deny ID) after this, "
                     "in that terminal:")
            self.say(f"            export FLOWBREAKER_API_URL=http://127.0.0.1:{self.web_port}")
            self.say(f"            export FLOWBREAKER_API_TOKEN=$(cat {_short_path(self.token_files['analyst'])})")
            self.say("            flowbreaker approvals list --state pending   (time column: when requested, "
                     "or until when approved)")
        until = time.monotonic() + self.args.duration if self.args.duration > 0 else float("inf")
        status_at = 0.0
        next_status = time.monotonic() + self.args.status_every
        try:
            while not self.stop.is_set() and time.monotonic() < until:
                if journal is not None:
                    while True:
                        pos = journal.tell()
                        line = journal.readline()
                        if not line.endswith("\n"):
                            journal.seek(pos)  # a line being written: read it next time
                            break
                        try:
                            view.on_journal(json.loads(line))
                        except ValueError:
                            pass
                for tp, records in consumer.poll(timeout_ms=200).items():
                    for rec in records:
                        try:
                            value = json.loads(rec.value)
                        except ValueError:
                            continue
                        if tp.topic == decisions:
                            view.on_decision(value)
                        elif tp.topic == incidents:
                            view.on_incident(value)
                while True:
                    try:
                        cmd, frozen = commands.get_nowait()
                    except Empty:
                        break
                    view.on_command(cmd, frozen)
                for name, child in self.children.items():
                    if not child.alive():
                        raise DemoError(f"{name} (pid {child.pid}) exited with {child.proc.returncode}; its log "
                                        f"({child.err}):\n{child.tail()}")
                if time.monotonic() >= next_status:
                    next_status += self.args.status_every
                    status_at = time.monotonic()
                    for line in view.status_lines():
                        self.say(line)
        finally:
            consumer.close(autocommit=False)
            guard.stop()
            if journal is not None:
                journal.close()
            if time.monotonic() - status_at > 1.0:  # the last status line is not the one just printed
                for line in view.status_lines():
                    self.say(line)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=0.0,
                   help="stop by itself this many seconds after the traffic starts, i.e. after Kafka, training "
                        "and the components are up, which takes half a minute or more (default 0: until Ctrl-C)")
    p.add_argument("--workdir", default=str(REPO_DIR / "var" / "demo"),
                   help="logs, model, journal and worker data (default var/demo)")
    p.add_argument("--agents", type=int, default=24, help="simulated agents (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="fleet seed (default %(default)s)")
    p.add_argument("--rate", type=float, default=2.0, help="normal tasks per second (default %(default)s)")
    p.add_argument("--speed", type=float, default=10.0,
                   help="the agents work this many times faster than the simulated people (default %(default)s)")
    p.add_argument("--incident-every", type=float, default=45.0,
                   help="seconds between injected incidents (default %(default)s)")
    p.add_argument("--incident-after", type=float, default=None,
                   help="seconds before the first incident (default: --incident-every)")
    p.add_argument("--export-every", type=float, default=60.0,
                   help="seconds between legitimate exports that need an approval (0: none; default 60)")
    p.add_argument("--export-after", type=float, default=None,
                   help="seconds before the first export (default: half of --export-every)")
    p.add_argument("--approval-wait", type=float, default=300.0,
                   help="seconds a held action waits for an approval before its task is abandoned (default 300)")
    p.add_argument("--no-check", action="store_true",
                   help="agents act without the pre-action check (only the stream and freezes)")
    p.add_argument("--status-every", type=float, default=5.0, help="seconds between status lines (default 5)")
    p.add_argument("--web-port", type=int, default=6066, help="the worker's HTTP port (default 6066, or a free one)")
    p.add_argument("--webhook", action="append", default=[], metavar="URL",
                   help="also have the actuator POST freezes and releases to this URL")
    p.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    p.add_argument("--no-drill", action="store_true", help="do not rehearse a freeze (flowbreaker drill) at start")
    p.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus port (default 9090)")
    p.add_argument("--keep", action="store_true", default=os.environ.get("FLOWBREAKER_DEMO_KEEP") == "1",
                   help="go on from the last run (env FLOWBREAKER_DEMO_KEEP=1): a broker the demo starts keeps its "
                        "data, and a running broker's topics are used as they are. Default: every run starts "
                        "clean (the demo's own broker dir emptied first; on a broker that was already running, "
                        "fresh topics demo-RUN-* unless --topic-prefix names them), so no agent is frozen from "
                        "before and no event id is used twice")
    p.add_argument("--kafka-dir", help="data dir of a broker the demo starts, never emptied (default "
                                       "WORKDIR/kafka-<port>, emptied at start unless --keep)")
    p.add_argument("--kafka-timeout", type=float, default=900.0,
                   help="seconds for scripts/kafka.sh start, jar download included (default 900)")
    p.add_argument("--component-timeout", type=float, default=120.0,
                   help="seconds for the worker, actuator and runtime to come up (default 120)")
    add_kafka_arguments(p)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_args(args)  # SettingsError: exit 2
    if args.agents < 1 or args.rate <= 0 or args.speed <= 0 or args.duration < 0 or args.status_every <= 0:
        raise UsageError("--agents must be >= 1; --rate, --speed and --status-every > 0; --duration >= 0")

    demo = Demo(args, settings)

    def on_signal(signum, _frame):
        demo.stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        demo.say(f"flowbreaker demo: logs in {_short_path(demo.logdir)}; every time shown is UTC")
        for step in (demo.start_kafka, demo.name_app, demo.ensure_topics, demo.train_model, demo.make_signing_keys,
                     demo.start_worker, demo.start_actuator, demo.start_runtime, lambda: start_mcp_agent(demo),
                     demo.start_prometheus, demo.run_drill, demo.watch):
            if demo.stop.is_set():  # Ctrl-C during start-up: stop what is up so far
                raise KeyboardInterrupt
            step()
    except KeyboardInterrupt:
        pass
    except DemoError as err:
        demo.say(f"flowbreaker demo: {err}", cut=False)
        code = 1
    finally:
        runtime = demo.children.get("runtime")
        demo.stop_all()
        if runtime is not None:
            counts = runtime.stdout().strip()
            if counts:
                demo.say("the reference runtime's counts:")
                demo.say(counts)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code
