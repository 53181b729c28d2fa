"""The model follower: what a worker does with each announcement on ``model-updates``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector.events import decode_event
from detector.policy import Policy
from models import simulate as sim
from models.store import save_model
from models.train import fit
from streams.worker.model_follow import ModelFollower
from streams.settings import Settings


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    events = [decode_event(e) for e in sim.simulate(n_agents=5, days=2, seed=7, incidents=[])[0]]
    card, arrays = fit(events, Policy(), seed=0, n_estimators=5)
    out = tmp_path_factory.mktemp("model") / card["version"]
    save_model(out, card, arrays)
    return out


def note_for(path, **over):
    card = json.loads((path / "model.json").read_text())
    note = {"version": card["version"], "path": str(path), "checksum": card["checksum"],
            "promoted_at": "2026-03-06T10:00:00.000Z", "promoted_by": "alice"}
    note.update(over)
    return json.dumps(note).encode()


class Recorder:
    def __init__(self):
        self.models, self.errors = [], []

    def follower(self, current=None):
        return ModelFollower(Settings.from_env({}), on_model=lambda m, n: self.models.append(m.version),
                             on_error=lambda reason, n: self.errors.append(reason), current_version=current)


def test_an_announced_model_is_loaded_and_handed_over(model_dir):
    rec = Recorder()
    rec.follower().handle(note_for(model_dir))
    assert rec.models == [model_dir.name] and rec.errors == []


def test_the_model_already_in_use_is_not_loaded_again(model_dir):
    rec = Recorder()
    rec.follower(current=model_dir.name).handle(note_for(model_dir))
    assert rec.models == [] and rec.errors == []


def test_a_tampered_model_is_refused_and_the_old_one_kept(model_dir, tmp_path):
    bad = tmp_path / model_dir.name
    bad.mkdir()
    for f in model_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    with np.load(bad / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["agent_loc"] = arrays["agent_loc"] + 1.0
    np.savez(bad / "arrays.npz", **arrays)
    rec = Recorder()
    follower = rec.follower(current="m-old")
    follower.handle(note_for(bad))
    assert rec.models == [] and rec.errors == ["refused"] and follower.current_version == "m-old"


def test_an_announcement_whose_checksum_differs_from_the_directory_is_refused(model_dir):
    rec = Recorder()
    rec.follower().handle(note_for(model_dir, checksum="sha256:" + "0" * 64))
    assert rec.models == [] and rec.errors == ["refused"]


def test_a_malformed_announcement_is_counted_not_fatal():
    rec = Recorder()
    rec.follower().handle(b"{not json")
    assert rec.errors == ["malformed"]


@pytest.mark.parametrize("poison", [b'{"a":' * 1000, b"\xff\xfe", b'{"version": 1, "path": [], "checksum": null}',
                                    b'{"version": "' + b"v" * 100_000 + b'"}', b"", None, b"[]",
                                    b'{"version": "m", "path": "/x\\u0000y", "checksum": "c", "promoted_at": "t", '
                                    b'"promoted_by": "' + b"p" * 5000 + b'"}'])
def test_no_message_makes_the_follower_raise_and_each_is_counted_with_a_reason(poison):
    from streams.clients.commands import REASONS

    rec = Recorder()
    f = rec.follower()
    reasons = []
    f.on_reject = reasons.append
    f.handle(poison, 0, 7)
    assert rec.models == [] and rec.errors == ["malformed"]
    assert len(reasons) == 1 and reasons[0] in REASONS and sum(f.rejected.values()) == 1


def test_a_path_no_filesystem_takes_is_refused_not_raised(model_dir):
    rec = Recorder()
    for bad_path in (str(model_dir) + "\x00x", "/" + "x" * 4000):
        note = json.loads(note_for(model_dir))
        rec.follower().handle(json.dumps(dict(note, path=bad_path)).encode())
    assert rec.models == [] and rec.errors == ["refused", "refused"]
