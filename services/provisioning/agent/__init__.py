"""Per-telco router agent: turns saga commands into NETCONF transactions on its routers.

What happens on a router, in one place:

* Commands arrive on the telco's command topic; the consumer only queues them in
  ``agent_commands`` (jobs.CommandQueue, in the inbox transaction, so a redelivery queues
  nothing twice).
* One worker per router (worker.RouterWorker) drains its queue, so operations on a router
  are serialised and routers work in parallel. Several agents of a telco (one database)
  each run a worker per router, but only the holder of the router's lease
  (domain/lease.py) acts; one of the others takes over when the holder dies or stops.
* A router has at most one pending confirmed commit, so every PREPARE queued at that moment
  goes into one **batch** (domain/batch.py; prepare.py): lock the candidate, one edit-config
  of all the circuits' payloads merged (domain/merge.py; when the router refuses it, halves
  are tried until a refused payload fails that circuit only), one confirmed commit with a
  persist id and a timeout, lock kept until the batch is resolved. Later PREPAREs join it
  with a follow-up confirmed commit under the same persist id.
* CONFIRM of any member commits the batch (confirming commit by persist id), after editing
  the inverse of members already rolled back into the candidate; ROLLBACK of the last
  undecided member cancels it (cancel-commit by persist id); earlier ROLLBACKs edit the
  member's inverse into the candidate and are answered when the batch ends (decide.py).
  A ROLLBACK of a circuit confirmed earlier that arrives while a batch is open edits its
  inverse into that batch too (the batch holds the lock), answered when the batch ends.
* **No outcome is guessed** (settle.py). A commit, confirm or cancel that gets no answer,
  or whose session drops, may or may not have been applied: the batch is marked to be
  settled (confirm when a CONFIRM was being carried out, cancel otherwise), its commands
  stay queued, and before anything else happens on the router the worker settles it by
  persist id from a new session and records each member as what running holds; only then
  are the commands answered. A router that cannot be reached meanwhile raises an alarm.
* The router's own timeout: the devstack's yuma123 netconfd reverts an unconfirmed commit
  at its timeout (measured 2026-12-02: with and without persist, session open holding the
  lock, closed, dropped or gone), but only once a second has passed with no input on any
  of its sessions: a router that is read or written more often than once a second holds
  the revert off indefinitely (measured; tests/integration/provisioning/
  test_fake_router_fidelity.py). So the router's timeout cannot be relied on to end a
  batch on a busy router: the agent cancels a batch nobody resolved just before the
  timeout (decide.py), and a batch that ended by the timeout anyway is found "not
  pending" and read back like any other.
* A batch found unresolved by a worker that acquires the router's lease (at start, or
  taking over from a dead peer) is settled the same way: confirmed when a member's CONFIRM
  is queued, cancelled otherwise (domain.batch.settle_left_open), then read from running.
* After every step the running configuration is read back and compared with what the step
  meant to leave there; a difference is a VERIFICATION_FAILED reply.

Tracing: a command is queued with the context of the span that consumed it; the worker
runs each step in a span that continues it (a batch's span continues its first command's
trace and links the others), the NETCONF operations are its children, and each reply goes
into the outbox in the trace of the command it answers (ledger.py).
"""
