"""One setting of the garbage collector for every process that runs the engine (the worker and replay).

The engine allocates a few dozen short-lived containers per event and almost no reference cycles, so
the collector's default young-generation threshold (700 allocations) runs a young collection every few
events for nothing: replay spent ~15 % of its time there (bench/bench_replay.py). Collecting young
objects every 50,000 allocations instead bounds the garbage that waits to a few MB. The worker also keeps
its long-lived state out of full collections (``gc.freeze()`` once it is up, streams/worker/app.py), which
otherwise paused its event loop for 50-135 ms (bench/bench_check.py).
"""

from __future__ import annotations

import gc

__all__ = ["THRESHOLDS", "tune"]

THRESHOLDS = (50_000, 20, 1_000)


def tune() -> None:
    """Set :data:`THRESHOLDS` for this process."""
    gc.set_threshold(*THRESHOLDS)
