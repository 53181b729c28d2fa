"""Tests of the synthetic fleet simulator (models/simulate/) and its command line (streams/cli/simulate.py).

The contract checker below is written independently of the simulator (and of
detector/events.py) from the outside contract, section 1.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import random
import re
import subprocess
import sys
import tomllib
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import simulate as sim
from streams.cli import simulate as simulate_cli
from streams.cli.main import main

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "examples" / "policy.toml"

# --------------------------------------------------------------------------- contract checker

_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_DEST = re.compile(r"^[a-z][a-z0-9+.-]*:.+$")
_ACTIONS = {"read", "write", "delete", "send", "exec"}
_SENSITIVITIES = {"public", "internal", "confidential", "restricted"}
_REQUIRED_STR = {"event_id": 128, "agent_id": 128, "operator_id": 256, "tool": 256, "resource": 1024}
_OPTIONAL_STR = ("requested_by", "task_id", "instruction_hash", "approval_id", "parent_event_id")


def contract_problems(ev: dict) -> list[str]:
    """Why an event would go to the dead-letter topic; empty when it is valid."""
    problems = []
    for name, limit in _REQUIRED_STR.items():
        v = ev.get(name)
        if not isinstance(v, str) or not 1 <= len(v) <= limit:
            problems.append(f"{name}: {v!r}")
    ts = ev.get("ts")
    if not isinstance(ts, str) or not _TS.match(ts):
        problems.append(f"ts: {ts!r}")
    else:
        try:
            if datetime.fromisoformat(ts).utcoffset() is None:
                problems.append(f"ts without offset: {ts}")
        except ValueError:
            problems.append(f"ts unparsable: {ts}")
    if ev.get("action") not in _ACTIONS:
        problems.append(f"action: {ev.get('action')!r}")
    if ev.get("sensitivity") not in _SENSITIVITIES:
        problems.append(f"sensitivity: {ev.get('sensitivity')!r}")
    for name in ("records", "bytes"):
        v = ev.get(name, 0)
        if type(v) is not int or v < 0:
            problems.append(f"{name}: {v!r}")
    dests = ev.get("destinations", [])
    if not isinstance(dests, list) or len(dests) > 10_000:
        problems.append("destinations: not a list of at most 10000")
    else:
        problems += [f"destination: {d!r}" for d in dests if not isinstance(d, str) or not _DEST.match(d)]
    for name in _OPTIONAL_STR:
        if name in ev and (not isinstance(ev[name], str) or not ev[name]):
            problems.append(f"{name}: {ev[name]!r}")
    if ev.get("schema_version", 1) != 1:
        problems.append(f"schema_version: {ev.get('schema_version')!r}")
    return problems


def instant(ev: dict) -> datetime:
    return datetime.fromisoformat(ev["ts"])


def by_task(events: list[dict]) -> dict[str, list[dict]]:
    tasks: dict[str, list[dict]] = defaultdict(list)
    for ev in events:
        tasks[ev["task_id"]].append(ev)
    return tasks


def check_parents(events: list[dict]) -> None:
    position = {ev["event_id"]: i for i, ev in enumerate(events)}
    task_of = {ev["event_id"]: ev["task_id"] for ev in events}
    for i, ev in enumerate(events):
        if ev["action"] == "send":
            assert "parent_event_id" in ev, ev
        parent = ev.get("parent_event_id")
        if parent is not None:
            assert position[parent] < i, ev
            assert task_of[parent] == ev["task_id"], ev


def check_labels(events: list[dict], labels: dict) -> None:
    ids = {ev["event_id"] for ev in events}
    for inc in labels["incidents"]:
        assert inc["event_ids"] and set(inc["event_ids"]) <= ids
        assert inc["harmful_event_ids"] and set(inc["harmful_event_ids"]) <= set(inc["event_ids"])
        assert inc["first_harmful_event_id"] == inc["harmful_event_ids"][0]
    for look in labels["lookalikes"]:
        assert set(look["event_ids"]) <= ids


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def default_run():
    return sim.simulate()


@pytest.fixture(scope="module")
def events(default_run):
    return default_run[0]


@pytest.fixture(scope="module")
def labels(default_run):
    return default_run[1]


@pytest.fixture(scope="module")
def index(events):
    return {ev["event_id"]: ev for ev in events}


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_output():
    a = sim.simulate(n_agents=8, days=3, seed=5)
    b = sim.simulate(n_agents=8, days=3, seed=5)
    assert json.dumps(a) == json.dumps(b)


def test_same_seed_gives_identical_output_in_another_process():
    # another process hashes strings differently (PYTHONHASHSEED): no set's order may reach the output
    probe = ("import hashlib, json; from models.simulate import simulate; "
             "print(hashlib.sha256(json.dumps(simulate(n_agents=6, days=2, seed=4)).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120,
                              check=True, env={**os.environ, "PYTHONHASHSEED": str(h), "PYTHONPATH": str(REPO)}
                              ).stdout for h in (1, 2)}
    assert len(digests) == 1


def test_different_seeds_give_different_output():
    a, _ = sim.simulate(n_agents=8, days=3, seed=5)
    b, _ = sim.simulate(n_agents=8, days=3, seed=6)
    assert [e["event_id"] for e in a] != [e["event_id"] for e in b]
    assert {e["resource"] for e in a} != {e["resource"] for e in b}


def test_history_does_not_depend_on_the_injected_incidents_or_lookalikes():
    full, full_labels = sim.simulate(n_agents=10, days=4, seed=3)
    bare, bare_labels = sim.simulate(n_agents=10, days=4, seed=3, incidents=[], lookalikes=False)
    assert sim.split_history(full, full_labels)[0] == sim.split_history(bare, bare_labels)[0]


# --------------------------------------------------------------------------- contract


def test_every_event_satisfies_the_contract(events):
    bad = [(ev["event_id"], p) for ev in events for p in contract_problems(ev)]
    assert bad == []


def test_event_ids_are_unique(events):
    assert len({ev["event_id"] for ev in events}) == len(events)


def test_events_are_in_time_order_by_instant(events):
    instants = [instant(ev) for ev in events]
    assert instants == sorted(instants)


def test_timestamps_mix_zulu_and_numeric_offsets(events):
    suffixes = {ev["ts"][-6:] if not ev["ts"].endswith("Z") else "Z" for ev in events}
    assert "Z" in suffixes and "+02:00" in suffixes and len(suffixes) >= 4


def test_default_size_is_tens_of_thousands_of_events(events, labels):
    assert 20_000 <= len(events) <= 60_000
    assert len(labels["agents"]) == 41  # 40 plus the new agent look-alike


def test_sends_carry_the_parent_of_an_earlier_event_in_the_same_task(events):
    check_parents(events)


def test_each_agent_keeps_one_operator_and_its_zone(events):
    seen: dict[str, tuple[str, object]] = {}
    for ev in events:
        key = (ev["operator_id"], instant(ev).utcoffset())
        assert seen.setdefault(ev["agent_id"], key) == key


# --------------------------------------------------------------------------- normal work


def _incident_tasks(labels) -> set[str]:
    return {t for inc in labels["incidents"] for t in inc["task_ids"]}


def test_normal_tasks_have_two_to_twelve_steps(events, labels):
    skip = _incident_tasks(labels)
    sizes = {len(evs) for t, evs in by_task(events).items() if t not in skip}
    assert min(sizes) >= 2 and max(sizes) <= 12


def test_normal_tasks_use_only_their_roles_tools(events, labels, index):
    roles = {a["agent_id"]: a["role"] for a in labels["agents"]}
    export = next(x for x in labels["lookalikes"] if x["kind"] == "approved_export")
    skip = _incident_tasks(labels) | {index[e]["task_id"] for e in export["event_ids"]}
    stray = {(roles[ev["agent_id"]], ev["tool"]) for ev in events
             if ev["task_id"] not in skip and ev["tool"] not in sim.ROLE_TOOLS[roles[ev["agent_id"]]]}
    assert stray == set()


def test_office_roles_are_quiet_at_night_and_at_weekends(events, labels):
    roles = {a["agent_id"]: a["role"] for a in labels["agents"]}
    skip = _incident_tasks(labels)
    office = [instant(ev) for ev in events
              if roles[ev["agent_id"]] in ("hr_assistant", "finance_bot", "mail_assistant")
              and ev["task_id"] not in skip]
    working = sum(1 for t in office if 7 <= t.hour < 20 and t.weekday() < 5)
    assert working / len(office) > 0.95


def test_support_bots_mostly_email_external_customers(events, labels, index):
    roles = {a["agent_id"]: a["role"] for a in labels["agents"]}
    sends = [ev for ev in events if roles[ev["agent_id"]] == "support_bot" and ev["action"] == "send"
             and ev["tool"] == "email.send"]
    external = [ev for ev in sends if not ev["destinations"][0].endswith("@corp.example")]
    assert len(external) > 0.9 * len(sends)
    assert len({ev["destinations"][0] for ev in external}) > 0.8 * len(external)


def test_finance_payments_go_to_a_stable_set_of_known_payees(events, labels):
    roles = {a["agent_id"]: a["role"] for a in labels["agents"]}
    skip = _incident_tasks(labels)
    payees: dict[str, set[str]] = defaultdict(set)
    for ev in events:
        if roles[ev["agent_id"]] == "finance_bot" and ev["task_id"] not in skip:
            payees[ev["agent_id"]].update(d for d in ev["destinations"] if d.startswith("payee:"))
    assert payees and all(1 <= len(p) <= 24 for p in payees.values())


# --------------------------------------------------------------------------- incidents


def test_every_incident_kind_appears_with_harmful_ids_in_the_events(events, labels):
    assert sorted(inc["kind"] for inc in labels["incidents"]) == sorted(sim.INCIDENT_KINDS)
    check_labels(events, labels)


def test_incident_event_ids_are_in_time_order(labels, index):
    for inc in labels["incidents"]:
        times = [instant(index[e]) for e in inc["event_ids"]]
        assert times == sorted(times)
        assert inc["start_ts"] <= inc["first_harmful_ts"] <= inc["end_ts"]


def test_history_part_has_no_incident_or_lookalike_events(events, labels):
    history, rest = sim.split_history(events, labels)
    assert len(history) + len(rest) == len(events) and history and rest
    labelled = {e for inc in labels["incidents"] for e in inc["event_ids"]}
    labelled |= {e for look in labels["lookalikes"] for e in look["event_ids"]}
    assert labelled.isdisjoint(ev["event_id"] for ev in history)
    cut = datetime.fromisoformat(labels["history_end"])
    assert all(instant(ev) < cut for ev in history) and all(instant(ev) >= cut for ev in rest)


def test_no_task_straddles_the_history_boundary(events, labels):
    history, _ = sim.split_history(events, labels)
    before = {ev["task_id"] for ev in history}
    assert all(ev["task_id"] not in before for ev in events[len(history):])


def _policy():
    with POLICY.open("rb") as fh:
        return tomllib.load(fh)


def classify(dest: str, policy: dict) -> str:
    """Destination class by the contract's rules, section 2."""
    if dest in policy.get("broadcast", {}):
        return "broadcast"
    scheme, _, address = dest.partition(":")
    domains = policy.get("internal_domains", [])

    def on_internal(host: str) -> bool:
        return any(host == d or host.endswith("." + d) for d in domains)

    if scheme == "email" and on_internal(address.rpartition("@")[2]):
        return "internal"
    if scheme == "http":
        host = re.sub(r"^https?://", "", address).split("/")[0].split(":")[0]
        if on_internal(host):
            return "internal"
    if any(fnmatch.fnmatchcase(dest, pat) for pat in policy.get("internal", [])):
        return "internal"
    return "external"


