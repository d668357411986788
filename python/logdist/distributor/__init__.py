"""`logdist distributor`: ingest packets, route every message by weight, deliver, lose nothing.

A packet's way, one direction:

    ingest.ingest -> Admission.admit -> Engine.place -> AnalyzerLink.run/_deliver
                  -> Engine.acked (failed / refused) -> Store.ack_chunks

Modules, each owning one thing:
  ingest      the HTTP ingest handler: content type, size bounds, gzip; then admission, placement
  admission   the checks (accepting? duplicate? queue bound), routing and storing of one packet;
              returns its chunks (or the answer that refuses it), never places them
  ledger      the (emitter_id, packet_id) dedup window and the packets being stored right now
  engine      where every chunk and batch goes next: placement, retries, health and
              saturation, admin changes, figures (plain data), lifecycle
  link        one analyzer's queue, sender task, delivery (POST) and health probe; reports
              acked / failed / refused to the engine
  batch       chunks, batches and the outbound queue
  store       the durability seam (Store protocol) and the memory store
  wal_store   the write-ahead log store: append, ack, checkpoint, recovery, take-over
  walrecord   the log's record format, the dedup keys file and the leftover file formats
  leftover    what a graceful stop in memory mode could not deliver, sent on the next start
  deadletter  batches refused for good, on disk
  metrics     /health, /queue, /api/v1/metrics and /metrics from the engine's figures
  app         the routes (declared with their --workers fan-out), lifecycle, SIGHUP reload
  workers/    --workers N: supervisor, peers, fan-out, merging, take-over
  dashboard   the live page at /
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logdist.config import DistributorConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", "-config", metavar="FILE", help="JSON or TOML config (the compact config shape is accepted too)"
    )
    p.add_argument("--host", help="listen address (default 127.0.0.1; 0.0.0.0 in Docker)")
    p.add_argument("--port", "-port", type=int, help="listen port (overrides the config; default 8080)")
    p.add_argument("--queue-size", type=int, metavar="N", help="max messages held before ingest answers 429")
    p.add_argument("--strategy", choices=("alias", "swrr"), help="weighted selection (default alias)")
    p.add_argument("--seed", type=int, help="seed of the router's random draws (alias)")
    p.add_argument("--durability", choices=("memory", "wal"), help="where accepted messages are kept (default memory)")
    p.add_argument("--state-dir", metavar="DIR", help="dead letters (and later the write-ahead log)")
    p.add_argument("--grace", type=float, metavar="S", help="seconds to deliver what is held on SIGTERM")
    p.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind with SO_REUSEPORT, so that several independent distributors (each with its own "
        "--state-dir, queues, metrics and packet-dedup window) can share one port",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run N distributor processes on the port (SO_REUSEPORT), one per core: each keeps its own "
        "queues and <state-dir>/worker-<i>; admin changes reach all, figures are gathered from all",
    )
    p.add_argument("--admin-port", type=int, metavar="PORT",
                   help="serve the admin API on a separate listener (the main port then serves only ingest, "
                   "/health and /metrics)")  # fmt: skip
    p.add_argument("--admin-host", help="the admin listener's address (default 127.0.0.1)")
    p.add_argument("--instance-id", help=argparse.SUPPRESS)  # the hop id, the same in every worker
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host with no token configured (warned at every start)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)  # "i/n": started by --workers
    p.add_argument("--control-ports", help=argparse.SUPPRESS)  # every worker's private loopback port
    p.add_argument("--log-level", default="INFO")


def check_state_dir(state_dir: str, subdirs: tuple[str, ...]) -> None:
    """Fail fast when the state dir cannot hold what the distributor must write there: create
    it and each of `subdirs` (dead letters, and the write-ahead log in `wal` mode), and write,
    fsync and delete a probe file in each. Raises SystemExit (exit status 1) with one line
    naming the path and the errno, so an orchestrator restarts the process and an operator
    sees why (rather than a process that stays up and never recovers)."""
    root = Path(state_dir)
    for d in [root, *(root / s for s in subdirs)]:
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = d / f".write-probe-{os.getpid()}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"probe")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise SystemExit(f"logdist distributor: state_dir {d}: [Errno {exc.errno}] {exc.strerror}") from None


def _check_bind(cfg: DistributorConfig, insecure: bool) -> None:
    """Refuse a non-loopback host with no token (daemon.check_bind); the workers of --workers N
    are checked by their supervisor. Raises ConfigError when a token file cannot be read."""
    from logdist.auth import Tokens, check_bind

    tokens = Tokens.load(cfg.ingest_tokens_file, cfg.admin_tokens_file)
    options = "ingest_tokens_file/admin_tokens_file (config) or LOGDIST_INGEST_TOKENS/LOGDIST_ADMIN_TOKENS"
    check_bind("distributor", cfg.host, tokens.configured, insecure, options)


def run(args: argparse.Namespace) -> int:
    from logdist.config import DistributorConfig, load_distributor_config

    cfg = load_distributor_config(args.config) if args.config else DistributorConfig()
    overrides = {
        "host": args.host,
        "port": args.port,
        "queue_size": args.queue_size,
        "strategy": args.strategy,
        "seed": args.seed,
        "durability": args.durability,
        "state_dir": args.state_dir,
        "shutdown_grace_s": args.grace,
        "admin_port": args.admin_port,
        "admin_host": args.admin_host,
    }
    cfg = cfg.with_overrides(**overrides)
    # the X-Logdist-Hop id: the file's, else the supervisor's, else a new one (kept on reload)
    overrides["instance_id"] = cfg.instance_id or args.instance_id or secrets.token_hex(8)
    cfg = cfg.with_overrides(instance_id=overrides["instance_id"])
    args.instance_id = overrides["instance_id"]
    if args.workers is not None and args.workers < 1:
        raise SystemExit("logdist distributor: --workers must be >= 1")
    if args.workers and args.workers > 1 and not args.worker:
        check_state_dir(cfg.state_dir, ())  # each worker checks its own <state_dir>/worker-<i>
        # The supervisor only starts and watches the workers: it imports no aiohttp, no core.
        from logdist.distributor.workers import supervisor
        from logdist.logsetup import setup_logging

        setup_logging("distributor", args.log_level)
        _check_bind(cfg, args.insecure)
        return supervisor.supervise(args, args.workers, cfg.state_dir, cfg.port, cfg.shutdown_grace_s, cfg.queue_size)
    check_state_dir(cfg.state_dir, ("dead-letters", "wal") if cfg.durability == "wal" else ("dead-letters",))
    from logdist import daemon, tls
    from logdist.distributor.app import LISTENER_TLS, build_app, reloader
    from logdist.distributor.leftover import take_over_leftovers
    from logdist.distributor.workers import peers, takeover

    also_listen: list[tuple[str, int]] = []
    ports: tuple[int, ...] = ()
    # adopt: what a run with another --workers count left behind (taken over, never stranded)
    if args.worker:
        index, n = peers.parse_worker(args.worker)
        ports = tuple(int(p) for p in args.control_ports.split(","))
        if len(ports) != n:
            raise SystemExit(f"logdist distributor: --worker {args.worker} needs {n} --control-ports")
        # queue_bytes bounds the distributor, as queue_size does: each worker holds its share
        # (an override, so that a SIGHUP reload keeps it, as --queue-size is kept)
        overrides["queue_bytes"] = max(1, -(-cfg.queue_bytes // n))
        cfg = cfg.with_overrides(queue_bytes=overrides["queue_bytes"])
        daemon.setup_logging(f"distributor-{index}", args.log_level)
        also_listen.append(("127.0.0.1", ports[index]))
        adopt = takeover.orphans(Path(cfg.state_dir).parent, index, n, worker=True)
    else:
        daemon.setup_logging("distributor", args.log_level)
        _check_bind(cfg, args.insecure)
        adopt = takeover.orphans(cfg.state_dir, 0, 1, worker=False)
    _check_endpoints(cfg, ports if args.worker else ())
    for src in adopt:
        takeover.take_over_dead_letters(src, Path(cfg.state_dir))
        take_over_leftovers(src, Path(cfg.state_dir))
    ssl_context = tls.listener_context(cfg)  # ConfigError naming the key when a file is bad
    app = build_app(cfg, [src / "wal" for src in adopt])
    if ssl_context is not None:
        app[LISTENER_TLS] = ssl_context  # the reloader loads a rotated certificate into it
    if args.worker:
        peers.install(app, peers.Peers(index, ports))
    return daemon.serve(
        app,
        cfg.host,
        cfg.port,
        grace=cfg.shutdown_grace_s,
        on_reload=reloader(app, args.config, overrides),
        reuse_port=args.reuse_port,
        also_listen=also_listen,
        supervised=bool(args.worker),
        admin_listen=(cfg.admin_host, cfg.admin_port) if cfg.admin_port is not None else None,
        ssl_context=ssl_context,
    )


def _check_endpoints(cfg: Any, control_ports: tuple[int, ...]) -> None:
    """Refuse to start (one line, exit status 1) when an analyzer of the config points at this
    distributor or outside allowed_analyzer_hosts (distributor/endpoints.py)."""
    import asyncio

    from logdist.config import ConfigError
    from logdist.distributor.endpoints import check_config

    try:
        asyncio.run(check_config(cfg, control_ports))
    except ConfigError as exc:
        raise SystemExit(f"logdist distributor: {exc}") from None
