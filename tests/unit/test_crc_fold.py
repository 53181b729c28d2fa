"""The kernel's CRC-32 (detector/_native.c crc_update) against zlib.crc32, by both of its paths.

Buffers of ``crc_fold_min`` bytes or more are folded with carry-less multiplication (PCLMULQDQ) where the CPU
has it (``crc_folding``), the rest by the slicing-by-8 tables: ``crc32`` is what the kernel runs,
``crc32_tables`` the tables alone at any length, ``crc32_fold`` the folding of every whole 16 bytes (from 16
bytes on, below the threshold too). All of them must be zlib's, for any length, start value and alignment.
"""
from __future__ import annotations

import os
import platform
import random
import zlib

import pytest
from hypothesis import given, settings, strategies as st

_native = pytest.importorskip("detector._native", reason="the kernel is not built")

folding = pytest.mark.skipif(not _native.crc_folding,
                             reason="this CPU has no PCLMULQDQ and SSE4.1: crc32 runs the tables alone")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _paths():
    return (_native.crc32, _native.crc32_tables) + ((_native.crc32_fold,) if _native.crc_folding else ())


def _check(data, start=None):
    want = zlib.crc32(data) if start is None else zlib.crc32(data, start)
    for fn in _paths():
        got = fn(data) if start is None else fn(data, start)
        assert got == want, (fn.__name__, len(data), start)


def test_a_cpu_with_carry_less_multiplication_folds():
    # the skips below are for a CPU without it, never for a build or a dispatch that lost it
    if platform.machine() in ("x86_64", "AMD64") and {"pclmulqdq", "sse4_1"} <= _cpu_flags():
        assert _native.crc_folding is True
    assert isinstance(_native.crc_folding, bool)
    if _native.crc_folding:
        assert 16 <= _native.crc_fold_min <= 64  # so the longer buffers below are folded by crc32 itself
    else:
        with pytest.raises(RuntimeError):
            _native.crc32_fold(b"x" * 64)


def test_every_length_to_600_with_random_bytes_and_start_values():
    rng = random.Random(20261205)
    for n in range(601):
        data = rng.randbytes(n)
        _check(data)
        for start in (0, 0xFFFFFFFF, rng.getrandbits(32), rng.getrandbits(32)):
            _check(data, start)


@pytest.mark.parametrize("byte", (0x00, 0xFF, 0x80, 0x01))
def test_constant_bytes_of_every_length(byte):
    for n in range(0, 600, 7):
        _check(bytes([byte]) * n)
        _check(bytes([byte]) * n, 0xFFFFFFFF)


def test_unaligned_starts_and_ends():
    rng = random.Random(7)
    big = rng.randbytes(4096 + 64)
    view = memoryview(big)
    for offset in range(17):
        for n in list(range(0, 130)) + [255, 256, 257, 350, 383, 384, 385, 511, 1000, 4096]:
            start = rng.getrandbits(32)
            want = zlib.crc32(big[offset:offset + n], start)
            for fn in _paths():
                assert fn(view[offset:offset + n], start) == want, (fn.__name__, offset, n)
                assert fn(big[offset:offset + n], start) == want, (fn.__name__, offset, n)


def test_it_continues_a_crc_as_zlib_does():
    # a buffer in pieces (folded, then tables, then folded) gives the CRC of the whole
    data = os.urandom(2000)
    for cut in (0, 1, 15, 16, 31, 32, 33, 63, 64, 65, 350, 1999, 2000):
        for fn in _paths():
            assert fn(data[cut:], fn(data[:cut])) == zlib.crc32(data), (fn.__name__, cut)


@folding
def test_the_long_buffers_are_folded_and_equal_the_tables():
    rng = random.Random(3)
    for n in range(_native.crc_fold_min, 1200, 5):
        data, start = rng.randbytes(n), rng.getrandbits(32)
        want = zlib.crc32(data, start)
        assert _native.crc32_fold(data, start) == _native.crc32_tables(data, start) == want
        assert _native.crc32(data, start) == want


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=4096), st.integers(0, 2**32 - 1), st.integers(0, 15))
def test_any_bytes_any_start_any_alignment(data, start, offset):
    _check(data, start)
    padded = memoryview(bytes(offset) + data)[offset:]
    for fn in _paths():
        assert fn(padded, start) == zlib.crc32(data, start), fn.__name__