def test_first_harmful_event_matches_the_definition_of_each_kind(events, labels, index):
    policy = _policy()
    roles = {a["agent_id"]: a["role"] for a in labels["agents"]}
    history, _ = sim.split_history(events, labels)
    seen_dest = {d for ev in history for d in ev["destinations"]}
    tools_by_agent: dict[str, set[str]] = defaultdict(set)
    hash_by_agent = {}
    for ev in history:
        tools_by_agent[ev["agent_id"]].add(ev["tool"])
        hash_by_agent[ev["agent_id"]] = ev["instruction_hash"]
    for inc in labels["incidents"]:
        first = index[inc["first_harmful_event_id"]]
        before = [index[e] for e in inc["event_ids"][: inc["event_ids"].index(first["event_id"])]]
        classes = {classify(d, policy) for d in first["destinations"]}
        kind = inc["kind"]
        if kind == "bulk_read_broadcast":
            assert first["action"] == "send" and classes == {"broadcast"}
            assert any(ev["action"] == "read" and ev["records"] >= 1000 for ev in before)
        elif kind == "slow_drip":
            sends = [index[e] for e in inc["harmful_event_ids"]]
            assert len(sends) >= 10 and len({tuple(ev["destinations"]) for ev in sends}) == 1
            assert classes == {"external"} and not set(first["destinations"]) & seen_dest
            assert all(ev["records"] <= 5 for ev in sends)
            assert instant(sends[-1]) - instant(sends[0]) > timedelta(hours=2)
        elif kind == "mass_fanout":
            assert first["action"] == "send" and len(first["destinations"]) >= 300
        elif kind == "mass_delete":
            deletes = [index[e] for e in inc["harmful_event_ids"]]
            assert first["action"] == "delete" and len(deletes) >= 40
            assert all(ev["action"] == "delete" for ev in deletes)
            assert instant(deletes[-1]) - instant(deletes[0]) < timedelta(minutes=30)
        elif kind == "privilege_creep":
            assert first["tool"] not in sim.ROLE_TOOLS[roles[first["agent_id"]]]
            assert first["tool"] not in tools_by_agent[first["agent_id"]]
            assert first["sensitivity"] in ("confidential", "restricted") or first["action"] != "read"
            assert before and all(ev["sensitivity"] in ("public", "internal") for ev in before)
            assert instant(index[inc["event_ids"][-1]]) - instant(index[inc["event_ids"][0]]) > timedelta(hours=2)
        elif kind == "instruction_change":
            hashes = {index[e]["instruction_hash"] for e in inc["event_ids"]}
            assert len(hashes) == 1 and hashes != {hash_by_agent.get(first["agent_id"])}
            assert first["action"] in ("send", "write") and classes == {"external"}
            assert not set(first["destinations"]) & seen_dest
        elif kind == "prompt_injection":
            assert first["action"] == "send" and classes == {"external"}
            assert not set(first["destinations"]) & seen_dest
            untrusted = [ev for ev in before if any(ev["resource"].startswith(p) for p in policy["untrusted_sources"])
                         and classify(ev["resource"], policy) == "external"]
            assert untrusted, "the task reads untrusted input before the exfiltration"
            assert any(ev["sensitivity"] in ("confidential", "restricted") for ev in before)


