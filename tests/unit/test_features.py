"""Per-agent windowed features (detector/features.py): each one moves as specified."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from math import exp

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.events import decode_event
from detector.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    N_FEATURES,
    FeatureState,
    commit_novelty,
    extract,
    resource_family,
)
from detector.policy import Policy

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
POLICY = Policy.from_dict({
    "internal_domains": ["corp.example"],
    "internal": ["slack:*"],
    "broadcast": {"slack:#all-hands": 500},
})
W = POLICY.sensitivity_weight  # public 0, internal 1, confidential 5, restricted 25
_n = 0


def ev(at: float = 0.0, **kw):
    """An event ``at`` seconds after T0 (fresh event_id each time)."""
    global _n
    _n += 1
    d = {"event_id": f"e{_n}", "ts": (T0 + timedelta(seconds=at)).isoformat(), "agent_id": "a",
         "operator_id": "o", "tool": "db.query", "action": "read", "resource": "db://table/1",
         "sensitivity": "internal"}
    d.update(kw)
    return decode_event(d)


def send(at: float = 0.0, dests=("email:eve@evil.example",), **kw):
    kw.setdefault("sensitivity", "confidential")
    kw.setdefault("records", 2)
    return ev(at, tool="mail.send", action="send", resource="mail://outbox", destinations=list(dests), **kw)


def f(obs, name: str) -> float:
    return obs.x[FEATURE_INDEX[name]]


def run(events, *, commit: bool = True, policy: Policy = POLICY, state: FeatureState | None = None):
    st_ = state or FeatureState()
    obs = None
    for e in events:
        obs = extract(st_, e, policy)
        if commit:
            commit_novelty(st_, obs)
    return st_, obs


def test_there_is_one_value_per_feature_and_names_are_unique():
    _, obs = run([ev()])
    assert len(obs.x) == N_FEATURES == len(FEATURE_NAMES) == len(set(FEATURE_NAMES))


# --------------------------------------------------------------------------- rates and volumes

def test_rates_count_actions_in_their_window():
    _, obs = run([ev(0), ev(0), ev(0)])
    assert f(obs, "rate_1m") == 3.0
    assert f(obs, "rate_15m") == 3.0


def test_rates_decay_with_their_window_length():
    _, obs = run([ev(0), ev(60)])
    assert f(obs, "rate_1m") == pytest.approx(1.0 + exp(-1.0))
    assert f(obs, "rate_15m") == pytest.approx(1.0 + exp(-60 / 900))


def test_volume_is_records_times_sensitivity_weight():
    _, obs = run([ev(0, records=4, sensitivity="restricted")])
    assert f(obs, "event_volume") == 4 * W["restricted"]
    assert f(obs, "volume_15m") == 4 * W["restricted"]
    assert f(obs, "volume_1h") == 4 * W["restricted"]


def test_an_action_with_no_records_counts_as_one_record():
    _, obs = run([ev(0, records=0, sensitivity="confidential")])
    assert f(obs, "event_volume") == W["confidential"]


def test_public_data_adds_no_volume():
    _, obs = run([ev(0, records=1000, sensitivity="public")])
    assert f(obs, "volume_1h") == 0.0


def test_volumes_add_up_and_decay_over_time():
    _, obs = run([ev(0, records=10), ev(900, records=10)])
    assert f(obs, "volume_15m") == pytest.approx(10 + 10 * exp(-1.0))
    assert f(obs, "volume_1h") == pytest.approx(10 + 10 * exp(-0.25))


def test_bytes_are_summed_over_the_hour():
    _, obs = run([ev(0, bytes=1000), ev(0, bytes=500)])
    assert f(obs, "bytes_1h") == 1500.0


def test_windows_fade_to_nothing_after_a_long_quiet_spell():
    _, obs = run([ev(0, records=10_000, sensitivity="restricted", bytes=10**9), ev(7 * 86400, sensitivity="public")])
    for name in ("volume_15m", "volume_1h", "bytes_1h"):
        assert f(obs, name) < 1e-6
    assert f(obs, "rate_1m") == pytest.approx(1.0)


# --------------------------------------------------------------------------- outbound and fan-out

def test_outbound_counts_sends_to_external_destinations():
    _, obs = run([send(0, records=3, sensitivity="confidential")])
    assert f(obs, "outbound_15m") == 3 * W["confidential"]
    assert f(obs, "outbound_1h") == 3 * W["confidential"]
    assert obs.outbound and obs.dest_classes == ("external",)


def test_outbound_counts_broadcast_destinations():
    _, obs = run([send(0, dests=["slack:#all-hands"], records=3)])
    assert f(obs, "outbound_15m") == 3 * W["confidential"]
    assert obs.dest_classes == ("broadcast",)


def test_sends_to_internal_destinations_are_not_outbound():
    _, obs = run([send(0, dests=["email:bob@corp.example", "slack:@alice"], records=3)])
    assert f(obs, "outbound_15m") == 0.0
    assert f(obs, "outbound_1h") == 0.0
    assert not obs.outbound
    assert obs.dest_classes == ("internal", "internal")


def test_any_action_with_an_external_destination_is_outbound_not_only_send():
    _, obs = run([ev(0, action="write", records=2, destinations=["iban:GB29NWBK60161331926819"])])
    assert f(obs, "outbound_15m") == 2 * W["internal"]


def test_fan_out_counts_recipients_with_broadcast_reach():
    _, obs = run([send(0, dests=["slack:#all-hands", "email:bob@corp.example", "email:eve@evil.example"])])
    assert f(obs, "event_fanout") == 500 + 1 + 1
    assert f(obs, "fanout_15m") == 502


def test_fan_out_counts_every_destination_beyond_the_first_64():
    dests = [f"email:user{i}@evil.example" for i in range(3000)]
    _, obs = run([send(0, dests=dests)])
    assert f(obs, "event_fanout") == 3000
    assert f(obs, "fanout_15m") == 3000


def test_fan_out_accumulates_within_fifteen_minutes():
    _, obs = run([send(0, dests=["slack:#all-hands"]), send(0, dests=["slack:#all-hands"])])
    assert f(obs, "fanout_15m") == 1000
    assert f(obs, "event_fanout") == 500


def test_an_action_whose_destinations_all_received_from_the_agent_before_is_not_blamed_for_fan_out():
    # a destination against its own history (issue 18): its audience was reached before
    _, obs = run([send(0, dests=["slack:#all-hands"]), send(60, dests=["slack:#all-hands"])])
    assert obs.known_reach and f(obs, "event_fanout") == 500
    _, obs = run([send(0, dests=["slack:#all-hands"]), send(60, dests=["slack:#all-hands", "slack:#new"])])
    assert not obs.known_reach  # one destination is new: the whole reach counts
    _, obs = run([send(0, dests=["slack:#all-hands"]), send(60, dests=["slack:#all-hands"])], commit=False)
    assert not obs.known_reach
    _, obs = run([ev(0)])
    assert not obs.known_reach  # no destination: nothing to say


def test_novel_items_name_what_the_action_met_for_the_first_time_and_peers_adoptions_are_not_novel():
    from detector.features import K_TOOL, item_key
    from detector.sketch import stable_hash

    st_, obs = run([send(0, dests=["email:eve@evil.example"])], commit=False)
    tool = item_key(K_TOOL, stable_hash("mail.send"))
    assert tool in obs.novel and f(obs, "novel_tool") > 0
    obs2 = extract(FeatureState(), send(0, dests=["email:eve@evil.example"]), POLICY, adopted={tool})
    assert tool in obs2.adopted and tool not in obs2.novel and f(obs2, "novel_tool") == 0


# --------------------------------------------------------------------------- distinct destinations

def test_distinct_destinations_count_each_destination_once_within_the_hour():
    _, obs = run([send(0, dests=["email:eve@evil.example"]), send(60, dests=["email:eve@evil.example"])])
    assert f(obs, "destinations_1h") == pytest.approx(exp(-60 / 3600))
    assert f(obs, "external_destinations_1h") == pytest.approx(exp(-60 / 3600))


def test_a_new_destination_adds_to_the_distinct_count():
    _, obs = run([send(0, dests=["email:eve@evil.example"]), send(0, dests=["email:mallory@evil.example"])])
    assert f(obs, "destinations_1h") == 2.0


def test_only_external_destinations_count_as_distinct_external():
    _, obs = run([send(0, dests=["email:bob@corp.example", "slack:#eng", "email:eve@evil.example"])])
    assert f(obs, "destinations_1h") == 3.0
    assert f(obs, "external_destinations_1h") == 1.0


def test_a_destination_counts_as_new_again_after_two_hours():
    st_, _ = run([send(0, dests=["email:eve@evil.example"])])
    _, obs = run([send(3 * 3600, dests=["email:eve@evil.example"])], state=st_)
    assert f(obs, "destinations_1h") == pytest.approx(1.0 + exp(-3))  # counted again, plus the faded first count
    assert FEATURE_INDEX["destinations_1h"] not in obs.quiet


# --------------------------------------------------------------------------- deletes

def test_deletes_count_records_deleted():
    _, obs = run([ev(0, action="delete", records=40), ev(0, action="delete")])
    assert f(obs, "deletes_15m") == 41.0


def test_other_actions_are_not_deletes():
    _, obs = run([ev(0, action="write", records=40), ev(0, action="read", records=40)])
    assert f(obs, "deletes_15m") == 0.0


# --------------------------------------------------------------------------- novelty

def test_a_first_seen_tool_and_resource_are_novel():
    _, obs = run([ev(0, sensitivity="public")])
    assert f(obs, "novelty_1h") == 2.0  # tool + resource family, weight 1 + 0/5


def test_novelty_is_weighted_by_sensitivity():
    _, obs = run([ev(0, sensitivity="restricted")])
    assert f(obs, "novelty_1h") == 2 * (1 + W["restricted"] / 5)


def test_committed_tools_and_resources_are_no_longer_novel():
    st_, first = run([ev(0, sensitivity="public")])
    _, obs = run([ev(0, sensitivity="public")], state=st_)
    assert f(obs, "novelty_1h") == f(first, "novelty_1h")  # the window holds the first, nothing added
    assert FEATURE_INDEX["novelty_1h"] in obs.quiet


def test_resources_of_the_same_family_are_not_novel():
    st_, _ = run([ev(0, resource="drive://file/1")])
    _, obs = run([ev(3 * 86400, resource="drive://file/2")], state=st_)
    assert f(obs, "novelty_1h") < 1e-12
    assert resource_family("drive://file/2") == resource_family("drive://file/1") == "drive://file"


def test_uncommitted_novelty_stays_novel():
    st_, first = run([send(0)], commit=False)
    _, again = run([send(0)], commit=False, state=st_)
    assert f(first, "novel_outbound") == f(again, "novel_outbound") > 0
    assert again.new_outbound == ["email:eve@evil.example"]
    assert f(again, "novelty_1h") == pytest.approx(2 * f(first, "novelty_1h"))


def test_a_never_seen_external_destination_is_novel_outbound_until_committed():
    st_, first = run([send(0, sensitivity="confidential")])
    assert f(first, "novel_outbound") == 3 * (1 + W["confidential"] / 5)  # a never-seen domain counts triple
    assert first.new_outbound == ["email:eve@evil.example"]
    _, again = run([send(10, sensitivity="confidential")], state=st_)
    assert f(again, "novel_outbound") == 0.0
    assert again.new_outbound == []


def test_never_seen_internal_destinations_are_novel_but_not_novel_outbound():
    _, obs = run([send(0, dests=["email:bob@corp.example"])])
    assert f(obs, "novel_outbound") == 0.0
    assert f(obs, "novelty_1h") > 0.0


def test_extract_alone_does_not_teach_the_novelty_sketches():
    st_ = FeatureState()
    before = (st_.tools, st_.resources, st_.dests)
    extract(st_, send(0), POLICY)
    assert (st_.tools, st_.resources, st_.dests) == before


# --------------------------------------------------------------------------- flows inside a task

def test_sensitive_data_read_in_a_task_then_sent_outward_is_task_exfil():
    _, obs = run([ev(0, task_id="T", records=10, sensitivity="restricted"),
                  send(60, task_id="T", records=10, sensitivity="restricted")])
    assert f(obs, "task_exfil") == 10 * W["restricted"] + 10 * W["restricted"]


def test_task_exfil_needs_the_read_in_the_same_task():
    _, obs = run([ev(0, task_id="T1", records=10, sensitivity="restricted"),
                  send(60, task_id="T2", records=1, sensitivity="public")])
    assert f(obs, "task_exfil") == 0.0


def test_task_exfil_needs_an_outward_destination():
    _, obs = run([ev(0, task_id="T", records=10, sensitivity="restricted"),
                  send(60, task_id="T", dests=["email:bob@corp.example"])])
    assert f(obs, "task_exfil") == 0.0


def test_a_sensitive_send_outside_any_task_is_task_exfil_of_its_own_volume():
    _, obs = run([send(0, records=3, sensitivity="confidential")])
    assert f(obs, "task_exfil") == 3 * W["confidential"]


def test_an_approved_send_is_not_task_exfil():
    _, obs = run([ev(0, task_id="T", records=10, sensitivity="restricted"),
                  send(60, task_id="T", records=10, sensitivity="restricted", approval_id="APR-1")])
    assert f(obs, "task_exfil") == 0.0
    assert obs.approved


def test_untrusted_input_sensitive_data_and_an_outward_send_in_one_task_is_rule_of_two():
    _, obs = run([ev(0, task_id="T", resource="https://attacker.example/page", sensitivity="public"),
                  ev(10, task_id="T", sensitivity="confidential", records=5),
                  send(20, task_id="T", sensitivity="internal")])
    assert f(obs, "rule_of_two") == 1.0


def test_rule_of_two_with_an_approval_is_not_flagged():
    _, obs = run([ev(0, task_id="T", resource="https://attacker.example/page", sensitivity="public"),
                  ev(10, task_id="T", sensitivity="confidential", records=5),
                  send(20, task_id="T", sensitivity="internal", approval_id="APR-9")])
    assert f(obs, "rule_of_two") == 0.0


def test_rule_of_two_needs_untrusted_input():
    _, obs = run([ev(0, task_id="T", resource="hr://personnel", sensitivity="confidential", records=5),
                  send(20, task_id="T", sensitivity="internal")])
    assert f(obs, "rule_of_two") == 0.0
    assert f(obs, "task_exfil") > 0.0


def test_rule_of_two_needs_sensitive_data():
    _, obs = run([ev(0, task_id="T", resource="https://attacker.example/page", sensitivity="public"),
                  send(20, task_id="T", sensitivity="internal")])
    assert f(obs, "rule_of_two") == 0.0


def test_rule_of_two_needs_an_outward_action():
    _, obs = run([ev(0, task_id="T", resource="https://attacker.example/page", sensitivity="public"),
                  ev(10, task_id="T", sensitivity="confidential", records=5),
                  send(20, task_id="T", sensitivity="internal", dests=["email:bob@corp.example"])])
    assert f(obs, "rule_of_two") == 0.0


def test_mail_from_an_internal_sender_is_not_untrusted_input():
    _, obs = run([ev(0, task_id="T", resource="email:bob@corp.example", sensitivity="public"),
                  ev(10, task_id="T", sensitivity="confidential", records=5),
                  send(20, task_id="T", sensitivity="internal")])
    assert f(obs, "rule_of_two") == 0.0


# --------------------------------------------------------------------------- approvals

def test_approved_actions_count_in_the_rate_but_not_in_sensitive_volume_or_outbound():
    _, obs = run([send(0, records=100, sensitivity="restricted", approval_id="APR-1",
                       dests=["slack:#all-hands"])])
    assert f(obs, "rate_1m") == 1.0
    assert f(obs, "volume_15m") == 0.0
    assert f(obs, "event_volume") == 0.0
    assert f(obs, "outbound_15m") == 0.0
    assert f(obs, "fanout_15m") == 0.0
    assert f(obs, "novel_outbound") == 0.0


def test_approved_actions_still_count_their_bytes():
    _, obs = run([send(0, bytes=4096, approval_id="APR-1")])
    assert f(obs, "bytes_1h") == 4096


# --------------------------------------------------------------------------- time

def test_an_out_of_order_event_is_counted_without_negative_decay():
    st_, _ = run([ev(3600, records=10)])
    _, obs = run([ev(0, records=10)], state=st_)  # an hour older than the newest seen
    assert f(obs, "volume_1h") == pytest.approx(20.0)
    assert st_.last_t == ev(3600).t


def test_an_out_of_order_event_does_not_move_the_clock_back():
    st_, _ = run([ev(3600), ev(0)])
    _, obs = run([ev(3600 + 60)], state=st_)
    assert f(obs, "rate_1m") == pytest.approx(1 + 2 * exp(-1.0))


def test_an_hour_of_day_profile_gives_surprise_in_bits_at_rare_hours():
    st_ = FeatureState()
    st_.hours = tuple(0.5 if h == 9 else 0.5 / 23 for h in range(24))
    _, obs = run([ev(0)], state=st_)  # 09:00 UTC
    assert f(obs, "hour_rarity") == pytest.approx(1.0)
    _, night = run([ev(-7 * 3600)], state=st_)  # 02:00 UTC
    assert f(night, "hour_rarity") > 5.0


def test_without_an_hour_profile_there_is_no_hour_rarity():
    _, obs = run([ev(-7 * 3600)])
    assert f(obs, "hour_rarity") == 0.0


def test_a_new_instruction_hash_is_a_config_change_for_an_hour():
    st_, obs = run([ev(0, instruction_hash="h1")])
    assert not obs.config_change
    _, obs = run([ev(60, instruction_hash="h2")], state=st_)
    assert obs.config_change
    _, obs = run([ev(1800, instruction_hash="h2")], state=st_)
    assert obs.config_change
    _, obs = run([ev(60 + 3601, instruction_hash="h2")], state=st_)
    assert not obs.config_change


# --------------------------------------------------------------------------- quiet

def test_quiet_marks_the_windows_an_action_did_not_add_to():
    _, obs = run([ev(0, sensitivity="public")])
    quiet = {FEATURE_NAMES[i] for i in obs.quiet}
    assert {"volume_15m", "volume_1h", "bytes_1h", "outbound_15m", "outbound_1h", "fanout_15m",
            "destinations_1h", "external_destinations_1h", "deletes_15m"} <= quiet
    assert "novelty_1h" not in quiet  # first-seen tool and resource


def test_quiet_leaves_out_the_windows_an_outward_send_added_to():
    _, obs = run([send(0, bytes=10, records=5, sensitivity="restricted")])
    quiet = {FEATURE_NAMES[i] for i in obs.quiet}
    for name in ("volume_15m", "volume_1h", "bytes_1h", "outbound_15m", "outbound_1h", "fanout_15m",
                 "destinations_1h", "external_destinations_1h", "novelty_1h"):
        assert name not in quiet
    assert "deletes_15m" in quiet


def test_quiet_leaves_out_deletes_for_a_delete():
    _, obs = run([ev(0, action="delete", records=3)])
    assert FEATURE_INDEX["deletes_15m"] not in obs.quiet


def test_an_approved_send_is_quiet_in_volume_outbound_and_fan_out():
    _, obs = run([send(0, approval_id="APR")])
    quiet = {FEATURE_NAMES[i] for i in obs.quiet}
    assert {"volume_15m", "outbound_15m", "fanout_15m"} <= quiet


# --------------------------------------------------------------------------- state round trip

def _busy_history():
    return [ev(0, task_id="T", resource="https://x.example/p", sensitivity="public"),
            ev(30, task_id="T", sensitivity="restricted", records=50, bytes=1000),
            send(40, task_id="T", dests=["slack:#all-hands", "email:eve@evil.example"]),
            ev(400, action="delete", records=7, instruction_hash="h1"),
            ev(4000, instruction_hash="h2", destinations=["email:bob@corp.example"])]


def test_state_round_trips_through_to_tuple_and_from_tuple():
    st_, _ = run(_busy_history())
    copy = FeatureState.from_tuple(st_.to_tuple())
    assert copy.to_tuple() == st_.to_tuple()
    nxt = [send(4100, task_id="T"), ev(4200, action="delete", records=2), send(9000, dests=["slack:#all-hands"])]
    _, a = run(nxt, state=st_)
    _, b = run(nxt, state=copy)
    assert a.x == b.x and a.quiet == b.quiet and a.new_outbound == b.new_outbound


def test_state_tuples_hold_only_plain_values():
    st_, _ = run(_busy_history())
    for v in st_.to_tuple():
        assert isinstance(v, (int, float, bytes))


def test_a_state_tuple_of_the_wrong_shape_is_refused():
    t = list(FeatureState().to_tuple())
    t[1] = b"\x00" * 8
    with pytest.raises(ValueError, match="shape"):
        FeatureState.from_tuple(t)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7200), st.sampled_from(["read", "send", "delete", "write"]),
                          st.sampled_from(["public", "internal", "confidential", "restricted"]),
                          st.integers(0, 500), st.sampled_from([None, "T1", "T2", "T3", "T4", "T5"]),
                          st.lists(st.sampled_from(["email:eve@evil.example", "slack:#all-hands", "slack:#eng",
                                                    "email:bob@corp.example", "payee:acme"]), max_size=3)),
                min_size=1, max_size=25))
def test_features_are_finite_non_negative_and_survive_a_round_trip_at_any_point(steps):
    events = [ev(at, action=a, sensitivity=s, records=r, task_id=t, destinations=d) for at, a, s, r, t, d in steps]
    cut = len(events) // 2
    st_, _ = run(events[:cut])
    twin = FeatureState.from_tuple(st_.to_tuple())
    for e in events[cut:]:
        a, b = extract(st_, e, POLICY), extract(twin, e, POLICY)
        assert a.x == b.x
        assert all(v >= 0.0 and v < float("inf") for v in a.x)
        commit_novelty(st_, a)
        commit_novelty(twin, b)
