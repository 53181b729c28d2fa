"""The compiled kernel (detector/_native.c) against its pure-Python references, bit for bit.

The kernel is the same IEEE double operations in the same order as the references
(detector/baseline.py ``_py_log_deviations`` and ``_py_learn``, detector/scoring.py
``FeatureTails._py_neglogs``): every number must be equal to the last bit, and a replay must write
byte-identical files with the kernel and with ``FLOWBREAKER_PURE_PYTHON=1``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from detector import baseline as bl
from detector import native
from detector.baseline import _DOWN, _FLOORS, _UP, Z95, _py_learn, _py_log_deviations
from detector.features import N_FEATURES
from detector.scoring import FeatureTails
from models import simulate as sim

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "public"

_native = pytest.importorskip("detector._native", reason="the kernel is not built")


def bits(xs) -> bytes:
    """Every float to its 8 bytes: equality of these is equality to the last bit (-0.0, NaN included)."""
    return array("d", xs).tobytes()


def test_the_install_builds_the_kernel_and_the_engine_runs_it():
    # scripts/install.sh (pip install -e .) compiles it; without FLOWBREAKER_PURE_PYTHON the modules take it
    assert native.kernels is _native or os.environ.get(native.PURE_PYTHON_ENV) == "1"
    if native.kernels is not None:
        assert bl._log_deviations is _native.log_deviations and bl._learn is _native.learn
        from detector import features
        assert features._kernel is _native.extract


def test_the_environment_variable_forces_the_pure_python_references():
    probe = ("from detector import native, baseline; import sys; "
             "sys.exit(0 if native.kernels is None and baseline._learn is baseline._py_learn else 1)")
    env = {**os.environ, "PYTHONPATH": str(REPO), native.PURE_PYTHON_ENV: "1"}
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, timeout=60).returncode == 0
    env.pop(native.PURE_PYTHON_ENV)
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, timeout=60).returncode == 1


# feature values: counts and magnitudes (>= 0, with zeros and huge ones), and some in (-1, 0) and subnormals
_value = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e12, allow_nan=False),
                   st.floats(min_value=-0.999999, max_value=0.0), st.floats(min_value=0.0, max_value=1e-300),
                   st.integers(min_value=0, max_value=10**6))
_row = st.lists(_value, min_size=N_FEATURES, max_size=N_FEATURES)
_loc = st.lists(st.floats(min_value=-5.0, max_value=30.0, allow_nan=False), min_size=N_FEATURES, max_size=N_FEATURES)
_scale = st.lists(st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=20.0)), min_size=N_FEATURES,
                  max_size=N_FEATURES)


@settings(max_examples=300, deadline=None)
@given(_row, _loc, _scale)
def test_log1p_and_deviations_of_a_row_equal_the_reference_bit_for_bit(x, loc, scale):
    loc, scale = array("d", loc), array("d", scale)
    xl_n, z_n = _native.log_deviations(x, loc, scale, _FLOORS)
    xl_p, z_p = _py_log_deviations(x, loc, scale, _FLOORS)
    assert bits(xl_n) == bits(xl_p) and bits(z_n) == bits(z_p)
    assert all(type(v) is float for v in xl_n + z_n)


@settings(max_examples=300, deadline=None)
@given(_row, _loc, _scale, st.floats(min_value=0.004, max_value=2.0))
def test_a_learning_step_equals_the_reference_bit_for_bit_and_leaves_its_inputs_alone(x, loc, scale, a2):
    xl = _py_log_deviations(x, [0.0] * N_FEATURES, [1.0] * N_FEATURES, _FLOORS)[0]
    loc, scale = array("d", loc), array("d", scale)
    before = (loc.tobytes(), scale.tobytes())
    loc_n, scale_n = _native.learn(xl, loc, scale, _FLOORS, a2, Z95, _UP, _DOWN)
    loc_p, scale_p = _py_learn(xl, loc, scale, _FLOORS, a2, Z95, _UP, _DOWN)
    assert (loc_n.tobytes(), scale_n.tobytes()) == (loc_p.tobytes(), scale_p.tobytes())
    assert (loc.tobytes(), scale.tobytes()) == before  # new arrays: a profile held for the reasons stays
    assert loc_n is not loc and scale_n is not scale


def test_a_thousand_learning_steps_of_a_baseline_stay_equal_to_the_reference():
    b = bl.Baseline.from_prior(bl.Prior.generic())
    loc, scale, n = array("d", b.loc), array("d", b.scale), b.n
    for i in range(1000):
        x = [float((i * 7919 + 13 * f) % 97) * (f + 1) for f in range(N_FEATURES)]
        xl, _ = b.log_deviations(x)
        b.learn_log(xl)
        n += 1.0
        a = max(1.0 / n, bl._ALPHA_MIN)
        loc, scale = _py_learn(xl, loc, scale, _FLOORS, 2.0 * a, Z95, _UP, _DOWN)
    assert (b.loc.tobytes(), b.scale.tobytes()) == (loc.tobytes(), scale.tobytes())


def _fitted_tails() -> FeatureTails:
    import numpy as np

    rng = np.random.default_rng(3)
    z = np.abs(rng.standard_cauchy((2000, N_FEATURES))) * rng.choice([-1.0, 1.0], (2000, N_FEATURES))
    return FeatureTails.fit(z)


_TAILS = (FeatureTails.generic(N_FEATURES), _fitted_tails())
_z = st.one_of(st.just(0.0), st.just(-0.0), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
               st.floats(min_value=39.0, max_value=41.0), st.floats(min_value=0.0, max_value=0.2))


@settings(max_examples=300, deadline=None)
@given(st.lists(_z, min_size=N_FEATURES, max_size=N_FEATURES), st.sampled_from(_TAILS))
def test_tail_rarities_equal_the_reference_bit_for_bit(z, tails):
    assert bits(_native.neglogs(z, tails._flat, tails._slopes, tails._n, float(tails.STEPS_PER_Z), tails.Z_MAX)) \
        == bits(tails._py_neglogs(z))


def test_tail_rarities_at_every_table_edge_equal_the_reference():
    tails = _TAILS[1]
    edges = [k / tails.STEPS_PER_Z for k in range(int(tails.Z_MAX * tails.STEPS_PER_Z) + 3)]
    for e in edges:
        for v in (e, e - 1e-12, e + 1e-12, float.fromhex("0x1p-1074")):
            z = [v] * N_FEATURES
            assert bits(tails.neglogs(z)) == bits(tails._py_neglogs(z))


@pytest.mark.parametrize("bad, error", [(float("inf"), OverflowError), (float("nan"), ValueError)])
def test_a_non_finite_deviation_raises_what_the_reference_raises(bad, error):
    tails = _TAILS[0]
    z = [1.0] * N_FEATURES
    z[3] = bad
    with pytest.raises(error):
        tails._py_neglogs(z)
    with pytest.raises(error):
        _native.neglogs(z, tails._flat, tails._slopes, tails._n, float(tails.STEPS_PER_Z), tails.Z_MAX)


@pytest.mark.parametrize("bad", [-1.0, -2.0])
def test_a_value_outside_log1p_raises_value_error_in_both(bad):
    x = [1.0] * N_FEATURES
    x[0] = bad
    ones = array("d", [1.0] * N_FEATURES)
    for fn in (_native.log_deviations, _py_log_deviations):
        with pytest.raises(ValueError):
            fn(x, ones, ones, _FLOORS)


def test_a_profile_that_is_not_an_array_of_doubles_is_refused():
    x = [1.0] * N_FEATURES
    with pytest.raises(TypeError):
        _native.log_deviations(x, array("f", [0.0] * N_FEATURES), array("d", [1.0] * N_FEATURES), _FLOORS)
    with pytest.raises(ValueError):
        _native.learn(x[:-1], array("d", [0.0] * N_FEATURES), array("d", [1.0] * N_FEATURES), _FLOORS,
                      0.1, Z95, _UP, _DOWN)


# ------------------------------------------------------------------------- replay, kernel on and off

def _cli(args: list[str], *, pure: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(native.PURE_PYTHON_ENV, None)
    if pure:
        env[native.PURE_PYTHON_ENV] = "1"
    done = subprocess.run([sys.executable, "-m", "streams.cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _replay_both(tmp_path: Path, args: list[str], outputs: tuple[str, ...]) -> dict[str, bytes]:
    files = {}
    for pure in (False, True):
        d = tmp_path / ("pure" if pure else "native")
        d.mkdir()
        _cli(["replay", *args, "--quiet", "--out", str(d / "decisions.jsonl"),
              *(x for o in outputs for x in (f"--{o}", str(d / f"{o}.jsonl")))], pure=pure)
        files[d.name] = {p.name: p.read_bytes() for p in sorted(d.iterdir())}
    assert files["native"] == files["pure"]
    return files["native"]


def test_a_replay_of_the_simulated_fleet_with_a_trained_model_is_byte_identical_with_and_without_the_kernel(
        tmp_path):
    events, labels = sim.simulate(n_agents=8, days=4, seed=7)
    history, rest = sim.split_history(events, labels)
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in history))
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in rest))
    _cli(["train", "--input", str(tmp_path / "history.jsonl"), "--out", str(tmp_path / "model"), "--trees", "20",
          "--quiet"], pure=False)
    out = _replay_both(tmp_path, ["--model", str(tmp_path / "model"), "--input", str(tmp_path / "events.jsonl"),
                                  "--gate"], ("incidents", "episodes"))
    decisions = out["decisions.jsonl"].decode().splitlines()
    assert len(decisions) == len(rest)
    assert any(json.loads(d)["severity"] != "ok" for d in decisions)  # the comparison covers alerts too


def test_a_replay_of_the_public_fixture_is_byte_identical_with_and_without_the_kernel(tmp_path):
    policy = ["--policy", str(FIXTURE / "policy.toml")]
    _cli(["train", *policy, "--input", str(FIXTURE / "history.jsonl"), "--out", str(tmp_path / "model"),
          "--trees", "20", "--quiet"], pure=False)
    out = _replay_both(tmp_path, [*policy, "--model", str(tmp_path / "model"), "--input", str(FIXTURE / "events.jsonl"),
                                  "--gate", "--analyst", str(FIXTURE / "labels.json")],
                       ("incidents", "episodes", "verdicts-out"))
    assert len(out["decisions.jsonl"].decode().splitlines()) == 546


def test_without_the_kernel_the_engine_runs_the_references_and_says_so_once_on_stderr():
    probe = """
