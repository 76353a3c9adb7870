"""Benchmark CLI; installed as streamst.benchmarks."""
