"""One converted tool call before it gets an id and a time: the common currency of the converters.

A converter maps a source's tool call (name and arguments) to a :class:`Step`,
whose fields are those of the contract's action event (section 1) that do not
depend on where the call lands in the fleet (``event_id``, ``ts``, ``agent_id``,
``operator_id``, ``task_id`` and ``requested_by`` are set by the builder).

``parent`` is the index, within the same task, of the step whose data this one
carries on (the read whose result a send forwards); ``harmful`` and ``incident``
are labels, never written into the event.

>>> s = Step("retail.get_order_details", "read", "retail://orders/W1", "confidential", records=1)
>>> s.outbound, s.to_fields()["resource"]
(False, 'retail://orders/W1')
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["Step", "SourceMissing", "SENS_RANK"]

SENS_RANK = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}


class SourceMissing(Exception):
    """A public source the builder needs is not where it was told to look (the text says which, in one line)."""


@dataclass
class Step:
    tool: str
    action: str
    resource: str
    sensitivity: str
    records: int = 0
    bytes: int = 0
    destinations: list[str] = field(default_factory=list)
    parent: int | None = None
    harmful: bool = False
    incident: bool = False
    approval_id: str | None = None
    origin: str = ""  # which source (and item) the call comes from: "tau-bench/retail", "own", ...

    @property
    def outbound(self) -> bool:
        return bool(self.destinations)

    def to_fields(self) -> dict:
        out = {"tool": self.tool, "action": self.action, "resource": self.resource[:1024],
               "sensitivity": self.sensitivity, "records": max(0, int(self.records)), "bytes": max(0, int(self.bytes)),
               "destinations": list(self.destinations)}
        if self.approval_id:
            out["approval_id"] = self.approval_id
        return out

    def but(self, **kw) -> "Step":
        return replace(self, **kw)