def test_instruction_change_hash_persists_after_the_incident(events, labels, index):
    inc = next(i for i in labels["incidents"] if i["kind"] == "instruction_change")
    new_hash = index[inc["event_ids"][0]]["instruction_hash"]
    later = [ev for ev in events if ev["agent_id"] == inc["agent_id"] and ev["ts"] and
             instant(ev) > instant(index[inc["event_ids"][-1]]) and ev["event_id"] not in inc["event_ids"]]
    assert later and {ev["instruction_hash"] for ev in later} == {new_hash}


def test_each_incident_can_be_requested_alone():
    for kind in sim.INCIDENT_KINDS:
        events, labels = sim.simulate(n_agents=6, days=2, seed=11, incidents=[kind], lookalikes=False)
        assert [i["kind"] for i in labels["incidents"]] == [kind]
        check_labels(events, labels)


def test_a_kind_can_be_injected_twice():
    _, labels = sim.simulate(n_agents=6, days=2, seed=1, incidents=["mass_delete", "mass_delete"])
    assert [i["kind"] for i in labels["incidents"]] == ["mass_delete", "mass_delete"]
    assert labels["incidents"][0]["incident_id"] != labels["incidents"][1]["incident_id"]


def test_unknown_incident_kind_or_bad_days_raise_value_error():
    with pytest.raises(ValueError, match="unknown incident kind"):
        sim.simulate(n_agents=3, days=1, incidents=["tea_party"])
    with pytest.raises(ValueError):
        sim.simulate(n_agents=3, days=0)
    with pytest.raises(ValueError):
        sim.simulate(n_agents=3, days=2, incident_days_from=2)


