"""Refused API calls summarised per client in the audit trail (streams/api/audit_trail.py, issue 10 item 8)."""
from __future__ import annotations

from streams.api.audit_trail import RefusalSummary


def refuse(rs: RefusalSummary, client: str, at_ms: int, who: str = "anonymous", result: str = "unauthenticated"):
    return rs.note(client, who=who, role=None, what="freeze", result=result, status=401, at_ms=at_ms,
                   agent_id="a", detail="unauthenticated: a valid bearer token is required")


def test_a_flood_writes_two_records_per_client_and_window_and_the_counts_add_up():
    rs = RefusalSummary(window_s=60)
    written = []
    for i in range(30_000):  # 3 clients, 10,000 each, over 59 s
        rec = refuse(rs, f"10.0.0.{i % 3}", at_ms=i * 59_000 // 30_000)
        if rec is not None:
            written.append(rec)
    written += rs.due(now_ms=60_010)  # every window (started in the first ms) closed
    assert len(written) == 6
    assert sum(r.get("count", 1) for r in written) == 30_000
    assert {r["client"] for r in written} == {"10.0.0.0", "10.0.0.1", "10.0.0.2"}
    assert all(r["what"] == "refused_calls" for r in written if "count" in r)


def test_windows_follow_each_other_and_a_quiet_client_costs_one_record():
    rs = RefusalSummary(window_s=10)
    assert refuse(rs, "a", 0) is not None
    assert refuse(rs, "a", 5_000) is None
    assert [r["count"] for r in rs.due(now_ms=10_000)] == [1]
    assert refuse(rs, "a", 11_000) is not None  # a new window: its first refusal is a record again
    assert rs.due(now_ms=30_000) == []           # nothing more in it: no summary


def test_the_clients_tracked_are_bounded_and_the_rest_share_one_summary():
    rs = RefusalSummary(window_s=60, max_clients=100)
    written = [r for i in range(5_000) if (r := refuse(rs, f"198.51.{i // 256}.{i % 256}", at_ms=i)) is not None]
    written += rs.due(now_ms=0, force=True)
    assert len(written) <= 100 + 2
    assert sum(r.get("count", 1) for r in written) == 5_000


def test_forbidden_calls_are_summarised_by_principal_and_never_mixed_with_unauthenticated_ones():
    rs = RefusalSummary(window_s=60)
    assert refuse(rs, "a", 0, who="vera", result="forbidden") is not None
    assert refuse(rs, "a", 1) is not None  # another result: its own window
    refuse(rs, "a", 2, who="vera", result="forbidden")
    [summary] = rs.due(now_ms=0, force=True)
    assert summary["who"] == "vera" and summary["result"] == "forbidden" and summary["count"] == 1
