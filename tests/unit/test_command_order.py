"""Commands are ordered per agent (contract section 4, streams/clients/commands.py): properties of the fold
under replays and reordering of a genuine, signed command sequence."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.clients.commands import CommandFold, decode_command
from streams.clients.signing import KeyRing

KEYS = KeyRing({"k1": b"o" * 32}, active="k1")
VERIFY_ONLY = KEYS.public()  # consumers hold only the public key


def genuine(agent: str, n: int, start_minute: int = 0) -> list:
    """The commands an owner writes for ``agent``: freeze (seq 2k-1), release (2k), ..., n of them, signed."""
    out = []
    for i in range(n):
        trip = i // 2 + 1
        kind = "freeze" if i % 2 == 0 else "release"
        minute = start_minute + i
        out.append(decode_command(KEYS.sign({
            "command": kind, "agent_id": agent, "incident_id": f"inc-{agent}-{trip}", "seq": i + 1,
            "issued_at": f"2026-03-02T{9 + minute // 60:02d}:{minute % 60:02d}:00Z", "reason": "r",
            "issued_by": "flowbreaker" if kind == "freeze" else "lee"})))
    return out


def state(fold: CommandFold) -> dict:
    return {a: (cmd.incident_id, verified) for a, (cmd, verified) in fold.frozen.items()}


def replayed_fold(commands: list, replays: list) -> CommandFold:
    fold = CommandFold(VERIFY_ONLY)
    for cmd in commands + replays:
        fold.apply(cmd)
    return fold


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.data())
def test_any_replay_of_old_commands_after_the_genuine_sequence_changes_nothing(na, nb, data):
    commands = genuine("a", na) + genuine("b", nb)
    in_order = replayed_fold(commands, [])
    replays = data.draw(st.lists(st.sampled_from(commands), max_size=30))
    fold = replayed_fold(commands, replays)
    assert state(fold) == state(in_order)
    assert fold.highest("a") == na and fold.highest("b") == nb
    assert fold.is_frozen("a") == (na % 2 == 1)  # frozen exactly when the last genuine command is a freeze


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10), st.randoms(use_true_random=False))
def test_in_any_order_the_fold_ends_at_the_highest_sequence_and_no_replay_releases(n, rnd):
    commands = genuine("a", n)
    shuffled = list(commands)
    rnd.shuffle(shuffled)
    fold = replayed_fold(shuffled, [])
    top = commands[-1]
    assert fold.highest("a") == top.seq
    if top.command == "freeze":  # the newest freeze is in force, whatever came before or after it
        assert state(fold) == {"a": (top.incident_id, True)}
    # the agent is never released unless the newest command is a release
    assert fold.is_frozen("a") or top.command == "release"


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.data())
def test_the_same_seq_with_other_contents_is_refused_and_the_same_command_is_a_repeat(n, data):
    commands = genuine("a", n)
    fold = replayed_fold(commands, [])
    top = commands[-1]
    other = decode_command(KEYS.sign({"command": data.draw(st.sampled_from(["freeze", "release"])), "agent_id": "a",
                                      "incident_id": data.draw(st.sampled_from(["inc-x", top.incident_id])),
                                      "seq": top.seq, "issued_at": top.issued_at, "reason": "other",
                                      "issued_by": "eve"}))
    before = state(fold)
    assert fold.apply(other) == "replayed" and state(fold) == before
    assert fold.apply(top) == "repeat" and state(fold) == before


def test_the_issue_s_replay_attack_leaves_the_agent_held_and_the_genuine_release_after_it_is_obeyed():
    f_a, r_a, f_b, r_b = genuine("a", 4)
    fold = CommandFold(VERIFY_ONLY)
    assert [fold.apply(c) for c in (f_a, r_a, f_b)] == ["frozen", "released", "frozen"]
    assert [fold.apply(c) for c in (f_a, r_a)] == ["replayed", "replayed"]
    assert fold.open_incident("a") == "inc-a-2"
    assert fold.apply(r_b) == "released" and not fold.is_frozen("a")


def test_a_release_issued_long_before_the_newest_command_is_refused_as_too_old():
    fold = CommandFold(VERIFY_ONLY, max_backdate_s=900)
    fold.apply(decode_command(KEYS.sign({"command": "freeze", "agent_id": "a", "incident_id": "i", "seq": 1,
                                         "issued_at": "2026-03-02T10:00:00Z"})))
    late = {"command": "release", "agent_id": "a", "incident_id": "i", "seq": 2}
    assert fold.apply(decode_command(KEYS.sign(dict(late, issued_at="2026-03-02T09:44:59Z")))) == "too_old"
    assert fold.apply(decode_command(KEYS.sign(dict(late, issued_at="2026-03-02T09:45:01Z")))) == "released"


@pytest.mark.parametrize("unverified_freezes", [True, False])
def test_an_unsigned_hold_is_lifted_by_a_signed_release_naming_it_without_moving_the_order(unverified_freezes):
    fold = CommandFold(VERIFY_ONLY, unverified_freezes=unverified_freezes)
    for c in genuine("a", 2):
        fold.apply(c)
    fold.apply(decode_command({"command": "freeze", "agent_id": "a", "incident_id": "inc-forged"}))
    assert fold.is_frozen("a") == unverified_freezes
    lift = decode_command(KEYS.sign({"command": "release", "agent_id": "a", "incident_id": "inc-forged", "seq": 2,
                                     "issued_at": "2026-03-02T09:05:00Z", "issued_by": "lou"}))
    assert fold.apply(lift) == ("released" if unverified_freezes else "replayed")
    assert not fold.is_frozen("a") and fold.highest("a") == 2


def test_the_worker_numbers_an_agents_commands_from_its_trip_count_and_above_what_its_index_has_seen():
    """The owner's sequence (streams/worker/app.py): freeze of trip n is 2n-1, its release 2n, and never at or
    below the highest its control index verified (a key holder's release, a state that was lost)."""
    from types import SimpleNamespace

    from streams.worker.app import Processor

    def owner(trips: int, index_highest: int | None):
        agents = {"a": SimpleNamespace(breaker=SimpleNamespace(trips=trips))}
        fold = SimpleNamespace(highest=lambda _agent: index_highest)
        feed = None if index_highest is None else SimpleNamespace(fold=fold)
        return SimpleNamespace(engine=SimpleNamespace(agents=agents),
                               control_plane=None if feed is None else SimpleNamespace(feed=feed))

    seq = Processor.command_seq
    assert [seq(owner(1, None), "a", "freeze"), seq(owner(1, None), "a", "release")] == [1, 2]
    assert [seq(owner(3, 4), "a", "freeze"), seq(owner(3, 5), "a", "release")] == [5, 6]
    assert seq(owner(2, 3), "a", "freeze") == 4       # a key holder's release took 3: the next freeze goes above it
    assert seq(owner(1, 40), "a", "freeze") == 41     # the agent's state was lost: the index remembers
    assert seq(owner(0, None), "b", "freeze") == 1    # an agent this worker holds no state for
    fold = CommandFold(VERIFY_ONLY)
    for c in genuine("a", 4):
        fold.apply(c)
    nxt = seq(owner(3, fold.highest("a")), "a", "freeze")
    assert fold.apply(decode_command(KEYS.sign({"command": "freeze", "agent_id": "a", "incident_id": "inc-a-3",
                                                "seq": nxt, "issued_at": "2026-03-02T10:00:00Z"}))) == "frozen"
