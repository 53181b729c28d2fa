"""Only the compiled kernel lives here (everything else is in pyproject.toml).

``detector/_native.c`` is optional: when it does not build (no C compiler, no Python headers) the
package installs anyway and runs the pure-Python references (detector/native.py logs that once).
The flags keep IEEE double arithmetic exactly as Python does it: no fast-math, no fused
multiply-add, so the kernel's results equal the references' bit for bit.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "detector._native", ["detector/_native.c"], optional=True,
    extra_compile_args=["-O2", "-fno-fast-math", "-ffp-contract=off"],
), Extension(
    "detector._decode", ["detector/_decode.c"], optional=True,
    extra_compile_args=["-O2", "-fno-fast-math", "-ffp-contract=off"],
)])