import sys
sys.modules["detector._native"] = None  # as when the build failed
from detector import baseline, native, scoring
from detector.engine import Engine
from detector.events import decode_event
import detector.native
assert native.kernels is None and baseline._learn is baseline._py_learn and scoring._kernels is None
eng = Engine()
d = eng.process(decode_event({"event_id": "e1", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
                              "tool": "t", "action": "read", "resource": "r://x", "sensitivity": "internal"}))
print(d.record["severity"])
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(native.PURE_PYTHON_ENV, None)
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert done.stderr.count("detector._native is not built") == 1


# ------------------------------------------------------------------------- feature extraction

_TOOLS = ("mail.send", "crm_lookup", "bash", "drive:read", "slack-post", "wiki/get", "tööl.ünïcode", "x",
          "lone\ud800surrogate")
_RESOURCES = ("drive://file/42", "crm://customers/17/notes", "http://web.example/a", "email:bob@corp.example",
              "hr://personnel", "plain-resource", "https://paste.example/x", "dösseldorf://a/b", "://odd/one",
              "r://x\udfff/y")
_DESTS = ("email:eve@evil.example", "email:bob@corp.example", "slack:#general", "slack:#eng", "http:https://paste.example/x",
          "iban:GB29NWBK60161331926819", "email:noah.hernandez7@x.example", "payee:ACME Ltd", "email:Ünï@Çorp.example",
          "email:reply@customer.example")
_PEOPLE = ("alice", "op-1", "customer:noah_hernandez_42", "email:stranger@outside.example", "bob@corp.example",
           "unknown")


def _policy():
    from detector.policy import Policy

    return Policy(internal_domains=("corp.example",), internal=("slack:#eng",), broadcast={"slack:#general": 250},
                  sensitivity_weight={"public": 0.0, "internal": 1.0, "confidential": 5.0, "restricted": 25.0})


_event = st.fixed_dictionaries({
    "tool": st.sampled_from(_TOOLS), "action": st.sampled_from(("read", "write", "delete", "send", "exec")),
    "resource": st.sampled_from(_RESOURCES),
    "sensitivity": st.sampled_from(("public", "internal", "confidential", "restricted")),
    "records": st.one_of(st.just(0), st.integers(0, 50), st.integers(0, 2**63 - 1)),
    "bytes": st.one_of(st.just(0), st.integers(0, 10**6), st.integers(0, 2**63 - 1)),
    "destinations": st.one_of(st.just([]), st.lists(st.sampled_from(_DESTS), max_size=4),
                              st.lists(st.sampled_from(_DESTS), min_size=60, max_size=70)),
    "task_id": st.one_of(st.none(), st.sampled_from(("t1", "t2", "t3", "t4", "t5", "t6"))),
    "requested_by": st.one_of(st.none(), st.sampled_from(_PEOPLE)),
    "instruction_hash": st.one_of(st.none(), st.sampled_from(("h1", "h2"))),
    "approval_id": st.one_of(st.none(), st.just("ap-1")),
    "dt": st.one_of(st.just(0.0), st.floats(-100.0, 7200.0), st.floats(0.0, 200_000.0)),
})


def _events(draws):
    from detector.events import decode_event

    t = 1772442000.0
    out = []
    for i, d in enumerate(draws):
        d = dict(d)
        t += d.pop("dt")
        raw = {"event_id": f"e{i}", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "op-1", **d}
        ev = decode_event({k: v for k, v in raw.items() if v is not None})
        ev.__dict__["t"] = t  # any instant, backwards too
        out.append(ev)
    return out


def _kernel_extract():
    """The compiled extract, set up as detector.features sets it up (which it does not with
    FLOWBREAKER_PURE_PYTHON=1)."""
    from detector import features as f
    from detector.policy import BROADCAST, EXTERNAL

    _native.extract_setup(f.Observation, f._words, f.destination_family, f._is_outsider, EXTERNAL, BROADCAST,
                          f._words_cache, f.Policy, f._STOP_WORDS)
    return _native.extract


def _same_observation(a, b) -> None:
    from detector.features import Observation

    assert type(a) is type(b) is Observation
    for name in Observation.__slots__:
        va, vb = getattr(a, name), getattr(b, name)
        assert type(va) is type(vb), name
        if name == "x":
            assert [type(v) for v in va] == [type(v) for v in vb] and bits(va) == bits(vb)
        else:
            assert va == vb, name


def _state(s) -> tuple:
    """Every field of a FeatureState, floats as their bits."""
    return tuple(getattr(s, n).tobytes() if n in ("c", "tasks") else bits([getattr(s, n)]) if isinstance(
        getattr(s, n), float) else getattr(s, n) for n in s.__slots__)


@settings(max_examples=150, deadline=None)
@given(st.lists(_event, min_size=1, max_size=40), st.booleans(), st.booleans(), st.integers(0, 2**32))
def test_feature_extraction_of_a_sequence_of_actions_equals_the_reference_bit_for_bit(draws, hours, seeded, salt):
    from detector.features import K_DEST, K_TOOL, FeatureState, _py_extract, item_key
    from detector.sketch import stable_hash

    policy = _policy()
    states = [FeatureState(), FeatureState()]
    for s in states:
        if hours:
            s.hours = tuple((1.0 + (h * 7 + salt) % 24) / 300.0 for h in range(24))
        if seeded:  # some items known, some sketches wider than their masks
            s.seed_sketches((bytes([salt & 0xFF]) * 32, bytes([0x55]) * 128, bytes([(salt >> 8) & 0xFF]) * 257,
                             bytes([0x0F]) * 128, b"\x01" * 32))
    adopted = {item_key(K_TOOL, stable_hash("bash")), item_key(K_DEST, stable_hash("slack:#eng"))} if salt % 3 else None
    kernel = _kernel_extract()
    for ev in _events(draws):
        a = kernel(states[0], ev, policy, adopted)
        if a is None:  # only counts past 2**53 are left to the reference (and the state is left untouched)
            assert max(ev.records, ev.bytes) > 2**53
            a = _py_extract(states[0], ev, policy, adopted)
        b = _py_extract(states[1], ev, policy, adopted)
        _same_observation(a, b)
        assert _state(states[0]) == _state(states[1])


def test_extraction_outside_the_kernels_domain_is_left_to_the_reference_untouched():
    from detector.features import FeatureState, extract
    from detector.sketch import stable_hash

    policy = _policy()
    ev = _events([{"tool": "bash", "action": "send", "resource": "r://x", "sensitivity": "internal", "records": 1,
                   "bytes": 2**60, "destinations": ["email:eve@evil.example"], "task_id": "t1",
                   "requested_by": None, "instruction_hash": None, "approval_id": None, "dt": 5.0}])[0]
    kernel = _kernel_extract()
    st_ = FeatureState()
    before = st_.to_tuple()
    assert kernel(st_, ev, policy, None) is None  # bytes past 2**53: compared exactly by the reference
    assert st_.to_tuple() == before
    st_.tasks[0], st_.tasks[1] = float(stable_hash("t1")), 0.5  # the task's slot as the engine never writes it
    before = st_.to_tuple()
    ev2 = ev.replace(bytes=1)
    assert kernel(st_, ev2, policy, None) is None and st_.to_tuple() == before
    obs = extract(st_, ev2, policy, None)  # the reference decides
    assert obs.x[4] == 1.0 and st_.to_tuple() != before


@pytest.mark.parametrize("a_bits, b_bits", [(0, 0), (511, 0), (0, 511), (512, 0), (0, 512), (29, 59), (60, 1),
                                             (300, 511)])
