"""Benchmarks, run by hand (`make bench`); results and how to read them in BENCHMARKS.md."""
