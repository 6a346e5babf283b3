"""Benchmarks: training throughput, serving throughput and latency, memory (`make bench`)."""
