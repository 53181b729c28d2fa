"""Intended-use manifests in the shell: TOML files, the compacted ``agent-manifests`` topic, and the
follower that keeps a worker's book current.

Files: :func:`load_path` reads one manifest file or every ``*.toml`` in a directory
(not recursive, in name order) into a :class:`detector.manifest.ManifestBook`. Any
bad file is a :class:`ManifestError` naming the file and line; two files declaring
the same agent or role are an error naming both.

Topic: ``agent-manifests`` is compacted. A record's key is the manifest's identity
(``agent:<id>`` or ``role:<name>``), its value the manifest's TOML text (UTF-8), so
the same parser reads files and records and a record's errors have line numbers;
a ``null`` value (tombstone) withdraws the manifest. :func:`publish` writes files
to the topic; a worker follows it with :class:`ManifestFollower`.

When it works, when it fails:

- a record that does not parse, whose key is not its manifest's identity, or
  whose version is not higher than the one held, is skipped and counted
  (``invalid`` / ``stale``, with the last reason in ``last_error``); it never
  stops the follower, and the manifest held before stays in force;
- the follower reads the whole topic from the beginning at start (compaction
  keeps it small) and hands the worker a new book after every poll that changed
  something; until it has read to the end offsets seen at start ``ready`` is
  unset, and agents are checked against the manifests read so far (the files
  given with ``--manifests`` are in force from the start);
- a broker that goes away: the follower retries every 2 s and keeps its book.

>>> book, texts = load_texts({"a.toml": 'version = 1\\nagent = "a"\\n[tools]\\nallow = ["x"]\\n'})
>>> book.scope_for("a").label, sorted(texts)
('agent a v1', ['agent:a'])
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Iterable, Mapping

from detector.manifest import Manifest, ManifestBook, ManifestError, parse_manifest
from streams.topic_follow import Follower

__all__ = ["load_path", "load_book", "load_texts", "publish", "withdraw", "record_for", "read_topic_book", "ManifestFollower",
           "ManifestTopicFold"]

log = logging.getLogger("flowbreaker.manifests")


def load_texts(texts: Mapping[str, str | bytes], base: ManifestBook | None = None
               ) -> tuple[ManifestBook, dict[str, tuple[Manifest, bytes]]]:
    """Parse ``{source name: TOML text}``; returns the book and ``{key: (manifest, text bytes)}``."""
    book = base.copy() if base is not None else ManifestBook()
    seen: dict[str, tuple[Manifest, bytes]] = {}
    for source, text in texts.items():
        m = parse_manifest(text, source)
        other = seen.get(m.key)
        if other is not None:
            raise ManifestError(source, 1, f"{m.kind} {m.name!r} is also declared in {other[0].source}")
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        seen[m.key] = (m, raw)
        book.manifests[m.key] = m
    book._changed()
    return book, seen


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.glob("*.toml") if p.is_file())
    return [path]


def load_path(path: str | Path) -> tuple[ManifestBook, dict[str, tuple[Manifest, bytes]]]:
    """Every manifest of a file or a directory. Raises :class:`ManifestError` (``FILE:LINE: why``);
    an unreadable path or an empty directory is a ``ManifestError`` at line 1 too."""
    p = Path(path)
    if not p.exists():
        raise ManifestError(str(p), 1, "no such file or directory")
    files = _files(p)
    if not files:
        raise ManifestError(str(p), 1, "no *.toml manifest in this directory")
    texts: dict[str, bytes] = {}
    for f in files:
        try:
            texts[str(f)] = f.read_bytes()
        except OSError as err:
            raise ManifestError(str(f), 1, f"cannot read: {err.strerror}") from None
    return load_texts(texts)


def load_book(path: str | None) -> ManifestBook:
    """The manifests of ``--manifests`` (a file or directory) as a book, for the worker and ``replay``; an empty
    book without a path. A bad manifest raises :class:`UsageError` naming its file and line (exit 2)."""
    from detector.errors import UsageError

    if not path:
        return ManifestBook()
    try:
        return load_path(path)[0]
    except ManifestError as err:
        raise UsageError(str(err)) from None


def record_for(m: Manifest, text: bytes) -> tuple[bytes, bytes]:
    """``(key, value)`` of a manifest's record on ``agent-manifests``."""
    return m.key.encode("utf-8"), text


def publish(settings, items: Iterable[tuple[Manifest, bytes]], *, timeout: float = 30.0) -> int:
    """Publish manifests to ``agent-manifests`` (key = identity); returns how many the broker took."""
    from kafka import KafkaProducer

    producer = KafkaProducer(client_id="flowbreaker-manifests", acks="all", max_block_ms=int(timeout * 1000),
                             request_timeout_ms=int(timeout * 1000), **settings.kafka_python_config())
    try:
        futures = [producer.send(settings.topic("manifests"), key=k, value=v)
                   for k, v in (record_for(m, text) for m, text in items)]
        producer.flush(timeout)
        for f in futures:
            f.get(timeout=timeout)
        return len(futures)
    finally:
        producer.close(timeout=5)


