"""``flowbreaker release AGENT --reason TEXT [--verdict benign|confirmed]``: a human releases a frozen agent,
with the API's authority.

``--verdict`` says what the incident was: ``benign`` (legitimate work: its actions teach the agent's
profile and the same reasons stop alerting for what they covered) or ``confirmed`` (harmful: teaches
nothing). The verdict goes on ``agent-verdicts``, signed, where every worker and ``flowbreaker replay
--verdicts`` find it (docs/contract.md section 4).

Two ways, one authority (the same rules as ``POST /v1/agents/{id}/release``):

- **With a token** (``--token-file FILE`` or ``$FLOWBREAKER_API_TOKEN``; role
  ``lead``): the release goes through a worker's API (``--url``, default
  ``$FLOWBREAKER_API_URL`` or ``http://127.0.0.1:6066``). The API checks the
  role and the two-person rule, writes the audit record, and the worker that
  owns the agent signs and publishes the release. ``--by`` is not accepted: the
  token names the approver.
- **As a key holder** (no token; the command signing key file with an active
  key: ``--signing-keys FILE`` or ``$FLOWBREAKER_SIGNING_KEYS``) ``--by NAME``:
  for when no worker answers. It reads ``agent-control`` (a
  :class:`streams.clients.guard.FreezeGuard`, signatures verified) to find the agent's
  open incident, applies the two-person rule from the incident's record on
  ``agent-incidents`` (a critical manual freeze is released by someone else than
  who froze it), then publishes the signed ``release`` on ``agent-control`` (key
  ``agent_id``) and its audit record on ``agent-audit`` (``role``
  ``key-holder``, the key id in ``detail``), and waits until the broker has
  both. The release takes the sequence number after the highest the reader
  verified for the agent (contract section 4). Guards, the actuator and the
  owner's breaker then honour it.

When it works, when it fails:

- exit 0 and one line on stdout once the release is done (API) or both records
  are acknowledged (key holder);
- exit 2 (one line on stderr) when neither a token nor a signing key is at
  hand, when the agent is not frozen, when ``--incident`` names another incident
  than the open one, when the token is unknown or its role may not release, when
  the two-person rule refuses, or when ``--by`` is missing (key holder), not a
  valid principal name, ``flowbreaker``, or differs from the authenticated
  Kafka user (SASL);
- exit 1 when the broker or the worker does not answer within ``--timeout``
  seconds.

A key holder can sign anything: the key is the authority there, and the key
file must be kept like one (README, security model).

>>> cmd = release_command("fin-agent-001", "inc-1", by="alice", reason="false positive", at="2026-03-02T09:00:00Z")
>>> cmd["command"], cmd["issued_by"], sorted(cmd)
('release', 'alice', ['agent_id', 'command', 'incident_id', 'issued_at', 'issued_by', 'reason'])
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from urllib.parse import quote

from detector.errors import UsageError
from streams.clients.guard import FreezeGuard
from streams.settings import Settings, SettingsError, add_kafka_arguments

__all__ = ["release_command", "publish_command", "configure_parser", "run"]

RESERVED_ISSUER = "flowbreaker"
DEFAULT_URL = "http://127.0.0.1:6066"
VERDICTS = ("benign", "confirmed")
#: how long before the freeze record its incident record may have been written (clock skew, outbox order)
INCIDENT_SEARCH_MARGIN_MS = 10 * 60 * 1000


class _Unavailable(Exception):
    """The broker or the worker did not answer: exit 1."""


def release_command(agent_id: str, incident_id: str | None, *, by: str, reason: str, at: str | None = None) -> dict:
    """The contract's release command (section 4), unsigned."""
    issued = at or datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"command": "release", "agent_id": agent_id, "incident_id": incident_id, "issued_at": issued,
            "reason": reason, "issued_by": by}


