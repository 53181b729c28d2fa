"""Control-side records: decoding that never raises anything but :class:`RecordError`, and the rules
for which freeze and release commands to honour.

Every reader of a control-side topic (``agent-control``, ``agent-incidents``,
``agent-approvals``, ``model-updates``, ``agent-feedback``) decodes with
:func:`decode_record`: a record that is empty, larger than its bound, not UTF-8,
not JSON, nested too deep, not an object or not of the expected shape raises
:class:`RecordError` with a bounded ``reason`` (:data:`REASONS`), whatever the
underlying error was (``RecursionError`` included). The reader counts it, logs
it (:class:`RejectLog`: topic, partition, offset; at most a few lines a minute)
and goes on with the next record.

:class:`CommandFold` is the contract's rule for commands (section 4), one
implementation for the FreezeGuard, the actuator, the workers' control index
and the reference runtime:

- commands are ordered per agent: every signed command carries ``seq``, the
  agent's command sequence number, covered by the signature. The fold keeps the
  highest ``seq`` it verified for each agent; a verified command with a lower
  ``seq``, or the same ``seq`` with other contents, is a replay and changes
  nothing (``replayed``); the same command again is a ``repeat``. A release
  issued more than ``max_backdate_s`` (15 min) before the newest command seen
  for the agent is refused as ``too_old``. A signed command without ``seq``
  (the former format) counts as unverified (verdict ``unsequenced``);
- a ``freeze`` freezes the agent and names its open incident. A freeze whose
  signature does not verify is still honoured where ``unverified_freezes`` is
  set (guards and the actuator: freezing is the safe side) and counted; it never
  replaces a verified freeze in force, so a forged freeze cannot change which
  incident a genuine release must name;
- a ``release`` is honoured only when its signature verifies, it is in order,
  and it names the incident of the freeze in force. Anything else (unsigned,
  forged, replayed, another or an older incident, an agent that is not frozen)
  is ignored and counted.

>>> from streams.clients.signing import KeyRing
>>> ring = KeyRing({"k1": bytes(32)}, active="k1")
>>> fold = CommandFold(ring)
>>> def cmd(kind, inc, seq, **kw):
...     return decode_command(ring.sign(dict({"command": kind, "agent_id": "a", "incident_id": inc, "seq": seq,
...                                           "issued_at": "2026-03-02T09:00:00Z"}, **kw)))
>>> freeze_a, release_a = cmd("freeze", "inc-a", 1), cmd("release", "inc-a", 2)
>>> fold.apply(freeze_a), fold.open_incident("a")
('frozen', 'inc-a')
>>> forged = decode_command({"command": "release", "agent_id": "a", "incident_id": "inc-a", "seq": 9})
>>> fold.apply(forged), fold.apply(cmd("release", "inc-0", 2)), fold.is_frozen("a")
('release_unverified', 'release_stale', True)
>>> fold.apply(release_a), fold.is_frozen("a")
('replayed', True)
>>> fold.apply(cmd("release", "inc-a", 3)), fold.apply(cmd("freeze", "inc-b", 4)), fold.highest("a")
('released', 'frozen', 4)
>>> fold.apply(freeze_a), fold.apply(release_a), fold.open_incident("a")   # the old pair, replayed
('replayed', 'replayed', 'inc-b')
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from typing import Annotated, Any, Literal, Mapping, TypeVar

import msgspec

__all__ = ["RecordError", "decode_record", "decode_command", "Command", "CommandFold", "RejectLog",
           "ControlMetrics", "REASONS", "OUTCOMES", "FOLD_VERDICTS", "MAX_COMMAND_BYTES", "MAX_BACKDATE_S",
           "command_dict"]

log = logging.getLogger("flowbreaker.control")

#: why a record was rejected (bounded: a metric label)
REASONS = ("empty", "too_large", "encoding", "not_json", "too_deep", "not_object", "schema", "error")
#: what :meth:`CommandFold.apply` did with a command (bounded: a metric label)
OUTCOMES = ("frozen", "frozen_unverified", "refrozen", "repeat", "freeze_ignored", "released",
            "release_unverified", "release_stale", "replayed", "too_old")
#: what the fold says of a command's signature: :data:`streams.clients.signing.VERDICTS`, and ``unsequenced``
#: for a signature that verifies on a command without ``seq`` (not ordered: counted as not verified)
FOLD_VERDICTS = ("ok", "unsigned", "malformed_signature", "unknown_key", "bad_signature", "unsequenced")
#: a release issued this long before the newest command seen for its agent is refused (seconds)
MAX_BACKDATE_S = 900.0
#: the largest sequence number (exact in a JSON double)
MAX_SEQ = 2 ** 53
#: the logical topics whose rejections are counted (bounded: a metric label)
TOPICS = ("control", "incidents", "approvals", "model_updates", "feedback", "audit")
#: a freeze or release command is a few hundred bytes; anything near this is not one
MAX_COMMAND_BYTES = 16 * 1024

T = TypeVar("T")


class RecordError(ValueError):
    """A record that cannot be used: ``reason`` is one of :data:`REASONS`, ``detail`` says more (never the
    record's bytes)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def decode_record(raw: Any, type: Any = Any, *, max_bytes: int = 1024 * 1024) -> Any:
    """``raw`` (bytes, str or an already decoded mapping) decoded as JSON of ``type`` (a msgspec type).

    Raises only :class:`RecordError`.

    >>> decode_record(b'{"a": 1}')
    {'a': 1}
    >>> for bad in (None, b"", b"\\xff", b"{", b'{"a":' * 1000, b"[1]", b"x" * 20001):
    ...     try:
    ...         decode_record(bad, dict, max_bytes=20000)
    ...     except RecordError as err:
    ...         print(err.reason, end=" ")
    empty empty encoding not_json too_deep not_object too_large 
    """
    if raw is None:
        raise RecordError("empty", "no value")
    if isinstance(raw, Mapping):  # fed in-process (tests, replays): check the shape all the same
        try:
            raw = msgspec.json.encode(raw)
        except Exception as err:  # noqa: BLE001 - whatever it is, it is not a record
            raise RecordError("schema", f"not encodable as JSON ({err.__class__.__name__})") from None
    elif isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    elif isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    elif not isinstance(raw, bytes):
        raise RecordError("schema", f"not bytes but {raw.__class__.__name__}")
    if not raw.strip():
        raise RecordError("empty", "no value")
    if len(raw) > max_bytes:
        raise RecordError("too_large", f"{len(raw)} bytes, at most {max_bytes}")
    try:
        return msgspec.json.decode(raw, type=type)
    except RecursionError:
        raise RecordError("too_deep", "nested too deep") from None
    except UnicodeDecodeError:
        raise RecordError("encoding", "not valid UTF-8") from None
    except msgspec.ValidationError as err:
        text = str(err)
        if text.startswith("Expected `object`"):
            raise RecordError("not_object", text[:200]) from None
        raise RecordError("schema", text[:200]) from None
    except msgspec.DecodeError as err:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RecordError("encoding", "not valid UTF-8") from None
        raise RecordError("not_json", str(err)[:200]) from None
    except Exception as err:  # noqa: BLE001 - any other failure of the decoder is a bad record, not a crash
        raise RecordError("error", err.__class__.__name__) from None


# ---------------------------------------------------------------------- commands
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
_Text = Annotated[str, msgspec.Meta(max_length=4096)]


class Command(msgspec.Struct, frozen=True, omit_defaults=True):
    """A freeze or release command (contract section 4), shape-checked; unknown fields are dropped."""

    command: Literal["freeze", "release"]
    agent_id: _Id
    incident_id: _Id | None = None
    issued_at: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    reason: _Text | None = None
    issued_by: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    seq: Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)] | None = None
    signature: Annotated[str, msgspec.Meta(max_length=256)] | None = None


