"""Benchmarks: each workload of the product measured next to the floor of its own stack.

Run with ``python -m bench`` (``make bench``); see BENCHMARKS.md.
"""
