"""Drills (streams/cli/drill.py, streams/clients/acks.py, detector/drill.py) without Kafka: the synthetic incident, the
acknowledgements a guard and the actuator publish, the report, the result the workers follow, the command's
usage errors, and training leaving drill agents out."""
from __future__ import annotations

import json
import threading

import pytest

from detector.drill import DEFAULT_DRILL_AGENT, is_drill
from detector.engine import Engine
from detector.events import decode_event
from detector.policy import Policy
from streams.clients.acks import AckSink, GuardAcker, parse_ack
from streams.cli.main import main
from streams.cli.drill import DEFAULT_TARGETS_S, STEPS, script, targets_from, write_report
from streams.drill_results import REPORT_FORMAT, DrillFollower, parse_result
from streams.clients.guard import FreezeGuard
from streams.settings import Settings


class Producer:
    """A hand-written stand-in for kafka-python's producer: remembers what was sent."""

    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[str, bytes, dict]] = []
        self.fail = fail

    def send(self, topic, key=None, value=None):
        if self.fail:
            self.fail -= 1
            raise ConnectionError("broker away")
        self.sent.append((topic, key, json.loads(value)))
        return self

    def get(self, timeout=None):
        return None

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def test_the_drill_incident_freezes_a_fresh_drill_agent_on_its_first_send():
    warm, incident = script(DEFAULT_DRILL_AGENT, "t1", 1772442000.0)
    eng = Engine(policy=Policy())
    decisions = eng.process_batch([decode_event(e) for e in warm + incident])
    by_id = {d.event.event_id: d for d in decisions}
    first_send = incident[1]["event_id"]
    assert by_id[first_send].record["action_taken"] == "freeze"
    assert not any(d.freeze for d in decisions if d.event.event_id != first_send)
    assert all(e["drill"] is True and is_drill(e["agent_id"]) for e in warm + incident)
    # every address of the rehearsal is under .invalid (RFC 2606): nothing can ever be delivered there
    assert all(".invalid" in d for e in incident for d in e.get("destinations", []))


def test_targets_come_from_the_settings():
    t = targets_from(Settings(drill_freeze_command_s=2.5))
    assert t["freeze_command"] == 2.5 and t["decision"] == DEFAULT_TARGETS_S["decision"]
    assert set(t) == set(STEPS)
    assert targets_from(object()) == DEFAULT_TARGETS_S


# --------------------------------------------------------------------------- acknowledgements

def test_a_guard_acknowledges_the_commands_it_enacts_once_current():
    guard = FreezeGuard()  # fed by hand: current at once
    prod = Producer()
    acker = GuardAcker(Settings(topic_prefix="t-"), by="rt-1", producer=prod).attach(guard)
    guard.apply({"command": "freeze", "agent_id": "a", "incident_id": "inc-1"})
    guard.apply({"command": "freeze", "agent_id": "a", "incident_id": "inc-1"})  # no change: no second ack
    assert [(t, k, r["kind"], r["command"], r["incident_id"], r["by"]) for t, k, r in prod.sent] == [
        ("t-agent-control-acks", b"a", "guard", "freeze", "inc-1", "rt-1")]
    assert parse_ack(json.dumps(prod.sent[0][2]).encode()) == prod.sent[0][2]
    assert acker.sent == 1


def test_a_guard_still_reading_history_acknowledges_nothing():
    guard = FreezeGuard()
    guard._ready.clear()  # as a guard following Kafka before it has caught up
    prod = Producer()
    GuardAcker(Settings(), by="rt-1", producer=prod).attach(guard)
    guard.apply({"command": "freeze", "agent_id": "a", "incident_id": "inc-1"})
    assert prod.sent == [] and not guard.may_proceed("a")


def test_a_lost_guard_acknowledgement_never_stops_the_freeze():
    guard = FreezeGuard()
    acker = GuardAcker(Settings(), by="rt-1", producer=Producer(fail=1)).attach(guard)
    guard.apply({"command": "freeze", "agent_id": "a", "incident_id": "inc-1"})
    assert not guard.may_proceed("a") and acker.failed == 1


