"""Per-agent features over sliding windows, O(1) per event, in a fixed-size state.

Windows are exponentially decayed sums with mean lifetimes of 1 min, 15 min and
1 h: a decayed sum approximates "how much in the last W" without keeping the
events, so the state is a handful of floats whatever the rate. Distinct
destinations per hour are counted with a two-generation Bloom filter ("not seen
in the current or previous hour"); first-seen tools, resource families and
destinations use lifetime Bloom filters (novelty).

Novelty sketches are only taught by :func:`commit_novelty`, which the engine
calls for actions judged normal, and by :func:`settle`, which the engine calls for one
item (a tool, resource family, destination, task step or principal) that has recurred
without evidence of harm, that the agent's peers adopted, or that an analyst judged
benign: an anomalous destination otherwise stays "never seen". :attr:`Observation.novel`
names the items an action met for the first time.

>>> from detector.policy import Policy
>>> from detector.events import decode_event
>>> st = FeatureState()
>>> ev = decode_event({"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
...     "tool": "mail.send", "action": "send", "resource": "mail://outbox", "sensitivity": "confidential",
...     "records": 4, "destinations": ["email:eve@evil.example"]})
>>> obs = extract(st, ev, Policy())
>>> obs.x[FEATURE_INDEX["event_volume"]], obs.x[FEATURE_INDEX["novel_outbound"]], obs.dest_classes
(20.0, 6.0, ('external',))
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from math import exp, log2
import re

from detector.events import ActionEvent
from detector.policy import BROADCAST, EXTERNAL, INTERNAL, Policy
from detector.native import kernels as _kernels
from detector.sketch import bloom_add, bloom_has, stable_hash

#: an event's first destinations classified against the policy (contract section 1: an action may name 10,000);
#: the rest count in fan-out as external, or with their reach when listed under ``[broadcast]``, so one event's
#: work stays bounded (and the policy's classification cache is not flushed by one event of fresh addresses)
CLASSIFIED_DESTINATIONS = 1000

__all__ = ["FEATURES", "FEATURE_NAMES", "FEATURE_INDEX", "Feature", "FeatureState", "Observation", "extract",
           "commit_novelty", "commit_novel", "settle", "resource_family", "destination_family", "tool_family",
           "SKETCH_BYTES", "K_TOOL", "K_RESOURCE", "K_DEST", "K_STEP", "K_PRINCIPAL", "item_key"]


@dataclass(frozen=True)
class Feature:
    name: str
    #: smallest baseline scale (in log1p units): deviations smaller than this are not news
    floor: float
    #: a sentence template: {value} and {baseline} are filled in, in natural units
    detail: str
    unit: str = ""


FEATURES: tuple[Feature, ...] = (
    Feature("rate_1m", 0.6, "{value} actions in the last minute; usually about {baseline}", "actions"),
    Feature("rate_15m", 0.5, "{value} actions in the last 15 minutes; usually about {baseline}", "actions"),
    Feature("volume_15m", 0.6, "{value} sensitivity-weighted records handled in the last 15 minutes; usually about {baseline}"),
    Feature("volume_1h", 0.6, "{value} sensitivity-weighted records handled in the last hour; usually about {baseline}"),
    Feature("bytes_1h", 0.8, "{value} bytes moved in the last hour; usually about {baseline}", "bytes"),
    Feature("outbound_15m", 0.5, "{value} sensitivity-weighted records sent to external or broadcast destinations in the last 15 minutes; usually about {baseline}"),
    Feature("outbound_1h", 0.5, "{value} sensitivity-weighted records sent to external or broadcast destinations in the last hour; usually about {baseline}"),
    Feature("fanout_15m", 0.6, "reached {value} recipients (broadcast reach included) in the last 15 minutes; usually about {baseline}", "recipients"),
    Feature("destinations_1h", 0.6, "{value} distinct destinations in the last hour; usually about {baseline}", "destinations"),
    Feature("external_destinations_1h", 0.5, "{value} distinct external destinations in the last hour; usually about {baseline}", "destinations"),
    Feature("deletes_15m", 0.5, "{value} records deleted in the last 15 minutes; usually about {baseline}", "records"),
    Feature("novelty_1h", 0.5, "{value} first-seen tools, resources or destinations (sensitivity-weighted) in the last hour; usually about {baseline}"),
    Feature("event_volume", 0.7, "this action handled {value} sensitivity-weighted records; a typical action handles about {baseline}"),
    Feature("event_fanout", 0.5, "this action reaches {value} recipients; a typical action reaches about {baseline}", "recipients"),
    Feature("task_exfil", 0.4, "this task read {value} sensitivity-weighted records of confidential or restricted data and is now sending to an external or broadcast destination; usually about {baseline}"),
    Feature("rule_of_two", 0.15, "this task took in untrusted input, touched confidential or restricted data and now communicates outward without an approval (rule of two); usually {baseline}"),
    Feature("novel_outbound", 0.3, "sends to never-seen external or broadcast destinations ({value}: weighted by sensitivity, triple for a never-seen kind of destination such as a new domain); usually about {baseline}"),
    Feature("hour_rarity", 0.8, "acts at an hour this agent rarely works ({value} bits of surprise); usually {baseline}", "bits"),
    Feature("novel_destinations_1d", 0.5, "met {value} never-seen external or broadcast destinations in the last day; this agent usually meets about {baseline}", "destinations"),
    Feature("task_actions", 0.5, "this task has taken {value} actions so far; this agent's tasks usually take about {baseline}", "actions"),
    Feature("task_novel_steps", 0.3, "this task took {value} steps (one tool after another) this agent has never taken in a task; usually {baseline}", "steps"),
    Feature("unfamiliar_principal", 0.3, "a colleague this agent has never worked for directs it to do this ({value}: weighted by what the action can damage: sending out, deleting, broadcasting); usually {baseline}"),
    Feature("untrusted_detour", 0.3, "after taking in untrusted input (web, outside mail) this task now sends to a destination nothing in the task points to, or takes a step it never took, to send, delete or change something ({value}: weighted by sensitivity and harm); usually {baseline}"),
    Feature("novel_tool", 0.3, "uses a tool this agent has never used ({value}: weighted by sensitivity, double when it sends, deletes, writes or executes); usually {baseline}"),
    Feature("outsider_principal", 0.3, "someone from outside the organisation whom this agent has never worked for directs it to do this ({value}: weighted by what the action can damage: sending out, deleting, broadcasting); usually {baseline}"),
)
FEATURE_NAMES = tuple(f.name for f in FEATURES)
FEATURE_INDEX = {n: i for i, n in enumerate(FEATURE_NAMES)}
N_FEATURES = len(FEATURES)

# decayed counters: index -> (window seconds)
_C_RATE1, _C_RATE15, _C_VOL15, _C_VOL60, _C_BYTES60, _C_OUT15, _C_OUT60, _C_FAN15, _C_DEST60, _C_EXT60, \
    _C_DEL15, _C_NOV60, _C_NOVD1D = range(13)
N_COUNTERS = 13
_TAU1, _TAU15, _TAU60, _TAU1D = 60.0, 900.0, 3600.0, 86400.0
_TOOL_MASK, _RES_MASK, _DEST_MASK, _RECENT_MASK = 255, 1023, 2047, 511
#: tool-to-tool steps taken inside tasks, and the principals (requested_by) the agent worked for
_STEP_MASK, _PRINCIPAL_MASK = 1023, 255
#: bytes of the lifetime sketches (tools, resource families, destinations, task steps, principals)
SKETCH_BYTES = ((_TOOL_MASK + 1) // 8, (_RES_MASK + 1) // 8, (_DEST_MASK + 1) // 8, (_STEP_MASK + 1) // 8,
                (_PRINCIPAL_MASK + 1) // 8)
_N_TASKS = 4
#: kinds of novelty items (which lifetime sketch an item belongs to); an item is ``kind << 32 | hash``
K_TOOL, K_RESOURCE, K_DEST, K_STEP, K_PRINCIPAL = range(5)
_TOOL_SPLIT = re.compile(r"[._:/\-]")
_TOOL_KEY, _RES_KEY, _DEST_KEY, _STEP_KEY, _PRINCIPAL_KEY = (k << 32 for k in range(5))
#: per task slot: hash, flags, sensitive volume read, last t, last tool's hash, actions, novel steps, and a
#: 128-bit Bloom filter (four 32-bit quarters, two probes a word) of the words of who asked and of what
#: the task touched
_SLOT = 11
_F_UNTRUSTED, _F_SENSITIVE, _F_STRANGER = 1, 2, 4
#: a never-seen destination that the task's context names (a reply to whoever asked, to the sender of a
#: mail it read) counts this much of one that nothing in the task points to
_RELATED_SHARE = 0.25
_WORD = re.compile(r"[a-z]{2,}")
#: words too common in addresses to relate anything
_STOP = frozenset(("com", "org", "net", "www", "http", "https", "mail", "email", "gmail", "example", "customer",
                   "user", "users", "corp", "inbox", "outbox", "the", "and", "info", "support", "team", "noreply"))
_STOP_WORDS = tuple(sorted(_STOP))  # for the kernel
_k_words = getattr(_kernels, "words", None)  # detector._native.words: _py_words_of compiled, ASCII only
_k_text_words = getattr(_kernels, "text_words", None)  # detector._native.text_words: _py_text_words, ASCII only
_words_cache: dict[str, tuple[int, ...]] = {}
#: (action, tool) -> the hash of its kind (verb and tool family), memoised
_kinds: dict[tuple[str, str], int] = {}
_START = 0x5A17
_GEN_S = 3600.0
_SHARE = 0.05
_Q_VOLUME15, _Q_VOLUME60 = (FEATURE_INDEX["volume_15m"],), (FEATURE_INDEX["volume_1h"],)
_Q_BYTES = (FEATURE_INDEX["bytes_1h"],)
_Q_OUTBOUND15, _Q_OUTBOUND60 = (FEATURE_INDEX["outbound_15m"],), (FEATURE_INDEX["outbound_1h"],)
_Q_FANOUT = (FEATURE_INDEX["fanout_15m"],)
#: what an action whose destinations all received from the agent before is not blamed for
KNOWN_REACH_QUIET = (FEATURE_INDEX["fanout_15m"], FEATURE_INDEX["event_fanout"])
_Q_DEST = (FEATURE_INDEX["destinations_1h"],)
_Q_EXT = (FEATURE_INDEX["external_destinations_1h"],)
_Q_DELETE = (FEATURE_INDEX["deletes_15m"],)
_Q_NOVELTY = (FEATURE_INDEX["novelty_1h"],)
_Q_NOVEL_DESTS = (FEATURE_INDEX["novel_destinations_1d"],)


def _b(bits: int, mask: int) -> bytes:
    return bits.to_bytes((mask + 1) // 8, "little")


def _i(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


class FeatureState:
    """The part of an agent's state that features need. Fixed size; measured by ``bench/bench_replay.py``."""

    __slots__ = ("last_t", "c", "tools", "resources", "dests", "steps", "principals", "recent_a", "recent_b",
                 "gen_t", "tasks", "instr", "instr_t", "hours")

    def __init__(self) -> None:
        self.last_t = 0.0
        self.c = array("d", bytes(8 * N_COUNTERS))
        self.tools = 0
        self.resources = 0
        self.dests = 0
        self.steps = 0
        self.principals = 0
        self.recent_a = 0
        self.recent_b = 0
        self.gen_t = 0.0
        self.tasks = array("d", bytes(8 * _SLOT * _N_TASKS))
        self.instr = 0
        self.instr_t = 0.0
        #: hour-of-day activity profile (24 probabilities) from the trained model, or None
        self.hours: tuple[float, ...] | None = None

    def seed_sketches(self, sketches: tuple[bytes, ...]) -> None:
        """Start the lifetime sketches from a trained profile's (see :data:`SKETCH_BYTES`)."""
        self.tools, self.resources, self.dests, self.steps, self.principals = (_i(b) for b in sketches)

    def sketches(self) -> tuple[bytes, ...]:
        return (_b(self.tools, _TOOL_MASK), _b(self.resources, _RES_MASK), _b(self.dests, _DEST_MASK),
                _b(self.steps, _STEP_MASK), _b(self.principals, _PRINCIPAL_MASK))

    def to_tuple(self) -> tuple:
        """Plain values (Bloom filters as little-endian bytes) for compact serialisation."""
        return (self.last_t, self.c.tobytes(), *self.sketches(), _b(self.recent_a, _RECENT_MASK),
                _b(self.recent_b, _RECENT_MASK), self.gen_t, self.tasks.tobytes(), self.instr, self.instr_t)

    @classmethod
    def from_tuple(cls, t: tuple | list) -> "FeatureState":
        s = cls()
        if len(t) != 13:
            raise ValueError("feature state has the wrong shape")
        (s.last_t, c, tools, res, dests, steps, principals, ra, rb, s.gen_t, tasks, s.instr, s.instr_t) = t
        s.c = array("d", c)
        s.tasks = array("d", tasks)
        s.seed_sketches((tools, res, dests, steps, principals))
        s.recent_a, s.recent_b = _i(ra), _i(rb)
        if len(s.c) != N_COUNTERS or len(s.tasks) != _SLOT * _N_TASKS:
            raise ValueError("feature state has the wrong shape")
        return s


