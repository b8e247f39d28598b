"""Benchmarks: ``python -m bench`` (make bench) writes bench/RESULTS.md; ``--quick`` is the CI smoke run."""
