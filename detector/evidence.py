"""Evidence of harm: what it takes for one action to freeze an agent by itself.

Rarity alone is not harm. A first send to a new address, a new teammate asking for
something, a task that takes an unusual step: each is routine for some agents and a
case for the pre-action check (hold for approval), not a freeze. A freeze needs a
sign that harm is being done, rare *for this agent*:

- **solo evidence**, enough by itself: data going out (volume to external or
  broadcast destinations, sensitive data read then sent within a task), fan-out,
  deletes, the rule of two, a detour after untrusted input, someone from outside the
  organisation the agent never worked for directing it; volume far beyond the
  profile when this action itself moves data out or destroys it; never-used tools
  or resources when they touch confidential or restricted data (privilege misuse);
- **supporting evidence**, which only adds to solo evidence: a colleague the agent never
  worked for directing it, a never-seen destination, steps the task never took.

Correlated features form one group (outbound volume over 15 minutes and over an hour
say the same thing) and a group counts once, by its rarest feature. The *strength*
of the evidence is the sum of the groups' rarities (``-log10 p``, each at least one
in ten), Fisher's idea: several moderately unusual signs at once (sensitive data,
after untrusted input, to a destination nothing in the task names) are rarer together
than any one. The sum's rarity is the larger (the more cautious) of Fisher's combination
of the groups and ``train``'s calibration of the sum on normal actions, which knows
how correlated the groups are in practice.

>>> from detector.features import N_FEATURES, FEATURE_INDEX
>>> r = [0.0] * N_FEATURES
>>> r[FEATURE_INDEX["unfamiliar_principal"]] = 4.0   # support alone: no evidence
>>> strength(r, moving=True, sensitive=True)
(0.0, 0.0, 0)
>>> r[FEATURE_INDEX["outbound_15m"]], r[FEATURE_INDEX["outbound_1h"]] = 2.0, 3.0
>>> strength(r, moving=True, sensitive=True)   # one group (its rarest) plus the support
(3.0, 7.0, 2)
"""

from __future__ import annotations

from math import exp

from detector import scoring as _scoring
from detector.features import FEATURE_INDEX

__all__ = ["GROUPS", "strength", "fisher", "SOLO", "MOVING", "SENSITIVE", "SUPPORT", "MIN_RARITY"]

SOLO, MOVING, SENSITIVE, SUPPORT = "solo", "moving", "sensitive", "support"

#: (name, features, kind): ``moving`` groups count when the action moves data out or deletes,
#: ``sensitive`` ones when it touches confidential or restricted data, ``support`` ones only beside solo
#: evidence
GROUPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("data out", ("outbound_15m", "outbound_1h", "task_exfil"), SOLO),
    ("fan-out", ("fanout_15m", "event_fanout"), SOLO),
    ("deletes", ("deletes_15m",), SOLO),
    ("rule of two", ("rule_of_two",), SOLO),
    ("detour after untrusted input", ("untrusted_detour",), SOLO),
    ("an outsider asked", ("outsider_principal",), SOLO),
    ("volume moved", ("volume_15m", "volume_1h", "bytes_1h", "event_volume"), MOVING),
    ("never-used access to sensitive data", ("novelty_1h", "novel_tool"), SENSITIVE),
    ("who asked", ("unfamiliar_principal",), SUPPORT),
    ("new destination", ("novel_outbound",), SUPPORT),
    ("task shape", ("task_novel_steps",), SUPPORT),
)
_IDX = tuple((tuple(FEATURE_INDEX[n] for n in feats), kind) for _, feats, kind in GROUPS)
#: a group adds to the strength when it is at least this rare (-log10 p: one in ten)
MIN_RARITY = 1.0
_KIND_CODES = {SOLO: 0, MOVING: 1, SENSITIVE: 2, SUPPORT: 3}
#: the groups compiled (detector/_score.c, switched with detector.scoring._score); None runs the references
_compiled = (_scoring._score.Evidence(tuple((idx, _KIND_CODES[kind]) for idx, kind in _IDX), MIN_RARITY)
             if _scoring._score is not None else None)


def fisher(total: float, k: int) -> float:
    """The chance that ``k`` independent rarities add up to ``total`` (``-log10 p`` units) or more
    (Fisher's method): a sum over several groups is not as rare as one feature that rare alone.

    >>> round(fisher(2.0, 1), 4), round(fisher(4.0, 2), 5)
    (0.01, 0.00102)
    """
    fast = _scoring._score
    if fast is not None:
        p = fast.fisher(total, k)
        if p is not None:  # None: not a float and an int, or exp overflowing; the reference decides
            return p
    return _py_fisher(total, k)


def _py_fisher(total: float, k: int) -> float:
    """The reference of ``detector._score.fisher``."""
    x = total * 2.302585092994046
    term, acc = 1.0, 1.0
    for j in range(1, k):
        term *= x / j
        acc += term
    return min(1.0, exp(-x) * acc)


def strength(r: list[float], *, moving: bool, sensitive: bool, established: bool = True) -> tuple[float, float, int]:
    """``(solo, total, groups)``: the rarest solo evidence, the summed evidence (``-log10 p`` units) and
    how many groups added to it; all 0 when nothing is evidence of harm for this action. ``r`` holds each
    feature's ``-log10 p``. For an agent that is not ``established`` (still judged by its peers' profile)
    everything is new: novelty (never-used access, who asked, new destinations, new steps) says nothing."""
    if _compiled is not None and _scoring._score is not None:
        out = _compiled.strength(r, moving, sensitive, established)
        if out is not None:  # None: r not a list of floats, or a flag not a bool; the reference decides
            return out
    return _py_strength(r, moving=moving, sensitive=sensitive, established=established)


def _py_strength(r: list[float], *, moving: bool, sensitive: bool, established: bool = True) -> tuple[float, float, int]:
    """The reference of ``detector._score.Evidence.strength``."""
    solo = 0.0
    total = 0.0
    support = 0.0
    k = 0
    for idx, kind in _IDX:
        if kind == MOVING and not moving or kind == SENSITIVE and not sensitive:
            continue
        if not established and kind in (SENSITIVE, SUPPORT):
            continue
        v = r[idx[0]]
        for i in idx[1:]:
            if r[i] > v:
                v = r[i]
        if v < MIN_RARITY:
            continue
        k += 1
        if kind == SUPPORT:
            support += v
        else:
            total += v
            if v > solo:
                solo = v
    if solo == 0.0:
        return 0.0, 0.0, 0
    return solo, total + support, k
