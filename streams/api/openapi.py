"""The OpenAPI 3.0 document of the control-plane API (served at ``/v1/openapi.json``), and its limits.

The limits below are the ones :mod:`streams.api.server` enforces; the document is
built from them, so the two cannot drift apart.

>>> doc = document()
>>> sorted(doc["paths"])[:3]
['/v1/agents/{agent_id}', '/v1/agents/{agent_id}/freeze', '/v1/agents/{agent_id}/release']
>>> doc["paths"]["/v1/agents/{agent_id}/release"]["post"]["x-roles"]
['lead']
"""

from __future__ import annotations

import copy
from typing import Any

from streams.api.auth import PERMISSIONS

__all__ = ["document", "MAX_BODY", "MAX_CHECK_BODY", "MAX_FALLBACKS_BODY", "MAX_REASON", "MAX_ID", "MAX_FALLBACKS", "MAX_LIMIT",
           "SEVERITIES", "VERDICTS", "FEEDBACK_VERDICTS", "RELEASE_VERDICTS"]

VERSION = "1.0.0"
MAX_BODY = 16 * 1024             # bytes, every POST but /v1/check
MAX_CHECK_BODY = 1024 * 1024     # bytes, /v1/check (an action may name 10,000 destinations)
MAX_REASON = 1000                # characters
MAX_ID = 128                     # characters, agent / event / incident / approval ids
MAX_FALLBACKS = 100              # fallback reports per call
MAX_FALLBACKS_BODY = 1024 * 1024  # bytes, /v1/fallbacks: any 100 valid reports fit, however their text is escaped
MAX_LIMIT = 1000                 # items per listing
SEVERITIES = ("medium", "high", "critical")
VERDICTS = ("allow", "needs_approval", "deny")
FEEDBACK_VERDICTS = ("false_positive", "confirmed")
#: an analyst's verdict on an incident (with its release) or an alert episode (detector/verdicts.py)
RELEASE_VERDICTS = ("benign", "confirmed")

_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID}
_NULL_STR = {"type": "string", "nullable": True}
_REASON = {"type": "string", "minLength": 1, "maxLength": MAX_REASON, "pattern": r"\S",
           "description": "why (kept in the audit trail); must not be blank"}
_ANY_OBJ = {"type": "object", "additionalProperties": True}


def _err(desc: str) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(desc: str, schema: dict) -> dict:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: dict, limit: int) -> dict:
    return {"required": True, "description": f"JSON, at most {limit} bytes",
            "content": {"application/json": {"schema": schema}}}


def _op(summary: str, permission: str | None, responses: dict, *, params=(), body: dict | None = None,
        description: str = "", changes_state: bool = False) -> dict:
    op: dict[str, Any] = {"summary": summary, "operationId": summary.lower().replace(" ", "_").replace("/", "_"),
                          "responses": {}}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = body
    if permission is None:
        op["security"] = []
    else:
        op["security"] = [{"bearer": []}]
        op["x-roles"] = sorted(PERMISSIONS[permission])
        op["x-changes-state"] = changes_state
    op["responses"].update(responses)
    if permission is not None:
        op["responses"]["401"] = _err("no or unknown bearer token")
        op["responses"]["403"] = _err("the token's role may not do this")
        op["responses"]["429"] = _err("too many calls with this token (or, for a check, open approval requests "
                                      "for this agent); retry after the Retry-After header")
    if body is not None:
        op["responses"]["400"] = _err("malformed JSON or a field out of bounds (the message says which)")
        op["responses"]["413"] = _err("body too large")
        op["responses"]["408"] = _err("the body did not arrive in time (FLOWBREAKER_HTTP_BODY_TIMEOUT_S)")
    op["responses"].setdefault("503", _err("not ready (starting or rebalancing) or the owning worker is unreachable;"
                                           " retry after the Retry-After header"))
    return op


