"""The order service's domain: plain Python, no I/O beyond reading its data files.

catalogue (sites, ports, telcos), pricing (the price book), validation (what a customer may
ask for), capacity (admission and VLANs), lifecycle (order, circuit and approval state
machines), changes (what a bandwidth change or a disconnect does to a circuit),
idempotency (repeated requests), outcomes (provisioning's outcome on an order), overdue,
health and disclosure.
"""
