"""Where an aiokafka consumer outside any group starts reading a topic it follows whole.

:func:`resume_or_since` is shared by the followers that read a topic's recent past when a worker starts
and go on from where they were after a restart of their consumer (the API's copy of ``agent-alerts``,
streams/api/verdicts.py, and the worker's verdict follower, streams/worker/verdict_follow.py).
"""

from __future__ import annotations

from typing import Any, Mapping


async def resume_or_since(consumer: Any, topic: str, partitions: int, next_offsets: Mapping[int, int],
                          since_ms: int) -> list:
    """Assign every partition of ``topic`` to ``consumer`` and seek each: to ``next_offsets[p]`` where this
    follower has read before (a restart after a broker failure goes on from there), else to the first record
    stamped at or after ``since_ms`` (the topic's end when there is none). Returns the TopicPartitions.

    Works on a started consumer with no group; fails as aiokafka does when the broker cannot answer
    ``offsets_for_times`` (the caller's retry loop starts again)."""
    from aiokafka import TopicPartition

    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    fresh = [tp for tp in tps if tp.partition not in next_offsets]
    for tp in tps:
        if tp.partition in next_offsets:
            consumer.seek(tp, next_offsets[tp.partition])
    if fresh:
        found = await consumer.offsets_for_times({tp: since_ms for tp in fresh})
        ends = await consumer.end_offsets(fresh)
        for tp in fresh:
            at = found.get(tp)
            consumer.seek(tp, at.offset if at is not None else ends[tp])
    return tps
