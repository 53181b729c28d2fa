"""``flowbreaker release AGENT --reason TEXT --by NAME``: a human releases a frozen agent.

It reads ``agent-control`` to its end (a :class:`streams.guard.FreezeGuard`) to
find the agent's open incident, then publishes the contract's ``release``
command (section 4) on ``agent-control`` with key ``agent_id``, and waits until
the broker has it. The runtimes' guards then let the agent take tasks again,
and the worker that owns the agent puts its breaker on probation
(``half_open``).

When it works, when it fails:

- exit 0 and one line on stdout once the broker acknowledged the command;
- exit 2 (one line on stderr) when the agent is not frozen, when ``--incident``
  names another incident than the open one, or when ``--by`` is missing, is
  ``flowbreaker`` (reserved for automatic freezes: the worker would ignore it),
  or differs from the authenticated Kafka user;
- exit 1 when the broker does not answer within ``--timeout`` seconds.

Who may release: with SASL the approver is the authenticated Kafka principal
(``--by`` defaults to it and must match it); over PLAINTEXT ``--by`` is only as
trustworthy as the write ACLs on ``agent-control``.

>>> cmd = release_command("fin-agent-001", "inc-1", by="alice", reason="false positive", at="2026-03-02T09:00:00Z")
>>> cmd["command"], cmd["issued_by"], sorted(cmd)
('release', 'alice', ['agent_id', 'command', 'incident_id', 'issued_at', 'issued_by', 'reason'])
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

from detector.errors import UsageError
from streams.guard import FreezeGuard
from streams.settings import Settings, SettingsError, add_kafka_arguments

__all__ = ["release_command", "publish_command", "configure_parser", "run"]

RESERVED_ISSUER = "flowbreaker"


def release_command(agent_id: str, incident_id: str | None, *, by: str, reason: str, at: str | None = None) -> dict:
    """The contract's release command (section 4)."""
    issued = at or datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"command": "release", "agent_id": agent_id, "incident_id": incident_id, "issued_at": issued,
            "reason": reason, "issued_by": by}


def publish_command(settings: Settings, command: dict, *, timeout: float = 30.0):
    """Publish ``command`` on ``agent-control`` (key ``agent_id``); returns the record metadata."""
    from kafka import KafkaProducer

    producer = KafkaProducer(client_id="flowbreaker-control", acks="all", max_block_ms=int(timeout * 1000),
                             request_timeout_ms=int(timeout * 1000), **settings.kafka_python_config())
    try:
        future = producer.send(settings.topic("control"), key=command["agent_id"].encode(),
                               value=json.dumps(command).encode())
        producer.flush(timeout)
        return future.get(timeout=timeout)
    finally:
        producer.close(timeout=timeout)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("agent", metavar="AGENT", help="the frozen agent's id")
    p.add_argument("--reason", required=True, help="why the agent may go on (kept in the audit trail)")
    p.add_argument("--by", help="the approver (default with SASL: the authenticated Kafka user)")
    p.add_argument("--incident", metavar="ID",
                   help="the incident being released (default: the agent's open one; must match it)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker (default 30)")
    add_kafka_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_args(args)
    except SettingsError as err:
        raise UsageError(str(err)) from None
    by = (args.by or (settings.sasl_username if settings.sasl else None) or "").strip()
    if not by:
        raise UsageError("--by NAME is required: who approves this release")
    if by == RESERVED_ISSUER:
        raise UsageError(f"--by {RESERVED_ISSUER!r} is reserved for automatic freezes; name the human approver")
    if settings.sasl and by != settings.sasl_username:
        raise UsageError(f"--by {by!r} is not the authenticated Kafka user {settings.sasl_username!r}")
    reason = args.reason.strip()
    if not reason:
        raise UsageError("--reason must not be empty")
    agent = args.agent.strip()
    if not agent:
        raise UsageError("AGENT must not be empty")

    topic = settings.topic("control")
    guard = FreezeGuard(settings.bootstrap, topic=topic, client_id="flowbreaker-control",
                        consumer_config=settings.kafka_python_config())
    guard.start()
    try:
        if not guard.wait_ready(args.timeout):
            print(f"flowbreaker release: could not read {topic} at {settings.bootstrap} within "
                  f"{args.timeout:.0f}s", file=sys.stderr)
            return 1
        freeze = guard.frozen().get(agent)
    except RuntimeError as err:
        print(f"flowbreaker release: {err}", file=sys.stderr)
        return 1
    finally:
        guard.stop()
    if freeze is None:
        raise UsageError(f"agent {agent!r} is not frozen (no open freeze on {topic})")
    incident = freeze.get("incident_id")
    if args.incident and args.incident != incident:
        raise UsageError(f"agent {agent!r} is frozen for incident {incident!r}, not {args.incident!r}")
    command = release_command(agent, incident, by=by, reason=reason)
    try:
        meta = publish_command(settings, command, timeout=args.timeout)
    except Exception as err:  # KafkaTimeoutError and friends: the broker did not take it
        print(f"flowbreaker release: {topic} did not accept the release: {err!r}", file=sys.stderr)
        return 1
    print(f"released {agent} (incident {incident}) by {by}: {topic}[{meta.partition}]@{meta.offset}")
    return 0
