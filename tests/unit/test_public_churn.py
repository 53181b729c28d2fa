"""bench/public/churn.py: the churn added to the public benchmark is benign, deterministic and what it says."""
from __future__ import annotations

import json
from pathlib import Path

from bench.public.churn import LONG_LIVED, add_churn, main
from detector.events import decode_event
from detector.timestamps import instant
from models.evaluate import check_labels

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "public"


def read(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURE / name).read_text().splitlines() if line.strip()]


def churned(seed: int = 0):
    return add_churn(read("history.jsonl"), read("events.jsonl"), json.loads((FIXTURE / "labels.json").read_text()),
                     seed=seed)


def test_the_same_benchmark_and_seed_give_the_same_bytes(tmp_path):
    for out in ("a", "b"):
        assert main(["--bench", str(FIXTURE), "--out", str(tmp_path / out)]) == 0
    for name in ("history.jsonl", "events.jsonl", "labels.json", "manifest.json", "policy.toml"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_every_event_is_a_valid_contract_event_with_a_unique_id_in_time_order():
    history, stream, labels, _ = churned()
    check_labels(labels)
    ids = [e["event_id"] for e in history + stream]
    assert len(ids) == len(set(ids))
    for evs in (history, stream):
        times = [instant(e["ts"]) for e in evs]
        assert times == sorted(times)
        for e in evs:
            decode_event(json.dumps(e).encode())
    assert max(instant(e["ts"]) for e in history) < instant(labels["history_end"]) <= instant(stream[0]["ts"])


def test_incidents_and_look_alikes_are_left_as_they_were():
    before = {e["event_id"]: e for e in read("history.jsonl") + read("events.jsonl")}
    history, stream, labels, _ = churned()
    original = json.loads((FIXTURE / "labels.json").read_text())
    assert labels["incidents"] == original["incidents"] and labels["lookalikes"] == original["lookalikes"]
    after = {e["event_id"]: e for e in history + stream}
    for inc in original["incidents"] + original["lookalikes"]:
        for eid in inc["event_ids"]:
            assert after[eid] == before[eid]


def test_the_rolled_out_tool_replaces_the_old_one_for_the_whole_role_from_its_start():
    _, stream, labels, summary = churned()
    r = summary["rollout"]
    assert r["events"] > 0
    role_agents = {a["agent_id"] for a in labels["agents"] if a.get("role") == r["role"] and "-new-" not in a["agent_id"]
                   and a["agent_id"] != LONG_LIVED}
    new = [e for e in stream if e["tool"] == r["new_tool"]]
    assert new and all(instant(e["ts"]) >= instant(r["from"]) for e in new)
    assert {e["agent_id"] for e in new} <= role_agents
    assert not [e for e in stream if e["tool"] == r["old_tool"] and e["agent_id"] in role_agents
                and instant(e["ts"]) >= instant(r["from"])
                and e["event_id"] not in {i for inc in labels["incidents"] + labels["lookalikes"]
                                           for i in inc["event_ids"]}]


def test_new_agents_act_in_the_stream_only_and_are_labelled_with_their_role():
    history, stream, labels, summary = churned()
    new = summary["new_agents"]["agents"]
    assert new and not {e["agent_id"] for e in history} & set(new)
    assert set(new) <= {e["agent_id"] for e in stream}
    roles = {a["agent_id"]: a["role"] for a in labels["agents"]}
    assert all(roles[a] == a.split("-new-")[0] for a in new)


def test_the_long_lived_assistant_spans_history_and_stream_and_its_volume_doubles():
    history, stream, labels, summary = churned()
    ll = summary["long_lived"]
    assert {e["agent_id"] for e in history} >= {LONG_LIVED} and LONG_LIVED in {e["agent_id"] for e in stream}
    assert ll["tasks_last_day"] == 2 * ll["tasks_first_day"]
    assert any(a["agent_id"] == LONG_LIVED for a in labels["agents"])


def test_every_changed_event_is_told_apart_by_its_kind_of_change_and_decisions_are_counted_per_kind():
    from bench.public.churn import KINDS, breakdown, kinds_of_change

    _, stream, _, summary = churned()
    kinds = kinds_of_change(stream, summary)
    assert set(kinds) == {e["event_id"] for e in stream} and set(kinds.values()) <= set(KINDS)
    seen = set(kinds.values())
    assert {"rolled-out tool", "new agents", "long-lived assistant", "rest"} <= seen
    records = [{"event_id": e["event_id"], "action_taken": "alert" if i % 2 else "none",
                "gate": "needs_approval" if i % 3 == 0 else "allow"} for i, e in enumerate(stream)]
    counts = breakdown(records, kinds)
    assert sum(c["events"] for c in counts.values()) == len(stream)
    assert sum(c["alerts"] for c in counts.values()) == len(stream) // 2
    assert sum(c["approvals"] for c in counts.values()) == len(range(0, len(stream), 3))
