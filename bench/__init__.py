"""Benchmarks (make bench): throughput, freshness, scale."""