def _path(name: str, desc: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": desc, "schema": dict(_ID)}


_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["status", "code", "message"],
        "properties": {"status": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"},
                       "incident_id": _NULL_STR}}}},
    "Decision": {"type": "object", "description": "a trace entry: one recent action of the agent and its score",
                 "additionalProperties": True},
    "Agent": {"type": "object", "required": ["agent_id", "breaker", "risk", "baseline", "last_decisions"],
              "properties": {
                  "agent_id": {"type": "string"}, "operator_id": _NULL_STR, "partition": {"type": "integer"},
                  "breaker": {"type": "object", "properties": {
                      "state": {"type": "string", "enum": ["closed", "open", "half_open"]},
                      "incident_id": _NULL_STR, "opened_at": _NULL_STR, "probation_until": _NULL_STR,
                      "trips": {"type": "integer"}}},
                  "risk": {"type": "object", "properties": {"value": {"type": "number"},
                                                            "budget": {"type": "number"},
                                                            "as_of": _NULL_STR}},
                  "baseline": {"type": "object", "properties": {"observations": {"type": "number"},
                                                                "features": _ANY_OBJ}},
                  "last_decisions": {"type": "array", "items": _ref("Decision")},
                  "manifest": {"type": "object", "nullable": True, "additionalProperties": True,
                               "description": "the intended-use manifest in force (label, clauses), or null"}}},
    "Whoami": {"type": "object", "required": ["name", "role", "permissions"], "properties": {
        "name": {"type": "string"}, "role": {"type": "string"},
        "permissions": {"type": "array", "items": {"type": "string"}}}},
    "Breaker": {"type": "object", "required": ["agent_id", "state"], "properties": {
        "agent_id": {"type": "string"}, "state": {"type": "string", "enum": ["open", "half_open"]},
        "incident_id": _NULL_STR, "since": _NULL_STR, "why": _NULL_STR, "by": _NULL_STR, "severity": _NULL_STR,
        "probation_until_t": {"type": "number"}}},
    "BreakerList": {"type": "object", "required": ["state", "breakers"], "properties": {
        "state": {"type": "string"}, "count": {"type": "integer"},
        "breakers": {"type": "array", "items": _ref("Breaker")}}},
    "Incident": {"type": "object", "required": ["incident_id", "agent_id"],
                 "description": "the forensic record: trigger, reasons, attribution (operator_id, requested_by, "
                                "instruction_hash, task chain) and the agent's trace",
                 "properties": {"incident_id": {"type": "string"}, "agent_id": {"type": "string"},
                                "attribution": _ANY_OBJ, "trace": {"type": "array", "items": _ANY_OBJ}},
                 "additionalProperties": True},
    "FreezeRequest": {"type": "object", "required": ["reason"], "additionalProperties": False, "properties": {
        "reason": _REASON, "severity": {"type": "string", "enum": list(SEVERITIES), "default": "high",
                                        "description": "critical: the two-person rule applies to the release"}}},
    "FreezeResult": {"type": "object", "required": ["agent_id", "incident_id", "state"], "properties": {
        "agent_id": {"type": "string"}, "incident_id": {"type": "string"}, "state": {"type": "string"},
        "frozen_by": {"type": "string"}, "severity": {"type": "string"}, "issued_at": {"type": "string"},
        "published": {"type": "boolean"}}},
    "ReleaseRequest": {"type": "object", "required": ["reason"], "additionalProperties": False, "properties": {
        "reason": _REASON, "incident_id": dict(_ID, description="must be the agent's open incident if given"),
        "verdict": {"type": "string", "enum": list(RELEASE_VERDICTS),
                    "description": "benign: the incident's actions were legitimate work and teach the agent's "
                                   "profile; confirmed: they were harmful (teaches nothing). Published on "
                                   "agent-verdicts"}}},
    "ReleaseResult": {"type": "object", "required": ["agent_id", "incident_id", "state"], "properties": {
        "agent_id": {"type": "string"}, "incident_id": {"type": "string"}, "state": {"type": "string"},
        "released_by": {"type": "string"}, "issued_at": {"type": "string"}, "published": {"type": "boolean"},
        "verdict": _NULL_STR, "verdict_id": _NULL_STR}},
    "Episode": {"type": "object", "required": ["episode_id", "agent_id", "state"],
                "description": "an alert episode record (flowbreaker-episode/1, docs/contract.md section 4)",
                "properties": {"schema": {"type": "string"}, "episode_id": {"type": "string"},
                               "agent_id": {"type": "string"},
                               "state": {"type": "string", "enum": ["open", "closed"]},
                               "opened": {"type": "string"}, "updated": {"type": "string"},
                               "closed": {"type": "string"}, "severity": {"type": "string"},
                               "actions": {"type": "integer"}, "reasons": _ANY_OBJ,
                               "event_ids": {"type": "array", "items": {"type": "string"}},
                               "verdict": _ANY_OBJ},
                "additionalProperties": True},
    "EpisodeList": {"type": "object", "required": ["episodes"], "properties": {
        "state": _NULL_STR, "count": {"type": "integer"}, "open": {"type": "integer"},
        "episodes": {"type": "array", "items": _ref("Episode")}}},
    "VerdictRequest": {"type": "object", "required": ["verdict", "reason"], "additionalProperties": False,
                       "properties": {"verdict": {"type": "string", "enum": list(RELEASE_VERDICTS)},
                                      "reason": _REASON}},
    "VerdictResult": {"type": "object", "required": ["episode_id", "agent_id", "verdict", "verdict_id"],
                      "properties": {"episode_id": {"type": "string"}, "agent_id": {"type": "string"},
                                     "verdict": {"type": "string"}, "verdict_id": {"type": "string"},
                                     "by": {"type": "string"}, "at": {"type": "string"},
                                     "published": {"type": "boolean"}}},
    "FeedbackRequest": {"type": "object", "required": ["agent_id", "verdict", "reason"],
                        "additionalProperties": False, "properties": {
                            "agent_id": _ID, "verdict": {"type": "string", "enum": list(FEEDBACK_VERDICTS)},
                            "reason": _REASON}},
    "Feedback": {"type": "object", "required": ["event_id", "agent_id", "verdict", "reason", "by", "at"],
                 "properties": {"event_id": {"type": "string"}, "agent_id": {"type": "string"},
                                "verdict": {"type": "string"}, "reason": {"type": "string"},
                                "by": {"type": "string"}, "at": {"type": "string"}}},
    "Action": {"type": "object", "description": "a proposed action: the contract's action event fields "
                                                "(unknown extra fields are ignored)",
               "required": ["event_id", "ts", "agent_id", "operator_id", "tool", "action", "resource",
                            "sensitivity"],
               "properties": {
                   "schema_version": {"type": "integer", "enum": [1]},
                   "event_id": _ID, "ts": {"type": "string", "format": "date-time", "maxLength": 64},
                   "agent_id": _ID, "operator_id": {"type": "string", "minLength": 1, "maxLength": 256},
                   "requested_by": {"type": "string", "maxLength": 1024},
                   "task_id": {"type": "string", "maxLength": 1024},
                   "instruction_hash": {"type": "string", "maxLength": 1024},
                   "tool": {"type": "string", "minLength": 1, "maxLength": 256},
                   "action": {"type": "string", "enum": ["read", "write", "delete", "send", "exec"]},
                   "resource": {"type": "string", "minLength": 1, "maxLength": 1024},
                   "sensitivity": {"type": "string", "enum": ["public", "internal", "confidential", "restricted"]},
                   "records": {"type": "integer", "minimum": 0, "maximum": 2 ** 63 - 1},
                   "bytes": {"type": "integer", "minimum": 0, "maximum": 2 ** 63 - 1},
                   "destinations": {"type": "array", "maxItems": 10000, "items": {"type": "string"}},
                   "approval_id": {"type": "string", "maxLength": 1024},
                   "parent_event_id": {"type": "string", "maxLength": 1024}}},
    "CheckResult": {"type": "object", "required": ["verdict", "score", "reasons", "approval_request_id"],
                    "properties": {"verdict": {"type": "string", "enum": list(VERDICTS)},
                                   "score": {"type": "number"},
                                   "reasons": {"type": "array", "items": {"type": "string"}},
                                   "approval_request_id": _NULL_STR,
                                   "approval_rejected": _NULL_STR}},
    "Approval": {"type": "object", "required": ["approval_id", "state", "agent_id"], "properties": {
        "approval_id": {"type": "string"}, "state": {"type": "string", "enum": ["pending", "approved", "denied",
                                                                                 "expired"]},
        "agent_id": {"type": "string"}, "tool": {"type": "string"}, "action": {"type": "string"},
        "destinations": {"type": "array", "items": {"type": "string"}}, "max_records": {"type": "integer"},
        "sensitivity": {"type": "string"}, "requested_by": {"type": "string"}, "requested_at": {"type": "string"},
        "expires_at": {"type": "string"}, "decided_by": _NULL_STR, "decided_at": _NULL_STR,
        "decision_reason": _NULL_STR, "valid_until": _NULL_STR, "reasons": {"type": "array"}},
                 "additionalProperties": True},
    "ApprovalList": {"type": "object", "required": ["approvals"], "properties": {
        "state": _NULL_STR, "count": {"type": "integer"}, "approvals": {"type": "array", "items": _ref("Approval")}}},
    "DecisionRequest": {"type": "object", "required": ["reason"], "additionalProperties": False, "properties": {
        "reason": _REASON, "ttl_s": {"type": "number", "minimum": 1, "maximum": 7 * 24 * 3600,
                                     "description": "approve only: how long the approval covers actions "
                                                    "(capped by the worker's maximum)"}}},
    "DenyRequest": {"type": "object", "required": ["reason"], "additionalProperties": False,
                    "properties": {"reason": _REASON}},
    "Fallback": {"type": "object", "required": ["agent_id", "verdict", "cause"], "additionalProperties": False,
                 "properties": {"agent_id": _ID, "event_id": {"type": "string", "maxLength": MAX_ID},
                                "tool": {"type": "string", "maxLength": 256},
                                "action": {"type": "string", "maxLength": 16},
                                "sensitivity": {"type": "string", "maxLength": 16},
                                "verdict": {"type": "string", "enum": ["allow", "deny"]},
                                "cause": {"type": "string", "enum": ["timeout", "unreachable", "unavailable",
                                                                     "error"]},
                                "at": {"type": "string", "maxLength": 64}}},
    "FallbackReport": {"type": "object", "required": ["fallbacks"], "additionalProperties": False, "properties": {
        "fallbacks": {"type": "array", "minItems": 1, "maxItems": MAX_FALLBACKS, "items": _ref("Fallback")},
        "dropped": {"type": "integer", "minimum": 0, "maximum": 2 ** 31}}},
}


