"""Tests of the model registry (models/registry.py) and ``flowbreaker models`` (streams/cli/models.py)."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from detector.features import FEATURE_NAMES
from models.registry import Registry, RegistryError, default_root
from models.store import ModelError, save_model
from streams.cli.main import main

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "examples" / "policy.toml"
AT = datetime(2026, 3, 9, 10, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three small models (different seeds, so different versions) and their history."""
    from detector.events import decode_event
    from detector.policy import load_policy
    from models.simulate import simulate, split_history
    from models.train import fit

    d = tmp_path_factory.mktemp("models")
    events, labels = simulate(n_agents=6, days=4, seed=5, incidents=[])
    history, rest = split_history(events, labels)
    (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in rest))
    evs = [decode_event(e) for e in history]
    policy = load_policy(POLICY)
    dirs = []
    for seed in (0, 1, 2):
        card, arrays = fit(evs, policy, seed=seed, n_estimators=5)
        dirs.append(save_model(d / f"model{seed}", card, arrays))
    versions = [json.loads((p / "model.json").read_text())["version"] for p in dirs]
    assert len(set(versions)) == 3
    return d, dirs, versions


@pytest.fixture
def reg(tmp_path, trained):
    r = Registry(tmp_path / "registry")
    for p in trained[1]:
        r.add(p)
    return r


