"""`logdist distributor --workers N`: N distributor processes share one port (SO_REUSEPORT).

One Python process routes about a million messages a second on one core; the kernel spreads
connections over N processes, so N cores can work. Each worker is a whole distributor (queues,
router, retries, its own write-ahead log and dead letters in <state_dir>/worker-<i>), so every
guarantee holds per worker. What the workers must agree on is kept in step by this package:

* the supervisor (the process started by the user) starts the workers, forwards SIGTERM, SIGINT
  and SIGHUP (a config reload reaches every worker), and restarts a worker that dies (it then
  replays its own write-ahead log, as after any crash);
* every worker also listens on a private loopback control port. A change made through the admin
  API on one worker (register, patch, delete an analyzer; replay dead letters) is applied there
  and then sent to the others; a read of /health, /queue, /api/v1/metrics, /metrics or
  /api/v1/dead-letters gathers every worker's figures into one answer.

Each worker keeps its own (emitter_id, packet_id) dedup window: a retried packet that arrives
on another connection may reach another worker and be delivered again; the analyzers'
message-id dedup counts it once (as after any redelivery).

Modules: `supervisor` (the parent process: standard library only, so importing this package
must not import aiohttp or the core), `peers` (this worker's peers, asking them, catching up
with their analyzers), `fanout` (route handlers that gather figures from every worker or apply
an admin change on every worker), `merge` (the pure merge functions) and `takeover` (the state
a run with another worker count left).
"""