@pytest.mark.parametrize("dt", [5.0, 4000.0, 8000.0])
def test_the_kernel_reads_the_recent_destination_filters_up_to_their_512_bits(a_bits, b_bits, dt):
    # recent_a and recent_b (ints of at most 512 bits; a wider one is left to the reference) are read and added to
    # as their digits: their widths at and around a digit's edge, with and without a new hour
    from detector.features import FeatureState, _py_extract

    policy = _policy()
    kernel = _kernel_extract()
    dests = ["email:eve@evil.example", "slack:#general", "email:bob@corp.example", "sms:+15550100"]
    evs = _events([{"tool": "mail.send", "action": "send", "resource": "mail://outbox", "sensitivity": "internal",
                    "records": 1, "bytes": 1, "destinations": dests[:n], "task_id": None, "requested_by": None,
                    "instruction_hash": None, "approval_id": None, "dt": dt} for n in (4, 2, 0, 4)])
    a, b = FeatureState(), FeatureState()
    for s in (a, b):
        s.gen_t = 1772442000.0
        s.recent_a = (1 << a_bits) | 0x2A if a_bits else 0
        s.recent_b = (1 << b_bits) - 1
    for ev in evs:
        obs = kernel(a, ev, policy, None)
        if obs is None:
            assert max(a.recent_a.bit_length(), a.recent_b.bit_length()) > 512
            obs = _py_extract(a, ev, policy, None)
        _same_observation(obs, _py_extract(b, ev, policy, None))
        assert _state(a) == _state(b)
    assert a.recent_a == b.recent_a and a.recent_b == b.recent_b


def test_the_kernel_reads_only_the_task_slot_of_the_action():
    # a slot of another task holding what the engine never writes (it is not read) is no reason to leave an action
    # to the reference; one that is not its task's or a new task's (a slot's last time NaN: no least recently
    # used) is
    from detector.features import FeatureState, _py_extract
    from detector.sketch import stable_hash

    policy = _policy()
    kernel = _kernel_extract()
    evs = _events([{"tool": "bash", "action": "send", "resource": "r://x", "sensitivity": "internal", "records": 1,
                    "bytes": 1, "destinations": ["email:eve@evil.example"], "task_id": task, "requested_by": "al",
                    "instruction_hash": None, "approval_id": None, "dt": 5.0} for task in ("t1", "t2", None)])
    for ev in evs:
        a, b = FeatureState(), FeatureState()
        for s in (a, b):
            s.tasks[0], s.tasks[3] = float(stable_hash("t1")), 7.0
            s.tasks[11 + 1], s.tasks[11 + 7], s.tasks[11 + 4] = 0.5, 2.0**40, -3.0  # slot 1: never written so
        obs = kernel(a, ev, policy, None)
        assert obs is not None
        _same_observation(obs, _py_extract(b, ev, policy, None))
        assert _state(a) == _state(b)
    st_ = FeatureState()
    st_.tasks[11 + 3] = float("nan")
    before = st_.to_tuple()
    assert kernel(st_, evs[1], policy, None) is None and st_.to_tuple() == before
    assert kernel(st_, evs[2], policy, None) is not None  # without a task no slot is read


# ------------------------------------------------------------------------- replay's chunks

def test_a_replay_writes_the_same_files_whatever_number_of_events_it_decides_together(tmp_path, monkeypatch):
    from streams.cli import replay as cli_replay
    from streams.cli.main import main

    policy = ["--policy", str(FIXTURE / "policy.toml")]
    assert main(["train", *policy, "--input", str(FIXTURE / "history.jsonl"), "--out", str(tmp_path / "model"),
                 "--trees", "10", "--quiet"]) == 0
    files = {}
    for chunk, batch in ((cli_replay._CHUNK, cli_replay._BATCH), (7, 50), (50, 50)):
        monkeypatch.setattr(cli_replay, "_CHUNK", chunk)
        monkeypatch.setattr(cli_replay, "_BATCH", batch)
        d = tmp_path / f"{chunk}-{batch}"
        d.mkdir()
        assert main(["replay", *policy, "--model", str(tmp_path / "model"), "--input", str(FIXTURE / "events.jsonl"),
                     "--gate", "--analyst", str(FIXTURE / "labels.json"), "--quiet",
                     "--out", str(d / "decisions.jsonl"), "--episodes", str(d / "episodes.jsonl"),
                     "--incidents", str(d / "incidents.jsonl")]) == 0
        files[chunk, batch] = [(d / n).read_bytes() for n in ("decisions.jsonl", "episodes.jsonl", "incidents.jsonl")]
    first = files[(cli_replay._CHUNK, cli_replay._BATCH)]
    assert first[0].count(b"\n") == 546 and first[1].count(b"\n") > 4
    # the episodes closed in between (quiet, or by a verdict) are written every _BATCH events, not every chunk
    assert files[(7, 50)] == files[(50, 50)]
    assert files[(7, 50)][0] == first[0] and files[(7, 50)][2] == first[2]


# ------------------------------------------------------------------------- the engine's fused row steps

from detector.baseline import (_KIND_ALPHA_MIN, _KIND_FEATURES, _KIND_FLOOR_VALUES, _KIND_W, KIND_MIN,  # noqa: E402
                               _py_deviate, _py_kind_learn)

# kind profiles: up to 6 slots of (key, n, last t, (loc, hi) per kind feature); keys from a few kinds, counts
# around KIND_MIN (established or not), locations and highs in any order (hi below loc too)
_kind_slot = st.tuples(st.sampled_from((7.0, 8.0, 9.0, 4294967295.0)),
                       st.one_of(st.sampled_from((0.0, 1.0, 4.0, 5.0, 6.0, 1e6)), st.floats(0.0, 300.0)),
                       st.floats(0.0, 2e9), *[st.floats(-5.0, 30.0, allow_nan=False)] * (2 * len(_KIND_FEATURES)))
_kinds = st.lists(_kind_slot, max_size=6).map(lambda slots: array("d", [v for s in slots for v in s]))
_kind = st.sampled_from((7.0, 8.0, 9.0, 4294967295.0, 12.0))


@settings(max_examples=300, deadline=None)
@given(_row, _loc, _scale, _kinds, _kind)
def test_deviations_with_the_kinds_profile_equal_the_reference_bit_for_bit(x, loc, scale, kinds, kind):
    loc, scale = array("d", loc), array("d", scale)
    before = kinds.tobytes()
    xl_n, z_n, by_n = _native.deviate(x, loc, scale, _FLOORS, kinds, kind, _KIND_FEATURES, KIND_MIN, Z95)
    xl_p, z_p, by_p = _py_deviate(x, loc, scale, _FLOORS, kinds, kind, _KIND_FEATURES, KIND_MIN, Z95)
    assert bits(xl_n) == bits(xl_p) and bits(z_n) == bits(z_p) and by_n is by_p
    assert all(type(v) is float for v in xl_n + z_n) and kinds.tobytes() == before
    # the log1p row written into an array instead (what the engine asks for), by both
    outs = (array("d", [7.0] * N_FEATURES), array("d", [7.0] * N_FEATURES))
    xa_n, za_n, ba_n = _native.deviate(x, loc, scale, _FLOORS, kinds, kind, _KIND_FEATURES, KIND_MIN, Z95, outs[0])
    xa_p, za_p, ba_p = _py_deviate(x, loc, scale, _FLOORS, kinds, kind, _KIND_FEATURES, KIND_MIN, Z95, outs[1])
    assert xa_n is outs[0] and xa_p is outs[1] and xa_n.tobytes() == xa_p.tobytes() == bits(xl_p)
    assert bits(za_n) == bits(za_p) == bits(z_p) and ba_n is ba_p is by_p
    # and the deviations too (what the engine asks for now), by both
    zouts = (array("d", [7.0] * N_FEATURES), array("d", [7.0] * N_FEATURES))
    _, zo_n, bo_n = _native.deviate(x, loc, scale, _FLOORS, kinds, kind, _KIND_FEATURES, KIND_MIN, Z95, None, zouts[0])
    _, zo_p, bo_p = _py_deviate(x, loc, scale, _FLOORS, kinds, kind, _KIND_FEATURES, KIND_MIN, Z95, None, zouts[1])
    assert zo_n is zouts[0] and zo_p is zouts[1] and bits(zo_n) == bits(zo_p) == bits(z_p) and bo_n is bo_p is by_p


def test_deviations_into_an_array_of_the_wrong_length_are_refused_by_both():
    x, ones = [1.0] * N_FEATURES, array("d", [1.0] * N_FEATURES)
    for fn in (_native.deviate, _py_deviate):
        with pytest.raises(ValueError, match="z_out"):
            fn(x, ones, ones, _FLOORS, array("d"), 7.0, _KIND_FEATURES, KIND_MIN, Z95, None, array("d", [0.0] * 3))


def test_a_kinds_established_profile_lowers_the_magnitudes_deviations_in_both():
    xl = [0.0] * N_FEATURES
    kinds = array("d", [7.0, 10.0, 5.0] + [0.1, 0.5] * len(_KIND_FEATURES))
    x = [100.0] * N_FEATURES
    ones = array("d", [0.0] * N_FEATURES)
    for fn in (_native.deviate, _py_deviate):
        xl, z, by = fn(x, ones, ones, _FLOORS, kinds, 7.0, _KIND_FEATURES, KIND_MIN, Z95)
        plain = _py_log_deviations(x, ones, ones, _FLOORS)[1]
        assert by is True and all(z[f] < plain[f] for f in _KIND_FEATURES)
        assert [z[i] for i in range(N_FEATURES) if i not in _KIND_FEATURES] == \
            [plain[i] for i in range(N_FEATURES) if i not in _KIND_FEATURES]


