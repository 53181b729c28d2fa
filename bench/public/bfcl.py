"""BFCL multi-turn (the ``bfcl-eval`` wheel on PyPI) -> contract steps.

The ground-truth function calls of ``BFCL_v4_multi_turn_base.json`` (200 multi-turn
tasks over a file system, a messaging app, a social network, a ticket system, a
trading bot, a travel-booking API and a calculator) are read straight out of the
wheel with :mod:`zipfile` (nothing is installed or imported) and parsed with
:mod:`ast` (calls like ``mv(source='a', destination='b')`` are data, never run).
Positional arguments are named from the function documents shipped beside them.

Mapping: file listing and reading are ``read`` of ``fs://`` resources (``confidential``
when the file name says so: secrets, credentials, salaries, keys); ``echo``, ``touch``,
``mkdir``, ``cp``, ``mv`` are ``write``; ``rm``/``rmdir`` are ``delete``;
``send_message`` is a ``send`` to ``chat:<user id>``; tweets, comments, mentions and
retweets are ``send`` to the broadcast ``twitter:public``; reading tweets is a read of
an ``https://`` page (untrusted input); the trading account and its history are
``confidential``, orders go to ``broker:exchange``, a withdrawal is a ``send`` of money
to the account's linked bank ``iban:``; travel bookings pay ``payee:`` the airline or
insurer; card registers are ``restricted``.

>>> s = call_step("rm", {"file_name": "notes.txt"}, {"cwd": "workspace"})
>>> (s.tool, s.action, s.resource)
('fs.rm', 'delete', 'fs://workspace/notes.txt')
>>> call_step("post_tweet", {"content": "hi"}, {}).destinations
['twitter:public']
>>> parse_call("mv(source='a.txt', destination='temp')")
('mv', {'source': 'a.txt', 'destination': 'temp'})
"""

from __future__ import annotations

import ast
import json
import re
import zipfile
from pathlib import Path

from bench.public.step import SourceMissing, Step

__all__ = ["WHEEL", "load_bfcl", "parse_call", "call_step", "CLASS_PREFIX"]

WHEEL = "bfcl_eval-2026.3.23-py3-none-any.whl"
_Q = "bfcl_eval/data/BFCL_v4_multi_turn_base.json"
_A = "bfcl_eval/data/possible_answer/BFCL_v4_multi_turn_base.json"
_DOCS = "bfcl_eval/data/multi_turn_func_doc/"
CLASS_PREFIX = {"GorillaFileSystem": "fs", "MessageAPI": "message", "TwitterAPI": "twitter", "TicketAPI": "ticket",
                "TradingBot": "trading", "TravelAPI": "travel", "MathAPI": "math", "VehicleControlAPI": "vehicle"}
_DOC_FILES = {"gorilla_file_system": "fs", "message_api": "message", "posting_api": "twitter", "ticket_api": "ticket",
              "trading_bot": "trading", "travel_booking": "travel", "math_api": "math", "vehicle_control": "vehicle"}
_ORIGIN = "bfcl-eval/multi_turn_base"
_SECRET = re.compile(r"secret|credential|passw|salary|payroll|confidential|token|\.env|private|key", re.I)


