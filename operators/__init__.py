"""Flink functions (keyed, windowed, broadcast operators): thin wrappers around core/."""
