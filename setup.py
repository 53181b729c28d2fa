"""Only the compiled kernels live here (everything else is in pyproject.toml).

``detector/_native.c``, ``detector/_score.c`` and ``detector/_decode.c`` are optional: when they do not
build (no C compiler, no Python headers) the package installs anyway and runs the pure-Python references
(detector/native.py and detector/scoring.py log that once). The flags keep IEEE double arithmetic exactly as Python does
it: no fast-math, no fused multiply-add, so the kernels' results equal the references' bit for bit.
"""
from setuptools import Extension, setup

_FLAGS = ["-O3", "-fno-fast-math", "-ffp-contract=off"]
_HEADERS = ["detector/_buffers.h", "detector/_scoring.h"]  # shared by _native.c and _score.c

setup(ext_modules=[
    Extension("detector._native", ["detector/_native.c"], depends=_HEADERS, optional=True,
              extra_compile_args=_FLAGS),
    Extension("detector._score", ["detector/_score.c"], depends=_HEADERS, optional=True,
              extra_compile_args=_FLAGS),
    Extension("detector._decode", ["detector/_decode.c"], optional=True, extra_compile_args=_FLAGS),
])
