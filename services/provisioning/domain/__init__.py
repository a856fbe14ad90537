"""Provisioning's domain: plain Python, no I/O (sagas, router batches, leases, payload
merging, read-back comparison, circuit ends, faults)."""
