"""Verdicts on agent-verdicts (streams/verdicts.py), the API's index of alert episodes
(streams/api/verdicts.py) and the worker's episode and verdict metrics."""
from __future__ import annotations

import doctest
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

import streams.api.verdicts
import streams.verdicts
from detector.verdicts import verdict_record
from streams.api.verdicts import EpisodeIndex
from streams.clients.signing import KeyRing
from streams.verdicts import REJECTIONS, VerdictRejected, check, decode, new_verdict, sign
from streams.worker.metrics import VERDICT_REJECTIONS, Metrics

SIGNER = KeyRing({"k1": bytes(range(32))}, active="k1")
OTHER = KeyRing({"k1": bytes(32)}, active="k1")   # same key id, another key: a forger's


def verdict(**kw):
    base = dict(agent_id="hr-agent-3", target="inc-7", verdict="benign", by="alice", reason="quarterly export",
                at=1_772_442_000.0)
    base.update(kw)
    return new_verdict(**base)


@pytest.mark.parametrize("module", [streams.verdicts, streams.api.verdicts])
def test_the_module_examples_run(module):
    assert doctest.testmod(module).failed == 0


def test_a_signed_verdict_decodes_to_the_verdict_that_was_signed():
    v = verdict()
    assert decode(json.dumps(sign(SIGNER, v)).encode(), SIGNER) == v


def test_the_public_half_of_the_key_ring_verifies_a_verdict():
    rec = sign(SIGNER, verdict())
    assert check(SIGNER.public(), rec) is None


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["verdict_id", "agent_id", "target", "verdict", "at", "by", "reason"]),
       data=st.data())
def test_changing_any_field_of_a_signed_verdict_breaks_its_signature(field, data):
    rec = sign(SIGNER, verdict())
    new = {"verdict": "confirmed", "at": "2026-03-02T09:00:01.000Z"}.get(field) \
        or data.draw(st.text(min_size=1, max_size=20).filter(lambda s: s != rec[field]))
    forged = dict(rec, **{field: new})
    assert check(SIGNER, forged) == "bad_signature"
    with pytest.raises(VerdictRejected) as err:
        decode(json.dumps(forged).encode(), SIGNER)
    assert err.value.reason == "bad_signature"


def test_an_unsigned_or_foreign_signed_verdict_is_rejected_with_its_reason():
    plain = verdict_record(verdict())
    assert check(SIGNER, plain) == "unsigned"
    assert check(SIGNER, sign(OTHER, verdict())) == "bad_signature"
    assert check(SIGNER, dict(plain, signature="ed25519:nokey:" + "A" * 86)) in ("unknown_key", "malformed_signature")
    assert check(SIGNER, dict(plain, signature="garbage")) == "malformed_signature"


@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "not_json"),
    (b"[1, 2]", "invalid"),
    (None, "invalid"),
    (b" " * (streams.verdicts.MAX_RECORD_BYTES + 1), "invalid"),
])
def test_records_that_are_not_verdicts_are_rejected_with_a_bounded_reason(raw, reason):
    with pytest.raises(VerdictRejected) as err:
        decode(raw, SIGNER)
    assert err.value.reason == reason and err.value.reason in REJECTIONS


def test_a_signed_record_that_is_not_a_valid_verdict_is_rejected_as_invalid():
    rec = SIGNER.sign(dict(verdict_record(verdict()), verdict="maybe"))
    with pytest.raises(VerdictRejected) as err:
        decode(json.dumps(rec).encode(), SIGNER)
    assert err.value.reason == "invalid" and "verdict" in str(err.value)


def test_a_signed_release_command_is_not_a_verdict():
    cmd = SIGNER.sign({"command": "release", "agent_id": "hr-agent-3", "incident_id": "inc-7", "seq": 2,
                       "issued_at": "2026-03-02T09:00:00Z", "reason": "ok", "issued_by": "alice"})
    with pytest.raises(VerdictRejected) as err:
        decode(json.dumps(cmd).encode(), SIGNER)
    assert err.value.reason == "invalid"


def test_the_same_verdict_given_twice_has_one_id_and_another_time_another():
    assert verdict().verdict_id == verdict().verdict_id
    assert verdict().verdict_id != verdict(at=1_772_442_001.0).verdict_id


def test_the_metrics_know_every_rejection_reason():
    assert VERDICT_REJECTIONS == REJECTIONS


# ---------------------------------------------------------------------- the API's index of episodes
def ep(eid, agent="a", state="open", updated="2026-03-02T09:00:00.000Z", **kw):
    return {"schema": "flowbreaker-episode/1", "episode_id": eid, "agent_id": agent, "state": state,
            "opened": "2026-03-02T09:00:00.000Z", "updated": updated, **kw}


