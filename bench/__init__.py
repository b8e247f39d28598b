"""Benchmarks (run from the project root: ``python -m bench.replay_throughput``)."""
