"""Trained models (models/train.py, models/store.py): round trip, the numpy forest, refusals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detector.engine import Engine
from detector.events import decode_event
from detector.features import FEATURE_NAMES, N_FEATURES
from detector.policy import load_policy
from models import simulate as sim
from models.store import FORMAT, Forest, ModelError, TrainedModel, load_model, save_model, tool_family
from models.train import fit

REPO = Path(__file__).resolve().parents[2]
POLICY = load_policy(REPO / "examples" / "policy.toml")


@pytest.fixture(scope="module")
def fleet():
    events, labels = sim.simulate(n_agents=8, days=6, seed=11)
    history, rest = sim.split_history(events, labels)
    return [decode_event(e) for e in history], [decode_event(e) for e in rest]


@pytest.fixture(scope="module")
def trained(fleet):
    return fit(fleet[0], POLICY, seed=0, n_estimators=25)


@pytest.fixture()
def model_dir(tmp_path, trained) -> Path:
    card, arrays = trained
    return save_model(tmp_path / "model", card, arrays)


def decisions(model, events):
    return [(d.record, d.freeze) for d in Engine(policy=POLICY, model=model).process_batch(events)]


def one_line_model_error(path) -> str:
    with pytest.raises(ModelError) as info:
        load_model(path)
    text = str(info.value)
    assert text and "\n" not in text
    return text


# --------------------------------------------------------------------------- round trip

def test_a_saved_and_loaded_model_decides_exactly_like_the_model_in_memory(fleet, trained, model_dir):
    card, arrays = trained
    in_memory = TrainedModel(card, arrays)
    loaded = load_model(model_dir)
    assert loaded.version == in_memory.version
    assert set(loaded.a) == set(arrays)
    for k in arrays:
        assert np.array_equal(loaded.a[k], arrays[k])
    got, want = decisions(loaded, fleet[1]), decisions(in_memory, fleet[1])
    assert got == want
    assert {r["model_version"] for r, _ in got} == {card["version"]}


def test_training_is_reproducible_for_the_same_input_and_seed(fleet, trained):
    card, arrays = fit(fleet[0], POLICY, seed=0, n_estimators=25)
    assert card == trained[0]
    assert set(arrays) == set(trained[1])
    assert all(np.array_equal(arrays[k], trained[1][k]) for k in arrays)


def test_another_seed_gives_another_forest_and_version(fleet, trained):
    card, arrays = fit(fleet[0], POLICY, seed=1, n_estimators=25)
    assert card["version"] != trained[0]["version"]


def test_the_model_card_describes_the_model(trained):
    card, _ = trained
    assert card["format"] == FORMAT
    assert card["feature_schema"]["names"] == list(FEATURE_NAMES)
    assert card["counts"]["events"] > 0 and card["counts"]["agents"] == len(card["agents"])
    assert card["training_window"]["from"] < card["training_window"]["until"]
    assert {"low", "medium", "high", "critical", "risk_budget"} <= set(card["thresholds"])
    assert "max_deviation" in card["calibration"]


def test_the_card_on_disk_carries_a_checksum(model_dir):
    card = json.loads((model_dir / "model.json").read_text())
    assert card["checksum"].startswith("sha256:")


def test_training_on_nothing_is_refused():
    with pytest.raises(ValueError, match="no valid events"):
        fit([], POLICY)


# --------------------------------------------------------------------------- priors and scoring

def test_a_known_agent_starts_from_its_own_profile_and_a_new_one_from_its_peers(trained):
    card, arrays = trained
    m = TrainedModel(card, arrays)
    agent = card["agents"][0]
    own = m.prior_for(agent, "whoever", "whatever")
    assert own.source == "agent"
    assert own.loc == tuple(map(float, arrays["agent_loc"][0]))
    peer = m.prior_for("brand-new-agent", card["operators"][0], "x.y")
    assert peer.source.startswith("peers:operator")
    stranger = m.prior_for("brand-new-agent", "unknown-operator", "unknown_tool.call")
    assert stranger.source == "global"
    for p in (own, peer, stranger):
        assert len(p.loc) == len(p.scale) == N_FEATURES
        assert all(np.isfinite(p.loc)) and all(s >= 0 for s in p.scale)


def test_combination_pvalues_are_probabilities_one_per_row(trained):
    m = TrainedModel(*trained)
    z = np.random.default_rng(0).normal(size=(50, N_FEATURES)) * 3
    p = m.combination_pvalues(z)
    assert p.shape == (50,)
    assert np.all((p > 0) & (p <= 1))
    assert m.combination_pvalues(np.zeros((0, N_FEATURES))).shape == (0,)


def test_an_extreme_combination_is_rarer_than_an_ordinary_one(trained):
    m = TrainedModel(*trained)
    ordinary = m.combination_pvalues(np.zeros((1, N_FEATURES)))[0]
    extreme = m.combination_pvalues(np.full((1, N_FEATURES), 10.0))[0]
    assert extreme < ordinary


@pytest.mark.parametrize("tool,family", [("hr_db.query", "hr_db"), ("slack/post", "slack"), ("git:push", "git"),
                                         ("plain", "plain")])
def test_tool_family_is_the_part_before_the_first_separator(tool, family):
    assert tool_family(tool) == family


# --------------------------------------------------------------------------- the numpy forest

@pytest.mark.parametrize("n,d,max_samples,seed", [(500, N_FEATURES, 256, 0), (300, 5, 64, 1), (120, 3, "auto", 2),
                                                  (2000, 8, 512, 3)])
def test_the_exported_forest_scores_exactly_like_sklearn(n, d, max_samples, seed):
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * 2.5
    iforest = IsolationForest(n_estimators=40, max_samples=max_samples, random_state=seed).fit(X)
    forest = Forest.from_sklearn(iforest)
    Y = np.clip(np.vstack([X, rng.normal(size=(300, d)) * 4, rng.uniform(-10, 10, size=(100, d))]), -10, 10)
    np.testing.assert_allclose(forest.score_samples(Y), -iforest.score_samples(Y), rtol=0, atol=1e-9)


def test_forest_scores_of_an_empty_batch_are_empty(trained):
    m = TrainedModel(*trained)
    assert m.forest.score_samples(np.zeros((0, N_FEATURES))).shape == (0,)


# --------------------------------------------------------------------------- refusals

def test_a_missing_directory_is_refused(tmp_path):
    assert "does not exist" in one_line_model_error(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["model.json", "arrays.npz"])
def test_a_directory_missing_a_file_is_refused_naming_it(model_dir, name):
    (model_dir / name).unlink()
    text = one_line_model_error(model_dir)
    assert "incomplete" in text and name in text


def test_an_empty_directory_is_refused(tmp_path):
    assert "model.json is missing" in one_line_model_error(tmp_path)


def test_a_card_that_is_not_json_is_refused(model_dir):
    (model_dir / "model.json").write_text("{not json")
    assert "unreadable" in one_line_model_error(model_dir)


@pytest.mark.parametrize("card", ["[1, 2]", '{"format": "someone-else/3"}', "{}"])
def test_a_card_of_another_format_is_refused(model_dir, card):
    (model_dir / "model.json").write_text(card)
    assert f"not a {FORMAT} model card" in one_line_model_error(model_dir)


def test_a_tampered_array_is_refused(model_dir, trained):
    _, arrays = trained
    changed = dict(arrays)
    changed["global_loc"] = arrays["global_loc"] + 1.0
    with open(model_dir / "arrays.npz", "wb") as fh:
        np.savez(fh, **changed)
    assert "checksum" in one_line_model_error(model_dir)


def test_a_flipped_byte_in_the_arrays_file_is_refused(model_dir):
    raw = bytearray((model_dir / "arrays.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (model_dir / "arrays.npz").write_bytes(bytes(raw))
    assert "checksum" in one_line_model_error(model_dir)


def test_a_tampered_card_is_refused(model_dir):
    card = json.loads((model_dir / "model.json").read_text())
    card["thresholds"]["critical"] = 0.99
    (model_dir / "model.json").write_text(json.dumps(card))
    assert "checksum" in one_line_model_error(model_dir)


def test_a_model_for_another_feature_schema_is_refused(tmp_path, trained):
    card, arrays = trained
    other = {**card, "feature_schema": {**card["feature_schema"], "names": list(FEATURE_NAMES[:-1])}}
    path = save_model(tmp_path / "old", other, arrays)
    assert "another feature schema" in one_line_model_error(path)


def test_a_signed_but_unreadable_arrays_file_is_refused(tmp_path, trained):
    card, arrays = trained
    path = save_model(tmp_path / "m", card, arrays)
    (path / "arrays.npz").write_bytes(b"this is not a zip file")
    on_disk = json.loads((path / "model.json").read_text())
    from models import store

    on_disk["checksum"] = store._checksum(b"this is not a zip file", on_disk)
    (path / "model.json").write_text(json.dumps(on_disk))
    assert "unreadable" in one_line_model_error(path)


def test_a_model_missing_a_required_array_is_refused(tmp_path, trained):
    card, arrays = trained
    path = save_model(tmp_path / "m", card, {k: v for k, v in arrays.items() if k != "family_scale"})
    text = one_line_model_error(path)
    assert "lack" in text and "family_scale" in text


def test_arrays_that_do_not_match_the_card_are_refused(tmp_path, trained):
    card, arrays = trained
    path = save_model(tmp_path / "m", card, {**arrays, "agent_loc": arrays["agent_loc"][:-1]})
    assert "do not match" in one_line_model_error(path)


def test_a_non_finite_profile_is_refused(tmp_path, trained):
    card, arrays = trained
    bad = arrays["agent_loc"].copy()
    bad[0, 0] = np.nan
    path = save_model(tmp_path / "m", card, {**arrays, "agent_loc": bad})
    assert "do not match" in one_line_model_error(path)


def test_an_inconsistent_calibration_is_refused(tmp_path, trained):
    card, arrays = trained
    cal = {**card["calibration"], "max_deviation": {"thresholds": [2.0, 1.0], "tails": [1.0, 0.5], "beta": 1.0}}
    path = save_model(tmp_path / "m", {**card, "calibration": cal}, arrays)
    assert "inconsistent" in one_line_model_error(path)


class _Booby:
    """Unpickling this object would write a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",))


def test_loading_never_unpickles_a_pickled_object_array(tmp_path, trained):
    card, arrays = trained
    marker = tmp_path / "UNPICKLED"
    evil = np.empty(1, dtype=object)
    evil[0] = _Booby(marker)
    path = save_model(tmp_path / "m", card, {**arrays, "agent_n": evil})  # a correctly signed card
    text = one_line_model_error(path)
    assert "unreadable" in text
    assert not marker.exists()
    with np.load(path / "arrays.npz", allow_pickle=True) as z:  # the booby trap is armed: pickle would fire
        z["agent_n"]
    assert marker.exists()


def test_an_extra_pickled_array_is_refused_too(tmp_path, trained):
    card, arrays = trained
    marker = tmp_path / "UNPICKLED"
    evil = np.empty(1, dtype=object)
    evil[0] = _Booby(marker)
    path = save_model(tmp_path / "m", card, {**arrays, "extra": evil})
    one_line_model_error(path)
    assert not marker.exists()