class Observation:
    """What extracting features from one action found: the raw feature values and the context
    the engine needs to commit novelty and to explain."""

    __slots__ = ("x", "dest_classes", "pending", "new_outbound", "config_change", "outbound", "approved", "quiet",
                 "step", "principal", "novel", "adopted", "kind", "known_reach")

    def __init__(self) -> None:
        #: the feature values (natural units): a list from the reference, an array('d') from the kernel
        self.x: list[float] | array = []
        self.dest_classes: tuple[str, ...] = ()
        self.pending: tuple[int, int, list[int]] = (0, 0, [])
        #: the tool-to-tool step this action took inside its task (a hash, 0 without a task), and the
        #: principal it was asked by (a hash, 0 when none or the operator): committed with the novelty
        self.step = 0
        self.principal = 0
        self.new_outbound: list[str] = []
        self.config_change = False
        self.outbound = False
        self.approved = False
        #: windowed features this action added nothing to: it cannot be blamed for them
        self.quiet: tuple[int, ...] = ()
        #: items (:func:`item_key`) this action met for the first time, and items the agent's peers adopted
        #: that it met for the first time (not novel: the engine settles them)
        self.novel: list[int] = []
        self.adopted: list[int] = []
        #: the kind of action (verb and tool family) as a stable hash: per-action magnitudes compare within it
        self.kind = 0
        #: every destination is one the agent sent to before: not news in fan-out (KNOWN_REACH_QUIET)
        self.known_reach = False