def decode_command(raw: Any) -> Command:
    """A :class:`Command` from a record's value; raises :class:`RecordError`.

    >>> decode_command(b'{"command": "freeze", "agent_id": "a", "seq": 3, "extra": [1]}')  # doctest: +ELLIPSIS
    Command(command='freeze', agent_id='a', incident_id=None, ..., seq=3, signature=None)
    >>> decode_command(b'{"command": "pause", "agent_id": "a"}')
    Traceback (most recent call last):
    ...
    streams.clients.commands.RecordError: schema: Invalid enum value 'pause' - at `$.command`
    """
    if isinstance(raw, Command):
        return raw
    return decode_record(raw, Command, max_bytes=MAX_COMMAND_BYTES)


def command_dict(cmd: Command) -> dict:
    """The command as a plain dict of its fields (absent optional fields left out)."""
    return {k: v for k, v in msgspec.structs.asdict(cmd).items() if v is not None}


class CommandFold:
    """Per agent, the freeze in force and the highest command sequence verified, folded from commands in log
    order (see the module docstring).

    ``keys`` is a :class:`streams.clients.signing.KeyRing`; ``None`` means a trusted
    feed (every command counts as verified: only for in-process feeds, never for
    records read from Kafka; commands without ``seq`` then apply in call order).
    ``outcomes`` and ``verdicts`` count what was seen.
    """

    def __init__(self, keys: Any, *, unverified_freezes: bool = True, max_backdate_s: float = MAX_BACKDATE_S) -> None:
        self.keys = keys
        self.unverified_freezes = unverified_freezes
        self.max_backdate_s = max_backdate_s
        #: agent -> (freeze command in force, verified)
        self.frozen: dict[str, tuple[Command, bool]] = {}
        #: agent -> (highest seq verified, newest issued_at seen as epoch seconds or None, digest of that command)
        self.order: dict[str, tuple[int, float | None, bytes]] = {}
        self.outcomes: Counter = Counter()
        self.verdicts: Counter = Counter()
        self.last_verdict: str | None = None

    def verify(self, cmd: Command) -> str:
        if self.keys is None:
            return "ok"
        verdict = self.keys.verify(msgspec.structs.asdict(cmd))
        return "unsequenced" if verdict == "ok" and cmd.seq is None else verdict

    def open_incident(self, agent_id: str) -> str | None:
        held = self.frozen.get(agent_id)
        return held[0].incident_id if held else None

    def is_frozen(self, agent_id: str) -> bool:
        return agent_id in self.frozen

    def highest(self, agent_id: str) -> int:
        """The highest command sequence number verified for ``agent_id`` (0: none yet). The next command an
        issuer signs for the agent takes a higher one."""
        held = self.order.get(agent_id)
        return held[0] if held else 0

    def apply(self, cmd: Command, verdict: str | None = None) -> str:
        """Fold one command; returns what happened (one of :data:`OUTCOMES`)."""
        verdict = verdict or self.verify(cmd)
        self.last_verdict = verdict
        self.verdicts[verdict] += 1
        verified = verdict == "ok"
        held = self.frozen.get(cmd.agent_id)
        if verified and cmd.command == "release" and held is not None and not held[1] \
                and cmd.incident_id is not None and held[0].incident_id == cmd.incident_id:
            # a hold no signature placed (freezing is the safe side) lifted by a signed release naming it: the
            # agents' verified order is not involved, so this never moves it (key holders sign such a release
            # with the highest seq they saw: ordered readers, which never held it, ignore it)
            del self.frozen[cmd.agent_id]
            self.outcomes["released"] += 1
            return "released"
        out = self._order(cmd) if verified and cmd.seq is not None else None
        if out is None:
            out = self._apply(cmd, verified)
        self.outcomes[out] += 1
        return out

    def _order(self, cmd: Command) -> str | None:
        """A verified, sequenced command: ``replayed``/``repeat``/``too_old`` when it must change nothing, else
        None (it becomes the agent's highest; the contract's rules then apply)."""
        from detector.timestamps import instant_or_none

        agent = cmd.agent_id
        digest = hashlib.sha256(msgspec.json.encode(msgspec.structs.replace(cmd, signature=None))).digest()[:16]
        t = instant_or_none(cmd.issued_at)
        last = self.order.get(agent)
        if last is not None:
            seq0, t0, digest0 = last
            if cmd.seq < seq0:
                return "replayed"
            if cmd.seq == seq0:
                return "repeat" if digest == digest0 else "replayed"
            if cmd.command == "release" and t0 is not None and (t is None or t < t0 - self.max_backdate_s):
                return "too_old"
            if t is None or (t0 is not None and t0 > t):
                t = t0
        self.order[agent] = (cmd.seq, t, digest)
        return None

    def _apply(self, cmd: Command, verified: bool) -> str:
        agent = cmd.agent_id
        held = self.frozen.get(agent)
        if cmd.command == "freeze":
            if not verified and not self.unverified_freezes:
                return "freeze_ignored"
            if held is not None:
                if held[1] and not verified:
                    return "freeze_ignored"  # a verified freeze stays in force: its release must still work
                if held[0].incident_id == cmd.incident_id and held[1] == verified:
                    self.frozen[agent] = (cmd, verified)
                    return "repeat"
                self.frozen[agent] = (cmd, verified)
                return "refrozen"
            self.frozen[agent] = (cmd, verified)
            return "frozen" if verified else "frozen_unverified"
        if not verified:
            return "release_unverified"
        if held is None or cmd.incident_id is None or held[0].incident_id != cmd.incident_id:
            return "release_stale"
        del self.frozen[agent]
        return "released"