def tamper_arrays(path: Path) -> None:
    with np.load(path / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["global_loc"] = arrays["global_loc"] + 0.5
    with open(path / "arrays.npz", "wb") as fh:
        np.savez(fh, **arrays)


def test_add_verifies_and_copies_a_model_under_its_version(reg, trained):
    _, dirs, versions = trained
    assert reg.versions() == sorted(versions)
    assert (reg.path(versions[0]) / "arrays.npz").read_bytes() == (dirs[0] / "arrays.npz").read_bytes()
    assert reg.add(dirs[0]) == (versions[0], False)  # again: nothing to do


def test_add_refuses_other_content_under_a_registered_version(reg, trained, tmp_path):
    _, dirs, versions = trained
    other = tmp_path / "same-version"
    card = json.loads((dirs[0] / "model.json").read_text())
    card["counts"]["events"] += 1  # same arrays, same version, another card
    with np.load(dirs[0] / "arrays.npz") as z:
        save_model(other, card, {k: z[k] for k in z.files})
    with pytest.raises(RegistryError, match="already registered with other content"):
        reg.add(other)


def test_promote_makes_a_version_current_and_returns_the_announcement(reg, trained):
    v = trained[2][1]
    note = reg.promote(v, by="alice", at=AT)
    assert reg.current() == v
    assert note == {"version": v, "path": str(reg.path(v).resolve()),
                    "checksum": json.loads((reg.path(v) / "model.json").read_text())["checksum"],
                    "promoted_at": "2026-03-09T10:00:00.000Z", "promoted_by": "alice", "action": "promote",
                    "previous": None}
    assert reg.history() == [note]


def test_promoting_the_current_version_again_records_nothing_new(reg, trained):
    v = trained[2][0]
    first = reg.promote(v, by="alice", at=AT)
    assert reg.promote(v, by="bob") == first and len(reg.history()) == 1


def test_rollback_returns_to_the_previous_promotion_like_a_stack(reg, trained):
    a, b, c = trained[2]
    for v in (a, b, c):
        reg.promote(v, by="alice", at=AT)
    note = reg.rollback(by="bob", at=AT)
    assert (reg.current(), note["action"], note["previous"], note["promoted_by"]) == (b, "rollback", c, "bob")
    assert reg.rollback(by="bob").get("version") == a and reg.current() == a
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback(by="bob")
    assert reg.current() == a


def test_a_tampered_model_is_refused_and_current_does_not_move(reg, trained):
    a, b, _ = trained[2]
    reg.promote(a, by="alice")
    tamper_arrays(reg.path(b))
    with pytest.raises(ModelError, match="failed its checksum"):
        reg.promote(b, by="alice")
    assert reg.current() == a and len(reg.history()) == 1


def test_rollback_to_a_tampered_model_is_refused(reg, trained):
    a, b, _ = trained[2]
    reg.promote(a, by="alice")
    reg.promote(b, by="alice")
    card = json.loads((reg.path(a) / "model.json").read_text())
    card["thresholds"]["critical"] = 0.999
    (reg.path(a) / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="failed its checksum"):
        reg.rollback(by="bob")
    assert reg.current() == b


def test_a_model_filed_under_another_version_is_refused(reg, trained):
    a, b, _ = trained[2]
    shutil.rmtree(reg.path(b))
    shutil.copytree(reg.path(a), reg.path(b))
    with pytest.raises(ModelError, match=f"registry entry {b} holds model {a}"):
        reg.promote(b, by="alice")


def test_unknown_or_unsafe_versions_are_refused(reg):
    with pytest.raises(RegistryError, match="not in the registry"):
        reg.promote("m20990101-00000000", by="alice")
    for bad in ("../etc", "current", "", "a/b"):
        with pytest.raises(RegistryError, match="is not a model version"):
            reg.promote(bad, by="alice")


def test_a_torn_last_history_line_is_ignored(reg, trained):
    reg.promote(trained[2][0], by="alice")
    with open(reg.root / "history.jsonl", "a") as fh:
        fh.write('{"version": "m2')
    assert len(reg.history()) == 1 and reg.stack() == [trained[2][0]]


def test_the_default_registry_comes_from_the_environment():
    assert default_root({"FLOWBREAKER_REGISTRY": "/srv/reg"}) == Path("/srv/reg")
    assert default_root({}) == Path("var/registry")


# ---------------------------------------------------------------- command line
def cli(capsys, *argv):
    rc = main(["models", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_promote_list_show_and_rollback(tmp_path, trained, capsys):
    d, dirs, (a, b, _) = trained
    r = str(tmp_path / "r")
    assert cli(capsys, "--registry", r, "add", str(dirs[0]))[0] == 0
    assert cli(capsys, "--registry", r, "add", str(dirs[1]))[0] == 0
    rc, _, err = cli(capsys, "--registry", r, "promote", a, "--by", "alice")
    assert rc == 0 and f"promote: {a} is current" in err
    assert cli(capsys, "--registry", r, "promote", b, "--by", "alice")[0] == 0
    rc, out, _ = cli(capsys, "--registry", r, "list")
    lines = out.splitlines()
    assert rc == 0 and any(line.startswith(f"* {b}") and "ok, current since" in line for line in lines)
    assert any(line.startswith(f"  {a}") for line in lines)
    rc, out, _ = cli(capsys, "--registry", r, "show", "--json", "--input", str(d / "events.jsonl"),
                     "--policy", str(POLICY))
    shown = json.loads(out)
    assert rc == 0 and shown["version"] == b and shown["current"] and shown["integrity"] == "ok"
    assert len(shown["drift"]["features"]) == len(FEATURE_NAMES) and shown["drift"]["rows"] > 0
    rc, out, _ = cli(capsys, "--registry", r, "show", a)
    assert rc == 0 and f"version      {a}" in out and "history" in out
    rc, _, err = cli(capsys, "--registry", r, "rollback", "--by", "bob")
    assert rc == 0 and f"rollback: {a} is current (was {b})" in err
    assert (Path(r) / "current").read_text().strip() == a


def test_cli_refuses_a_tampered_model_with_one_line_and_exit_2(tmp_path, trained, capsys):
    _, dirs, (a, b, _) = trained
    r = Registry(tmp_path / "r")
    r.add(dirs[0])
    r.add(dirs[1])
    r.promote(a, by="alice")
    tamper_arrays(r.path(b))
    rc, out, err = cli(capsys, "--registry", str(r.root), "promote", b)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("flowbreaker models: model ") and "failed its checksum" in err
    assert r.current() == a
    rc, out, _ = cli(capsys, "--registry", str(r.root), "list")
    assert rc == 0 and "REFUSED: model" in out


@pytest.mark.parametrize("argv, message", [
    (["rollback"], "nothing to roll back to"),
    (["promote", "m20990101-00000000"], "is not in the registry"),
    (["show"], "no current model"),
    (["add", "/nonexistent/model"], "does not exist"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    try:
        rc, _, err = cli(capsys, "--registry", str(tmp_path / "empty"), *argv)
    except SystemExit as exit_:
        rc, err = exit_.code, capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_cli_promote_reports_a_broker_that_does_not_answer_after_switching(tmp_path, trained, capsys):
    _, dirs, (a, _, _) = trained
    r = Registry(tmp_path / "r")
    r.add(dirs[0])
    rc, _, err = cli(capsys, "--registry", str(r.root), "promote", a, "--bootstrap", "127.0.0.1:1", "--timeout", "1")
    assert rc == 1 and r.current() == a  # the broker did not answer: exit 1 (contract section 5)
    assert f"{a} is current in the registry but announcing it" in err and "promote" in err.splitlines()[-1]
    # the advice is a command that works as written: same registry and broker
    assert f"run `flowbreaker models --registry {r.root} promote {a} --bootstrap 127.0.0.1:1` again" in err, err
