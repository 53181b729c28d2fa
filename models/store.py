"""Model directories: numeric arrays plus a JSON model card, loaded without unpickling.

A model directory holds ``model.json`` (the card: version, training window,
counts, feature schema, thresholds, calibration, checksum) and ``arrays.npz``
(numbers only, read with ``allow_pickle=False``). The card's ``checksum`` is the
SHA-256 of the arrays file followed by the canonical card without its checksum,
so a changed array or a changed card is refused.

The trained model implements :class:`detector.model.Model`: per-agent profiles,
peer-group priors (same operator, same tool family), calibration of the largest
deviation, and an isolation forest over deviation vectors exported to arrays and
evaluated in batches (compiled in ``detector/_score.c`` when it is built, numpy otherwise).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from detector.baseline import Prior
from detector.features import FEATURE_NAMES, N_FEATURES, SKETCH_BYTES as _FEATURE_SKETCH_BYTES
from detector import scoring
from detector.scoring import Calibration, FeatureTails
from detector.habits import SLOTS as HABIT_SLOTS, WIDTH as HABIT_WIDTH

__all__ = ["ModelError", "TrainedModel", "Forest", "load_model", "save_model", "load_engine", "tool_family", "FORMAT"]

FORMAT = "flowbreaker-model/1"
#: bytes of each agent's lifetime Bloom filters in ``agent_sketches`` (detector.features.SKETCH_BYTES)
SKETCH_BYTES = _FEATURE_SKETCH_BYTES
_Z_CLIP = 10.0


class ModelError(ValueError):
    """A model directory that cannot be used; the text says why, in one line."""


def tool_family(tool: str) -> str:
    """``hr_db.query`` -> ``hr_db``: agents using the same family of tools are peers."""
    for sep in (".", "/", ":"):
        if sep in tool:
            return tool.split(sep, 1)[0]
    return tool


def _c(n: np.ndarray | float) -> np.ndarray | float:
    """Average path length of an unsuccessful BST search over n points (Liu et al.)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.where(n > 2, 2.0 * (np.log(np.maximum(n - 1.0, 1.0)) + 0.5772156649) - 2.0 * (n - 1.0) / np.maximum(n, 1.0), 0.0)
    return np.where(n == 2, 1.0, out)


def _frozen(a: np.ndarray, dtype) -> np.ndarray:
    out = np.array(a, dtype=dtype, order="C", copy=True)
    out.flags.writeable = False
    return out


