"""Benchmarks: each prints its measurement and a ratio against a baseline or target measured in the same run."""
