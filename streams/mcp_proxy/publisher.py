"""Action events of forwarded tool calls onto ``agent-actions``, keyed by the agent, off the relay's path.

:meth:`Publisher.publish` validates the event with the contract's parser
(``detector.events.decode_event``: an event the workers would send to the
dead-letter topic is logged and not sent) and queues it; one thread hands the
queue to a kafka-python producer. The relay never waits for Kafka. At most
``max_queued`` events wait (a broker down for long: the oldest are dropped and
counted in ``stats["dropped"]``); a send the broker refuses is logged and
counted in ``stats["failed"]``. ``close()`` sends what is queued (bounded).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

from detector.events import EventError, decode_event

__all__ = ["Publisher"]

log = logging.getLogger("flowbreaker.mcp_proxy")


class Publisher:
    """``send(topic, key, value)`` is a kafka-python producer's (or a test's list); see the module docstring."""

    def __init__(self, producer: Any, topic: str, *, max_queued: int = 10_000) -> None:
        self.producer = producer
        self.topic = topic
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self.stats = {"queued": 0, "sent": 0, "invalid": 0, "dropped": 0, "failed": 0}
        self._thread = threading.Thread(target=self._run, name="mcp-proxy-publisher", daemon=True)
        self._thread.start()

    def publish(self, event: dict) -> bool:
        """Queue ``event`` if it is a valid action event (True), else log why (False). Never blocks."""
        try:
            decode_event(event)
        except EventError as err:
            self.stats["invalid"] += 1
            log.error("not publishing the action event %r: %s (fix the mapping file)", event.get("event_id"), err)
            return False
        while True:
            try:
                self._queue.put_nowait(event)
                break
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.stats["dropped"] += 1
                except queue.Empty:
                    pass
        self.stats["queued"] += 1
        return True

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                fut = self.producer.send(self.topic, key=event["agent_id"].encode(),
                                         value=json.dumps(event, separators=(",", ":")).encode())
                if hasattr(fut, "add_errback"):
                    fut.add_errback(self._failed, event.get("event_id"))
                self.stats["sent"] += 1
            except Exception as err:  # noqa: BLE001 - broker unreachable past max_block_ms: logged, counted
                self._failed(err, event.get("event_id"))

    def _failed(self, err: BaseException, event_id: Any) -> None:
        self.stats["failed"] += 1
        log.error("could not publish the action event %r on %s: %r", event_id, self.topic, err)

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
        flush = getattr(self.producer, "flush", None)
        if flush is not None:
            try:
                flush(timeout)
            except Exception as err:  # noqa: BLE001 - closing: what could not be sent is logged
                log.error("could not flush the action events on %s: %r", self.topic, err)