@settings(max_examples=300, deadline=None)
@given(_kinds, _kind, _row, st.floats(0.0, 3e9))
def test_a_kinds_learning_step_equals_the_reference_bit_for_bit(kinds, kind, x, t):
    xl = _py_log_deviations(x, [0.0] * N_FEATURES, [1.0] * N_FEATURES, _FLOORS)[0]
    a_n, a_p = array("d", kinds), array("d", kinds)
    args = (xl, t, _KIND_FEATURES, _KIND_FLOOR_VALUES, Z95, _UP, _DOWN, _KIND_ALPHA_MIN)
    done_n = _native.kind_learn(a_n, kind, *args)
    done_p = _py_kind_learn(a_p, kind, *args)
    assert done_n is done_p and a_n.tobytes() == a_p.tobytes()
    a_r = array("d", kinds)  # the row as an array (what the engine passes) teaches the same
    assert _native.kind_learn(a_r, kind, array("d", xl), *args[1:]) is done_p and a_r.tobytes() == a_p.tobytes()
    assert done_p == (kind in kinds[0::_KIND_W])  # without a slot nothing changes
    assert done_p or a_p.tobytes() == kinds.tobytes()
    # with all of 6 slots taken a new kind takes the least recently used one's (both); with a slot free, not
    e_n, e_p = array("d", kinds), array("d", kinds)
    got_n = _native.kind_learn(e_n, kind, *args, 6)
    got_p = _py_kind_learn(e_p, kind, *args, 6)
    assert got_n is got_p and e_n.tobytes() == e_p.tobytes()
    assert got_p == (done_p or len(kinds) == 6 * _KIND_W) and (got_p or e_p.tobytes() == kinds.tobytes())


def test_kind_profiles_learn_through_the_kernel_as_through_the_reference(monkeypatch):
    from detector import baseline

    rows = [[float((i * 31 + 7 * f) % 53) for f in range(N_FEATURES)] for i in range(300)]
    kinds_seq = [(i * 7) % 9 for i in range(300)]  # more kinds than slots: some are evicted
    out = []
    for fn in (_native.kind_learn, _py_kind_learn):
        monkeypatch.setattr(baseline, "_kind_learn", fn)
        k = baseline.KindProfiles()
        for i, (x, kind) in enumerate(zip(rows, kinds_seq)):
            k.learn(kind, _py_log_deviations(x, [0.0] * N_FEATURES, [1.0] * N_FEATURES, _FLOORS)[0], float(i))
        out.append(k.to_bytes())
    assert out[0] == out[1] and len(out[0]) == 8 * _KIND_W * 6


def _rarities_kernel(tails):
    """The engine's binding of the built kernel to ``tails``, also where FLOWBREAKER_PURE_PYTHON=1 left the
    engine without it."""
    from unittest import mock

    from detector import engine

    with mock.patch.object(engine, "_k_rarities", _native.rarities):
        return engine._rarities_kernel(tails)


def _rarities_both(tails, z, x, caps, quiet, known_reach):
    from detector.engine import _py_rarities

    z_n, z_p = list(z), list(z)
    rows = bytearray(b"\x01" * 8)
    got = _rarities_kernel(tails)(z_n, x, caps, quiet, known_reach, rows)
    ref = _py_rarities(tails, z_p, x, caps, quiet, known_reach)
    if got is not None:  # the final deviations appended to the batch's rows, as doubles
        assert bytes(rows) == b"\x01" * 8 + array("d", z_p).tobytes()
    return got, ref, z_n, z_p


_quiet = st.lists(st.integers(0, N_FEATURES - 1), max_size=12, unique=True).map(tuple)
_caps = st.one_of(st.none(), st.lists(st.one_of(st.just(0.0), st.floats(0.0, 1e4)), min_size=N_FEATURES,
                                      max_size=N_FEATURES).map(lambda c: array("d", c)))


@settings(max_examples=300, deadline=None)
@given(st.lists(_z, min_size=N_FEATURES, max_size=N_FEATURES), st.lists(st.floats(0.0, 1e5), min_size=N_FEATURES,
       max_size=N_FEATURES), _caps, _quiet, st.booleans(), st.sampled_from(_TAILS))
def test_rarities_caps_and_blame_equal_the_reference_bit_for_bit(z, x, caps, quiet, known_reach, tails):
    got, ref, z_n, z_p = _rarities_both(tails, z, x, caps, quiet, known_reach)
    assert bits(got[0]) == bits(ref[0]) and bits(got[1:]) == bits(ref[1:])
    assert bits(z_n) == bits(z_p) and all(type(v) is float for v in z_n + got[0])


@settings(max_examples=300, deadline=None)
@given(st.lists(_z, min_size=N_FEATURES, max_size=N_FEATURES), st.lists(st.floats(0.0, 1e5), min_size=N_FEATURES,
       max_size=N_FEATURES), _caps, _quiet, st.booleans(), st.sampled_from(_TAILS))
def test_rarities_of_arrays_equal_those_of_lists_bit_for_bit(z, x, caps, quiet, known_reach, tails):
    """What the engine hands the kernel: z and x as array('d'), r written into an array: the same numbers, and z
    changed in place the same way, as with lists (and as the reference)."""
    got, ref, z_n, z_p = _rarities_both(tails, z, x, caps, quiet, known_reach)
    za, r_out = array("d", z), array("d", [7.0] * N_FEATURES)
    rows = bytearray()
    arr = _rarities_kernel(tails)(za, array("d", x), caps, quiet, known_reach, rows, r_out)
    assert arr[0] is r_out and bits(arr[0]) == bits(ref[0]) and bits(arr[1:]) == bits(ref[1:])
    assert bits(za) == bits(z_p) and bytes(rows) == za.tobytes()
    # an r_out of another length: r as a list, as without one
    short = _rarities_kernel(tails)(array("d", z), x, caps, quiet, known_reach, None, array("d", [0.0]))
    assert type(short[0]) is list and bits(short[0]) == bits(ref[0])


def test_the_blame_zeroes_what_the_action_added_nothing_to_after_the_largest_rarity_is_taken():
    tails = _TAILS[0]
    z = [0.0] * N_FEATURES
    z[2], z[5] = 8.0, 3.0
    from detector.features import KNOWN_REACH_QUIET

    got, ref, z_n, z_p = _rarities_both(tails, z, [1.0] * N_FEATURES, None, (2,), False)
    for (r, raw, top), zz in ((got, z_n), (ref, z_p)):
        assert raw == tails.neglog(2, 8.0) and top == tails.neglog(5, 3.0) and r[2] == 0.0 and zz[2] == 0.0
    z[KNOWN_REACH_QUIET[0]] = 9.0
    got, ref, z_n, z_p = _rarities_both(tails, z, [1.0] * N_FEATURES, None, (), True)
    assert got == ref and z_n == z_p and z_n[KNOWN_REACH_QUIET[0]] == 0.0


def test_a_verdicts_caps_quiet_a_deviation_up_to_their_slack_in_both():
    from detector.engine import CAP_SLACK

    tails = _TAILS[0]
    caps = array("d", [0.0] * N_FEATURES)
    caps[3] = 10.0
    z = [5.0] * N_FEATURES
    for value, quiet in ((CAP_SLACK * 10.0, True), (CAP_SLACK * 10.0 + 1e-9, False)):
        x = [1.0] * N_FEATURES
        x[3] = value
        got, ref, z_n, z_p = _rarities_both(tails, z, x, caps, (), False)
        assert got == ref and z_n == z_p and (z_n[3] == 0.0) is quiet


def test_rows_the_rarities_kernel_does_not_take_are_left_to_the_reference_untouched():
    tails = _TAILS[0]
    k = _rarities_kernel(tails)
    z = [1.0] * N_FEATURES
    z[4] = 3  # an int: the reference decides
    assert k(z, [1.0] * N_FEATURES, None, (), False) is None and z[4] == 3
    caps = array("d", [1.0] * N_FEATURES)
    x = [1] * N_FEATURES
    z = [2.0] * N_FEATURES
    assert k(z, x, caps, (), False) is None and z == [2.0] * N_FEATURES
    za = array("d", z)  # an array z with x of ints: the reference decides, z untouched
    assert k(za, x, caps, (), False) is None and list(za) == z
    assert k(array("f", z), [1.0] * N_FEATURES, None, (), False) is None  # not doubles


# ------------------------------------------------------------------------- the duplicate ring

_ids = st.sampled_from((1, 3, 5, 0xFFFFFFFF, 7))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_ids, st.sampled_from((0, 1, 3, 0xFFFF))), min_size=32, max_size=32),
       st.lists(st.tuples(_ids, st.sampled_from((1, 3, 0xFFFF)), st.integers(-32, 31)), min_size=1, max_size=40))
def test_the_duplicate_ring_answers_and_changes_as_the_reference(ring, steps):
    from detector.engine import _py_remember

    seen_n = array("I", [h for h, _ in ring])
    content_n = array("H", [c for _, c in ring])
    seen_p, content_p = array("I", seen_n), array("H", content_n)
    for h, hc, pos in steps:
        a = _native.remember(seen_n, content_n, pos, h, hc)
        b = _py_remember(seen_p, content_p, pos, h, hc)
        assert a == b and (seen_n, content_n) == (seen_p, content_p)