def item_key(kind: int, h: int) -> int:
    """One novelty item as an int: its sketch (``K_TOOL`` ...) and its 32-bit hash."""
    return (kind << 32) | h


def tool_family(tool: str) -> str:
    """The family of a tool: its name up to the first ``.``, ``_``, ``:``, ``/`` or ``-``.

    >>> tool_family("mail.send"), tool_family("slack_post_message"), tool_family("bash")
    ('mail', 'slack', 'bash')
    """
    return _TOOL_SPLIT.split(tool, 1)[0]


def resource_family(resource: str) -> str:
    """The resource without its last path segment(s): ``drive://file/42`` -> ``drive://file``.

    >>> resource_family("hr://personnel/records/17"), resource_family("email:bob@x.example")
    ('hr://personnel', 'email:bob@x.example')
    """
    scheme, sep, rest = resource.partition("://")
    if not sep:
        return resource
    return scheme + "://" + rest.split("/", 1)[0]


def destination_family(dest: str) -> str:
    """The kind of a destination: scheme and domain (``email:x@evil.example`` -> ``email:@evil.example``),
    or scheme and host for URLs; the scheme alone otherwise.

    >>> destination_family("email:eve@evil.example"), destination_family("http:https://paste.example/x/y")
    ('email:@evil.example', 'http:paste.example')
    >>> destination_family("iban:GB29NWBK60161331926819")
    'iban:'
    """
    scheme, _, addr = dest.partition(":")
    if "@" in addr:
        return scheme + ":@" + addr.rpartition("@")[2].lower()
    if "://" in addr:
        return scheme + ":" + addr.split("://", 1)[1].split("/", 1)[0].lower()
    return scheme + ":"


