"""Destination habits: how often an agent's sends to a kind of destination go somewhere new (issue 18).

A payment to a payee never paid before is news for an agent that pays the same three
suppliers, and routine for one whose work is paying new payees. The pre-action check asks
a human about "a never-seen external or broadcast destination, rare for this agent": this
module says, per kind of destination (:func:`detector.features.destination_family`: scheme
and domain, ``payee:``, ``email:@gmail.com``), whether it *is* rare for this agent.

Per agent, a few families (:data:`SLOTS`) keep two decayed counts: outward sends to the
family, and those that went to a destination the agent had never sent to. A family is a
**habit** once it was sent to at least :data:`MIN_SENDS` times and at least
:data:`MIN_SHARE` of those went somewhere new. A never-seen destination of a habitual
family is then not counted as novel outbound (the engine lowers that deviation, so the
check does not ask and no alert names it); every other sign of harm still counts: data
read in the task going out, the rule of two, a detour after untrusted input, volume,
fan-out, an unfamiliar principal.

What a patient attacker can teach is bounded: a send that came with evidence of harm
counts towards neither number, so habits grow only from sends that were otherwise
ordinary; the share must stay above :data:`MIN_SHARE` (sending to one new place among
many known ones never makes a habit); and a family never sent to (a new domain) is novel
in its own right (the destination's family is an item of the novelty sketches).

Counts halve when a family's sends reach :data:`HALF_AT`, so the share follows the
agent's recent work (drift) over tens of sends. ``flowbreaker train`` computes each
agent's habits from its history the same way (they start the agent's state), and pools
an operator's agents' habits for a newcomer of that operator.

A send to the destination the family's last send went to is not counted again: six updates
of one booking paid by one card are one use of the card, not five known payees.

Fixed size: a flat ``array('d')`` of ``SLOTS x (family hash, sends, new sends, last
destination hash)``; the family sent to least makes room.

>>> h = Habits()
>>> for i in range(10):
...     h.observe([(7, i % 2 == 0, i)])
>>> list(h.a)[:3]  # the first send to a family is not counted as new
[7.0, 10.0, 4.0]
>>> h.habitual(7), h.habitual(8)
(True, False)
>>> g = Habits()
>>> for i in range(20):
...     g.observe([(7, i == 0, i)])
>>> g.habitual(7)
False
"""

from __future__ import annotations

from array import array
from typing import Iterable, Sequence

from detector.features import destination_family
from detector.native import kernels as _kernels
from detector.policy import BROADCAST, EXTERNAL
from detector.sketch import stable_hash

__all__ = ["Habits", "SLOTS", "MIN_SENDS", "MIN_SHARE", "HALF_AT", "pooled", "family_key", "sends_of", "WIDTH"]

#: families kept per agent
SLOTS = 8
#: sends to a family before its share of new destinations says anything
MIN_SENDS = 5.0
#: the share of sends to never-seen destinations from which a new one is routine for the family
MIN_SHARE = 0.15
#: a family's counts halve when its sends reach this (recent work weighs most)
HALF_AT = 12.0
_W = 4
#: floats per family (the model's habit arrays hold SLOTS x WIDTH per row)
WIDTH = _W
#: outward destinations of one action counted (the first ones)
_COUNTED = 16
_family_keys: dict[str, int] = {}


def family_key(dest: str) -> int:
    """The hash of a destination's family (memoised, bounded).

    >>> family_key("payee:acme") == family_key("payee:globex") != family_key("email:x@corp.example")
    True
    """
    k = _family_keys.get(dest)
    if k is None:
        if len(_family_keys) >= 65_536:
            _family_keys.clear()
        k = _family_keys[dest] = stable_hash(destination_family(dest))
    return k


def sends_of(destinations: Sequence[str], classes: Sequence[str],
             new: Sequence[str]) -> list[tuple[int, bool, int]]:
    """One action's outward sends for :meth:`Habits.observe`: the family of each external or broadcast
    destination (``classes`` as :attr:`detector.features.Observation.dest_classes` gives them) and whether
    it is among ``new`` (the destinations the agent never sent to), and the destination's hash.

    The compiled ``detector._native.habit_sends`` answers when built (:func:`_py_sends_of` is the reference,
    tests/unit/test_native.py holds them together)."""
    if _k_sends is not None:
        return _k_sends(destinations, classes, new, EXTERNAL, BROADCAST, family_key, _COUNTED)
    return _py_sends_of(destinations, classes, new)


def _py_sends_of(destinations: Sequence[str], classes: Sequence[str],
                 new: Sequence[str]) -> list[tuple[int, bool, int]]:
    out = []
    for i, cls in enumerate(classes[:_COUNTED]):
        if cls is EXTERNAL or cls is BROADCAST or cls == EXTERNAL or cls == BROADCAST:
            d = destinations[i]
            out.append((family_key(d), d in new, stable_hash(d)))
    return out