def test_the_ring_tells_a_duplicate_from_a_reused_id_and_a_new_one_in_both():
    from detector.engine import _py_remember

    for fn in (_native.remember, _py_remember):
        seen, content = array("I", [0] * 32), array("H", [0] * 32)
        assert fn(seen, content, 0, 9, 4) == 0 and seen[0] == 9 and content[0] == 4
        assert fn(seen, content, 1, 9, 4) == 2 and seen[1] == 0  # the same id and content: nothing written
        assert fn(seen, content, 1, 9, 5) == 1 and (seen[1], content[1]) == (9, 5)
        content[0] = 0  # a ring from before content keys: any content counts as the same
        assert fn(seen, content, 2, 9, 6) == 2
        with pytest.raises(IndexError):
            fn(seen, content, 32, 11, 1)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40) | st.sampled_from(("ev-1", "lone\ud800", "ünï")))
def test_the_ring_takes_an_event_id_as_its_dedupe_key_in_both(event_id):
    from detector.engine import _py_remember
    from detector.sketch import dedupe_key

    for fn in (_native.remember, _py_remember):
        seen, content = array("I", [0] * 32), array("H", [0] * 32)
        assert fn(seen, content, 3, event_id, 7) == 0 and seen[3] == dedupe_key(event_id)
        assert fn(seen, content, 4, dedupe_key(event_id), 7) == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100), st.integers(0, 2**32 - 1))
def test_the_kernels_crc_of_names_is_zlibs(data, start):
    import zlib

    assert _native.crc32(data) == zlib.crc32(data) and _native.crc32(data, start) == zlib.crc32(data, start)


@pytest.mark.parametrize("name", ("noah_hernandez", "nöah_hernandez"))
def test_extraction_answers_the_same_whether_words_come_from_the_kernel_the_cache_or_from_words(monkeypatch, name):
    # an ASCII name is read by the kernel itself (text_words); any other comes from _words's cache, or from _words
    from detector import features as f

    ev = _events([{"tool": "mail.send", "action": "send", "resource": f"crm://customers/{name}",
                   "sensitivity": "confidential", "records": 2, "bytes": 10,
                   "destinations": [f"email:{name.replace('_', '.')}7@x.example", "email:eve@evil.example"],
                   "task_id": "t1", "requested_by": f"customer:{name}_42", "instruction_hash": None,
                   "approval_id": None, "dt": 5.0}])[0]
    kernel = _kernel_extract()
    calls = []
    words = f._words
    monkeypatch.setattr(f, "_words", lambda text: calls.append(text) or words(text))
    out = []
    for cached, stop in ((False, None), (True, None), (False, f._STOP_WORDS)):
        if not cached:
            f._words_cache.clear()
        _native.extract_setup(f.Observation, f._words, f.destination_family, f._is_outsider, f.EXTERNAL,
                              f.BROADCAST, f._words_cache, f.Policy, *((stop,) if stop else ()))
        st_ = f.FeatureState()
        out.append(kernel(st_, ev, _policy(), None))
        out[-1].x.append(st_.tasks.tobytes())
    _kernel_extract()
    asked = list(calls)
    ref = f._py_extract(f.FeatureState(), ev, _policy(), None)
    assert out[0].x[:-1] == out[1].x[:-1] == out[2].x[:-1] == ref.x and out[0].x == out[1].x == out[2].x
    assert out[0].novel == out[1].novel == out[2].novel == ref.novel
    assert ref.x[f.FEATURE_INDEX["novel_outbound"]] < 6.0 * 4  # the related recipient counted a quarter
    # the second time every text came from the cache; with the stop words only names that are not ASCII are asked
    assert len(asked[:4]) == len(set(asked[:4])) == 4
    assert asked[4:] == [t for t in asked[:4] if not t.isascii()] and len(asked) == 4 + 3 * (not name.isascii())


@settings(max_examples=300, deadline=None)
@given(_row, _loc, _scale, st.floats(min_value=0.004, max_value=2.0))
def test_a_learning_step_in_place_equals_the_step_on_copies_bit_for_bit(x, loc, scale, a2):
    from detector.baseline import _py_learn_into

    xl = _py_log_deviations(x, [0.0] * N_FEATURES, [1.0] * N_FEATURES, _FLOORS)[0]
    loc_c, scale_c = _py_learn(xl, array("d", loc), array("d", scale), _FLOORS, a2, Z95, _UP, _DOWN)
    for fn in (_native.learn_into, _py_learn_into):
        for row in (xl, array("d", xl)):  # a list, or the array the engine passes
            loc_i, scale_i = array("d", loc), array("d", scale)
            assert fn(row, loc_i, scale_i, _FLOORS, a2, Z95, _UP, _DOWN) is None
            assert (loc_i.tobytes(), scale_i.tobytes()) == (loc_c.tobytes(), scale_c.tobytes())


def test_an_actions_reasons_name_the_profile_it_was_compared_with_though_later_actions_of_its_batch_teach_it():
    # the profile learns in place (Baseline.learn_log_in_place): the engine keeps a copy for the reasons
    from detector.engine import Engine
    from detector.events import decode_event

    base = {"agent_id": "a", "operator_id": "o", "tool": "db.query", "action": "read", "resource": "db://t/1",
            "sensitivity": "internal"}
    evs = [decode_event({**base, "event_id": f"e{i}", "ts": f"2026-03-02T09:{i:02d}:00Z", "records": 1 + i % 3})
           for i in range(40)]
    evs.append(decode_event({**base, "event_id": "big", "ts": "2026-03-02T09:40:00Z", "records": 100000}))
    evs += [decode_event({**base, "event_id": f"f{i}", "ts": f"2026-03-05T09:{i:02d}:00Z", "records": 2})
            for i in range(5)]  # days later: ordinary again, and learnt
    together = Engine().process_batch(evs)
    eng = Engine()
    apart = eng.process_batch(evs[:41]) + eng.process_batch(evs[41:])
    assert together[40].record["severity"] != "ok" and together[40].record["reasons"][0]["baseline"] > 0.0
    assert [d.record for d in together] == [d.record for d in apart]


def test_the_kernel_remembers_untrusted_sources_per_policy_and_asks_a_policy_of_another_class_every_time():
    from detector import features as f
    from detector.policy import Policy

    kernel = _kernel_extract()
    web = _events([{"tool": "web.get", "action": "read", "resource": "http://web.example/a", "sensitivity": "public",
                    "records": 1, "bytes": 1, "destinations": [], "task_id": "t1", "requested_by": None,
                    "instruction_hash": None, "approval_id": None, "dt": 1.0}])[0]
    flags = lambda st_: int(st_.tasks[1])  # the task's flags: 1 = it took in untrusted input

    trusting, wary = Policy(untrusted_sources=()), Policy(untrusted_sources=("http",))
    for policy, untrusted in ((wary, 1), (trusting, 0), (wary, 1)):
        st_ = f.FeatureState()
        kernel(st_, web, policy, None)
        assert flags(st_) & 1 == untrusted

    class Moody(Policy):
        calls = 0

        def is_untrusted_source(self, resource):
            Moody.calls += 1
            return Moody.calls % 2 == 1

    moody = Moody()
    got = []
    for _ in range(4):
        st_ = f.FeatureState()
        kernel(st_, web, moody, None)
        got.append(flags(st_) & 1)
    assert got == [1, 0, 1, 0] and Moody.calls == 4


_SOURCES = ("http://web.example/a", "https://x.example", "email:bob@corp.example", "email:eve@evil.example",
            "emailx:eve@evil.example", "mail://inbox/1", "drive://f/1", "e", "HTTP://web.example", "ünï:x",
            "email:Ünï@corp.example", "email:bob@sub.corp.example")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(("http:", "https:", "email:", "email", "mail", "", "ü", "HTTP")), max_size=4),
       st.sampled_from(((), ("corp.example",))), st.sampled_from(_SOURCES), st.sampled_from(("read", "exec")))
def test_the_kernel_takes_untrusted_input_where_the_policy_says_so(sources, domains, resource, action):
    # the kernel answers a resource under none of the untrusted sources, or one that is not mail, itself
    from detector import features as f
    from detector.policy import Policy

    policy = Policy(untrusted_sources=tuple(sources), internal_domains=domains)
    ev = _events([{"tool": "web.get", "action": action, "resource": resource, "sensitivity": "public",
                   "records": 1, "bytes": 1, "destinations": [], "task_id": "t1", "requested_by": None,
                   "instruction_hash": None, "approval_id": None, "dt": 1.0}])[0]
    st_ = f.FeatureState()
    _kernel_extract()(st_, ev, policy, None)
    assert int(st_.tasks[1]) & 1 == policy.is_untrusted_source(resource)