def test_an_episode_is_listed_open_until_its_closing_record_and_then_closed():
    idx = EpisodeIndex()
    idx.apply(ep("ep-1", actions=1))
    idx.apply(ep("ep-1", actions=2, updated="2026-03-02T09:05:00.000Z"))
    assert [e["actions"] for e in idx.listing("open")] == [2] and idx.open_count == 1
    idx.apply(ep("ep-1", state="closed", actions=2, closed="2026-03-02T09:35:00.000Z"))
    assert idx.listing("open") == [] and idx.open_count == 0
    assert idx.get("ep-1")["state"] == "closed"


def test_an_open_record_redelivered_after_the_closing_one_does_not_reopen_the_episode():
    idx = EpisodeIndex()
    for rec in (ep("ep-1"), ep("ep-1", state="closed"), ep("ep-1")):
        idx.apply(rec)
    assert idx.open_count == 0 and idx.get("ep-1")["state"] == "closed"


def test_an_earlier_record_replayed_later_does_not_undo_a_change_or_a_verdict():
    idx = EpisodeIndex()
    first = ep("ep-1", actions=1, severity="medium")
    idx.apply(first)
    idx.apply(ep("ep-1", actions=5, severity="critical", updated="2026-03-02T09:05:00.000Z"))
    idx.apply(first)  # an old, validly signed record published again
    assert idx.get("ep-1")["actions"] == 5 and idx.get("ep-1")["severity"] == "critical"
    closed = ep("ep-1", state="closed", actions=5, updated="2026-03-02T09:05:00.000Z")
    idx.apply(closed)
    idx.apply({**closed, "verdict": {"verdict": "benign", "by": "alice"}})
    idx.apply(closed)  # the closing record without the verdict, replayed
    assert idx.get("ep-1")["verdict"]["verdict"] == "benign"


def test_listings_filter_by_agent_and_show_the_latest_change_first():
    idx = EpisodeIndex()
    idx.apply(ep("ep-1", agent="a", updated="2026-03-02T09:00:00.000Z"))
    idx.apply(ep("ep-2", agent="b", updated="2026-03-02T10:00:00.000Z"))
    idx.apply(ep("ep-3", agent="a", updated="2026-03-02T11:00:00.000Z", state="closed"))
    assert [e["episode_id"] for e in idx.listing()] == ["ep-3", "ep-2", "ep-1"]
    assert [e["episode_id"] for e in idx.listing(agent_id="a")] == ["ep-3", "ep-1"]
    assert [e["episode_id"] for e in idx.listing("open", limit=1)] == ["ep-2"]


def test_closed_episodes_are_kept_up_to_the_bound_and_open_ones_all():
    idx = EpisodeIndex(max_closed=2)
    for i in range(5):
        idx.apply(ep(f"ep-c{i}", state="closed"))
        idx.apply(ep(f"ep-o{i}"))
    assert len(idx.closed) == 2 and idx.get("ep-c4") and idx.get("ep-c0") is None
    assert idx.open_count == 5


@pytest.mark.parametrize("rec", [None, [], {"episode_id": 5, "agent_id": "a", "state": "open"},
                                 {"episode_id": "e", "agent_id": "a", "state": "half"}, {"agent_id": "a"}])
def test_a_record_that_is_not_an_episode_is_counted_and_changes_nothing(rec):
    idx = EpisodeIndex()
    assert idx.apply(rec) is False and idx.invalid == 1 and idx.listing() == []


# ---------------------------------------------------------------------- metrics
def test_episodes_are_counted_when_they_open_and_close_not_per_record():
    m = Metrics(CollectorRegistry(), process_metrics=False)
    m.episode(ep("ep-1"))
    m.episode(ep("ep-1", updated="2026-03-02T09:05:00.000Z"))
    m.episode(ep("ep-1", state="closed", updated="2026-03-02T09:05:00.000Z"))
    value = m.registry.get_sample_value
    assert [value("flowbreaker_episodes_total", {"event": e}) for e in ("opened", "changed", "closed")] == [1, 1, 1]