# --------------------------------------------------------------------------- look-alikes


def test_every_lookalike_kind_appears_after_the_history(labels, index):
    looks = {look["kind"]: look for look in labels["lookalikes"]}
    assert set(looks) == set(sim.LOOKALIKE_KINDS)
    cut = datetime.fromisoformat(labels["history_end"])
    for look in looks.values():
        assert look["event_ids"] and all(instant(index[e]) >= cut for e in look["event_ids"])


def test_approved_export_sends_externally_with_an_approval(labels, index):
    look = next(x for x in labels["lookalikes"] if x["kind"] == "approved_export")
    sends = [index[e] for e in look["event_ids"] if index[e]["action"] == "send"]
    assert sends and all(ev.get("approval_id") for ev in sends)
    assert all(classify(d, _policy()) == "external" for ev in sends for d in ev["destinations"])
    assert max(ev["records"] for ev in sends) >= 1000


def test_new_agent_has_no_history(events, labels):
    look = next(x for x in labels["lookalikes"] if x["kind"] == "new_agent")
    own = [ev["event_id"] for ev in events if ev["agent_id"] == look["agent_id"]]
    assert own == look["event_ids"]


def test_month_end_peak_multiplies_finance_volume(events, labels, index):
    look = next(x for x in labels["lookalikes"] if x["kind"] == "month_end_peak")
    peak_days = {instant(index[e]).date() for e in look["event_ids"]}
    daily = defaultdict(int)
    for ev in events:
        if ev["agent_id"] == look["agent_id"] and instant(ev).weekday() < 5:
            daily[instant(ev).date()] += 1
    usual = [n for d, n in daily.items() if d not in peak_days]
    assert max(daily[d] for d in peak_days) > 2.5 * (sum(usual) / len(usual))