def test_mail_under_an_untrusted_source_is_answered_for_a_plain_policy_and_asked_of_a_replaced_method(monkeypatch):
    # a plain policy (no internal domains or patterns) whose class's is_untrusted_source and _is_internal are its
    # own: mail under an untrusted source is untrusted without the call; a policy with an internal pattern, or a
    # class whose method was replaced, is asked
    from detector import features as f
    from detector.policy import Policy

    def flag(policy, resource):
        ev = _events([{"tool": "mail.read", "action": "read", "resource": resource, "sensitivity": "internal",
                       "records": 1, "bytes": 1, "destinations": [], "task_id": "t1", "requested_by": None,
                       "instruction_hash": None, "approval_id": None, "dt": 1.0}])[0]
        st_ = f.FeatureState()
        _kernel_extract()(st_, ev, policy, None)
        return int(st_.tasks[1]) & 1

    plain, patterned = Policy(untrusted_sources=("email",)), Policy(untrusted_sources=("email",),
                                                                   internal=("email:*@corp.example",))
    assert flag(plain, "email:bob@corp.example") == 1 == plain.is_untrusted_source("email:bob@corp.example")
    assert flag(patterned, "email:bob@corp.example") == 0 == patterned.is_untrusted_source("email:bob@corp.example")
    asked = []
    monkeypatch.setattr(Policy, "is_untrusted_source", lambda self, r: asked.append(r) or False)
    assert flag(plain, "email:carol@corp.example") == 0 and asked == ["email:carol@corp.example"]


def test_the_kernel_reads_a_policys_classes_from_its_memo_as_classify_answers_them(monkeypatch):
    from detector import features as f
    from detector.policy import Policy

    asked = []
    classify = Policy.classify
    monkeypatch.setattr(Policy, "classify", lambda self, d: asked.append(d) or classify(self, d))
    policy = Policy(internal_domains=("corp.example",), broadcast={"slack:#all": 40})
    dests = ["email:bob@corp.example", "slack:#all", "email:eve@evil.example"]
    ev = _events([{"tool": "mail.send", "action": "send", "resource": "mail://outbox", "sensitivity": "internal",
                   "records": 1, "bytes": 1, "destinations": dests, "task_id": None, "requested_by": None,
                   "instruction_hash": None, "approval_id": None, "dt": 1.0}])[0]
    kernel = _kernel_extract()
    first = kernel(f.FeatureState(), ev, policy, None)
    assert asked == dests and set(policy._cache) == set(dests)  # classify asked, and memoised
    policy._cache["email:eve@evil.example"] = ("internal", 7)  # what the memo says is what classify would answer
    again = kernel(f.FeatureState(), ev, policy, None)
    assert first.dest_classes == ("internal", "broadcast", "external")
    assert again.dest_classes == ("internal", "broadcast", "internal") and again.x[13] == 1 + 40 + 7
    assert asked == dests  # the second time every class came from the memo


def test_the_kernel_sets_a_states_fields_through_its_own_setattr_when_it_has_one():
    # plain slots are read and written at their offsets; a class with its own __setattr__ (here a look-alike of
    # FeatureState with the same slots) is asked, as is a subclass
    from detector.features import FeatureState, _py_extract

    names: list[str] = []

    class Watched:
        __slots__ = FeatureState.__slots__

        def __init__(self):
            for n in self.__slots__:
                object.__setattr__(self, n, getattr(FeatureState(), n))

        def __setattr__(self, name, value):
            names.append(name)
            object.__setattr__(self, name, value)

    class Sub(FeatureState):
        __slots__ = ()

    kernel = _kernel_extract()
    evs = _events([{"tool": "mail.send", "action": "send", "resource": "mail://outbox", "sensitivity": "internal",
                    "records": 3, "bytes": 10, "destinations": ["email:eve@evil.example"], "task_id": "t1",
                    "requested_by": "alice", "instruction_hash": "h1", "approval_id": None, "dt": dt}
                   for dt in (5.0, 4000.0)])
    for cls in (Watched, Sub):
        a, b = cls(), FeatureState()
        names.clear()
        for ev in evs:
            _same_observation(kernel(a, ev, _policy(), None), _py_extract(b, ev, _policy(), None))
            assert [getattr(a, n) for n in FeatureState.__slots__[:13]] == [getattr(b, n) for n in
                                                                          FeatureState.__slots__[:13]]
        assert cls is Sub or {"last_t", "gen_t", "instr"} <= set(names)


# ------------------------------------------------------------------------- words of a name

_word_text = st.text(alphabet=st.sampled_from("abcxyzAZ0189:/._@-é ") , max_size=60) | st.sampled_from(
    ("tickets://zendesk/ticket/264870", "email:noah.hernandez7@x.example", "the com and", "a b c", "x" * 40, "y" * 130,
     " ".join(f"w{c}{c}" for c in "abcdefghijklmnopqrstu")))


@settings(max_examples=400, deadline=None)
@given(_word_text)
def test_the_words_kernel_equals_the_reference_on_ascii_and_leaves_the_rest_to_it(text):
    from detector.features import _STOP, _STOP_WORDS, _py_words_of

    local = text.lower()
    got = _native.words(local, _STOP_WORDS)
    if local.isascii():
        assert got == _py_words_of(local, _STOP)
    else:
        assert got is None


def test_the_words_kernel_keeps_sixteen_words_after_the_stop_words():
    from detector.features import _STOP, _STOP_WORDS, _py_words_of

    local = "com " + " ".join(f"w{chr(97 + i)}" for i in range(20)) + " org"
    got = _native.words(local, _STOP_WORDS)
    assert got == _py_words_of(local, _STOP) and len(got) == 16
    assert _native.words("com org mail", _STOP_WORDS) == ()


_name_text = st.text(alphabet=st.sampled_from("abcxyzAZQ0189:/._@-é >"), max_size=60) | st.sampled_from(
    ("tickets://zendesk/ticket/264870", "email:Noah.Hernandez7@X.example", "customer:noah_hernandez_42", "a:", ":b",
     "http:https://Paste.Example/x/y", "iban:GB29NWBK60161331926819", "x@y@z", "s:" + "Q" * 150 + "@D",
     "email:" + "Ab" * 70 + "@" + "Cd" * 50, "mail:Com.ORG", "İstanbul:x"))


@settings(max_examples=500, deadline=None)
@given(_name_text)
def test_the_words_of_a_name_in_the_kernel_equal_the_reference_on_ascii_and_are_left_to_it_otherwise(text):
    from detector.features import _STOP_WORDS, _py_text_words

    got = _native.text_words(text, _STOP_WORDS)
    if text.isascii():
        assert got == _py_text_words(text)
    else:
        assert got is None


@settings(max_examples=500, deadline=None)
@given(_name_text)
def test_the_family_hash_of_a_destination_equals_the_reference_on_ascii_and_is_left_to_it_otherwise(dest):
    from detector.features import destination_family
    from detector.sketch import stable_hash

    got = _native.family_hash(dest)
    if dest.isascii():
        assert got == stable_hash(destination_family(dest))
    else:
        assert got is None


# ------------------------------------------------------------------------- destination habits

_send = st.tuples(st.integers(0, 12) | st.sampled_from((2**32 - 1, 2**53)), st.booleans(),
                  st.integers(0, 5) | st.just(2**32 - 1))
_slot = st.tuples(st.sampled_from((0.0, 1.0, 2.0, 5.0, 13.0)), st.sampled_from((0.0, 1.0, 2.0, 11.5)),
                  st.sampled_from((0.0, 1.0, 0.5)), st.sampled_from((-1.0, 0.0, 3.0)))


@settings(max_examples=300, deadline=None)
@given(st.lists(_slot, max_size=8), st.lists(st.lists(_send, max_size=6), min_size=1, max_size=30))
def test_habits_observe_in_the_kernel_equals_the_reference_bit_for_bit(start, steps):
    from detector.habits import HALF_AT, SLOTS, Habits

    a, b = Habits(array("d", [v for s in start for v in s]).tobytes()), None
    b = Habits(a.to_bytes())
    for sends in steps:
        assert _native.habit_observe(a.a, sends, SLOTS, HALF_AT) is True
        b._py_observe(sends)
        assert a.to_bytes() == b.to_bytes()


def test_habits_observe_leaves_what_it_does_not_take_to_the_reference_untouched():
    from detector.habits import HALF_AT, SLOTS, Habits

    h = Habits()
    for sends in ([(1, True, 2**60)], ((1, True, 2),), [(1.0, True, 2)], [(1, True, 2)] * 65):
        before = h.to_bytes()
        assert _native.habit_observe(h.a, sends, SLOTS, HALF_AT) is None and h.to_bytes() == before
        h.observe(sends)  # the reference
        assert h.to_bytes() != before
        h = Habits()


_CLASSES = ("external", "broadcast", "internal")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_DESTS + ("payee:Ünï", "http:https://Paste.Example/y", "x")),
                          st.sampled_from(_CLASSES)), max_size=20), st.integers(0, 3))
def test_the_sends_of_an_action_in_the_kernel_equal_the_reference(pairs, k):
    from detector.habits import _COUNTED, _py_sends_of, family_key
    from detector.policy import BROADCAST, EXTERNAL

    dests = [d for d, _ in pairs]
    classes = tuple(c if c == "internal" else "".join(c) for _, c in pairs)  # equal, not always the same object
    new = dests[::k + 1] if k else ()
    got = _native.habit_sends(dests, classes, new, EXTERNAL, BROADCAST, family_key, _COUNTED)
    assert got == _py_sends_of(dests, classes, new)
    assert [tuple(map(type, t)) for t in got] == [(int, bool, int)] * len(got)


# ------------------------------------------------------------------------- novelty that settles

_key = st.tuples(st.integers(0, 6), st.integers(0, 2**32 - 1) | st.sampled_from((0, 1, 0x10001, 2**32 - 1))).map(
    lambda kh: (kh[0] << 32) | kh[1])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=5, max_size=5), st.lists(_key, max_size=12), st.booleans())
