"""``flowbreaker train --from-topic``: history for a time range read from a real broker.

A simulated history is produced to an actions topic with each message's Kafka
timestamp set to the action's time, the way a live runtime's producer stamps
it; training from the topic for a middle range must give the very model that
training from a file of the same events gives, minus what the live system
flagged (decisions topic) and analysts confirmed, plus what analysts called
false positives (feedback topic).
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from streams.cli.main import main

REPO = Path(__file__).resolve().parents[2]
POLICY = str(REPO / "examples" / "policy.toml")
SINCE, UNTIL = "2026-03-03T00:00:00Z", "2026-03-05T00:00:00Z"


def ms(ts: str) -> int:
    return int(round(datetime.fromisoformat(ts).timestamp() * 1000))


@pytest.fixture(scope="module")
def history():
    from models.simulate import simulate

    events, _ = simulate(n_agents=6, days=4, seed=3, incidents=[], lookalikes=False)
    return events


def produce(bootstrap: str, topic: str, messages) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    for key, value, ts_ms in messages:
        producer.send(topic, key=key.encode(), value=value, timestamp_ms=ts_ms)
    producer.flush(timeout=30)
    producer.close()


@pytest.fixture
def topics(kafka_bootstrap, make_topics, unique_topic_prefix, history):
    p = unique_topic_prefix
    names = {"actions": p + "agent-actions", "decisions": p + "agent-decisions", "feedback": p + "agent-feedback"}
    make_topics(kafka_bootstrap, [names["actions"]], partitions=4)
    bad = [("x", b"{not json", ms(SINCE) + 1000), ("x", b'{"event_id": "e"}', ms(SINCE) + 2000)]
    # in time order, as a live runtime produces them (the range is found by timestamps)
    produce(kafka_bootstrap, names["actions"],
            sorted([(e["agent_id"], json.dumps(e).encode(), ms(e["ts"])) for e in history] + bad, key=lambda m: m[2]))
    return p, names


def in_range(history):
    return [e for e in history if ms(SINCE) <= ms(e["ts"]) < ms(UNTIL)]


def train(tmp_path, name, *argv):
    out = tmp_path / name
    rc = main(["train", *argv, "--policy", POLICY, "--out", str(out), "--trees", "10", "--quiet"])
    return rc, out


def card(path: Path) -> dict:
    return json.loads((path / "model.json").read_text())


def test_training_from_a_topic_range_equals_training_from_a_file_of_the_same_events(
        kafka_bootstrap, topics, history, tmp_path):
    prefix, names = topics
    rc, from_topic = train(tmp_path, "from-topic", "--from-topic", names["actions"], "--bootstrap", kafka_bootstrap,
                           "--topic-prefix", prefix, "--since", SINCE, "--until", UNTIL)
    assert rc == 0
    expected = in_range(history)
    assert 0 < len(expected) < len(history)
    (tmp_path / "range.jsonl").write_text("".join(json.dumps(e) + "\n" for e in expected))
    rc, from_file = train(tmp_path, "from-file", "--input", str(tmp_path / "range.jsonl"))
    assert rc == 0
    c, f = card(from_topic), card(from_file)
    assert c["version"] == f["version"] and c["counts"]["events"] == len(expected)
    assert (from_topic / "arrays.npz").read_bytes() == (from_file / "arrays.npz").read_bytes()
    assert c["counts"]["invalid_lines"] == 2
    assert ms(SINCE) <= ms(c["training_window"]["from"]) and ms(c["training_window"]["until"]) < ms(UNTIL)
    assert c["source"] == {"kind": "kafka", "topic": names["actions"], "since": "2026-03-03T00:00:00.000Z",
                           "until": "2026-03-05T00:00:00.000Z", "messages": len(expected) + 2,
                           "decisions_topic": None, "feedback_topic": None, "flagged_left_out": 0,
                           "confirmed_left_out": 0, "false_positives_reincluded": 0}


def test_flagged_events_are_left_out_unless_an_analyst_called_them_false_positives(
        kafka_bootstrap, make_topics, topics, history, tmp_path):
    prefix, names = topics
    make_topics(kafka_bootstrap, [names["decisions"], names["feedback"]], partitions=2)
    evs = in_range(history)
    flagged, fp, confirmed = evs[10], evs[20], evs[30]
    decisions = [(e["agent_id"], json.dumps({"event_id": e["event_id"], "agent_id": e["agent_id"], "ts": e["ts"],
                                             "score": 0.8, "severity": "medium", "action_taken": "alert",
                                             "breaker_state": "closed"}).encode(), ms(e["ts"]) + 50)
                 for e in (flagged, fp)]
    produce(kafka_bootstrap, names["decisions"], decisions)
    feedback = [(fp["agent_id"], json.dumps({"event_id": fp["event_id"], "agent_id": fp["agent_id"],
                                             "verdict": "confirmed"}).encode(), None),
                (fp["agent_id"], json.dumps({"event_id": fp["event_id"], "agent_id": fp["agent_id"],
                                             "verdict": "false_positive", "analyst": "sam"}).encode(), None),
                (confirmed["agent_id"], json.dumps({"event_id": confirmed["event_id"], "agent_id": confirmed["agent_id"],
                                                    "verdict": "confirmed"}).encode(), None),
                ("x", b"not json", None)]
    produce(kafka_bootstrap, names["feedback"], feedback)

    rc, out = train(tmp_path, "with-feedback", "--from-topic", names["actions"], "--bootstrap", kafka_bootstrap,
                    "--topic-prefix", prefix, "--since", SINCE, "--until", UNTIL,
                    "--feedback-topic", names["feedback"])
    assert rc == 0
    c = card(out)
    assert c["counts"]["events"] == len(evs) - 2
    assert {k: c["source"][k] for k in ("decisions_topic", "feedback_topic", "flagged_left_out", "confirmed_left_out",
                                        "false_positives_reincluded")} == {
        "decisions_topic": names["decisions"], "feedback_topic": names["feedback"], "flagged_left_out": 1,
        "confirmed_left_out": 1, "false_positives_reincluded": 1}
    kept = [e for e in evs if e["event_id"] not in (flagged["event_id"], confirmed["event_id"])]
    (tmp_path / "kept.jsonl").write_text("".join(json.dumps(e) + "\n" for e in kept))
    rc, from_file = train(tmp_path, "kept", "--input", str(tmp_path / "kept.jsonl"))
    assert rc == 0 and card(from_file)["version"] == c["version"]


def test_a_missing_feedback_topic_is_skipped_silently(kafka_bootstrap, topics, tmp_path, capsys):
    prefix, names = topics
    rc, out = train(tmp_path, "m", "--from-topic", names["actions"], "--bootstrap", kafka_bootstrap,
                    "--topic-prefix", prefix, "--since", SINCE, "--until", UNTIL,
                    "--feedback-topic", prefix + "no-such-feedback")
    assert rc == 0 and card(out)["source"]["feedback_topic"] is None
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv, message", [
    (["--from-topic", "{p}no-such-topic", "--since", SINCE], "does not exist"),
    (["--from-topic", "{actions}", "--since", SINCE, "--max-events", "100"], "narrow --since/--until"),
    (["--from-topic", "{actions}", "--since", UNTIL, "--until", SINCE], "is not before"),
    (["--from-topic", "{actions}", "--since", "last tuesday"], "not an RFC 3339 timestamp"),
    (["--from-topic", "{actions}"], "needs --since"),
    (["--input", "x.jsonl", "--since", SINCE], "goes with --from-topic"),
])
def test_bad_ranges_and_topics_exit_2_with_one_line(kafka_bootstrap, topics, tmp_path, capsys, argv, message):
    prefix, names = topics
    argv = [a.format(p=prefix, actions=names["actions"]) for a in argv]
    rc, out = train(tmp_path, "bad", *argv, "--bootstrap", kafka_bootstrap)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


# ---------------------------------------------------------------- the rest of the loop: promote announces
def test_promote_and_rollback_announce_the_switch_on_model_updates(kafka_bootstrap, topics, tmp_path, capsys):
    from streams.model_updates import latest_update, updates_topic
    from streams.settings import Settings

    prefix, names = topics
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=prefix)
    reg = str(tmp_path / "registry")
    versions = []
    for seed in ("0", "1"):
        rc, out = train(tmp_path, f"m{seed}", "--from-topic", names["actions"], "--bootstrap", kafka_bootstrap,
                        "--topic-prefix", prefix, "--since", SINCE, "--until", UNTIL, "--seed", seed)
        assert rc == 0 and main(["models", "--registry", reg, "add", str(out)]) == 0
        versions.append(card(out)["version"])
    a, b = versions
    kafka = ["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix]
    assert latest_update(settings) is None
    assert main(["models", "--registry", reg, "promote", a, "--by", "alice", *kafka]) == 0
    note = latest_update(settings)
    assert (note["version"], note["promoted_by"], note["action"]) == (a, "alice", "promote")
    assert note["checksum"] == card(Path(reg) / a)["checksum"] and note["path"] == str((Path(reg) / a).resolve())
    assert main(["models", "--registry", reg, "promote", b, "--by", "alice", *kafka]) == 0
    assert latest_update(settings)["version"] == b
    assert main(["models", "--registry", reg, "rollback", "--by", "bob", *kafka]) == 0
    note = latest_update(settings)
    assert (note["version"], note["action"], note["previous"], note["promoted_by"]) == (a, "rollback", b, "bob")
    capsys.readouterr()

    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        topic = updates_topic(settings)
        (desc,) = admin.describe_topics([topic])
        assert len(desc["partitions"]) == 1
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        assert "compact" in repr(res)
    finally:
        admin.close()
