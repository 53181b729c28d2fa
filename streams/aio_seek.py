"""What the aiokafka followers of a whole topic (consumers outside any group) share.

:func:`keep_following` restarts a follower after a failure (the API's control feed,
streams/api/control_feed.py, its copy of ``agent-alerts``, streams/api/verdicts.py, and the worker's
verdict follower, streams/worker/verdict_follow.py). :func:`resume_or_since` is where the last two start
reading: a topic's recent past when a worker starts, and from where they were after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Mapping


async def keep_following(follow: Callable[[], Awaitable[None]], *, what: str, on_restart: Callable[[], None],
                         logger: logging.Logger) -> None:
    """Await ``follow()`` until cancelled; when it raises (the broker went away), call ``on_restart``, log one
    warning naming ``what`` and start it again a second later. The follower keeps what it folded and goes on
    from where it was. Cancellation is passed on."""
    while True:
        try:
            await follow()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the broker went away: go on from where we were
            on_restart()
            logger.warning("%s stopped (%r); restarting in 1 s", what, exc)
            await asyncio.sleep(1.0)


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
