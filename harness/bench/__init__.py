"""Benchmarks that compare the project with bare baselines in one run (docs/performance.md)."""