class Forest:
    """An isolation forest as flat arrays, evaluated for a whole batch at once with numpy.

    Each tree is laid out as a complete binary tree of its maximum depth (node
    ``i`` has children ``2i+1`` and ``2i+2``); a leaf above the bottom sends
    every sample left (threshold +inf) down to a bottom slot that holds the leaf's
    path length, ``depth + c(n_samples)``. Evaluation is then ``depth`` rounds
    of gather-compare-step with no branches: in numpy (:meth:`_py_means`, the reference) or compiled
    (``detector._score.Forest``: the padding compacted away, several rows walking each tree side by
    side, and the path lengths averaged in numpy's own summation order, so the scores are equal to the
    last bit).
    """

    def __init__(self, feature: np.ndarray, threshold: np.ndarray, path: np.ndarray, max_samples: int) -> None:
        # own read-only copies: the compiled copy below must stay what these say
        self.feature = _frozen(feature, np.int32)      # (trees, inner nodes)
        self.threshold = _frozen(threshold, np.float64)  # (trees, inner nodes)
        self.path = _frozen(path, np.float64)          # (trees, bottom slots)
        if self.feature.shape != self.threshold.shape or self.path.shape[0] != self.feature.shape[0] \
                or self.path.shape[1] != self.feature.shape[1] + 1:
            raise ValueError("forest arrays have inconsistent shapes")
        self.depth = int(np.log2(self.path.shape[1]))
        self.max_samples = int(max_samples)
        self._norm = float(_c(float(self.max_samples)))
        # the trees compacted for the compiled walk (detector._score.Forest), or None: the reference runs
        self._compiled = None
        if scoring._score is not None:
            try:
                self._compiled = scoring._score.Forest(self.feature, self.threshold, self.path, self.depth)
            except ValueError:  # a layout it does not take (negative features, not complete trees)
                pass

    @classmethod
    def from_sklearn(cls, iforest) -> "Forest":
        depth = max(est.tree_.max_depth for est in iforest.estimators_)
        depth = max(depth, 1)
        T = len(iforest.estimators_)
        inner, bottom = 2 ** depth - 1, 2 ** depth
        feat = np.zeros((T, inner), dtype=np.int32)
        thr = np.full((T, inner), np.inf)
        path = np.zeros((T, bottom))
        for t, (est, fidx) in enumerate(zip(iforest.estimators_, iforest.estimators_features_)):
            tr = est.tree_
            stack = [(0, 0, 0)]  # (sklearn node, complete-tree slot, depth)
            while stack:
                node, slot, d = stack.pop()
                left = tr.children_left[node]
                if left >= 0:
                    feat[t, slot] = fidx[tr.feature[node]]
                    thr[t, slot] = tr.threshold[node]
                    stack.append((left, 2 * slot + 1, d + 1))
                    stack.append((tr.children_right[node], 2 * slot + 2, d + 1))
                    continue
                h = d + float(_c(float(tr.n_node_samples[node])))
                # every bottom slot under this leaf's slot gets its path length
                lo, hi = slot, slot
                for _ in range(depth - d):
                    lo, hi = 2 * lo + 1, 2 * hi + 2
                path[t, lo - inner:hi - inner + 1] = h
        return cls(feat, thr, path, iforest.max_samples_)

    def score_samples(self, z: np.ndarray) -> np.ndarray:
        """Anomaly score in (0, 1] per row (the original paper's ``s``; higher is more anomalous)."""
        z = np.asarray(z, dtype=np.float64)
        if self._compiled is not None and scoring._score is not None and z.ndim == 2:
            h = np.empty(z.shape[0])  # the walk and the mean compiled; tests/unit/test_score_kernel.py
            self._compiled.means(np.ascontiguousarray(z), _Z_CLIP, h)
        else:
            h = self._py_means(z)
        return np.power(2.0, -h / self._norm)

    def _py_means(self, z: np.ndarray) -> np.ndarray:
        """Each row's mean path length over the trees: the reference of ``detector._score.Forest.means``."""
        # scikit-learn compares float32 inputs with its thresholds: do the same
        z = np.clip(z, -_Z_CLIP, _Z_CLIP).astype(np.float32).astype(np.float64)
        return self.path.ravel()[self._py_leaves(z)].mean(axis=1)

    def _py_leaves(self, z: np.ndarray) -> np.ndarray:
        """The bottom slot (an index into ``path.ravel()``) each row reaches in each tree."""
        n = z.shape[0]
        T, inner = self.feature.shape
        feat = self.feature.ravel()
        thr = self.threshold.ravel()
        off = (np.arange(T, dtype=np.int64) * inner)[None, :]
        rows = np.arange(n, dtype=np.int64)[:, None] * z.shape[1]
        zf = z.ravel()
        node = np.zeros((n, T), dtype=np.int64)
        for _ in range(self.depth):
            k = node + off
            right = zf[rows + feat[k]] > thr[k]
            node = 2 * node + 1 + right
        return node - inner + (np.arange(T, dtype=np.int64) * (inner + 1))[None, :]


def _habits(rows: np.ndarray | None, i: int) -> bytes | None:
    """Row ``i`` of an agent_habits / operator_habits array as :class:`detector.habits.Habits` bytes."""
    if rows is None:
        return None
    row = rows[i].reshape(-1, HABIT_WIDTH)
    return row[row[:, 1] > 0.0].astype(np.float64).tobytes()


