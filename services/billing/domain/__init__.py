"""Billing domain: money, the 95th percentile, contract segments, rating. Plain Python, no I/O."""