def publish_command(settings: Settings, command: dict, *, timeout: float = 30.0, also: list | None = None):
    """Publish ``command`` on ``agent-control`` (key ``agent_id``), and each ``(topic, key, value)`` of
    ``also``; returns the command's record metadata once the broker acknowledged every record."""
    from kafka import KafkaProducer

    producer = KafkaProducer(client_id="flowbreaker-control", acks="all", max_block_ms=int(timeout * 1000),
                             request_timeout_ms=int(timeout * 1000), **settings.kafka_python_config())
    try:
        future = producer.send(settings.topic("control"), key=command["agent_id"].encode(),
                               value=json.dumps(command).encode())
        others = [producer.send(topic, key=key, value=value) for topic, key, value in (also or ())]
        producer.flush(timeout)
        for f in others:
            f.get(timeout=timeout)
        return future.get(timeout=timeout)
    finally:
        producer.close(timeout=timeout)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("agent", metavar="AGENT", help="the frozen agent's id")
    p.add_argument("--reason", required=True, help="why the agent may go on (kept in the audit trail)")
    p.add_argument("--verdict", choices=VERDICTS, default=None,
                   help="what the incident was: benign (legitimate work, teaches the agent's profile) or "
                        "confirmed (harmful, teaches nothing); published signed on agent-verdicts")
    p.add_argument("--incident", metavar="ID",
                   help="the incident being released (default: the agent's open one; must match it)")
    p.add_argument("--token-file", dest="token_file", metavar="FILE",
                   help="a lead's API token (default $FLOWBREAKER_API_TOKEN): release through a worker's API")
    p.add_argument("--url", default=None, help=f"a worker's API (default $FLOWBREAKER_API_URL or {DEFAULT_URL})")
    p.add_argument("--by", help="key holder only: the approver (default with SASL: the authenticated Kafka user)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker or the worker "
                                                               "(default 30)")
    add_kafka_arguments(p)


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            token = open(args.token_file, encoding="utf-8").read().strip()
        except OSError as err:
            raise UsageError(f"cannot read token file {args.token_file}: {err.strerror}") from None
        if not token or any(c.isspace() for c in token):
            raise UsageError(f"token file {args.token_file} does not hold one bearer token")
        return token
    token = os.environ.get("FLOWBREAKER_API_TOKEN", "").strip()
    return token or None