def _words(text: str) -> tuple[int, ...]:
    """Hashes of the words (letters only, 2+ long, common address words left out) in a name, address
    or resource: ``customer:noah_hernandez_42`` and ``email:noah.hernandez7@x.example`` share two."""
    hit = _words_cache.get(text)
    if hit is None:
        hit = _k_text_words(text, _STOP_WORDS) if _k_text_words is not None else None
        if hit is None:
            hit = _py_text_words(text)
        if len(_words_cache) >= 50_000:
            _words_cache.clear()
        _words_cache[text] = hit
    return hit


def _py_text_words(text: str) -> tuple[int, ...]:
    """The words of a name, uncached: the reference of ``detector._native.text_words`` (which the kernel's
    extract reads ASCII names with)."""
    local = text.partition(":")[2] or text
    if "@" in local:
        local = local.rpartition("@")[0]
    return _py_words_of(local.lower(), _STOP)


def _py_words_of(local: str, stop: frozenset) -> tuple[int, ...]:
    """The hashes of the words of ``local`` (lower-cased): the reference of ``detector._native.words``."""
    return tuple(stable_hash(w) for w in _WORD.findall(local) if w not in stop)[:16]


def _word_bits(words: tuple[int, ...]) -> int:
    bits = 0
    for w in words:
        bits |= (1 << (w & 127)) | (1 << ((w >> 7) & 127))
    return bits


def _names_any(bits: int, words: tuple[int, ...]) -> bool:
    for w in words:
        if (bits >> (w & 127)) & 1 and (bits >> ((w >> 7) & 127)) & 1:
            return True
    return False