def test_external_email_role_ramps_up(events, labels, index):
    look = next(x for x in labels["lookalikes"] if x["kind"] == "external_email_role")
    history, _ = sim.split_history(events, labels)
    before = sum(1 for ev in history if ev["agent_id"] == look["agent_id"]) / labels["clean_days"]
    after = len(look["event_ids"]) / (labels["days"] - labels["clean_days"])
    assert after > 1.3 * before


# --------------------------------------------------------------------------- policy


def test_example_policy_classifies_the_simulated_world(events, labels, index):
    policy = _policy()
    assert set(policy["broadcast"]) == {sim.BROADCAST_SLACK, sim.BROADCAST_EMAIL}
    skip = _incident_tasks(labels)
    classes = defaultdict(set)
    for ev in events:
        if ev["task_id"] in skip:
            continue
        for d in ev["destinations"]:
            classes[d.partition(":")[0]].add(classify(d, policy))
    assert classes["slack"] == {"internal", "broadcast"}
    assert classes["file"] == {"internal"} and classes["http"] == {"internal"}
    assert classes["payee"] == {"external"} and classes["iban"] == {"external"}
    assert classes["email"] == {"internal", "external"}
    assert set(policy["sensitivity_weight"]) == {"public", "internal", "confidential", "restricted"}


# --------------------------------------------------------------------------- task API


def test_fleet_task_api_builds_runnable_tasks_for_every_role_and_kind():
    fleet = sim.Fleet.make(n_agents=5, seed=2)
    at = sim.DEFAULT_START + timedelta(hours=10)
    for agent in fleet.agents:
        rng = random.Random(agent.agent_id)
        normal = fleet.normal_task(agent, at, rng)
        assert not normal.harmful and 2 <= len(normal.steps) <= 12
        for kind in sim.INCIDENT_KINDS:
            task = fleet.incident_task(kind, agent, at, rng)
            evs = sim.task_events(task, at, rng, id_prefix="live-")
            assert task.kind == kind and task.harmful
            assert all(not contract_problems(ev) for ev in evs)
            check_parents(evs)
        for kind in sim.LOOKALIKE_KINDS:
            task = fleet.lookalike_task(kind, agent, at, rng)
            assert not task.harmful
    with pytest.raises(ValueError):
        fleet.incident_task("tea_party", fleet.agents[0], at, random.Random(0))


def test_task_events_follow_the_steps_delays():
    fleet = sim.Fleet.make(n_agents=5, seed=2)
    agent = fleet.agents[0]
    rng = random.Random(3)
    task = fleet.incident_task("slow_drip", agent, sim.DEFAULT_START, rng)
    evs = sim.task_events(task, sim.DEFAULT_START, rng)
    assert [ev["event_id"] for ev in evs] == [f"ev-{task.task_id}.{i}" for i in range(len(task.steps))]
    assert instant(evs[-1]) - instant(evs[0]) > timedelta(hours=2)