def test_settling_items_in_the_kernel_equals_the_reference(sketches, keys, novel):
    from detector.features import FeatureState, Observation, _py_commit_novel, _py_settle

    a, b = FeatureState(), FeatureState()
    for s in (a, b):
        s.tools, s.resources, s.dests, s.steps, s.principals = (int.from_bytes(x, "little") for x in sketches)
    assert _native.settle_keys(a, keys, novel) is True
    if novel:
        obs = Observation()
        obs.novel = keys
        _py_commit_novel(b, obs)
    else:
        for k in keys:
            _py_settle(b, k)
    # (sketches wider than their masks too, as seed_sketches may leave them: compared as ints)
    assert [getattr(a, n) for n in ("tools", "resources", "dests", "steps", "principals")] == [
        getattr(b, n) for n in ("tools", "resources", "dests", "steps", "principals")]


def test_settling_leaves_what_it_does_not_take_to_the_reference_untouched():
    from detector.features import FeatureState, settle

    s = FeatureState()
    assert _native.settle_keys(s, [-1], False) is None and _native.settle_keys(s, [2**64], False) is None
    s.tools = -8
    assert _native.settle_keys(s, [5], False) is None and s.tools == -8
    settle(s, 5)  # the reference: -8 | 1 << 5 | 1 << 0
    assert s.tools == -8 | 32 | 1


@settings(max_examples=300, deadline=None)
@given(st.lists(_slot, max_size=8), st.sampled_from((0, 1, 2, 5, 13, 2**32 - 1)) | st.sampled_from((5.0, -0.0)),
       st.floats(0.0, 20.0), st.floats(0.0, 1.0))
def test_whether_a_family_is_a_habit_the_kernel_answers_as_the_reference(start, family, min_sends, min_share):
    from detector import habits
    from detector.habits import Habits

    h = Habits(array("d", [v for s in start for v in s]).tobytes())
    got = _native.habit_habitual(h.a, family, min_sends, min_share)
    old = habits.MIN_SENDS, habits.MIN_SHARE
    habits.MIN_SENDS, habits.MIN_SHARE = min_sends, min_share
    try:
        assert got is h._py_habitual(family) and h.habitual(family) is got
    finally:
        habits.MIN_SENDS, habits.MIN_SHARE = old


# ------------------------------------------------------------------------- the trace's packed rows

@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["https://x.example/a", "mail:b@corp", "s3://b/k"]), max_size=13),
       st.lists(st.sampled_from(["external", "internal", "partner", "untrusted"]), max_size=4),
       st.booleans(), st.floats(allow_nan=False), st.sampled_from(["ok", "low", "high"]))
def test_a_trace_row_equals_the_reference(dests, classes, as_tuple, score, severity):
    from detector.events import decode_event
    from detector.trace import _ORDER, _py_values_row
    from msgspec.structs import astuple

    ev = decode_event({"event_id": "e", "ts": "2026-03-02T09:00:00Z", "agent_id": "a", "operator_id": "o",
                       "tool": "t", "action": "send", "resource": "r://x", "sensitivity": "internal",
                       "destinations": dests, "task_id": "T"})
    cls = tuple(classes) if as_tuple else list(classes)
    values = astuple(ev)
    got = _native.trace_row(values, _ORDER, cls, score, severity)
    want = _py_values_row(values, score, severity, cls)
    assert (got is None) == (len(dests) > 10)
    if got is not None:
        assert type(got) is tuple and got == tuple(want) and len(got) == 18
    with pytest.raises(IndexError):
        _native.trace_row(values, (len(values) + 3,), cls, score, severity)


# ------------------------------------------------------------------------- a manifest's usage (ceilings)

_times = st.floats(0.0, 4e9, allow_nan=False) | st.sampled_from((3599.999, 3600.0, 86400.0, 86400.0 * 3 - 1e-6))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_times, st.integers(0, 10**6) | st.floats(0.0, 1e9), st.integers(0, 2**40)),
                min_size=1, max_size=30))
def test_usage_steps_in_the_kernel_equal_the_reference_bit_for_bit(steps):
    from detector.manifest import _PERIODS, _py_usage_add

    v_n = array("d", [-1.0, 0.0, 0.0, 0.0, 0.0] * 2)
    v_p = array("d", v_n)
    for t, records, nbytes in steps:
        assert _native.usage_add(v_n, t, records, nbytes) is True
        _py_usage_add(v_p, _PERIODS, t, records, nbytes)
        assert bits(v_n) == bits(v_p)


def test_usage_the_kernel_does_not_take_is_left_to_the_reference_untouched():
    from detector.manifest import Usage

    v = array("d", [-1.0, 0.0, 0.0, 0.0, 0.0] * 2)
    for args in ((v, float("inf"), 1, 1), (v, float("nan"), 1, 1), (v, 5.0, 10**400, 1), (v, 5.0, "1", 1),
                 ([-1.0, 0.0, 0.0, 0.0, 0.0] * 2, 5.0, 1, 1), (array("d", [0.0] * 5), 5.0, 1, 1),
                 (array("f", [0.0] * 10), 5.0, 1, 1)):
        before = bits(v)
        assert _native.usage_add(*args) is None and bits(v) == before
    u = Usage()
    with pytest.raises((ValueError, OverflowError)):  # what the reference raises
        u.add(float("inf"), 1, 1)
    u.add(7200.0 + 5, 3, 30)
    assert u.estimate(7200.0 + 10) == (3.0, 30.0) and Usage.from_tuple(u.to_tuple()).v == u.v


def test_attributes_the_kernels_read_are_what_python_reads():
    # xget: a plain slot at its offset; an attribute the type lacks, from the instance dict while the type's version
    # tag says nothing was added since (an event's t); anything else the generic way
    import msgspec

    class S(msgspec.Struct, dict=True):
        a: int

    s = S(1)
    s.__dict__["t"] = 5.0
    assert _native.attr(s, "a") == 1
    assert _native.attr(s, "t") == 5.0
    s.__dict__["t"] = 6.0  # the dict is read each time
    assert _native.attr(s, "t") == 6.0
    S.t = property(lambda self: 7.0)  # a data descriptor added to the type wins over the dict, as in Python
    assert s.t == 7.0 and _native.attr(s, "t") == 7.0
    del S.t
    assert s.t == 6.0 and _native.attr(s, "t") == 6.0
    del s.__dict__["t"]
    with pytest.raises(AttributeError):
        _native.attr(s, "t")
    ev = sim.simulate(n_agents=1, days=1, seed=3)[0][0]
    from detector.events import decode_event
    e = decode_event(json.dumps(ev))
    assert _native.attr(e, "t") == e.t and _native.attr(e, "ts") == e.ts


def _sends(n: int, dests, t0: float = 1.77e9) -> list:
    from detector.events import decode_event
    from detector.timestamps import iso_utc

    return [decode_event({"event_id": f"s{i}", "ts": iso_utc(t0 + 60.0 * i), "agent_id": "agent-1",
                          "operator_id": "op-1", "tool": "mail.send", "action": "send", "resource": "crm://a/1",
                          "sensitivity": "internal", "records": 1, "destinations": [dests[i % len(dests)]]})
            for i in range(n)]


@pytest.mark.parametrize("policy", [{}, {"broadcast": {"slack:#general": 40}},
                                    {"internal_domains": ["corp.example"]}, {"internal": ["slack:*"]}])
def test_the_destinations_the_kernel_classifies_are_remembered_as_the_policy_would(policy):
    # a policy without internal domains or patterns: extract fills the policy's memo itself (broadcast or external);
    # any other asks classify; either way the memo and the decisions are the pure policy's
    from detector.engine import Engine
    from detector.policy import Policy

    dests = ["email:a@corp.example", "email:b@x.example", "slack:#general", "slack:#eng", "email:Ünï@Çorp.example"]
    pol = Policy.from_dict(policy)
    ref = Policy.from_dict(policy)
    eng = Engine(policy=pol)
    calls = []
    sys.setprofile(lambda frame, event, arg: calls.append(frame.f_back.f_code.co_name) if event == "call"
                   and frame.f_code is Policy.classify.__code__ else None)
    try:
        eng.process_batch(_sends(40, dests))
    finally:
        sys.setprofile(None)
    # (a plain policy's classify is not called by the kernel: it remembers the answers itself)
    plain = not policy.get("internal_domains") and not policy.get("internal")
    assert (len(calls) == 0) == (plain and native.kernels is not None)
    assert set(pol._cache) == set(dests)
    assert {d: pol._cache[d] for d in dests} == {d: ref._classify(d) for d in dests}


def test_the_kernel_clears_the_policys_memo_where_classify_does():
    from detector.engine import Engine
    from detector.policy import Policy

    pol = Policy()
    eng = Engine(policy=pol)
    eng.process_batch(_sends(2, ["email:a@x.example"]))
    assert list(pol._cache) == ["email:a@x.example"]
    pol._cache.update((f"email:{i}@y.example", ("external", 1)) for i in range(199_999))
    eng.process_batch(_sends(1, ["email:new@x.example"], t0=1.78e9))
    assert len(pol._cache) == 200_001  # 200,000 before this one, not over: kept
    eng.process_batch(_sends(1, ["email:newer@x.example"], t0=1.79e9))
    assert list(pol._cache) == ["email:newer@x.example"]  # over it: cleared, then this one


