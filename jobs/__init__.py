"""Flink job entry points, one job per file."""