def test_task_rate_follows_working_hours():
    fleet = sim.Fleet.make(n_agents=5, seed=2)
    hr = next(a for a in fleet.agents if a.role == "hr_assistant")
    local_noon = sim.DEFAULT_START + timedelta(hours=12, minutes=-hr.tz_offset_minutes)
    assert fleet.task_rate(hr, local_noon - timedelta(hours=9)) < 0.1 * fleet.task_rate(hr, local_noon)
    saturday = local_noon + timedelta(days=5)
    assert fleet.task_rate(hr, saturday) < 0.1 * fleet.task_rate(hr, local_noon)


# --------------------------------------------------------------------------- properties


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_agents=st.integers(1, 9), days=st.integers(1, 3), seed=st.integers(0, 2**32),
       kinds=st.lists(st.sampled_from(sim.INCIDENT_KINDS), max_size=4), lookalikes=st.booleans())
def test_any_small_run_is_valid_and_consistent(n_agents, days, seed, kinds, lookalikes):
    events, labels = sim.simulate(n_agents=n_agents, days=days, seed=seed, incidents=kinds, lookalikes=lookalikes)
    assert all(not contract_problems(ev) for ev in events)
    assert len({ev["event_id"] for ev in events}) == len(events)
    instants = [instant(ev) for ev in events]
    assert instants == sorted(instants)
    start = datetime.fromisoformat(labels["start"])
    assert all(start <= t < start + timedelta(days=days) for t in instants)
    check_parents(events)
    check_labels(events, labels)
    assert [i["kind"] for i in labels["incidents"]] == kinds


# --------------------------------------------------------------------------- command line


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    simulate_cli.configure_parser(p)
    return p.parse_args(list(argv))


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_cli_writes_events_and_labels_next_to_out(tmp_path, capsys):
    out = tmp_path / "events.jsonl"
    assert simulate_cli.run(_args("--out", str(out), "--agents", "6", "--days", "2", "--seed", "4")) == 0
    events = _read_jsonl(out)
    labels = json.loads((tmp_path / "events.labels.json").read_text())
    assert labels["format"] == "flowbreaker-labels/1" and labels["seed"] == 4
    assert [events, labels] == json.loads(json.dumps(sim.simulate(n_agents=6, days=2, seed=4)))
    assert all(" " not in line for line in out.read_text().splitlines()[:50])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(len(events)) in err[0]


def test_cli_splits_history_and_incident_window(tmp_path):
    hist, out, lab = tmp_path / "h.jsonl", tmp_path / "e.jsonl", tmp_path / "l.json"
    rc = simulate_cli.run(_args("--out", str(out), "--history-out", str(hist), "--labels", str(lab), "--agents", "8",
                       "--days", "3", "--clean-days", "2", "--incidents", "slow_drip,mass_fanout", "--no-lookalikes"))
    assert rc == 0
    history, rest, labels = _read_jsonl(hist), _read_jsonl(out), json.loads(lab.read_text())
    assert labels["clean_days"] == 2 and labels["lookalikes"] == []
    assert [i["kind"] for i in labels["incidents"]] == ["slow_drip", "mass_fanout"]
    incident_ids = {e for i in labels["incidents"] for e in i["event_ids"]}
    assert incident_ids <= {ev["event_id"] for ev in rest}
    assert incident_ids.isdisjoint(ev["event_id"] for ev in history)
    assert max(instant(ev) for ev in history) < min(instant(ev) for ev in rest)


def test_cli_incidents_none_gives_no_incidents(tmp_path):
    out = tmp_path / "e.jsonl"
    assert simulate_cli.run(_args("--out", str(out), "--agents", "3", "--days", "1", "--incidents", "none")) == 0
    assert json.loads((tmp_path / "e.labels.json").read_text())["incidents"] == []


@pytest.mark.parametrize("argv, needle", [
    (("--incidents", "slow_drip,tea_party"), "tea_party"),
    (("--days", "0"), "--days"),
    (("--agents", "0"), "--agents"),
    (("--days", "2", "--clean-days", "2"), "--clean-days"),
    (("--start", "yesterday"), "--start"),
])
def test_cli_rejects_bad_arguments_with_exit_2_and_one_line(tmp_path, capsys, argv, needle):
    assert main(["simulate", "--out", str(tmp_path / "e.jsonl"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flowbreaker simulate: ") and needle in err[0]
    assert not (tmp_path / "e.jsonl").exists()


def test_cli_unwritable_path_gives_exit_2(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "e.jsonl"  # its parent cannot be created: a file is in the way
    assert main(["simulate", "--out", str(out), "--agents", "2", "--days", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flowbreaker simulate: cannot write")