def _py_extract(st: FeatureState, ev: ActionEvent, policy: Policy, adopted=None) -> Observation:
    """Advance the windows with ``ev`` and return its feature values (natural units).

    Mutates ``st`` (windows, recent destinations, task flows) but not the novelty
    sketches: those wait for :func:`commit_novelty`. Events older than the newest
    seen are counted as if they happened now (no negative decay). ``adopted`` (a set of
    :func:`item_key`, or ``None``): items the agent's peers adopted, which are not novel
    for it (listed in ``Observation.adopted`` for the engine to settle).

    A destination is compared with its own history: ``Observation.known_reach`` says every
    destination of the action is one this agent already sent to (in its sketch); the engine
    then does not blame it for fan-out: a broadcast channel it posts to routinely is not
    news in fan-out, while a new one is. (Kept out of ``quiet``, which ``train`` also reads:
    the trained calibration stays what it was.)
    """
    t = ev.t
    dt = t - st.last_t if st.last_t else 0.0
    if dt < 0.0:
        dt = 0.0
    else:
        st.last_t = t
    c = st.c
    if dt > 0.0:
        d1, d15, d60 = exp(-dt / _TAU1), exp(-dt / _TAU15), exp(-dt / _TAU60)
        c[_C_NOVD1D] *= exp(-dt / _TAU1D)
        c[_C_RATE1] *= d1
        c[_C_RATE15] *= d15
        c[_C_VOL15] *= d15
        c[_C_VOL60] *= d60
        c[_C_BYTES60] *= d60
        c[_C_OUT15] *= d15
        c[_C_OUT60] *= d60
        c[_C_FAN15] *= d15
        c[_C_DEST60] *= d60
        c[_C_EXT60] *= d60
        c[_C_DEL15] *= d15
        c[_C_NOV60] *= d60
    if t - st.gen_t >= _GEN_S:
        st.recent_b = st.recent_a if t - st.gen_t < 2 * _GEN_S else 0
        st.recent_a = 0
        st.gen_t = t

    o = Observation()
    weights = policy.sensitivity_weight
    w = weights[ev.sensitivity]
    approved = ev.approval_id is not None
    o.approved = approved
    records = ev.records
    vol = w * (records if records > 0 else 1)
    sensitive = w >= weights["confidential"] and w > 0.0
    c[_C_RATE1] += 1.0
    c[_C_RATE15] += 1.0
    c[_C_BYTES60] += ev.bytes
    if not approved:
        c[_C_VOL15] += vol
        c[_C_VOL60] += vol

    # novelty (not yet committed)
    wn = 1.0 + w / 5.0
    h_tool = stable_hash(ev.tool)
    h_res = stable_hash(resource_family(ev.resource))
    novelty = 0.0
    novel_tool = 0.0
    acting = ev.action != "read" or bool(ev.destinations)
    novel_items = o.novel
    if not bloom_has(st.tools, h_tool, _TOOL_MASK):
        k = _TOOL_KEY | h_tool
        if adopted is not None and k in adopted:
            o.adopted.append(k)
        else:
            novelty += wn
            novel_tool = wn * (2.0 if acting else 1.0)
            novel_items.append(k)
    if not bloom_has(st.resources, h_res, _RES_MASK):
        k = _RES_KEY | h_res
        if adopted is not None and k in adopted:
            o.adopted.append(k)
        else:
            novelty += wn
            novel_items.append(k)

    # the task this action serves: its context (who asked, what it touched) relates destinations to it
    slot_base = -1
    context = 0
    if ev.task_id is not None:
        slot_base = _SLOT * _task_slot(st, stable_hash(ev.task_id), t)
        tasks = st.tasks
        context = (int(tasks[slot_base + 7]) | (int(tasks[slot_base + 8]) << 32) | (int(tasks[slot_base + 9]) << 64)
                   | (int(tasks[slot_base + 10]) << 96))
    if ev.requested_by is not None:
        context |= _word_bits(_words(ev.requested_by))

    # destinations
    fanout = 0
    strangers = 0.0
    n_new_recent = 0
    n_new_ext = 0
    novel_out = 0.0
    dest_hashes: list[int] = []
    new_out: list[str] = []
    classes: list[str] = []
    outward = False
    dests = ev.destinations
    known = True  # every destination is one this agent sent to before
    if dests:
        recent_a, recent_b = st.recent_a, st.recent_b
        seen_dests = st.dests
        classify = policy.classify
        broadcast = policy.broadcast
        for i, d in enumerate(dests):
            if i < CLASSIFIED_DESTINATIONS:
                cls, reach = classify(d)
            else:  # bounded work per event: past the bound only the [broadcast] list is looked up (a dict)
                reach = broadcast.get(d)
                cls, reach = (BROADCAST, reach) if reach is not None else (EXTERNAL, 1)
            classes.append(cls)
            ext = cls is EXTERNAL or cls is BROADCAST
            if ext:
                outward = True
            fanout += reach
            if i >= 64:  # novelty and distinct counts look at the first 64; fan-out counts all
                known = False
                continue
            h = stable_hash(d)
            dest_hashes.append(h)
            if not bloom_has(recent_a, h, _RECENT_MASK) and not bloom_has(recent_b, h, _RECENT_MASK):
                recent_a = bloom_add(recent_a, h, _RECENT_MASK)
                n_new_recent += 1
                if ext:
                    n_new_ext += 1
            if bloom_has(seen_dests, h, _DEST_MASK):
                pass  # it reached this destination's audience before
            elif adopted is not None and (_DEST_KEY | h) in adopted:
                o.adopted.append(_DEST_KEY | h)
            else:
                known = False
                novel_items.append(_DEST_KEY | h)
                novelty += wn
                if ext:
                    # a never-seen destination of a never-seen kind (scheme and domain) counts triple,
                    # one that the task's context names (a reply to whoever asked) a quarter
                    hf = stable_hash(destination_family(d))
                    dest_hashes.append(hf)
                    if bloom_has(seen_dests, hf, _DEST_MASK):
                        add = wn
                    else:
                        add = 3.0 * wn
                        novel_items.append(_DEST_KEY | hf)
                    dw = _words(d)
                    if dw and context and _names_any(context, dw):
                        add *= _RELATED_SHARE
                    else:
                        strangers += add
                    novel_out += add
                    if len(new_out) < 5:
                        new_out.append(d)
        st.recent_a = recent_a
    o.dest_classes = tuple(classes)
    o.outbound = outward
    o.new_outbound = new_out
    if new_out and not approved:
        c[_C_NOVD1D] += len(new_out)
    if approved:
        novel_out = 0.0
    else:
        c[_C_FAN15] += fanout
        if outward:
            c[_C_OUT15] += vol
            c[_C_OUT60] += vol
    c[_C_DEST60] += n_new_recent
    c[_C_EXT60] += n_new_ext
    c[_C_NOV60] += novelty
    deleted = 0.0
    if ev.action == "delete":
        deleted = float(records if records > 0 else 1)
        c[_C_DEL15] += deleted

    # who asked: a principal the agent never worked for, weighted by what the action can damage; one
    # from outside the organisation (not an internal address per the policy) weighs as evidence of harm
    unfamiliar = 0.0
    who = ev.requested_by
    h_who = 0
    if who is not None and who != ev.operator_id:
        h_who = stable_hash(who)
        if not bloom_has(st.principals, h_who, _PRINCIPAL_MASK):
            k = _PRINCIPAL_KEY | h_who
            if adopted is not None and k in adopted:
                o.adopted.append(k)
            else:
                unfamiliar = _directed_harm(ev, outward, sensitive, fanout, classes, dests)
                novel_items.append(k)
    o.principal = h_who

    # flows inside a task, and its shape (which tool follows which)
    task_exfil = 0.0
    rule2 = 0.0
    task_n = 0.0
    novel_steps = 0.0
    detour = 0.0
    if slot_base >= 0:
        tasks = st.tasks
        base = slot_base
        flags = int(tasks[base + 1])
        if tasks[base + 5] == 0.0 and unfamiliar > 0.0:
            flags |= _F_STRANGER  # whoever started the task stays unfamiliar for all of it
        elif flags & _F_STRANGER and who is not None and unfamiliar == 0.0 and h_who:
            unfamiliar = _directed_harm(ev, outward, sensitive, fanout, classes, dests)
        ctx = context | _word_bits(_words(ev.resource))
        tasks[base + 7] = float(ctx & 0xFFFFFFFF)
        tasks[base + 8] = float((ctx >> 32) & 0xFFFFFFFF)
        tasks[base + 9] = float((ctx >> 64) & 0xFFFFFFFF)
        tasks[base + 10] = float(ctx >> 96)
        untrusted_before = flags & _F_UNTRUSTED
        prev = int(tasks[base + 4]) or _START
        step = ((prev * 0x9E3779B1) ^ h_tool) & 0xFFFFFFFF
        o.step = step
        tasks[base + 4] = float(h_tool)
        tasks[base + 5] += 1.0
        task_n = tasks[base + 5]
        new_step = not bloom_has(st.steps, step, _STEP_MASK)
        if new_step:
            if adopted is not None and (_STEP_KEY | step) in adopted:
                o.adopted.append(_STEP_KEY | step)
                new_step = False
            else:
                tasks[base + 6] += 1.0
                novel_items.append(_STEP_KEY | step)
        if new_step or outward or ev.action == "delete":
            novel_steps = tasks[base + 6]
        if ev.action in ("read", "exec") and policy.is_untrusted_source(ev.resource):
            flags |= _F_UNTRUSTED
        if sensitive and not outward:
            flags |= _F_SENSITIVE
            tasks[base + 2] += vol
        tasks[base + 1] = float(flags)
        if outward and not approved:
            if flags & _F_SENSITIVE:
                task_exfil = tasks[base + 2] + (vol if sensitive else 0.0)
            elif sensitive:
                task_exfil = vol
            if flags & 3 == 3 or (flags & _F_UNTRUSTED and sensitive):
                rule2 = 1.0
            if untrusted_before and strangers > 0.0:
                detour = strangers
        if untrusted_before and acting and not approved and (new_step or tasks[base + 6] > 0.0):
            # after untrusted input the task took a step it never takes, and now changes something
            detour += wn * (3.0 if ev.action == "delete" else 2.0 if outward else 1.0)
    elif outward and sensitive and not approved:
        task_exfil = vol
    outsider = 0.0
    if unfamiliar > 0.0 and _is_outsider(policy, who):
        outsider, unfamiliar = unfamiliar, 0.0

    # configuration change (instruction_hash)
    if ev.instruction_hash is not None:
        ih = stable_hash(ev.instruction_hash)
        if ih != st.instr:
            if st.instr != 0:
                st.instr_t = t
            st.instr = ih
    o.config_change = st.instr_t > 0.0 and t - st.instr_t < 3600.0

    hours = st.hours
    if hours is not None:
        hour = int(t // 3600) % 24
        rarity = -log2(hours[hour])
    else:
        rarity = 0.0

    o.x = [
        c[_C_RATE1], c[_C_RATE15], c[_C_VOL15], c[_C_VOL60], c[_C_BYTES60], c[_C_OUT15], c[_C_OUT60],
        c[_C_FAN15], c[_C_DEST60], c[_C_EXT60], c[_C_DEL15], c[_C_NOV60],
        0.0 if approved else vol, float(fanout), task_exfil, rule2, novel_out, rarity,
        c[_C_NOVD1D], task_n, novel_steps, 0.0 if approved else unfamiliar, detour, novel_tool,
        0.0 if approved else outsider,
    ]
    o.pending = (h_tool, h_res, dest_hashes)
    kind = _kinds.get((ev.action, ev.tool))
    if kind is None:
        if len(_kinds) >= 50_000:
            _kinds.clear()
        kind = _kinds[(ev.action, ev.tool)] = stable_hash(ev.action + ":" + tool_family(ev.tool))
    o.kind = kind
    # an action is blamed for a window only when it is a real part of it (>= 5%): in the wake of a
    # spike, a small action adds to the window but is not what made it unusual
    quiet = []
    # each window on its own: an hour after a spike the 15-minute window has forgotten it, the hour has not
    if approved or vol == 0.0 or vol < _SHARE * c[_C_VOL15]:
        quiet += _Q_VOLUME15
    if approved or vol == 0.0 or vol < _SHARE * c[_C_VOL60]:
        quiet += _Q_VOLUME60
    if ev.bytes < _SHARE * c[_C_BYTES60] or not ev.bytes:
        quiet += _Q_BYTES
    if approved or not outward or vol < _SHARE * c[_C_OUT15] or vol == 0.0:
        quiet += _Q_OUTBOUND15
    if approved or not outward or vol < _SHARE * c[_C_OUT60] or vol == 0.0:
        quiet += _Q_OUTBOUND60
    if approved or not fanout or fanout < _SHARE * c[_C_FAN15]:
        quiet += _Q_FANOUT
    o.known_reach = bool(dests) and known
    if not n_new_recent or n_new_recent < _SHARE * c[_C_DEST60]:
        quiet += _Q_DEST
    if not n_new_ext or n_new_ext < _SHARE * c[_C_EXT60]:
        quiet += _Q_EXT
    if not deleted or deleted < _SHARE * c[_C_DEL15]:
        quiet += _Q_DELETE
    if not novelty or novelty < _SHARE * c[_C_NOV60]:
        quiet += _Q_NOVELTY
    if approved or not new_out:
        quiet += _Q_NOVEL_DESTS
    o.quiet = tuple(quiet)
    return o



def extract(st: FeatureState, ev: ActionEvent, policy: Policy, adopted=None) -> Observation:
    """Advance the windows with ``ev`` and return its feature values (see :func:`_py_extract`, the reference).

    The compiled kernel (``detector._native.extract``, detector/native.py) runs it when built: the same
    operations in the same order, held to the reference bit for bit by tests/unit/test_native.py. For a
    state or an event outside what the engine itself writes (which the kernel checks before changing
    anything) it answers ``None`` and the reference runs.
    """
    if _kernel is not None:
        obs = _kernel(st, ev, policy, adopted)
        if obs is not None:
            return obs
    return _py_extract(st, ev, policy, adopted)

def _is_outsider(policy: Policy, who: str) -> bool:
    """A principal whose address the policy does not call internal (``unknown``, an outside mail
    address, a look-alike domain, a customer id). A policy that names nothing internal (or no policy)
    cannot tell an outsider from a colleague: nobody is called one then."""
    if not (policy.internal_domains or policy.internal):
        return False
    return policy.classify(who if ":" in who and "@" not in who else "email:" + who)[0] != INTERNAL


def _directed_harm(ev: ActionEvent, outward: bool, sensitive: bool, fanout: int, classes: list, dests) -> float:
    """How much an unfamiliar principal's action can damage: deleting, sending sensitive data out or
    broadcasting 3, another send 2, a write or a sensitive read 1, anything else a quarter."""
    if ev.action == "delete" or (outward and (sensitive or fanout > 1)) or BROADCAST in classes:
        return 3.0
    if outward or dests:
        return 2.0
    if ev.action == "write" or sensitive:
        return 1.0
    return 0.25


def _task_slot(st: FeatureState, h: int, t: float) -> int:
    """The slot of task ``h``; a new task takes the least recently used slot."""
    tasks = st.tasks
    hf = float(h)
    keys = tasks[0::_SLOT]
    if hf in keys:
        i = keys.index(hf)
        tasks[_SLOT * i + 3] = t
        return i
    last = tasks[3::_SLOT]
    oldest = last.index(min(last))  # the first of the least recently used
    b = _SLOT * oldest
    tasks[b:b + _SLOT] = array("d", (hf, t) + (0.0,) * (_SLOT - 2))
    tasks[b + 1], tasks[b + 3] = 0.0, t
    return oldest


def settle(st: FeatureState, key: int) -> None:
    """Teach one novelty item (:func:`item_key`) to its sketch: it is the agent's own from now on.

    >>> st = FeatureState()
    >>> settle(st, item_key(K_TOOL, 12345)); bloom_has(st.tools, 12345, _TOOL_MASK)
    True

    The compiled ``detector._native.settle_keys`` does it when built (:func:`_py_settle` is the reference).
    """
    if _k_settle is None or _k_settle(st, [key], False) is None:
        _py_settle(st, key)


def _py_settle(st: FeatureState, key: int) -> None:
    kind, h = key >> 32, key & 0xFFFFFFFF
    if kind == K_TOOL:
        st.tools = bloom_add(st.tools, h, _TOOL_MASK)
    elif kind == K_RESOURCE:
        st.resources = bloom_add(st.resources, h, _RES_MASK)
    elif kind == K_DEST:
        st.dests = bloom_add(st.dests, h, _DEST_MASK)
    elif kind == K_STEP:
        st.steps = bloom_add(st.steps, h, _STEP_MASK)
    elif kind == K_PRINCIPAL:
        st.principals = bloom_add(st.principals, h, _PRINCIPAL_MASK)


def commit_novelty(st: FeatureState, obs: Observation) -> None:
    """Teach the novelty sketches what this (normal) action used: its tool, resource family,
    destinations, the step it took inside its task and who asked for it."""
    h_tool, h_res, dests = obs.pending
    st.tools = bloom_add(st.tools, h_tool, _TOOL_MASK)
    st.resources = bloom_add(st.resources, h_res, _RES_MASK)
    if obs.step:
        st.steps = bloom_add(st.steps, obs.step, _STEP_MASK)
    if obs.principal:
        st.principals = bloom_add(st.principals, obs.principal, _PRINCIPAL_MASK)
    if dests:
        bits = st.dests
        for h in dests:
            bits = bloom_add(bits, h, _DEST_MASK)
        st.dests = bits


def commit_novel(st: FeatureState, obs: Observation) -> None:
    """What :func:`commit_novelty` teaches that the sketches did not know, at the cost of the items the
    action met for the first time (none, mostly): the same state once the items the agent's peers adopted
    (``obs.adopted``) are settled too, which the engine does for every action it reads. Extraction put in
    ``obs.novel`` or ``obs.adopted`` every item of the action that its sketch did not hold; the rest is
    already there (adding it again changes no bit). ``commit_novelty`` leaves out a task step or a principal
    whose hash is 0 (it reads 0 as "none"): so does this (compiled: ``detector._native.settle_keys``)."""
    if _k_settle is None or _k_settle(st, obs.novel, True) is None:
        _py_commit_novel(st, obs)


def _py_commit_novel(st: FeatureState, obs: Observation) -> None:
    for key in obs.novel:
        if key & 0xFFFFFFFF or key >> 32 < K_STEP:
            _py_settle(st, key)


#: a new row of N_FEATURES zeros, an array('d') (an action's x, its log1p row, deviations and rarities): the
#: compiled pool's (detector._native.RowPool: an array nothing holds any more is made again, not allocated),
#: else a copy of a row of zeros
_ZERO_ROW = array("d", bytes(8 * N_FEATURES))
new_row = _kernels.RowPool(_ZERO_ROW, 1024) if hasattr(_kernels, "RowPool") else _ZERO_ROW.__copy__
_k_settle = getattr(_kernels, "settle_keys", None)  # settle and commit_novel compiled (None: the references)

# the compiled extract (None: the reference runs; a kernel built before it had extract runs without it)
_kernel = getattr(_kernels, "extract", None)
if _kernel is not None:  # what it calls back (names, words and classes stay in Python)
    # (Policy: a frozen dataclass whose is_untrusted_source depends on its fields only, so the kernel remembers
    # its answers per resource for the policy in use)
    # (the words of an ASCII name, and the family of an ASCII destination, are read in C: text_words and
    # family_hash, held to _py_text_words and destination_family by tests/unit/test_native.py)
    # (a kernel built before text_words takes no stop words: it asks _words)
    # (x: an array('d') of new_row's, no float object per feature; the reference makes a list)
    _kernels.extract_setup(Observation, _words, destination_family, _is_outsider, EXTERNAL, BROADCAST, _words_cache,
                           Policy, *((_STOP_WORDS, new_row)
                                     if _k_text_words is not None else ()))