def test_verdicts_applied_and_rejected_are_counted_by_kind_and_reason():
    m = Metrics(CollectorRegistry(), process_metrics=False)
    m.verdict("benign")
    m.verdict("benign")
    m.verdict("confirmed")
    m.verdict("something else")
    m.verdict_rejected("bad_signature")
    m.verdict_rejected("not a reason")
    value = m.registry.get_sample_value
    assert value("flowbreaker_verdicts_applied_total", {"verdict": "benign"}) == 2
    assert value("flowbreaker_verdicts_applied_total", {"verdict": "confirmed"}) == 1
    assert value("flowbreaker_verdicts_rejected_total", {"reason": "bad_signature"}) == 1
    assert value("flowbreaker_verdicts_rejected_total", {"reason": "invalid"}) == 1
    m.set_episodes_open(4)
    assert value("flowbreaker_episodes_open") == 4


# ---------------------------------------------------------------------- the worker's follower (no Kafka)
class Applied:
    """What the processor would do: record the verdicts handed over; agents of partition 0 are held."""

    def __init__(self) -> None:
        self.got: list = []

    async def __call__(self, v) -> str:
        self.got.append(v.verdict_id)
        return "applied" if home(v.agent_id) == 0 else "not_held"


def home(agent: str) -> int:
    return 0 if agent.startswith("mine") else 1


def follower(applied: Applied, lookback_s: float = 3600.0, rebalance_s: float = 60.0):
    from streams.worker.verdict_follow import VerdictFollower

    rejected: list[str] = []
    f = VerdictFollower(None, "agent-verdicts", 1, keys=lambda: SIGNER.public(), apply=applied, home=home,
                        on_reject=rejected.append, lookback_s=lookback_s, rebalance_s=rebalance_s)
    return f, rejected


def test_the_follower_hands_signed_verdicts_to_the_processor_and_counts_forged_ones_without_applying_them():
    import asyncio

    applied = Applied()
    f, rejected = follower(applied)
    good = sign(SIGNER, verdict(agent_id="mine-1"))
    forged = dict(good, verdict="confirmed")
    outcomes = asyncio.run(_feed(f, [json.dumps(good).encode(), json.dumps(forged).encode(), b"nope",
                                     json.dumps(verdict_record(verdict(agent_id="mine-2"))).encode()]))
    assert outcomes == ["applied", "rejected", "rejected", "rejected"]
    assert applied.got == [good["verdict_id"]]
    assert rejected == ["bad_signature", "not_json", "unsigned"]
    assert f.status()["verdicts_rejected"] == {"bad_signature": 1, "not_json": 1, "unsigned": 1}


def test_after_a_rebalance_the_last_minutes_verdicts_of_the_new_partitions_are_applied_again_and_older_ones_not():
    import asyncio
    import time

    applied = Applied()
    f, _ = follower(applied)
    older = sign(SIGNER, verdict(agent_id="other-1", at=1.0))
    recent = sign(SIGNER, verdict(agent_id="other-2", at=2.0))
    mine = sign(SIGNER, verdict(agent_id="mine-3", at=3.0))
    expired = sign(SIGNER, verdict(agent_id="other-4", at=4.0))

    async def run():
        await f.on_value(json.dumps(expired).encode(), 0, 0, written=time.time() - 7200)
        await f.on_value(json.dumps(older).encode(), 0, 1, written=time.time() - 600)
        await f.on_value(json.dumps(recent).encode(), 0, 2, written=time.time() - 5)
        await f.on_value(json.dumps(mine).encode(), 0, 3, written=time.time() - 5)
        applied.got.clear()
        after_rebalance = await f.reapply([1])
        got_then = list(applied.got)
        applied.got.clear()
        at_first_assignment = await f.reapply([1], first=True)
        return after_rebalance, got_then, at_first_assignment, list(applied.got)

    n, got, n_first, got_first = asyncio.run(run())
    assert (n, got) == (1, [recent["verdict_id"]])
    # the first assignment: every verdict read in the last hour (one given while no worker ran), not older
    assert (n_first, got_first) == (2, [older["verdict_id"], recent["verdict_id"]])


async def _feed(f, values):
    return [await f.on_value(v, 0, i) for i, v in enumerate(values)]


def test_the_episode_feed_takes_only_records_a_worker_signed():
    from streams.api.verdicts import EpisodeFeed

    feed = EpisodeFeed(None, "agent-alerts", 1, keys=SIGNER)
    real = SIGNER.sign(ep("ep-1", actions=3))
    feed.apply(json.dumps(real).encode(), 0, 0)
    # a producer on agent-alerts: an episode of its own, unsigned, and the real one closed with a forged key
    feed.apply(json.dumps(ep("ep-fake")).encode(), 0, 1)
    feed.apply(json.dumps(OTHER.sign(ep("ep-1", state="closed"))).encode(), 0, 2)
    assert [e["episode_id"] for e in feed.index.listing("open")] == ["ep-1"]
    assert feed.index.get("ep-fake") is None and feed.index.invalid == 2
