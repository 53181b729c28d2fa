"""``flowbreaker approvals``: list, approve and deny approval requests from the command line.

::

    flowbreaker approvals list [--state pending] [--agent AGENT] [--json]
    flowbreaker approvals approve ID --reason TEXT [--ttl-s SECONDS]
    flowbreaker approvals deny ID --reason TEXT

It talks to any worker's API (``--url``, default ``$FLOWBREAKER_API_URL`` or
``http://127.0.0.1:6066``; the worker routes an approve/deny to the one that owns
the agent) with a bearer token read from ``--token-file`` or
``$FLOWBREAKER_API_TOKEN``. The token is never printed. Listing needs a viewer,
analyst or lead token; approving and denying an analyst or lead token.

When it fails: bad input, no token, 401 (unknown token), 403 (wrong role), 404
(no such request), 409 (already decided) or another 4xx print one line on
stderr and exit 2; no worker answering exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["configure_parser", "run"]

DEFAULT_URL = "http://127.0.0.1:6066"
STATES = ("pending", "approved", "denied", "expired")


class _Fail(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def configure_parser(p: argparse.ArgumentParser) -> None:
    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--url", default=None,
                        help=f"a worker's API (default $FLOWBREAKER_API_URL or {DEFAULT_URL})")
        sp.add_argument("--token-file", default=None,
                        help="file holding the bearer token (default $FLOWBREAKER_API_TOKEN)")
        sp.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the worker (default 10)")

    sub = p.add_subparsers(dest="approvals_cmd", metavar="ACTION", parser_class=type(p))
    sub.required = True
    ls = sub.add_parser("list", help="approval requests, newest first")
    ls.add_argument("--state", choices=STATES, default=None, help="only requests in this state")
    ls.add_argument("--agent", default=None, help="only this agent's requests")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    ls.add_argument("--json", action="store_true", help="print the API's JSON answer")
    common(ls)
    ap = sub.add_parser("approve", help="approve a pending request (analyst or lead)")
    ap.add_argument("approval_id", metavar="ID")
    ap.add_argument("--reason", required=True, help="why (written to the audit trail)")
    ap.add_argument("--ttl-s", type=float, default=None, help="how long the approval holds (default: policy, 15 min)")
    common(ap)
    dn = sub.add_parser("deny", help="deny a pending request (analyst or lead)")
    dn.add_argument("approval_id", metavar="ID")
    dn.add_argument("--reason", required=True, help="why (written to the audit trail)")
    common(dn)


def _token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as err:
            raise _Fail(f"cannot read token file {args.token_file}: {err.strerror}") from None
        if not token:
            raise _Fail(f"token file {args.token_file} is empty")
        where = f"token file {args.token_file}"
    else:
        token = os.environ.get("FLOWBREAKER_API_TOKEN", "").strip()
        if not token:
            raise _Fail("no API token: use --token-file FILE or set FLOWBREAKER_API_TOKEN")
        where = "FLOWBREAKER_API_TOKEN"
    if any(c.isspace() for c in token) or len(token) > 512:
        raise _Fail(f"the token in {where} is not a single bearer token")
    return token


def _url(args: argparse.Namespace) -> str:
    url = (args.url or os.environ.get("FLOWBREAKER_API_URL") or DEFAULT_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Fail(f"--url must be an http(s) URL, got {url!r}")
    return url


def _call(method: str, url: str, token: str, body: Any, timeout: float) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                          "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as err:
        try:
            payload = json.loads(err.read() or b"{}")
        except ValueError:
            payload = {}
        e = payload.get("error") if isinstance(payload, dict) else None
        msg = (e or {}).get("message") if isinstance(e, dict) else None
        hint = {401: "unauthenticated: the token is not known to the worker",
                403: "forbidden: this token's role may not do that",
                404: "not found"}.get(err.code, f"HTTP {err.code}")
        text = f"{hint} ({msg})" if msg and msg not in hint else hint
        raise _Fail(text, 2 if 400 <= err.code < 500 else 1) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise _Fail(f"no answer from {url.split('/v1/')[0]} ({reason})", 1) from None
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        raise _Fail("the worker's answer is not JSON", 1) from None


def _fmt_row(a: dict) -> str:
    dests = a.get("destinations") or []
    d = ", ".join(dests[:2]) + (f" (+{len(dests) - 2})" if len(dests) > 2 else "")
    # the time that matters for the state: until when an approval holds, otherwise when it was asked for
    when = (f"valid until {a.get('valid_until') or '-'}" if a.get("state") == "approved"
            else f"requested {a.get('requested_at') or '-'}")
    return (f"{a.get('approval_id', '?'):<38} {a.get('state', '?'):<9} {a.get('agent_id', '?'):<20} "
            f"{a.get('action', '?')} {a.get('tool', '?')} [{a.get('sensitivity', '?')}, "
            f"<= {a.get('max_records', 0)} records] -> {d or '-'}  ({when})")


def _run(args: argparse.Namespace) -> int:
    base = _url(args)
    token = _token(args)
    if args.timeout <= 0:
        raise _Fail("--timeout must be > 0")
    cmd = args.approvals_cmd
    if cmd == "list":
        if not 1 <= args.limit <= 1000:
            raise _Fail("--limit must be from 1 to 1000")
        q = {"limit": args.limit}
        if args.state:
            q["state"] = args.state
        if args.agent:
            q["agent_id"] = args.agent
        out = _call("GET", f"{base}/v1/approvals?{urlencode(q)}", token, None, args.timeout)
        if args.json:
            print(json.dumps(out, indent=2, sort_keys=True))
            return 0
        items = out.get("approvals") or []
        if not items:
            print(f"no {args.state + ' ' if args.state else ''}approval requests")
            return 0
        print("ID, state, agent, action tool [sensitivity, most records], destinations (times UTC)")
        for a in items:
            print(_fmt_row(a))
            reasons = a.get("reasons") or []
            if reasons and a.get("state") == "pending":
                print(f"{'':<39}why: {'; '.join(str(r) for r in reasons[:2])}")
        return 0
    ident = args.approval_id.strip()
    if not ident or len(ident) > 128 or any(c.isspace() for c in ident):
        raise _Fail("ID must be an approval id such as apr-3f2c...")
    reason = args.reason.strip()
    if not reason:
        raise _Fail("--reason must not be empty")
    body: dict[str, Any] = {"reason": reason}
    if cmd == "approve" and args.ttl_s is not None:
        if not 1 <= args.ttl_s <= 7 * 24 * 3600:
            raise _Fail("--ttl-s must be from 1 to 604800 seconds")
        body["ttl_s"] = args.ttl_s
    rec = _call("POST", f"{base}/v1/approvals/{quote(ident, safe='')}/{cmd}", token, body, args.timeout)
    state = rec.get("state", "?")
    until = f" until {rec.get('valid_until')}" if state == "approved" and rec.get("valid_until") else ""
    print(f"{rec.get('approval_id', ident)} {state}{until}: agent {rec.get('agent_id', '?')} "
          f"{rec.get('action', '?')} {rec.get('tool', '?')} (by {rec.get('decided_by') or '?'})")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except _Fail as err:
        print(f"flowbreaker approvals: {err}", file=sys.stderr)
        return err.code