def test_the_actuators_ack_sink_retries_until_the_broker_takes_it_and_stops_when_told():
    prod = Producer(fail=2)
    sink = AckSink(Settings(), producer=prod, retry_s=0.001)
    sink.deliver({"command": "release", "agent_id": "a", "incident_id": "inc-1"}, b"{}", threading.Event())
    assert [r["kind"] for _, _, r in prod.sent] == ["actuator"] and sink.sent == 1
    from streams.clients.sink import Stopped

    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        AckSink(Settings(), producer=Producer(fail=5), retry_s=0.001).deliver(
            {"command": "freeze", "agent_id": "a", "incident_id": "i"}, b"{}", stop)


# --------------------------------------------------------------------------- report and result

def report(passed=True):
    steps = [{"step": s, "target_s": DEFAULT_TARGETS_S[s], "seconds": 0.1, "status": "pass", "detail": "ok"}
             for s in STEPS]
    if not passed:
        steps[3].update(seconds=None, status="fail", detail="the actuator did not acknowledge the freeze")
    return {"format": REPORT_FORMAT, "drill_id": "d1", "agent_id": DEFAULT_DRILL_AGENT, "started_at": "x",
            "incident_at": "y", "finished_at": "z", "finished_t": 1772442000.0, "incident_id": "inc-1",
            "passed": passed, "failed_step": None if passed else "actuator_webhook", "steps": steps,
            "notes": ["a note"]}


def test_the_report_names_the_failing_step(tmp_path):
    out = write_report(report(False), tmp_path / "d")
    md = (out / "drill.md").read_text()
    assert md.startswith("# Freeze drill d1: FAILED at actuator_webhook")
    assert "| actuator_webhook | - | 30 | fail | the actuator did not acknowledge the freeze |" in md
    assert json.loads((out / "drill.json").read_text())["failed_step"] == "actuator_webhook"


def test_the_follower_keeps_the_latest_drill_and_skips_bad_records():
    got = []
    f = DrillFollower(Settings(), on_result=got.append)
    later = dict(report(False), finished_t=1772442100.0)
    assert f.handle(json.dumps(later).encode())
    assert not f.handle(json.dumps(report(True)).encode())  # older: not the last drill
    assert not f.handle(b"\xff") and not f.handle(b'{"format": "flowbreaker-drill/1"}')
    assert [r["passed"] for r in got] == [False] and f.invalid == 2
    assert parse_result(b"[" * 10000) is None


# --------------------------------------------------------------------------- the command

def test_a_drill_agent_outside_the_drill_prefix_is_refused(capsys):
    assert main(["drill", "--agent", "support-agent-003"]) == 2
    assert "starts with 'flowbreaker-drill-'" in capsys.readouterr().err


def test_a_drill_without_a_lead_token_is_refused(capsys, monkeypatch):
    monkeypatch.delenv("FLOWBREAKER_API_TOKEN", raising=False)
    assert main(["drill"]) == 2
    assert "token" in capsys.readouterr().err


def test_training_leaves_drill_agents_out(tmp_path):
    lines = []
    for i in range(60):
        for agent in ("a1", "a2", DEFAULT_DRILL_AGENT):
            lines.append(json.dumps({"event_id": f"{agent}-{i}", "ts": f"2026-03-02T09:{i:02d}:00Z",
                                     "agent_id": agent, "operator_id": "o", "tool": "t", "action": "read",
                                     "resource": "r://x", "sensitivity": "internal", "records": i % 7}))
    hist = tmp_path / "h.jsonl"
    hist.write_text("\n".join(lines) + "\n")
    assert main(["train", "--input", str(hist), "--out", str(tmp_path / "m"), "--trees", "5", "--quiet"]) == 0
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["counts"]["agents"] == 2 and card["counts"]["events"] == 120
