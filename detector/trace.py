"""Forensic trace: a bounded ring of each agent's last actions (metadata only, never payloads).

Rings live outside the per-agent baseline state (which stays small and goes to the
changelog); the store itself is bounded too: it keeps rings for at most
``max_agents`` agents, dropping the least recently active.

>>> store = TraceStore(length=2, max_agents=10)
>>> for i in range(3):
...     store.append("a", {"event_id": f"e{i}"})
>>> [r["event_id"] for r in store.snapshot("a")]
['e1', 'e2']
"""

from __future__ import annotations

from collections import OrderedDict, deque

__all__ = ["TraceStore", "trace_entry"]


def trace_entry(item) -> dict:
    """The metadata of one action kept in the trace, from ``(event, score, severity, dest_classes)``."""
    ev, score, severity, dest_classes = item
    dests = ev.destinations
    return {
        "event_id": ev.event_id, "ts": ev.ts, "tool": ev.tool, "action": ev.action, "resource": ev.resource,
        "sensitivity": ev.sensitivity, "records": ev.records, "bytes": ev.bytes,
        "destinations": dests[:10], "destination_count": len(dests),
        "destination_classes": sorted(set(dest_classes)), "task_id": ev.task_id,
        "parent_event_id": ev.parent_event_id, "operator_id": ev.operator_id, "requested_by": ev.requested_by,
        "instruction_hash": ev.instruction_hash, "approval_id": ev.approval_id,
        "score": round(score, 4), "severity": severity,
    }


class TraceStore:
    def __init__(self, *, length: int = 200, max_agents: int = 5000) -> None:
        self.length = length
        self.max_agents = max_agents
        self._rings: OrderedDict[str, deque] = OrderedDict()

    def append(self, agent_id: str, entry) -> None:
        ring = self._rings.get(agent_id)
        if ring is None:
            ring = self._rings[agent_id] = deque(maxlen=self.length)
            if len(self._rings) > self.max_agents:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(agent_id)
        ring.append(entry)

    def snapshot(self, agent_id: str) -> list:
        """The agent's ring, oldest first; tuples ``(event, score, severity, classes)`` become dicts."""
        return [trace_entry(e) if isinstance(e, tuple) else e for e in self._rings.get(agent_id, ())]
