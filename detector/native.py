"""Which implementation of the per-feature numeric loops runs: the compiled kernel or the reference.

The loops over a row of features (log1p and robust deviations with the kind's profile, a learning step
of the profile and of a kind's, the tail rarities with the caps and the blame), feature extraction, the
words of a name, a destination's family, settling novelty, destination habits, the duplicate ring and the
trace's packed rows are written twice: in pure Python beside their callers (:mod:`detector.baseline`,
:mod:`detector.scoring`, :mod:`detector.features`, :mod:`detector.habits`, :mod:`detector.engine`,
:mod:`detector.trace`: ``_py_*``), which is the reference, and in C (``detector/_native.c``, built by
``pip install -e .`` through ``setup.py``), which is the same operations in the same order on IEEE doubles,
so the two give equal numbers bit for bit (``tests/unit/test_native.py``) and a replay gives byte-identical
decisions either way. The engine's per-event loops are compiled too, for the common case: the read after
extraction (``read_tail``), and both loops of ``Engine.process_batch`` (``admit``: the dedupe ring and the
reading, ``Engine._read``'s first lines included; ``decide``: an ordinary decision, its breaker step and its trace
row), whose references are the engine's own Python lines (``tests/unit/test_read_fused.py``,
``tests/unit/test_decide_fused.py``, ``tests/unit/test_admit_read.py``).

:data:`kernels` is the compiled module, or ``None`` when the references run:

- ``FLOWBREAKER_PURE_PYTHON=1`` in the environment forces the references (read once, at import);
- a kernel that did not build (no C compiler at install time) leaves them running, with one warning
  in the log.

>>> kernels is None or hasattr(kernels, "log_deviations")
True
"""

from __future__ import annotations

import logging
import os

__all__ = ["kernels", "PURE_PYTHON_ENV"]

PURE_PYTHON_ENV = "FLOWBREAKER_PURE_PYTHON"

kernels = None
if os.environ.get(PURE_PYTHON_ENV, "") not in ("1", "true", "yes"):
    try:
        from detector import _native as kernels  # type: ignore[no-redef]
    except ImportError as err:  # the package works without it, slower
        logging.getLogger("flowbreaker.native").warning(
            "the compiled kernel detector._native is not built (%s): running the pure-Python feature loops "
            "(same decisions, slower); reinstall with a C compiler and Python headers (bash scripts/install.sh)", err)
