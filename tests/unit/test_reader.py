"""The worker's reader of agent-actions (streams/worker/reader.py): what it changes on faust's consumer."""
from __future__ import annotations

from types import SimpleNamespace

from streams.worker.reader import ActionReader


class Thread:
    def __init__(self, consumer) -> None:
        self.consumer = consumer

    def _ensure_consumer(self):
        return self.consumer


def aiokafka_like(wait_ms: int = 1500):
    """The two attributes of an aiokafka consumer the reader touches: its fetcher's wait (faust sets 1,500 ms)."""
    return SimpleNamespace(_fetcher=SimpleNamespace(_fetch_max_wait_ms=wait_ms))


def test_an_empty_fetch_is_held_briefly_on_every_consumer_faust_makes():
    first = aiokafka_like()
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=Thread(first)))
    reader = ActionReader(app, "agent-actions", max_records=250, broker_wait_ms=20)
    _, got = reader._consumer()
    assert got is first and first._fetcher._fetch_max_wait_ms == 20
    # a consumer faust recreates (after a crash of its thread) is tuned too
    second = aiokafka_like()
    app.consumer._thread.consumer = second
    reader._consumer()
    assert second._fetcher._fetch_max_wait_ms == 20


def test_a_consumer_not_started_yet_is_tuned_once_it_has_a_fetcher():
    consumer = SimpleNamespace()
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=Thread(consumer)))
    reader = ActionReader(app, "agent-actions", max_records=250)
    reader._consumer()                      # no fetcher before start(): nothing to tune, no error
    consumer._fetcher = SimpleNamespace(_fetch_max_wait_ms=1500)
    reader._consumer()
    assert consumer._fetcher._fetch_max_wait_ms == reader.broker_wait_ms < 1500
