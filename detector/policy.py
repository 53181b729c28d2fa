"""The policy file (contract section 2): what the organisation knows that no event carries.

>>> p = Policy.from_dict({"internal_domains": ["corp.example"], "internal": ["slack:*"],
...                       "broadcast": {"slack:#all-hands": 48000}})
>>> [p.classify(d) for d in ("email:bob@corp.example", "email:eve@evil.example",
...                          "slack:@alice", "slack:#all-hands", "http:https://wiki.corp.example/x")]
[('internal', 1), ('external', 1), ('internal', 1), ('broadcast', 48000), ('internal', 1)]
>>> Policy().classify("email:bob@corp.example")    # no policy: every destination is external
('external', 1)

Keys beyond the contract's (all optional, documented in the README):
``[thresholds]`` (severity cut-offs and breaker settings, see :class:`Thresholds`).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Policy", "Thresholds", "PolicyError", "load_policy", "DEFAULT_WEIGHTS"]

DEFAULT_WEIGHTS = {"public": 0.0, "internal": 1.0, "confidential": 5.0, "restricted": 25.0}
INTERNAL, EXTERNAL, BROADCAST = "internal", "external", "broadcast"


class PolicyError(ValueError):
    """A policy file that cannot be used; the text says which key and why."""


@dataclass(frozen=True)
class Thresholds:
    """Score cut-offs (score is in [0, 1], higher is more anomalous) and breaker settings."""

    low: float = 0.55
    medium: float = 0.7
    high: float = 0.85
    critical: float = 0.95
    #: the breaker trips when the decayed sum of (score - budget_floor) reaches this
    risk_budget: float = 1.6
    budget_floor: float = 0.55
    budget_half_life_s: float = 6 * 3600.0
    #: probation after a release: thresholds are tightened by this much for this long
    probation_s: float = 24 * 3600.0
    probation_tighten: float = 0.1
    #: ... and lasts at least this many actions, whatever their timestamps say
    probation_min_events: int = 10
    #: a critical action trips the breaker by itself only when a feature that is evidence of harm
    #: (data out, deletes, broadcast, a detour after untrusted input, an unfamiliar principal) is by
    #: itself at least this rare (on the score scale); otherwise it alerts and spends the risk budget
    evidence: float = 0.7
    #: the pre-action check holds an action (needs_approval) whose evidence of harm reaches this
    gate_evidence: float = 0.6
    #: novelty that settles (issue 18): a never-seen tool, resource family, destination, task step or
    #: principal that recurs without evidence of harm becomes the agent's own after this many uses spread
    #: over at least ``settle_s`` of event time (novelty that came with evidence of harm waits for a verdict)
    settle_uses: float = 3.0
    settle_s: float = 1800.0
    #: an item this many of an operator's agents took up without evidence of harm is not novel for the others;
    #: 0 (the default) turns it off: the sketch of adoptions spans agents, so it is held per worker and lost on a
    #: restart, and a stream spread over workers (or restarted) would decide otherwise than replay does
    peer_adopters: float = 0.0
    #: an alert episode closes once its agent has had no alerted action for this long (event time)
    episode_quiet_s: float = 1800.0

    def severity(self, score: float) -> str:
        if score >= self.critical:
            return "critical"
        if score >= self.high:
            return "high"
        if score >= self.medium:
            return "medium"
        if score >= self.low:
            return "low"
        return "ok"


@dataclass(frozen=True)
class Policy:
    internal_domains: tuple[str, ...] = ()
    internal: tuple[str, ...] = ()
    untrusted_sources: tuple[str, ...] = ("http:", "https:", "email:")
    approval_threshold: float = 0.9
    broadcast: dict[str, int] = field(default_factory=dict)
    sensitivity_weight: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        pats = [re.compile(fnmatch.translate(p)) for p in self.internal]
        object.__setattr__(self, "_patterns", pats)
        object.__setattr__(self, "_cache", {})
        doms = tuple(d.lower().lstrip(".") for d in self.internal_domains)
        object.__setattr__(self, "_domains", doms)
        # (_is_internal's test "the host is a domain or under one", as a set and a suffix tuple)
        object.__setattr__(self, "_domain_set", frozenset(doms))
        object.__setattr__(self, "_subdomains", tuple("." + d for d in doms))

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Policy":
        known = {"internal_domains", "internal", "untrusted_sources", "approval_threshold", "broadcast",
                 "sensitivity_weight", "thresholds"}
        unknown = set(data) - known
        if unknown:
            raise PolicyError(f"unknown policy key(s): {', '.join(sorted(unknown))}")
        kw: dict[str, Any] = {}
        for key in ("internal_domains", "internal", "untrusted_sources"):
            if key in data:
                val = data[key]
                if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
                    raise PolicyError(f"{key} must be a list of strings")
                kw[key] = tuple(val)
        if "approval_threshold" in data:
            val = data["approval_threshold"]
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0 <= val <= 1:
                raise PolicyError("approval_threshold must be a number in [0, 1]")
            kw["approval_threshold"] = float(val)
        if "broadcast" in data:
            val = data["broadcast"]
            if not isinstance(val, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in val.values()
            ):
                raise PolicyError("broadcast must map destinations to a reach (integer >= 1)")
            kw["broadcast"] = dict(val)
        if "sensitivity_weight" in data:
            val = data["sensitivity_weight"]
            if not isinstance(val, dict):
                raise PolicyError("sensitivity_weight must be a table")
            extra = set(val) - set(DEFAULT_WEIGHTS)
            if extra:
                raise PolicyError(f"sensitivity_weight: unknown class(es) {', '.join(sorted(extra))}")
            weights = dict(DEFAULT_WEIGHTS)
            for k, v in val.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise PolicyError(f"sensitivity_weight.{k} must be a number >= 0")
                weights[k] = float(v)
            kw["sensitivity_weight"] = weights
        if "thresholds" in data:
            val = data["thresholds"]
            names = {f.name for f in fields(Thresholds)}
            if not isinstance(val, dict) or set(val) - names:
                raise PolicyError(f"thresholds: keys must be among {', '.join(sorted(names))}")
            for k, v in val.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise PolicyError(f"thresholds.{k} must be a number >= 0")
            t = Thresholds(**{k: float(v) for k, v in val.items()})
            if not t.low <= t.medium <= t.high <= t.critical <= 1:
                raise PolicyError("thresholds: need low <= medium <= high <= critical <= 1")
            kw["thresholds"] = t
        return cls(**kw)

    # ------------------------------------------------------- classification
    def classify(self, destination: str) -> tuple[str, int]:
        """``(class, reach)`` of one ``scheme:address`` destination."""
        hit = self._cache.get(destination)  # type: ignore[attr-defined]
        if hit is None:
            hit = self._classify(destination)
            if len(self._cache) > 200_000:  # type: ignore[attr-defined]
                self._cache.clear()  # type: ignore[attr-defined]
            self._cache[destination] = hit  # type: ignore[attr-defined]
        return hit

    def _classify(self, dest: str) -> tuple[str, int]:
        reach = self.broadcast.get(dest)
        if reach is not None:
            return BROADCAST, reach
        if self._is_internal(dest):
            return INTERNAL, 1
        return EXTERNAL, 1

    def _is_internal(self, dest: str) -> bool:
        """Whether ``dest``'s host is one of the internal domains or under one, or ``dest`` matches an
        ``internal`` pattern (the host is only worked out when there are domains to compare it with)."""
        if self._domains:  # type: ignore[attr-defined]
            host = _host_of(dest)
            if host and (host in self._domain_set or host.endswith(self._subdomains)):  # type: ignore[attr-defined]
                return True
        for p in self._patterns:  # type: ignore[attr-defined]
            if p.match(dest):
                return True
        return False

    def is_untrusted_source(self, resource: str) -> bool:
        """Whether content read from ``resource`` is untrusted input (e.g. the open web, outside mail)."""
        if not resource.startswith(self.untrusted_sources):
            return False
        if resource.startswith("email") and self._is_internal(resource):
            return False
        return True


def _host_of(dest: str) -> str:
    scheme, _, addr = dest.partition(":")
    if scheme == "email" or "@" in addr and "/" not in addr:
        return addr.rpartition("@")[2].lower().rstrip(">").strip()
    if scheme in ("http", "https"):
        url = addr if scheme == "http" and "://" in addr else dest
        try:
            return (urlsplit(url).hostname or "").lower()
        except ValueError:
            return ""
    return ""


def load_policy(path: str | Path | None) -> Policy:
    """Load a policy TOML file (``None`` gives the defaults). Raises :class:`PolicyError`."""
    if path is None:
        return Policy()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as err:
        raise PolicyError(f"cannot read policy file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise PolicyError(f"policy file {path} is not valid TOML: {err}") from None
    return Policy.from_dict(data)
