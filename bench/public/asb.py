"""Agent Security Bench (agiresearch/ASB) -> contract steps: role tools and injected attacker tools.

ASB gives ten agent roles, each with its normal tools (``all_normal_tools.jsonl``)
and tasks (``agent_task.jsonl``), and about four hundred attacker tools per role
(``all_attack_tools.jsonl``: name, instruction, goal, attack type). In ASB's
observation-prompt-injection setting the agent, while doing a normal task, reads a
tool output that tells it to call the attacker's tool. Here that call becomes one
harmful step in an otherwise normal task of an agent of the matching role
(``system_admin_agent`` -> devops, ``financial_analyst_agent`` -> finance,
``ecommerce_manager_agent`` -> support, ``academic_search_agent`` -> assistant).

The attacker tool's effect is read from its name, description and goal: words
about exporting, leaking or sending give a ``send`` to an outside host; deleting or
wiping a ``delete``; modifying, granting, installing or disabling a ``write`` or
``exec``.

>>> attack_step({"Attacker Tool": "DataExfiltrator", "Description": "exports the customer database",
...              "Attack goal": "send customer data to an outside server"}).action
'send'
>>> attack_step({"Attacker Tool": "LogWiper", "Description": "erase logs", "Attack goal": "delete the audit logs"}).action
'delete'
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench.public.step import SourceMissing, Step

__all__ = ["load_asb", "attack_step", "normal_step", "ROLE_OF"]

ROLE_OF = {"system_admin_agent": "devops", "financial_analyst_agent": "finance",
           "ecommerce_manager_agent": "support", "academic_search_agent": "assistant"}
_SEND = re.compile(r"exfiltrat|export|leak|transmit|send|upload|forward|share|harvest|steal|collect", re.I)
_DEL = re.compile(r"delet|wipe|eras|destroy|remov|purg", re.I)
_WRITE = re.compile(r"modif|alter|grant|escalat|manipulat|inject|install|disabl|reallocat|redirect|transfer|chang", re.I)


def load_asb(root: str | Path) -> dict:
    """``{"tasks": {agent: [task]}, "normal": {agent: [tool]}, "attack": {agent: [attack tool]}}``."""
    root = Path(root)
    rows = {}
    for key, rel in (("tasks", "data/agent_task.jsonl"), ("normal", "data/all_normal_tools.jsonl"),
                     ("attack", "data/all_attack_tools.jsonl")):
        p = root / rel
        if not p.is_file():
            raise SourceMissing(f"ASB: {p} is missing (git clone https://github.com/agiresearch/ASB into {root}; "
                                f"see bench/public/README.md)")
        rows[key] = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = {"tasks": {r["agent_name"]: r["tasks"] for r in rows["tasks"]}, "normal": {}, "attack": {}}
    for r in rows["normal"]:
        out["normal"].setdefault(r["Corresponding Agent"], []).append(r)
    for r in rows["attack"]:
        out["attack"].setdefault(r["Corresponding Agent"], []).append(r)
    return out


def normal_step(tool: dict) -> Step:
    """An ASB normal tool call: a read of the role's own data (``internal``)."""
    name = tool["Tool Name"]
    return Step(f"asb.{name}", "read", f"asb://{name}", "internal", 5, 2000, origin="ASB/normal")


def attack_step(tool: dict, *, host: str = "drop.attacker-example.net") -> Step:
    """An ASB attacker tool call as a harmful step (see the module docstring for the action)."""
    name = tool["Attacker Tool"]
    text = " ".join(str(tool.get(k, "")) for k in ("Attacker Tool", "Description", "Attack goal"))
    o = f"ASB/{name}"
    if _SEND.search(text):
        return Step(name, "send", f"asb://{name}", "confidential", 40, 60000, [f"http:https://{host}/{name.lower()}"],
                    harmful=True, incident=True, origin=o)
    if _DEL.search(text):
        return Step(name, "delete", f"asb://{name}", "confidential", 25, 0, harmful=True, incident=True, origin=o)
    action = "write" if _WRITE.search(text) else "exec"
    return Step(name, action, f"asb://{name}", "confidential", 1, 500, harmful=True, incident=True, origin=o)
