"""Benchmark suite: the paper's workloads run by helium, its ablations and baseline systems."""
