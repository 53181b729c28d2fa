"""Hot reload: a worker follows ``model-updates`` and switches models without a restart.

The worker's follower thread (:mod:`streams.topic_follow`) reads the single partition of
``model-updates`` (no consumer group: every worker must see every announcement), from its last
message on.
For each announcement it loads the model directory with
:func:`models.store.load_model` (checksum verified) and checks that the loaded
version and checksum are the announced ones; then it hands the model to
``on_model``. The processor swaps it in at the next batch boundary, so every
batch is scored by exactly one version and each decision names it. On any
failure (missing or corrupt directory, checksum mismatch, other version) it
calls ``on_error(reason, note)`` and the worker keeps the model it has.

A message that is not an announcement (not JSON, too deep, wrong types, too
large, bad UTF-8, ...) is counted in ``rejected`` by reason, handed to
``on_reject(reason)`` (the worker's metric), logged with its partition and
offset, and skipped: the follower goes on with the next message. No message
and no failure to load a model stops it.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable

from models.store import ModelError, load_model
from streams.clients.commands import RecordError, RejectLog
from streams.model_updates import decode_update, updates_topic
from streams.settings import Settings
from streams.topic_follow import Follower, from_last

__all__ = ["ModelFollower", "load_announced"]

log = logging.getLogger(__name__)


def load_announced(note: dict):
    """Load the model an announcement names; raise ``ModelError`` unless it is exactly that model."""
    model = load_model(note["path"])
    if model.version != note["version"]:
        raise ModelError(f"{note['path']} holds version {model.version}, not the announced {note['version']}")
    if model.card.get("checksum") != note["checksum"]:
        raise ModelError(f"model {note['version']} at {note['path']} does not match the announced checksum")
    return model


class ModelFollower(Follower):
    """Follows ``model-updates`` from its last message (on the worker's
    :class:`~streams.topic_follow.TopicFollowers` thread); see the module docstring."""

    def __init__(self, settings: Settings, *, on_model: Callable[[object, dict], None],
                 on_error: Callable[[str, dict], None], current_version: str | None = None,
                 on_reject: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.topic = updates_topic(settings)
        self.on_model = on_model
        self.on_error = on_error
        self.on_reject = on_reject
        self.rejected: Counter = Counter()
        self._reject_log = RejectLog(log)
        self.current_version = current_version

    def position(self, consumer, tps: list) -> None:
        from_last(consumer, tps)  # the last announcement is the current model

    def on_record(self, record) -> None:
        self.handle(record.value, record.partition, record.offset)

    def handle(self, value: bytes, partition: int | None = None, offset: int | None = None) -> None:
        """One message of ``model-updates``; never raises."""
        try:
            note = decode_update(value)
        except RecordError as err:
            self.rejected[err.reason] += 1
            self._reject_log(updates_topic(self.settings), partition, offset, err)
            if self.on_reject is not None:
                self.on_reject(err.reason)
            self.on_error("malformed", {"error": str(err)})
            return
        if note["version"] == self.current_version:
            return
        try:
            model = load_announced(note)
        except Exception as err:  # noqa: BLE001 - ModelError, or a path no filesystem takes: refused all the same
            if not isinstance(err, ModelError):
                err = ModelError(f"{type(err).__name__} loading {note['path'][:200]!r}")
            log.error("model update %s refused, keeping %s: %s", note.get("version"), self.current_version, err)
            self.on_error("refused", {**note, "error": str(err)})
            return
        self.current_version = model.version
        self.on_model(model, note)