def _paths() -> dict[str, Any]:
    agent = _path("agent_id", "the agent")
    unknown_agent = _err("unknown agent (no state on the worker that owns it)")
    return {
        "/v1/openapi.json": {"get": _op("OpenAPI document", None, {"200": _ok("this document", _ANY_OBJ)})},
        "/v1/whoami": {"get": _op(
            "Who am I", "whoami", {"200": _ok("the token's principal, role and permissions", _ref("Whoami"))},
            description="What a client (the console) may offer its user: the role and permissions of the "
                        "presented token. Every role but monitor may ask.")},
        "/v1/agents/{agent_id}": {"get": _op(
            "Get agent", "read", {"200": _ok("breaker state, current risk, baseline summary, last decisions",
                                             _ref("Agent")), "404": unknown_agent}, params=[agent])},
        "/v1/breakers": {"get": _op(
            "List breakers", "read", {"200": _ok("breakers in that state, newest first", _ref("BreakerList")),
                                      "400": _err("bad query parameter")},
            params=[{"name": "state", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ["open", "half_open"], "default": "open"}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}}])},
        "/v1/incidents/{incident_id}": {"get": _op(
            "Get incident", "read", {"200": _ok("the forensic record", _ref("Incident")),
                                     "404": _err("unknown incident")}, params=[_path("incident_id", "the incident")])},
        "/v1/agents/{agent_id}/freeze": {"post": _op(
            "Freeze agent", "freeze", {"200": _ok("frozen: breaker open in the agent's state, then the freeze "
                                                  "command published", _ref("FreezeResult")),
                                       "404": unknown_agent, "409": _err("already frozen")},
            params=[agent], body=_body(_ref("FreezeRequest"), MAX_BODY), changes_state=True,
            description="Manual freeze, the same path as an automatic one: incident, audit record and freeze "
                        "command written to the agent's state, then published.")},
        "/v1/agents/{agent_id}/release": {"post": _op(
            "Release agent", "release", {"200": _ok("released: probation (half_open)", _ref("ReleaseResult")),
                                         "403": _err("wrong role, or the two-person rule: a critical incident "
                                                     "frozen by hand is released by another lead"),
                                         "404": unknown_agent, "409": _err("not frozen, or another incident")},
            params=[agent], body=_body(_ref("ReleaseRequest"), MAX_BODY), changes_state=True)},
        "/v1/decisions/{event_id}/feedback": {"post": _op(
            "Decision feedback", "feedback", {"200": _ok("kept on agent-feedback for retraining", _ref("Feedback")),
                                              "404": unknown_agent},
            params=[_path("event_id", "the decision's event")], body=_body(_ref("FeedbackRequest"), MAX_BODY),
            changes_state=True)},
        "/v1/check": {"post": _op(
            "Check action", "check", {"200": _ok("the verdict for the proposed action", _ref("CheckResult"))},
            body=_body(_ref("Action"), MAX_CHECK_BODY),
            description="Pre-action check, answered by the worker that owns the agent from its current state, "
                        "which it does not change. needs_approval opens (or reuses) an approval request.")},
        "/v1/approvals": {"get": _op(
            "List approvals", "read", {"200": _ok("approvals, newest first", _ref("ApprovalList")),
                                       "400": _err("bad query parameter")},
            params=[{"name": "state", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ["pending", "approved", "denied", "expired"]}},
                    {"name": "agent_id", "in": "query", "required": False, "schema": dict(_ID)},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}}])},
        "/v1/approvals/{approval_id}": {"get": _op(
            "Get approval", "approval_status", {"200": _ok("the approval", _ref("Approval")),
                                                "404": _err("unknown approval")},
            params=[_path("approval_id", "the approval request")])},
        "/v1/approvals/{approval_id}/approve": {"post": _op(
            "Approve", "approve", {"200": _ok("approved", _ref("Approval")), "404": _err("unknown approval"),
                                   "409": _err("not pending (decided or expired)")},
            params=[_path("approval_id", "the approval request")], body=_body(_ref("DecisionRequest"), MAX_BODY),
            changes_state=True)},
        "/v1/approvals/{approval_id}/deny": {"post": _op(
            "Deny", "approve", {"200": _ok("denied", _ref("Approval")), "404": _err("unknown approval"),
                                "409": _err("not pending (decided or expired)")},
            params=[_path("approval_id", "the approval request")], body=_body(_ref("DenyRequest"), MAX_BODY),
            changes_state=True)},
        "/v1/episodes": {"get": _op(
            "List episodes", "read", {"200": _ok("alert episodes, the latest change first", _ref("EpisodeList")),
                                      "400": _err("bad query parameter")},
            params=[{"name": "state", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": ["open", "closed"]}},
                    {"name": "agent_id", "in": "query", "required": False, "schema": dict(_ID)},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}}])},
        "/v1/episodes/{episode_id}/verdict": {"post": _op(
            "Episode verdict", "feedback",
            {"200": _ok("signed and published on agent-verdicts; the worker that holds the agent applies it",
                        _ref("VerdictResult")), "404": _err("unknown episode")},
            params=[_path("episode_id", "the alert episode")], body=_body(_ref("VerdictRequest"), MAX_BODY),
            changes_state=True,
            description="benign: the episode's actions were legitimate work; they teach the agent's profile and "
                        "the same reasons stop alerting for what they covered. confirmed: teaches nothing.")},
        "/v1/fallbacks": {"post": _op(
            "Report fallbacks", "report_fallback",
            {"200": _ok("recorded in the audit trail", {"type": "object", "properties": {
                "recorded": {"type": "integer"}}})},
            body=_body(_ref("FallbackReport"), MAX_FALLBACKS_BODY), changes_state=True,
            description="A runtime reports the checks it answered itself (fail-open or fail-closed) because no "
                        "answer came in time.")},
    }


_DOC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "flowbreaker control plane", "version": VERSION,
             "description": "Breakers, agents, incidents, manual freeze and release, decision feedback, the "
                            "pre-action check and approvals. Any worker answers for any agent (requests about an "
                            "agent are forwarded to the worker that owns its partition). Bearer tokens map to "
                            "roles viewer, analyst, lead, runtime (x-roles on each operation)."},
    "servers": [{"url": "/"}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": _SCHEMAS},
    "paths": _paths(),
}


def document() -> dict[str, Any]:
    """A copy of the document."""
    return copy.deepcopy(_DOC)