def run(args: argparse.Namespace) -> int:
    reason = args.reason.strip()
    if not reason:
        raise UsageError("--reason must not be empty")
    agent = args.agent.strip()
    if not agent:
        raise UsageError("AGENT must not be empty")
    if args.timeout <= 0:
        raise UsageError("--timeout must be > 0")
    try:
        token = _token(args)
        if token is not None:
            return _via_api(args, agent, reason, token)
        try:
            settings = Settings.from_args(args)
            from streams.clients.signing import keyring_for

            keys = keyring_for(settings)
        except SettingsError as err:
            raise UsageError(str(err)) from None
        if keys is None or not keys.can_sign:
            raise UsageError("a release needs a lead's API token (--token-file FILE or FLOWBREAKER_API_TOKEN) or "
                             "the command signing key (--signing-keys FILE or FLOWBREAKER_SIGNING_KEYS)")
        return _as_key_holder(args, settings, keys, agent, reason)
    except _Unavailable as err:
        print(f"flowbreaker release: {err}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------- through the API
def _via_api(args: argparse.Namespace, agent: str, reason: str, token: str) -> int:
    import urllib.error
    import urllib.request

    if args.by:
        raise UsageError("--by is for key holders: with a token, the API names the approver from the token")
    base = (args.url or os.environ.get("FLOWBREAKER_API_URL") or DEFAULT_URL).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--url must be an http(s) URL, got {base!r}")
    body = {"reason": reason}
    if args.incident:
        body["incident_id"] = args.incident
    if args.verdict:
        body["verdict"] = args.verdict
    req = urllib.request.Request(f"{base}/v1/agents/{quote(agent, safe='')}/release", method="POST",
                                 data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            out = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            e = (json.loads(err.read() or b"{}").get("error") or {})
        except (ValueError, AttributeError):
            e = {}
        message = e.get("message") or f"HTTP {err.code}"
        if 400 <= err.code < 500:
            hint = {401: "the token is not known to the worker", 403: "refused"}.get(err.code)
            raise UsageError(f"{hint}: {message}" if hint else message) from None
        raise _Unavailable(f"the worker at {base} answered {err.code}: {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise _Unavailable(f"no answer from {base} ({getattr(err, 'reason', err)})") from None
    published = "" if out.get("published", True) else " (not yet confirmed on agent-control)"
    verdict = f", verdict {out['verdict']} ({out.get('verdict_id')})" if out.get("verdict") else ""
    print(f"released {agent} (incident {out.get('incident_id')}) by {out.get('released_by')}{verdict}: via {base}"
          f"{published}")
    return 0


# ---------------------------------------------------------------------- as a key holder
def _as_key_holder(args: argparse.Namespace, settings: Settings, keys, agent: str, reason: str) -> int:
    from streams.api.auth import check_name

    by = (args.by or (settings.sasl_username if settings.sasl else None) or "").strip()
    if not by:
        raise UsageError("--by NAME is required: who approves this release")
    if by == RESERVED_ISSUER:
        raise UsageError(f"--by {RESERVED_ISSUER!r} is reserved for automatic freezes; name the human approver")
    why = check_name(by)
    if why is not None:
        raise UsageError(f"--by: {why}")
    if settings.sasl and by != settings.sasl_username:
        raise UsageError(f"--by {by!r} is not the authenticated Kafka user {settings.sasl_username!r}")

    topic = settings.topic("control")
    guard = FreezeGuard(settings.bootstrap, keys=keys, topic=topic, client_id="flowbreaker-control",
                        consumer_config=settings.kafka_python_config())
    guard.start()
    try:
        if not guard.wait_ready(args.timeout):
            raise _Unavailable(f"could not read {topic} at {settings.bootstrap} within {args.timeout:.0f}s")
        freeze = guard.frozen().get(agent)
        freeze_ms = guard.freeze_record_ms(agent)
        # contract section 4: a signed freeze in force is released with the next sequence number; a hold no
        # signature placed is lifted by a release naming it, which takes the highest seen (it moves no order)
        seq = guard.highest_seq(agent) + 1 if guard.freeze_verified(agent) else max(1, guard.highest_seq(agent))
    except RuntimeError as err:
        raise _Unavailable(str(err)) from None
    finally:
        guard.stop()
    if freeze is None:
        raise UsageError(f"agent {agent!r} is not frozen (no open freeze on {topic})")
    incident = freeze.get("incident_id")
    if args.incident and args.incident != incident:
        raise UsageError(f"agent {agent!r} is frozen for incident {incident!r}, not {args.incident!r}")
    if incident and freeze.get("issued_by") != RESERVED_ISSUER:  # a manual freeze: who froze it, how severe
        meta = _incident_record(settings, incident, freeze_ms, args.timeout)
        if meta is None:
            raise _Unavailable(f"the record of incident {incident!r} was not found on "
                               f"{settings.topic('incidents')}; retry")
        if meta.get("severity") == "critical" and meta.get("frozen_by") == by:
            raise UsageError(f"two-person rule: {by!r} froze critical incident {incident!r}; another lead "
                             "releases it")

    from streams.api.audit_trail import record

    command = keys.sign(dict(release_command(agent, incident, by=by, reason=reason), seq=seq))
    now_ms = int(time.time() * 1000)
    also = []
    verdict = ""
    if args.verdict and incident:
        from streams import verdicts

        rec = verdicts.sign(keys, verdicts.new_verdict(agent_id=agent, target=incident, verdict=args.verdict, by=by,
                                                       reason=reason, at=now_ms / 1000.0))
        also.append((settings.topic("verdicts"), agent.encode(), json.dumps(rec).encode()))
        verdict = f", verdict {args.verdict} ({rec['verdict_id']})"
    audit = record(who=by, role="key-holder", what="release", why=reason, result="ok", status=None, at_ms=now_ms,
                   agent_id=agent, incident_id=incident,
                   detail=f"flowbreaker release, signed with key {keys.active}"
                          + (f"; verdict {args.verdict}" if verdict else ""), worker=None)
    also.append((settings.topic("audit"), agent.encode(), json.dumps(audit).encode()))
    try:
        meta = publish_command(settings, command, timeout=args.timeout, also=also)
    except Exception as err:  # KafkaTimeoutError and friends: the broker did not take them all
        raise _Unavailable(f"{topic} or {settings.topic('audit')} did not accept the release: {err!r}") from None
    print(f"released {agent} (incident {incident}) by {by}{verdict}: {topic}[{meta.partition}]@{meta.offset}")
    return 0


def _incident_record(settings: Settings, incident_id: str, near_ms: int | None, timeout: float) -> dict | None:
    """The incident's record on ``agent-incidents`` (key ``incident_id``: one partition), looked up from a
    little before the freeze record's time; None when it is not there."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.partitioner.default import murmur2

    from streams.clients.commands import RecordError, decode_record
    from streams.api.control_feed import MAX_INCIDENT_BYTES

    topic = settings.topic("incidents")
    c = KafkaConsumer(client_id="flowbreaker-control", group_id=None, enable_auto_commit=False,
                      request_timeout_ms=int(timeout * 1000), **settings.kafka_python_config())
    try:
        parts = c.partitions_for_topic(topic)
        if not parts:
            return None
        key = incident_id.encode()
        tp = TopicPartition(topic, (murmur2(key) & 0x7FFFFFFF) % len(parts))
        c.assign([tp])
        start = None
        if near_ms is not None:
            found = c.offsets_for_times({tp: max(0, near_ms - INCIDENT_SEARCH_MARGIN_MS)}).get(tp)
            start = found.offset if found is not None else None
        if start is None:
            c.seek_to_beginning(tp)
        else:
            c.seek(tp, start)
        end = c.end_offsets([tp])[tp]
        deadline = time.monotonic() + timeout
        while c.position(tp) < end:
            if time.monotonic() > deadline:
                raise _Unavailable(f"could not read {topic} within {timeout:.0f}s")
            for rec in c.poll(timeout_ms=200).get(tp, ()):
                if rec.key != key:
                    continue
                try:
                    value = decode_record(rec.value, dict, max_bytes=MAX_INCIDENT_BYTES)
                except RecordError:
                    continue
                if value.get("incident_id") == incident_id:
                    return value  # the first record of an incident is the one its worker wrote
        return None
    finally:
        c.close(autocommit=False)
