"""Benchmarks, run from the repository root as ``python -m benchmarks.<name>`` (not part of the package)."""
