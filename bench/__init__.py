"""Benchmarks (scripts that print numbers) and the public-data benchmark builder (``bench.public``)."""
