"""The model registry: a directory of model directories by version, a ``current`` pointer and a history.

Layout (``$FLOWBREAKER_REGISTRY``, default ``./var/registry``)::

    REGISTRY/
      m20260305-cc7a467c/       one model directory per version (model.json + arrays.npz),
      m20260312-0b1d2e3f/       named after the version in its card
      current                   the version workers should run, one line
      history.jsonl             one JSON object per promote or rollback, oldest first
      .lock                     serialises writers (flock)

``add`` copies a trained model directory in (after verifying it), ``promote``
makes a registered version current, ``rollback`` returns to the version that was
current before the last promotion still in effect (promotions form a stack: two
rollbacks after promoting A, B, C return to A). Every promote and rollback
verifies the model first with :func:`models.store.load_model` (checksum, schema,
shapes): a corrupt or tampered directory is refused with :class:`ModelError` and
nothing changes. Each returns the announcement the workers receive on
``model-updates``: ``{"version", "path", "checksum", "promoted_at",
"promoted_by", "action", "previous"}``.

Writes are crash-safe in this order: history line appended and flushed, then
``current`` replaced atomically. A crash between the two leaves ``current`` on
the old version; promoting again repairs it (the history then shows the
promotion twice, which is harmless).

>>> import tempfile
>>> reg = Registry(tempfile.mkdtemp())
>>> reg.current(), reg.versions()
(None, [])
>>> reg.rollback(by="me")
Traceback (most recent call last):
...
models.registry.RegistryError: nothing to roll back to: fewer than two promotions in effect
"""

from __future__ import annotations

import json
import os
import re
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from detector.timestamps import iso_utc
from models.store import ModelError, load_model

__all__ = ["Registry", "RegistryError", "default_root", "ENV"]

ENV = "FLOWBREAKER_REGISTRY"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FILES = ("model.json", "arrays.npz")


class RegistryError(ValueError):
    """A registry operation that cannot be done; the text says why, in one line."""


def default_root(environ=None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(ENV) or "var/registry")


_iso = iso_utc  # detector/timestamps.py


class Registry:
    """A registry directory. Reading needs nothing; writing creates the directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ----------------------------------------------------------------- reading
    def check_version(self, version: str) -> str:
        if not isinstance(version, str) or not _VERSION.match(version) or version in ("current", "history.jsonl"):
            raise RegistryError(f"{version!r} is not a model version")
        return version

    def path(self, version: str) -> Path:
        return self.root / self.check_version(version)

    def versions(self) -> list[str]:
        """Registered versions, sorted by name (versions start with the training date)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _VERSION.match(p.name) and (p / "model.json").exists())

    def current(self) -> str | None:
        try:
            text = (self.root / "current").read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def history(self) -> list[dict]:
        try:
            lines = (self.root / "history.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                # a torn last line (crash mid-append) is ignored; anything else is damage
                if no == len(lines):
                    continue
                raise RegistryError(f"{self.root / 'history.jsonl'}:{no} is not JSON") from None
        return out

    def stack(self) -> list[str]:
        """Promotions in effect, oldest first: promote pushes, rollback pops."""
        st: list[str] = []
        for h in self.history():
            if h.get("action") == "rollback":
                if st:
                    st.pop()
            else:
                st.append(h["version"])
        return st

    def card(self, version: str) -> dict:
        """The model card of a registered version, unverified (for listings)."""
        p = self.path(version) / "model.json"
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            raise RegistryError(f"version {version} is not in the registry {self.root}") from None
        except (OSError, ValueError) as err:
            raise RegistryError(f"model card {p} is unreadable: {err}") from None

    def verify(self, version: str):
        """Load and verify a registered version; returns the model. Raises :class:`ModelError`
        (corrupt, tampered with) or :class:`RegistryError` (unknown, or not the version it claims)."""
        path = self.path(version)
        if not path.is_dir():
            raise RegistryError(f"version {version} is not in the registry {self.root}")
        model = load_model(path)
        if model.version != version:
            raise ModelError(f"registry entry {version} holds model {model.version}: refused")
        return model

    # ----------------------------------------------------------------- writing
    @contextmanager
    def _locked(self):
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def add(self, model_dir: str | Path) -> tuple[str, bool]:
        """Verify ``model_dir`` and copy it in under its version; ``(version, added)``.
        Adding the same model again is a no-op; another model under a registered version is refused."""
        model = load_model(model_dir)
        version = self.check_version(model.version)
        with self._locked():
            dest = self.root / version
            if dest.exists():
                try:
                    same = json.loads((dest / "model.json").read_text()).get("checksum") == model.card["checksum"]
                except (OSError, ValueError):
                    same = False
                if same:
                    return version, False
                raise RegistryError(f"version {version} is already registered with other content")
            tmp = self.root / f".{version}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for name in _FILES:
                shutil.copy2(Path(model_dir) / name, tmp / name)
            tmp.rename(dest)
        # the copy is what workers will load: verify it, not only the source
        self.verify(version)
        return version, True

    def _switch(self, version: str, *, action: str, by: str, at: datetime | None, previous: str | None) -> dict:
        model = self.verify(version)
        at = at or datetime.now(timezone.utc)
        note = {"version": version, "path": str(self.path(version).resolve()), "checksum": model.card["checksum"],
                "promoted_at": _iso(at), "promoted_by": by, "action": action, "previous": previous}
        with open(self.root / "history.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(note, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp = self.root / "current.tmp"
        tmp.write_text(version + "\n")
        tmp.replace(self.root / "current")
        return note

    def promote(self, version: str, *, by: str, at: datetime | None = None) -> dict:
        """Make ``version`` current (verified first). Promoting the current version again records
        nothing new and returns its announcement again (to re-announce it)."""
        self.check_version(version)
        with self._locked():
            cur = self.current()
            if cur == version and self.stack()[-1:] == [version]:
                model = self.verify(version)
                last = next(h for h in reversed(self.history()) if h.get("version") == version)
                return {**last, "checksum": model.card["checksum"]}
            return self._switch(version, action="promote", by=by, at=at, previous=cur)

    def rollback(self, *, by: str, at: datetime | None = None) -> dict:
        """Return to the version current before the last promotion in effect (verified first)."""
        with self._locked():
            st = self.stack()
            if len(st) < 2:
                raise RegistryError("nothing to roll back to: fewer than two promotions in effect")
            return self._switch(st[-2], action="rollback", by=by, at=at, previous=self.current())
