"""tau-bench (sierra-research/tau-bench) -> contract steps: retail support and airline travel agents.

Two kinds of tool calls are used, both as benign traffic:

* retail: the ground-truth action lists of the retail tasks (``tasks_train.py``,
  ``tasks_test.py``, ``tasks_dev.py``), read as data with :mod:`ast` (the files are
  never imported or executed), with record sizes looked up in the environment's
  ``users.json`` and ``orders.json``;
* airline: the historical trajectories of a real model run
  (``historical_trajectories/gpt-4o-airline.json``: the tool calls gpt-4o made, with
  the tool responses, whose lengths give ``bytes`` and list sizes ``records``).

Mapping (the choices a runtime integrator would make): lookups and details of
customers, orders and reservations are ``confidential`` reads; catalogue and flight
searches are ``public``; order and reservation changes are ``write``s whose payment
instrument is a destination ``payment:<id>`` (money moves to or from it); a
cancelled reservation is a ``delete``; a certificate is a ``send`` to
``account:<user>``; a hand-off to humans is a ``send`` to ``queue:human-support``;
``calculate``/``think`` are ``exec`` of nothing sensitive.

>>> s = retail_step("return_delivered_order_items", {"order_id": "#W1", "item_ids": ["1", "2"],
...                 "payment_method_id": "paypal_7"})
>>> (s.tool, s.action, s.destinations, s.sensitivity, s.records)
('retail.return_delivered_order_items', 'write', ['payment:paypal_7'], 'confidential', 2)
>>> airline_step("cancel_reservation", {"reservation_id": "ABC123"}).action
'delete'
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from bench.public.step import SourceMissing, Step

__all__ = ["retail_step", "airline_step", "load_retail_tasks", "load_retail_db", "load_airline_trajectories",
           "load_airline_users", "RETAIL_FILES", "AIRLINE_FILES"]

RETAIL_FILES = ("tau_bench/envs/retail/tasks_train.py", "tau_bench/envs/retail/tasks_test.py",
                "tau_bench/envs/retail/tasks_dev.py")
AIRLINE_FILES = ("historical_trajectories/gpt-4o-airline.json",)
_ORIGIN_R = "tau-bench/retail"
_ORIGIN_A = "tau-bench/airline(gpt-4o)"


def _need(root: Path, rel: str) -> Path:
    p = root / rel
    if not p.is_file():
        raise SourceMissing(f"tau-bench: {p} is missing (git clone https://github.com/sierra-research/tau-bench "
                            f"into {root}; see bench/public/README.md)")
    return p


# ------------------------------------------------------------------ retail
def retail_step(name: str, kw: dict, db: dict | None = None) -> Step:
    """One retail tool call as a step; ``db`` = ``{"users": ..., "orders": ...}`` sizes records (optional)."""
    db = db or {}
    size = lambda table, key, default: len(json.dumps(db.get(table, {}).get(key, ""))) or default  # noqa: E731
    t = "retail." + name
    oid = str(kw.get("order_id", "")).lstrip("#")
    pm = kw.get("payment_method_id")
    pay = [f"payment:{pm}"] if pm else []
    if name in ("find_user_id_by_email", "find_user_id_by_name_zip"):
        return Step(t, "read", "retail://customers/lookup", "confidential", 1, 60, origin=_ORIGIN_R)
    if name == "get_user_details":
        uid = kw.get("user_id", "")
        return Step(t, "read", f"retail://customers/{uid}", "confidential", 1, size("users", uid, 900), origin=_ORIGIN_R)
    if name == "get_order_details":
        return Step(t, "read", f"retail://orders/{oid}", "confidential", 1, size("orders", "#" + oid, 1200),
                    origin=_ORIGIN_R)
    if name == "get_product_details":
        return Step(t, "read", f"retail://products/{kw.get('product_id', '')}", "public", 1, 2500, origin=_ORIGIN_R)
    if name == "list_all_product_types":
        return Step(t, "read", "retail://products", "public", 50, 3200, origin=_ORIGIN_R)
    if name == "cancel_pending_order":
        refund = [f"payment:{p['payment_method_id']}" for p in
                  db.get("orders", {}).get("#" + oid, {}).get("payment_history", [])[:1]]
        return Step(t, "write", f"retail://orders/{oid}", "confidential", 1, 300, refund, origin=_ORIGIN_R)
    if name in ("modify_pending_order_items", "return_delivered_order_items", "exchange_delivered_order_items"):
        n = len(kw.get("item_ids", [])) or 1
        return Step(t, "write", f"retail://orders/{oid}", "confidential", n, 250 * n, pay, origin=_ORIGIN_R)
    if name == "modify_pending_order_payment":
        return Step(t, "write", f"retail://orders/{oid}", "confidential", 1, 200, pay, origin=_ORIGIN_R)
    if name == "modify_pending_order_address":
        return Step(t, "write", f"retail://orders/{oid}", "confidential", 1, 250, origin=_ORIGIN_R)
    if name == "modify_user_address":
        return Step(t, "write", f"retail://customers/{kw.get('user_id', '')}", "confidential", 1, 250, origin=_ORIGIN_R)
    if name == "transfer_to_human_agents":
        return Step(t, "send", "retail://support/handoff", "internal", 1, len(str(kw.get("summary", ""))) or 200,
                    ["queue:human-support"], origin=_ORIGIN_R)
    # calculate, think and anything unknown: local computation
    return Step(t, "exec", "local://" + name, "public", 0, 0, origin=_ORIGIN_R)


def _actions_of(path: Path) -> list[dict]:
    """Tasks of a tau-bench task file as ``{"user_id", "calls": [(name, kwargs)]}``, read with ``ast``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Task"):
            continue
        kws = {k.arg: k.value for k in node.keywords}
        calls = []
        acts = kws.get("actions")
        for a in getattr(acts, "elts", []):
            if isinstance(a, ast.Call) and getattr(a.func, "id", None) == "Action":
                akw = {k.arg: k.value for k in a.keywords}
                try:
                    calls.append((ast.literal_eval(akw["name"]), ast.literal_eval(akw.get("kwargs", ast.Dict([], [])))))
                except (ValueError, KeyError):
                    continue
        user = kws.get("user_id")
        if calls:
            out.append({"user_id": ast.literal_eval(user) if user is not None else None, "calls": calls})
    return out