class Habits:
    __slots__ = ("a",)

    def __init__(self, raw: bytes = b"") -> None:
        self.a = array("d", raw)
        if len(self.a) % _W or len(self.a) > _W * SLOTS:
            raise ValueError("destination habits have the wrong shape")

    def to_bytes(self) -> bytes:
        return self.a.tobytes()

    def __bool__(self) -> bool:
        return bool(self.a)

    def habitual(self, family: int) -> bool:
        """Whether a never-seen destination of ``family`` (a :func:`detector.sketch.stable_hash` of the
        destination's family) is routine for this agent (compiled: ``detector._native.habit_habitual``; the
        reference is :meth:`_py_habitual`)."""
        if _k_habitual is not None:
            got = _k_habitual(self.a, family, MIN_SENDS, MIN_SHARE)
            if got is not None:
                return got
        return self._py_habitual(family)

    def _py_habitual(self, family: int) -> bool:
        a = self.a
        fk = float(family)
        for b in range(0, len(a), _W):
            if a[b] == fk:
                sends = a[b + 1]
                return sends >= MIN_SENDS and a[b + 2] >= MIN_SHARE * sends
        return False

    def observe(self, sends: Iterable[tuple[int, bool, int]]) -> None:
        """Count one action's outward sends: ``(family hash, went to a never-seen destination, destination
        hash)`` each (one action counts once per family, new if any of its destinations there was new; not at
        all when its one destination there is the one the family's last send went to).

        The compiled ``detector._native.habit_observe`` does it when built, for the sends :func:`sends_of`
        makes (:meth:`_py_observe` is the reference, and runs for anything else)."""
        if _k_observe is None or _k_observe(self.a, sends, SLOTS, HALF_AT) is None:
            self._py_observe(sends)

    def _py_observe(self, sends: Iterable[tuple[int, bool, int]]) -> None:
        per: dict[int, tuple[bool, int]] = {}
        for fam, new, dest in sends:
            was = per.get(fam)
            per[fam] = (new, dest) if was is None else (was[0] or new, -1)
        a = self.a
        for fam, (new, dest) in per.items():
            fk = float(fam)
            fd = float(dest)
            for b in range(0, len(a), _W):
                if a[b] == fk:
                    if a[b + 3] == fd and dest >= 0:
                        b = -1  # the same destination again: one use
                    break
            else:
                if len(a) < _W * SLOTS:
                    b = len(a)
                    a.extend((fk, 0.0, 0.0, -1.0))
                else:  # the family sent to least makes room
                    b = min(range(0, len(a), _W), key=lambda i: (a[i + 1], i))
                    a[b], a[b + 1], a[b + 2], a[b + 3] = fk, 0.0, 0.0, -1.0
                new = False  # the first send to a family is new by definition: it says nothing of a habit
            if b < 0:
                continue
            a[b + 3] = fd
            a[b + 1] += 1.0
            if new:
                a[b + 2] += 1.0
            if a[b + 1] >= HALF_AT:
                a[b + 1] *= 0.5
                a[b + 2] *= 0.5


# the compiled sends_of and observe (None: the references run)
_k_sends = getattr(_kernels, "habit_sends", None)
_k_observe = getattr(_kernels, "habit_observe", None) if _W == 4 else None
_k_habitual = getattr(_kernels, "habit_habitual", None) if _W == 4 else None


def pooled(members: Iterable[Habits]) -> Habits:
    """One agent's worth of its peers' habits: per family, the members' counts summed and scaled so its
    sends are at most :data:`HALF_AT` / 2 (the share kept), the :data:`SLOTS` families sent to most.

    >>> a, b = Habits(), Habits()
    >>> for i in range(6):
    ...     a.observe([(1, True, i)]); b.observe([(1, False, i)])
    >>> p = pooled([a, b]); p.habitual(1), list(p.a)
    (True, [1.0, 6.0, 2.5, -1.0])
    """
    sums: dict[float, list[float]] = {}
    for h in members:
        a = h.a
        for b in range(0, len(a), _W):
            s = sums.setdefault(a[b], [0.0, 0.0])
            s[0] += a[b + 1]
            s[1] += a[b + 2]
    out = Habits()
    for fk, (sends, new) in sorted(sums.items(), key=lambda kv: (-kv[1][0], kv[0]))[:SLOTS]:
        scale = min(1.0, (HALF_AT / 2) / sends) if sends > 0 else 1.0
        out.a.extend((fk, sends * scale, new * scale, -1.0))
    return out