class TrainedModel:
    """What ``flowbreaker train`` produced, ready for :class:`detector.engine.Engine`."""

    def __init__(self, card: dict, arrays: dict[str, np.ndarray]) -> None:
        self.card = card
        self.version: str = card["version"]
        self.stat_calibration = Calibration.from_dict(card["calibration"]["max_deviation"])
        ev_cal = card["calibration"].get("evidence")
        self.evidence_calibration = Calibration.from_dict(ev_cal) if ev_cal else None
        self.feature_tails = FeatureTails(arrays["tail_tables"].tolist(), arrays["tail_slopes"].tolist())
        comb = card["calibration"].get("combination")
        self.comb_calibration = Calibration.from_dict(comb) if comb else None
        self.agent_index = {a: i for i, a in enumerate(card["agents"])}
        self.operator_index = {a: i for i, a in enumerate(card["operators"])}
        self.family_index = {a: i for i, a in enumerate(card["tool_families"])}
        self.a = arrays
        self.forest = Forest(arrays["forest_feature"], arrays["forest_threshold"], arrays["forest_path"],
                             card["forest"]["max_samples"]) if card.get("forest") else None
        self._prior_cache: dict[tuple[str, str, str], Prior] = {}
        self._global = Prior(tuple(map(float, arrays["global_loc"])), tuple(map(float, arrays["global_scale"])),
                             float(card["priors"]["global_weight"]), None, "global")

    def _sketches(self, i: int, name: str = "agent_sketches") -> tuple[bytes, ...] | None:
        sk = self.a.get(name)
        if sk is None:
            return None
        row = sk[i].tobytes()
        parts, at = [], 0
        for n in SKETCH_BYTES:
            parts.append(row[at:at + n])
            at += n
        return tuple(parts)

    def _hours(self, i: int) -> tuple[float, ...] | None:
        h = self.a["agent_hours"][i]
        return tuple(h.tolist()) if h[0] >= 0 else None

    def prior_for(self, agent_id: str, operator_id: str, tool: str) -> Prior:
        i = self.agent_index.get(agent_id)
        if i is not None:
            # (tolist: the same floats as map(float, row), at a quarter of the cost: a new agent of a replay)
            return Prior(tuple(self.a["agent_loc"][i].tolist()), tuple(self.a["agent_scale"][i].tolist()),
                         float(min(self.a["agent_n"][i], self.card["priors"]["max_agent_weight"])),
                         self._hours(i), "agent", self._sketches(i), _habits(self.a.get("agent_habits"), i))
        key = ("", operator_id, tool_family(tool))
        hit = self._prior_cache.get(key)
        if hit is not None:
            return hit
        locs, scales = [], []
        o = self.operator_index.get(operator_id)
        if o is not None:
            locs.append(self.a["operator_loc"][o])
            scales.append(self.a["operator_scale"][o])
        f = self.family_index.get(key[2])
        if f is not None:
            locs.append(self.a["family_loc"][f])
            scales.append(self.a["family_scale"][f])
        if not locs:
            prior = self._global
        else:
            loc = np.mean(locs, axis=0)
            scale = np.max(scales, axis=0)
            prior = Prior(tuple(map(float, loc)), tuple(map(float, scale)),
                          float(self.card["priors"]["peer_weight"]), None,
                          "peers:" + ("operator" if o is not None else "") + ("+tools" if f is not None else ""),
                          self._sketches(o, "operator_sketches") if o is not None else None,
                          _habits(self.a.get("operator_habits"), o) if o is not None else None)
        if len(self._prior_cache) < 100_000:
            self._prior_cache[key] = prior
        return prior

    def combination_pvalues(self, z: np.ndarray) -> np.ndarray:
        if self.forest is None or self.comb_calibration is None or len(z) == 0:
            return np.ones(len(z))
        out = np.empty(len(z))
        self.comb_calibration.pvalues_into(self.forest.score_samples(z), out)
        return out