# ------------------------------------------------------------------------------------------------------------
# RowPool: rows as template.__copy__() makes them, an array nothing else holds made again


def test_the_engine_and_the_extraction_take_their_rows_from_one_pool():
    from detector import engine, features
    assert engine._new_row is features.new_row
    assert type(features.new_row) is _native.RowPool or native.kernels is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 15), st.floats(allow_nan=False)), max_size=80),
       st.integers(1, 6))
def test_a_pool_row_is_the_templates_copy_and_never_one_something_still_holds(ops, size):
    # take (True) a row, write a value into it and keep it, or drop (False) one of the rows kept: every row taken
    # has the template's values and is none of the rows kept; the template never changes
    tmpl = array("d", [1.5, -0.0, 2.0])
    pool = _native.RowPool(tmpl, size)
    kept: list[array] = []
    row = None
    for take, i, v in ops:
        if take:
            row = pool()
            assert type(row) is array and bits(row) == bits(tmpl)
            assert all(row is not k for k in kept)
            row[i % 3] = v
            kept.append(row)
        elif kept:
            kept.pop(i % len(kept))
    del row
    assert bits(tmpl) == bits([1.5, -0.0, 2.0]) and pool.held <= size
    kept.clear()
    # nothing holds a row now: the pool's own arrays come back, slot after slot, as its ring goes round
    first = [pool() for _ in range(size)]
    ids = [id(r) for r in first]
    for r in first:
        r[0] = 7.0
    del first, r
    again = [pool() for _ in range(size)]
    assert [id(r) for r in again] == ids and all(bits(r) == bits(tmpl) for r in again)


def test_a_pool_never_hands_out_a_row_held_by_a_view_or_a_container():
    pool = _native.RowPool(array("d", bytes(16)), 1)
    a = pool()
    a_id = id(a)
    view = memoryview(a)
    del a
    b = pool()  # the one slot's row is held by the view: a new row takes the slot
    assert id(b) != a_id or view.obj is not b
    assert view.obj is not b
    box = [b]
    del b
    c = pool()
    assert c is not box[0]
    c_id = id(c)
    del c
    d = pool()  # nothing holds the slot's row (c) now: it comes back, zeroed
    assert id(d) == c_id and bits(d) == bits([0.0, 0.0])
    assert bits(view.obj) == bits([0.0, 0.0]) and bits(box[0]) == bits([0.0, 0.0])


def test_a_row_pool_refuses_a_template_that_is_not_doubles_a_size_below_one_and_arguments():
    with pytest.raises(TypeError):
        _native.RowPool(array("f", [1.0]), 4)
    with pytest.raises(ValueError):
        _native.RowPool(array("d", [1.0]), 0)
    with pytest.raises(TypeError):
        _native.RowPool(array("d", [1.0]), 4)(1)


@settings(max_examples=60, deadline=None)
@given(st.lists(_event, min_size=1, max_size=25))
def test_extraction_into_rows_a_pool_hands_out_again_equals_the_reference(draws):
    # the kernels take a pool's rows without filling them (they write every value): rows given back with
    # NaNs in them must not show in what extraction makes
    from detector import features as f
    from detector.features import FeatureState, _py_extract
    from detector.policy import BROADCAST, EXTERNAL

    pool = _native.RowPool(array("d", bytes(8 * N_FEATURES)), 3)
    rows = [pool() for _ in range(3)]
    for r in rows:
        r[:] = array("d", [float("nan")] * N_FEATURES)
    del rows, r
    policy = _policy()
    states = [FeatureState(), FeatureState()]
    _native.extract_setup(f.Observation, f._words, f.destination_family, f._is_outsider, EXTERNAL, BROADCAST,
                          f._words_cache, f.Policy, f._STOP_WORDS, pool)
    try:
        for ev in _events(draws):
            a = _native.extract(states[0], ev, policy, None)
            if a is None:  # only counts past 2**53 are left to the reference
                assert max(ev.records, ev.bytes) > 2**53
                _py_extract(states[0], ev, policy, None)
                _py_extract(states[1], ev, policy, None)
                continue
            b = _py_extract(states[1], ev, policy, None)
            assert type(a.x) is array and bits(a.x) == bits(b.x)
            assert _state(states[0]) == _state(states[1])
    finally:  # as detector.features sets it up
        _native.extract_setup(f.Observation, f._words, f.destination_family, f._is_outsider, EXTERNAL, BROADCAST,
                              f._words_cache, f.Policy, f._STOP_WORDS, f.new_row)


def test_the_kernels_read_an_exact_array_directly_and_give_its_export_back():
    # array_fast: an exact array's buffer is taken and given back without the buffer protocol's calls, counted as
    # the protocol counts it: after any kernel (a result or an error) the arrays resize again
    import sys as _sys
    assert _native.array_fast is (_sys.version_info[:2] <= (3, 13))
    loc, scale, floors = array("d", [0.5] * 4), array("d", [1.0] * 4), array("d", [0.25] * 4)
    view = memoryview(scale)  # an export of the protocol's, beside the kernel's
    xl, z = _native.log_deviations([1.0, 0.0, 3.0, 7.0], loc, scale, floors)
    assert bits(xl) == bits(_py_log_deviations([1.0, 0.0, 3.0, 7.0], loc, scale, floors)[0])
    with pytest.raises(ValueError):
        _native.log_deviations([-2.0, 0.0, 3.0, 7.0], loc, scale, floors)
    with pytest.raises(TypeError):
        _native.log_deviations([1.0], array("f", [0.5]), scale, floors)
    with pytest.raises(BufferError):
        scale.append(1.0)  # the view still holds it
    view.release()
    for a in (loc, scale, floors):
        a.append(2.0)
        a.pop()
    empty = array("d")
    assert _native.log_deviations([], empty, empty, empty) == ([], [])
    empty.append(1.0)
    seen, content = array("I", [0] * 4), array("H", [0] * 4)  # the dedupe rings (remember: exact arrays too)
    assert _native.remember(seen, content, 1, "ev-1", 7) == 0 and _native.remember(seen, content, 2, "ev-1", 7) == 2
    with pytest.raises(IndexError):
        _native.remember(seen, content, 9, "ev-2", 7)
    seen.append(0)
    content.append(0)


_any_double = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 5e-324, -5e-324]))
_any_row = st.lists(_any_double, min_size=N_FEATURES, max_size=N_FEATURES)


@settings(max_examples=400, deadline=None)
@given(_any_row, _any_row, _any_row, _any_row, _any_double, st.sampled_from([Z95, 1.0, 0.5]), _any_double, _any_double)
def test_a_learning_step_of_any_doubles_equals_the_reference_bit_for_bit(xl, loc, scale, floors, a2, z95, up, down):
    # learn_avx: four features at a time without branches where the CPU has AVX; NaNs, infinities, signed zeros and
    # subnormals anywhere give what the reference's branches give (the row's length, 25, leaves one to the lines)
    assert _native.learn_avx in (True, False)
    loc_a, scale_a, floors_a = array("d", loc), array("d", scale), array("d", floors)
    loc_n, scale_n = _native.learn(xl, loc_a, scale_a, floors_a, a2, z95, up, down)
    loc_p, scale_p = _py_learn(xl, loc_a, scale_a, floors_a, a2, z95, up, down)
    assert (loc_n.tobytes(), scale_n.tobytes()) == (loc_p.tobytes(), scale_p.tobytes())


def test_the_kernels_empty_lists_come_back_only_when_nothing_holds_them_and_they_are_still_empty():
    # list_new: a ring of 2,048 lists; a slot's list is handed out again only when the ring alone holds it and it is
    # empty, so no two holders ever share one and what one holder put in a list never shows in another's
    lists = [_native.empty_list() for _ in range(2048)]
    assert all(type(x) is list and x == [] for x in lists) and len({id(x) for x in lists}) == 2048
    kept, appended = lists[5], lists[6]
    appended.append(1)
    ids = [id(x) for x in lists]
    del lists
    again = [_native.empty_list() for _ in range(2048)]  # the ring came round: its own lists, but kept and appended
    assert [id(x) for x in again][:5] == ids[:5] and [id(x) for x in again][7:] == ids[7:]
    assert again[5] is not kept and again[6] is not appended and again[5] == again[6] == []
    assert kept == [] and appended == [1]
    again[0].append("x")
    assert all(x == [] for x in again[1:])


def test_the_kernels_floats_come_back_only_when_nothing_holds_them():
    # float_new: a ring of 4,096 floats; a slot's float is written with a new value only when the ring alone holds
    # it, so a float anyone holds never changes
    made = [_native.new_float(float(i) + 0.5) for i in range(4096)]
    assert [f for f in made] == [i + 0.5 for i in range(4096)] and all(type(f) is float for f in made)
    kept = made[7]
    ids = [id(f) for f in made]
    del made
    again = [_native.new_float(-float(i)) for i in range(4096)]
    assert again == [-float(i) for i in range(4096)] and kept == 7.5
    assert [id(f) for f in again][:7] == ids[:7] and again[7] is not kept and [id(f) for f in again][8:] == ids[8:]
    assert _native.new_float(float("nan")) != _native.new_float(float("nan"))  # a NaN as float() makes one
    with pytest.raises(TypeError):
        _native.new_float("1.0")
