"""Bounded sketches for per-agent novelty: stable hashes and Bloom filters held in ints.

Python's ``hash()`` is salted per process, so sketches use CRC-32, which is the
same in every worker and in ``replay``.

>>> b = 0
>>> b = bloom_add(b, stable_hash("slack:#eng"), 1023)
>>> bloom_has(b, stable_hash("slack:#eng"), 1023), bloom_has(b, stable_hash("email:x@y"), 1023)
(True, False)
"""

from __future__ import annotations

from zlib import crc32

__all__ = ["stable_hash", "dedupe_key", "bloom_add", "bloom_has"]


_cache: dict[str, int] = {}


def stable_hash(text: str) -> int:
    """A 32-bit hash that is the same in every process (memoised for recurring names)."""
    h = _cache.get(text)
    if h is None:
        h = crc32(text.encode("utf-8", "surrogatepass"))
        if len(_cache) >= 100_000:
            _cache.clear()
        _cache[text] = h
    return h


def dedupe_key(event_id: str) -> int:
    """A non-zero 32-bit key of an event id for the per-agent duplicate ring (not memoised:
    ids never recur). Two different ids in one agent's last 32 share a key with odds ~1e-8."""
    return crc32(event_id.encode("utf-8", "surrogatepass")) | 1


def bloom_add(bits: int, h: int, mask: int) -> int:
    """Add the item with hash ``h`` to a Bloom filter of ``mask + 1`` bits (two probes)."""
    return bits | (1 << (h & mask)) | (1 << ((h >> 16) & mask))


def bloom_has(bits: int, h: int, mask: int) -> bool:
    """Whether the item with hash ``h`` may have been added (false positives possible, no false negatives)."""
    return (bits >> (h & mask)) & 1 == 1 and (bits >> ((h >> 16) & mask)) & 1 == 1