def load_retail_tasks(root: str | Path) -> list[dict]:
    """All retail tasks with at least one action: ``[{"id", "user_id", "calls"}]``."""
    root = Path(root)
    tasks = []
    for rel in RETAIL_FILES:
        for i, t in enumerate(_actions_of(_need(root, rel))):
            t["id"] = f"{Path(rel).stem}:{i}"
            tasks.append(t)
    return tasks


def load_retail_db(root: str | Path) -> dict:
    root = Path(root)
    return {"users": json.loads(_need(root, "tau_bench/envs/retail/data/users.json").read_text()),
            "orders": json.loads(_need(root, "tau_bench/envs/retail/data/orders.json").read_text())}


# ------------------------------------------------------------------ airline
def _count(resp: str | None) -> int:
    try:
        v = json.loads(resp) if resp else None
    except ValueError:
        return 1
    return len(v) if isinstance(v, list) else 1


def airline_step(name: str, kw: dict, response: str | None = None) -> Step:
    """One airline tool call (with the tool's response text when known) as a step."""
    t = "airline." + name
    nbytes = len(response) if response else 0
    rid = kw.get("reservation_id", "")
    if name == "get_user_details":
        return Step(t, "read", f"airline://users/{kw.get('user_id', '')}", "confidential", 1, nbytes or 900,
                    origin=_ORIGIN_A)
    if name == "get_reservation_details":
        return Step(t, "read", f"airline://reservations/{rid}", "confidential", 1, nbytes or 800, origin=_ORIGIN_A)
    if name in ("search_direct_flight", "search_onestop_flight"):
        return Step(t, "read", f"airline://flights/{kw.get('origin', '')}-{kw.get('destination', '')}", "public",
                    _count(response), nbytes or 1500, origin=_ORIGIN_A)
    if name == "list_all_airports":
        return Step(t, "read", "airline://airports", "public", _count(response), nbytes or 800, origin=_ORIGIN_A)
    if name == "book_reservation":
        pms = [f"payment:{p.get('payment_id')}" for p in kw.get("payment_methods", []) if isinstance(p, dict)]
        return Step(t, "write", "airline://reservations/new", "confidential", len(kw.get("passengers", [])) or 1,
                    len(json.dumps(kw)), pms, origin=_ORIGIN_A)
    if name.startswith("update_reservation_"):
        pay = [f"payment:{kw['payment_id']}"] if kw.get("payment_id") else []
        return Step(t, "write", f"airline://reservations/{rid}", "confidential",
                    len(kw.get("passengers", [])) or 1, len(json.dumps(kw)), pay, origin=_ORIGIN_A)
    if name == "cancel_reservation":
        return Step(t, "delete", f"airline://reservations/{rid}", "confidential", 1, nbytes or 600, origin=_ORIGIN_A)
    if name == "send_certificate":
        return Step(t, "send", "airline://certificates", "confidential", 1, 120,
                    [f"account:{kw.get('user_id', '')}"], origin=_ORIGIN_A)
    if name == "transfer_to_human_agents":
        return Step(t, "send", "airline://support/handoff", "internal", 1, len(str(kw.get("summary", ""))) or 200,
                    ["queue:human-support"], origin=_ORIGIN_A)
    return Step(t, "exec", "local://" + name, "public", 0, 0, origin=_ORIGIN_A)


def load_airline_trajectories(root: str | Path) -> list[dict]:
    """gpt-4o's airline runs: ``[{"id", "user_id", "calls": [(name, kwargs, response)]}]`` (runs with a tool call)."""
    path = _need(Path(root), AIRLINE_FILES[0])
    runs = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, run in enumerate(runs):
        responses = {m.get("tool_call_id"): m.get("content") for m in run["traj"] if m.get("role") == "tool"}
        calls = []
        for m in run["traj"]:
            for tc in m.get("tool_calls") or []:
                try:
                    kw = json.loads(tc["function"]["arguments"] or "{}")
                except ValueError:
                    kw = {}
                calls.append((tc["function"]["name"], kw, responses.get(tc.get("id"))))
        if calls:
            out.append({"id": f"gpt-4o-airline:{i}", "user_id": run["info"]["task"].get("user_id"), "calls": calls})
    return out


def load_airline_users(root: str | Path) -> dict:
    return json.loads(_need(Path(root), "tau_bench/envs/airline/data/users.json").read_text())
