"""Where the actuator enacts a command: the :class:`Sink` protocol, and :class:`Stopped`, which a sink
raises when the actuator stops before the command was taken.

Its own module, below both: :mod:`streams.clients.actuator` (the webhook and log sinks, the loop
that commits a command once every sink took it) and :mod:`streams.clients.acks` (the acknowledging
sink the actuator runs last) import it, and neither imports the other for it.
"""

from __future__ import annotations

import threading
from typing import Protocol

__all__ = ["Sink", "Stopped"]


class Stopped(Exception):
    """The actuator is stopping: the command in hand was not (fully) delivered."""


class Sink(Protocol):
    """Where a command is enacted. ``deliver`` returns once the command is taken;
    it retries as it sees fit and raises :class:`Stopped` if ``stop`` is set first."""

    name: str

    def deliver(self, command: dict, raw: bytes, stop: threading.Event, *, verified: bool = True) -> None: ...