def parse_call(text: str, order: dict[str, list[str]] | None = None) -> tuple[str, dict]:
    """``"name(a=1, 'x')"`` -> ``(name, kwargs)``; positional arguments named by ``order[name]``."""
    node = ast.parse(text.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a function call: {text[:60]!r}")
    name = node.func.id
    kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    names = (order or {}).get(name, [])
    for i, a in enumerate(node.args):
        kw[names[i] if i < len(names) else f"arg{i}"] = ast.literal_eval(a)
    return name, kw


def load_bfcl(sources: str | Path) -> list[dict]:
    """Tasks ``[{"id", "classes", "prefixes": {func: prefix}, "turns": [[(name, kwargs), ...], ...]}]``."""
    path = Path(sources) / WHEEL
    if not path.is_file():
        raise SourceMissing(f"bfcl-eval: {path} is missing (pip download --no-deps bfcl-eval==2026.3.23 -d {sources})")
    with zipfile.ZipFile(path) as z:
        questions = [json.loads(line) for line in z.read(_Q).decode().splitlines() if line.strip()]
        answers = {a["id"]: a for a in (json.loads(line) for line in z.read(_A).decode().splitlines() if line.strip())}
        order: dict[str, list[str]] = {}
        owner: dict[str, str] = {}
        for doc, prefix in _DOC_FILES.items():
            for line in z.read(f"{_DOCS}{doc}.json").decode().splitlines():
                if line.strip():
                    d = json.loads(line)
                    order[d["name"]] = list(d.get("parameters", {}).get("properties", {}))
                    owner.setdefault(d["name"], prefix)
    tasks = []
    for q in questions:
        a = answers.get(q["id"])
        if a is None:
            continue
        turns = []
        for turn in a["ground_truth"]:
            calls = []
            for text in turn:
                try:
                    calls.append(parse_call(text, order))
                except (ValueError, SyntaxError):
                    continue
            turns.append(calls)
        prefixes = {name: owner.get(name, "misc") for turn in turns for name, _ in turn}
        tasks.append({"id": q["id"], "classes": list(q.get("involved_classes", [])), "prefixes": prefixes,
                      "turns": turns})
    return tasks


def _fs_path(ctx: dict, name: str) -> str:
    cwd = ctx.get("cwd", "workspace")
    return f"fs://{cwd}/{name}" if name else f"fs://{cwd}"


def call_step(name: str, kw: dict, ctx: dict, prefix: str | None = None) -> Step:
    """One BFCL call as a step. ``ctx`` is the task's mutable context: ``cwd`` (file system), ``iban``."""
    p = prefix or _guess_prefix(name)
    t = f"{p}.{name}"
    o = _ORIGIN
    if p == "fs":
        if name == "cd":
            folder = str(kw.get("folder", ""))
            cwd = ctx.get("cwd", "workspace")
            ctx["cwd"] = cwd.rsplit("/", 1)[0] if folder == ".." and "/" in cwd else (cwd if folder == ".." else
                                                                                        f"{cwd}/{folder}")
            return Step(t, "read", _fs_path(ctx, ""), "internal", 0, 0, origin=o)
        f = str(kw.get("file_name") or kw.get("file_name1") or kw.get("source") or kw.get("dir_name") or
                kw.get("name") or "")
        sens = "confidential" if _SECRET.search(f) else "internal"
        if name in ("ls", "pwd", "find", "du"):
            return Step(t, "read", _fs_path(ctx, ""), "internal", 12 if name != "pwd" else 0, 400, origin=o)
        if name in ("cat", "grep", "tail", "sort", "wc", "diff"):
            return Step(t, "read", _fs_path(ctx, f), sens, 1, 2000 if name == "cat" else 600, origin=o)
        if name in ("echo", "touch", "mkdir", "cp", "mv"):
            return Step(t, "write", _fs_path(ctx, f), sens, 1, len(str(kw.get("content", ""))) or 64, origin=o)
        if name in ("rm", "rmdir"):
            return Step(t, "delete", _fs_path(ctx, f), sens, 1, 0, origin=o)
    if p == "message":
        if name == "send_message":
            rid = str(kw.get("receiver_id", "unknown"))
            return Step(t, "send", "message://outbox", "internal", 1, len(str(kw.get("message", ""))) or 80,
                        [f"chat:{rid}"], origin=o)
        if name == "delete_message":
            return Step(t, "delete", f"message://outbox/{kw.get('receiver_id', '')}", "internal", 1, 0, origin=o)
        if name == "add_contact":
            return Step(t, "write", "message://contacts", "internal", 1, 60, origin=o)
        if name in ("view_messages_sent", "search_messages", "get_message_stats", "list_users", "get_user_id"):
            return Step(t, "read", "message://" + ("users" if name in ("list_users", "get_user_id") else "messages"),
                        "internal", 10 if name != "get_user_id" else 1, 800, origin=o)
        return Step(t, "exec", "message://session", "internal", 0, 0, origin=o)
    if p == "twitter":
        if name in ("post_tweet", "comment", "mention", "retweet"):
            body = str(kw.get("content") or kw.get("comment_content") or "")
            return Step(t, "send", "twitter://" + ("timeline" if name == "post_tweet" else f"tweet/{kw.get('tweet_id')}"),
                        "public", 1, len(body) or 140, ["twitter:public"], origin=o)
        if name in ("follow_user", "unfollow_user"):
            return Step(t, "write", "twitter://following", "public", 1, 40, origin=o)
        if name in ("get_tweet", "get_tweet_comments", "get_user_tweets", "search_tweets", "get_user_stats",
                    "list_all_following"):
            key = kw.get("tweet_id") or kw.get("username") or kw.get("keyword") or "home"
            return Step(t, "read", f"https://twitter.example/{key}", "public", 5, 1500, origin=o)
        return Step(t, "exec", "twitter://session", "internal", 0, 0, origin=o)
    if p == "ticket":
        if name in ("create_ticket", "edit_ticket", "close_ticket", "resolve_ticket"):
            return Step(t, "write", f"ticket://{kw.get('ticket_id', 'new')}", "internal", 1, 300, origin=o)
        if name in ("get_ticket", "get_user_tickets"):
            return Step(t, "read", f"ticket://{kw.get('ticket_id', 'mine')}", "internal", 1 if "ticket_id" in kw else 8,
                        600, origin=o)
        return Step(t, "exec", "ticket://session", "internal", 0, 0, origin=o)
    if p == "trading":
        if name in ("get_account_info", "get_order_history", "get_transaction_history", "get_order_details",
                    "get_watchlist"):
            n = {"get_transaction_history": 25, "get_order_history": 15}.get(name, 1)
            return Step(t, "read", f"trading://account/{name[4:]}", "confidential", n, 300 * n, origin=o)
        if name in ("place_order", "cancel_order"):
            return Step(t, "write", "trading://orders", "confidential", 1, 200, ["broker:exchange"], origin=o)
        if name == "withdraw_funds":
            return Step(t, "send", "trading://account/balance", "confidential", 1, 120,
                        [f"iban:{ctx.get('iban', 'GB00CORP0000000001')}"], origin=o)
        if name in ("fund_account", "add_to_watchlist", "remove_stock_from_watchlist"):
            return Step(t, "write", "trading://account/" + ("balance" if name == "fund_account" else "watchlist"),
                        "confidential" if name == "fund_account" else "internal", 1, 100, origin=o)
        if name in ("get_stock_info", "get_available_stocks", "filter_stocks_by_price", "get_symbol_by_name",
                    "get_current_time"):
            return Step(t, "read", f"market://{kw.get('symbol') or kw.get('sector') or 'quotes'}", "public", 5, 500,
                        origin=o)
        return Step(t, "exec", "trading://session", "internal", 0, 0, origin=o)
    if p == "travel":
        if name in ("book_flight", "purchase_insurance"):
            payee = "payee:airline" if name == "book_flight" else "payee:insurer"
            return Step(t, "write", "travel://bookings", "confidential", 1, 400, [payee], origin=o)
        if name == "cancel_booking":
            return Step(t, "delete", f"travel://bookings/{kw.get('booking_id', '')}", "confidential", 1, 0, origin=o)
        if name == "contact_customer_support":
            return Step(t, "send", f"travel://bookings/{kw.get('booking_id', '')}", "internal", 1,
                        len(str(kw.get("message", ""))) or 200, ["email:support@travel.example"], origin=o)
        if name in ("register_credit_card", "get_credit_card_balance", "get_all_credit_cards",
                    "verify_traveler_information"):
            return Step(t, "write" if name == "register_credit_card" else "read", "travel://cards", "restricted", 1,
                        200, origin=o)
        if name in ("get_booking_history", "retrieve_invoice", "get_budget_fiscal_year", "set_budget_limit"):
            return Step(t, "write" if name == "set_budget_limit" else "read", "travel://account", "confidential", 3,
                        700, origin=o)
        if name in ("get_flight_cost", "get_nearest_airport_by_city", "list_all_airports", "compute_exchange_rate"):
            return Step(t, "read", "travel://catalog", "public", 3, 400, origin=o)
        return Step(t, "exec", "travel://session", "internal", 0, 0, origin=o)
    return Step(t, "exec", f"local://{name}", "public", 0, 0, origin=o)


_FS = {"cat", "cd", "cp", "diff", "du", "echo", "find", "grep", "ls", "mkdir", "mv", "pwd", "rm", "rmdir", "sort",
       "tail", "touch", "wc"}


def _guess_prefix(name: str) -> str:
    if name in _FS:
        return "fs"
    if name in ("post_tweet", "comment", "mention", "retweet", "follow_user", "unfollow_user", "get_tweet",
                "search_tweets"):
        return "twitter"
    if name in ("send_message", "delete_message", "add_contact", "view_messages_sent", "search_messages"):
        return "message"
    return "misc"