# ---------------------------------------------------------------- files
def _canonical(card: dict) -> bytes:
    c = {k: v for k, v in card.items() if k != "checksum"}
    return json.dumps(c, sort_keys=True, separators=(",", ":")).encode()


def _checksum(arrays_bytes: bytes, card: dict) -> str:
    return "sha256:" + hashlib.sha256(arrays_bytes + _canonical(card)).hexdigest()


def save_model(out: str | Path, card: dict, arrays: dict[str, np.ndarray]) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    npz = out / "arrays.npz"
    tmp = out / "arrays.npz.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(npz)
    card = dict(card)
    card["checksum"] = _checksum(npz.read_bytes(), card)
    (out / "model.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return out


_REQUIRED = ("agent_loc", "agent_scale", "agent_n", "agent_hours", "operator_loc", "operator_scale", "family_loc",
             "family_scale", "global_loc", "global_scale", "tail_tables", "tail_slopes")


def load_model(path: str | Path) -> TrainedModel:
    """Load and verify a model directory. Raises :class:`ModelError` (one line) when it is
    missing, corrupt, tampered with (checksum mismatch) or of another feature schema."""
    path = Path(path)
    card_path, npz = path / "model.json", path / "arrays.npz"
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    try:
        card = json.loads(card_path.read_text())
        raw = npz.read_bytes()
    except FileNotFoundError as err:
        raise ModelError(f"model directory {path} is incomplete: {Path(err.filename).name} is missing") from None
    except (OSError, ValueError) as err:
        raise ModelError(f"model card {card_path} is unreadable: {err}") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ModelError(f"{card_path} is not a {FORMAT} model card")
    if card.get("checksum") != _checksum(raw, card):
        raise ModelError(f"model {path} failed its checksum: the arrays or the card were changed after training")
    if list(card.get("feature_schema", {}).get("names", [])) != list(FEATURE_NAMES):
        raise ModelError(f"model {path} was trained for another feature schema; retrain it")
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as err:
        raise ModelError(f"model arrays {npz} are unreadable: {err}") from None
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise ModelError(f"model arrays {npz} lack {', '.join(missing)}")
    A = len(card.get("agents", []))
    sk = arrays.get("agent_sketches")
    if sk is not None and (sk.dtype != np.uint8 or sk.shape != (A, sum(SKETCH_BYTES))):
        raise ModelError(f"model arrays {npz}: agent_sketches do not match the card")
    O = len(card.get("operators", []))
    for name, shape, dtype in (("operator_sketches", (O, sum(SKETCH_BYTES)), np.uint8),
                               ("agent_habits", (A, HABIT_WIDTH * HABIT_SLOTS), np.float64),
                               ("operator_habits", (O, HABIT_WIDTH * HABIT_SLOTS), np.float64)):
        v = arrays.get(name)
        if v is not None and (v.dtype != dtype or v.shape != shape):
            raise ModelError(f"model arrays {npz}: {name} do not match the card")
    if arrays["agent_loc"].shape != (A, N_FEATURES) or not np.all(np.isfinite(arrays["agent_loc"])):
        raise ModelError(f"model arrays {npz} do not match the card (agents x features)")
    try:
        return TrainedModel(card, arrays)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise ModelError(f"model {path} is inconsistent: {err}") from None




def load_engine(model_dir: str | None, policy_path: str | None, **kw):
    """The engine both shells build from the same files (``flowbreaker worker`` and ``flowbreaker replay``:
    one engine, two shells): the policy file (or the defaults), and the model directory (or online baselines
    only). Raises :class:`detector.policy.PolicyError` or :class:`ModelError` (one line each) for bad files;
    ``kw`` goes to :class:`detector.engine.Engine` (approvals, manifests)."""
    from detector.engine import Engine
    from detector.policy import load_policy

    policy = load_policy(policy_path)
    model = load_model(model_dir) if model_dir is not None else None
    return Engine(policy=policy, model=model, **kw)