# ---------------------------------------------------------------------- reporting
class RejectLog:
    """Logs rejected records with topic, partition and offset: every one up to ``burst`` per ``window_s``
    seconds, then one summary line per window (a flood of poison cannot flood the log)."""

    def __init__(self, logger: logging.Logger = log, *, burst: int = 10, window_s: float = 60.0,
                 clock=time.monotonic, what: str = "skipped a record") -> None:
        self.logger = logger
        self.what = what
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._start = clock()
        self._logged = 0
        self._suppressed = 0

    def __call__(self, topic: str, partition: Any, offset: Any, err: RecordError | str) -> None:
        now = self.clock()
        if now - self._start >= self.window_s:
            if self._suppressed:
                self.logger.warning("%s: %d more in the last %.0f s (not logged one by one)", self.what,
                                    self._suppressed, self.window_s)
            self._start, self._logged, self._suppressed = now, 0, 0
        if self._logged < self.burst:
            self._logged += 1
            self.logger.warning("%s of %s[%s]@%s: %s", self.what, topic, partition, offset, err)
        else:
            self._suppressed += 1


class ControlMetrics:
    """The worker's control-side counters (bounded labels: :data:`TOPICS`, :data:`REASONS`,
    :data:`OUTCOMES` and the signature verdicts), in the worker's registry.

    ``flowbreaker_control_records_rejected_total{topic, reason}``
        Records of a control-side topic that could not be decoded or validated, skipped.
    ``flowbreaker_control_commands_total{reader, outcome}``
        Freeze/release commands by what a reader did with them (``reader``: ``index`` the
        worker's control index, ``worker`` the owner's breaker).
    ``flowbreaker_control_signatures_total{reader, verdict}``
        Signature verdicts of the commands read (``ok`` or why not).
    """

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter as PCounter

        reg = registry if registry is not None else CollectorRegistry()
        self.rejected = PCounter("flowbreaker_control_records_rejected_total",
                                 "Control-side records that could not be decoded or validated (skipped).",
                                 ("topic", "reason"), registry=reg)
        self.commands = PCounter("flowbreaker_control_commands_total",
                                 "Freeze/release commands read, by what the reader did with them.",
                                 ("reader", "outcome"), registry=reg)
        self.signatures = PCounter("flowbreaker_control_signatures_total",
                                   "Signature verdicts of the freeze/release commands read.", ("reader", "verdict"),
                                   registry=reg)
        for topic in TOPICS:
            for reason in REASONS:
                self.rejected.labels(topic, reason)
        for reader in ("index", "worker"):
            for outcome in OUTCOMES:
                self.commands.labels(reader, outcome)
            for verdict in FOLD_VERDICTS:
                self.signatures.labels(reader, verdict)

    def reject(self, topic: str, reason: str) -> None:
        self.rejected.labels(topic if topic in TOPICS else "control", reason if reason in REASONS else "error").inc()

    def command(self, reader: str, outcome: str, verdict: str | None = None) -> None:
        self.commands.labels(reader, outcome if outcome in OUTCOMES else "release_stale").inc()
        if verdict is not None:
            self.signatures.labels(reader, verdict).inc()
