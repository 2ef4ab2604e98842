"""Algorithm core: plain Python/numpy recommenders, no Flink."""