def withdraw(settings, keys: Iterable[str], *, timeout: float = 30.0) -> int:
    """Tombstones for ``agent:<id>`` / ``role:<name>`` keys: those manifests are no longer in force."""
    from kafka import KafkaProducer

    producer = KafkaProducer(client_id="flowbreaker-manifests", acks="all", max_block_ms=int(timeout * 1000),
                             **settings.kafka_python_config())
    try:
        futures = [producer.send(settings.topic("manifests"), key=k.encode("utf-8"), value=None) for k in keys]
        producer.flush(timeout)
        for f in futures:
            f.get(timeout=timeout)
        return len(futures)
    finally:
        producer.close(timeout=5)


def read_topic_book(settings, *, timeout_s: float = 30.0) -> tuple[ManifestBook, int]:
    """The manifests on ``agent-manifests`` now (read once to the end): ``(book, records skipped)``.
    A topic that does not exist gives an empty book."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    topic = settings.topic("manifests")
    fold = ManifestTopicFold(topic=topic)
    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                             client_id="flowbreaker-manifests", **settings.kafka_python_config())
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return fold.book, 0
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end within {timeout_s:.0f} s")
            for tp, records in consumer.poll(timeout_ms=500).items():
                for rec in records:
                    fold.apply(rec.key, rec.value, where=f"p{tp.partition}@{rec.offset}")
        return fold.book, fold.invalid + fold.stale
    finally:
        consumer.close(autocommit=False)


class ManifestTopicFold:
    """Folds ``agent-manifests`` records into a book over a base (the files given at start).

    >>> fold = ManifestTopicFold()
    >>> fold.apply(b"agent:a", b'version = 2\\nagent = "a"\\n', where="p0@0")
    'added'
    >>> fold.apply(b"agent:a", b'version = 1\\nagent = "a"\\n', where="p0@1"), fold.stale
    ('stale', 1)
    >>> fold.apply(b"agent:b", b'version = 1\\nagent = "a"\\n', where="p0@2"), fold.last_error
    ('invalid', "agent-manifests p0@2: key 'agent:b' is not the manifest's identity 'agent:a'")
    >>> fold.apply(b"agent:a", None, where="p0@3"), len(fold.book)
    ('removed', 0)
    """

    def __init__(self, base: ManifestBook | None = None, topic: str = "agent-manifests") -> None:
        self.book = base.copy() if base is not None else ManifestBook()
        self.base = set(self.book.manifests)
        self.topic = topic
        self.invalid = 0
        self.stale = 0
        self.applied = 0
        self.last_error: str | None = None

    def apply(self, key: bytes | None, value: bytes | None, *, where: str = "") -> str:
        """``added``, ``replaced``, ``removed``, ``stale`` or ``invalid``."""
        src = f"{self.topic} {where}".strip()
        try:
            k = (key or b"").decode("utf-8")
        except UnicodeDecodeError:
            k = ""
        if value is None:
            if k and self.book.remove(k):
                self.applied += 1
                return "removed"
            return "stale"
        try:
            m = parse_manifest(value, src)
        except ManifestError as err:
            return self._invalid(str(err))
        except RecursionError:  # a pathological nesting: still just a bad record
            return self._invalid(f"{src}:1: nested too deeply")
        if k != m.key:
            return self._invalid(f"{src}: key {k!r} is not the manifest's identity {m.key!r}")
        result = self.book.put(m)
        if result == "stale":
            self.stale += 1
        else:
            self.applied += 1
        return result

    def _invalid(self, why: str) -> str:
        self.invalid += 1
        self.last_error = why
        log.warning("manifest record skipped: %s", why)
        return "invalid"


class ManifestFollower(Follower):
    """Follows ``agent-manifests`` (on the worker's :class:`~streams.topic_follow.TopicFollowers` thread); calls
    ``on_book(book)`` with a snapshot after every poll that changed the book (the worker assigns it to
    ``engine.manifests``). ``ready`` is set once the topic was read to the end it had when reading began (or
    when there is no topic)."""

    def __init__(self, settings, *, on_book: Callable[[ManifestBook], None], base: ManifestBook | None = None,
                 on_skip: Callable[[str], None] | None = None) -> None:
        self.topic = settings.topic("manifests")
        self.on_book = on_book
        self.on_skip = on_skip
        self.fold = ManifestTopicFold(base, self.topic)
        self.ready = threading.Event()
        self._target: dict = {}
        self._changed = False

    def position(self, consumer, tps: list) -> None:
        consumer.seek_to_beginning(*tps)
        self._target = consumer.end_offsets(tps)

    def absent(self) -> None:
        self.ready.set()  # no topic: nothing to wait for

    def on_record(self, record) -> None:
        result = self.fold.apply(record.key, record.value, where=f"p{record.partition}@{record.offset}")
        if result in ("added", "replaced", "removed"):
            self._changed = True
        elif result == "invalid" and self.on_skip is not None:
            self.on_skip(self.fold.last_error or "")

    def after_poll(self, consumer) -> None:
        if self._changed:
            self._changed = False
            self.on_book(self.fold.book.copy())
        if not self.ready.is_set() and all(consumer.position(tp) >= end for tp, end in self._target.items()):
            self.ready.set()
