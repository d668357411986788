"""The analyzer role: `logdist analyzer --id ID --port N [--weight W]` (or the positional form
`analyzer ID PORT`). It receives messages one by one or in batches, deduplicates them by id
and counts them by level and source (see `engine`), behind the v0 analyzer API (see `app`).
"""

from __future__ import annotations

import argparse
import logging
import random
import ssl

from logdist import daemon, tls

log = logging.getLogger("logdist.analyzer")

log = logging.getLogger("logdist.analyzer")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pos_id", nargs="?", metavar="ID", help="analyzer id (positional form: analyzer ID PORT)")
    p.add_argument("pos_port", nargs="?", metavar="PORT", type=int, help="port (positional form)")
    p.add_argument("--id", "-id", dest="id", help="analyzer id (default analyzer-PORT)")
    p.add_argument("--port", "-port", dest="port", type=int, help="listen port (default 8082)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1; 0.0.0.0 in Docker)")
    p.add_argument("--weight", "-weight", dest="weight", type=float, help="the weight it expects (reported only)")
    p.add_argument("--dedup-window", type=int, default=1_000_000, metavar="N", help="ids remembered (default 1e6)")
    p.add_argument("--stats-window", type=int, default=60, metavar="S", help="sliding window of /stats, seconds")
    p.add_argument("--record-ids", action="store_true", help="keep every unique id; GET /ids returns them")
    p.add_argument("--disabled", action="store_true", help="start disabled (POST /enable to start taking work)")
    g = p.add_argument_group("fault injection (tests, chaos); POST /fault changes them at runtime")
    g.add_argument("--latency-ms", type=float, default=0.0, metavar="MS", help="delay every /analyze answer")
    g.add_argument("--error-rate", type=float, default=0.0, metavar="P", help="answer 500 with probability P")
    g.add_argument("--fail-status", type=int, default=None, metavar="CODE", help="always answer CODE")
    g.add_argument("--retry-after", type=float, default=None, metavar="S", help="Retry-After sent with 429/503")
    g.add_argument("--seed", type=int, default=None, help="seed of the --error-rate draws")
    t = p.add_argument_group("tokens (see logdist/auth.py); re-read on SIGHUP")
    t.add_argument(
        "--admin-tokens-file", metavar="FILE", help="tokens for /status, /fault, /enable, /disable, /ids ..."
    )
    t.add_argument("--ingest-tokens-file", metavar="FILE", help="tokens for /analyze (open while none is set)")
    t.add_argument("--insecure", action="store_true", help="allow a non-loopback --host with no token (warned)")
    p.add_argument("--log-level", default="INFO")
    tls.add_server_arguments(p)


def run(args: argparse.Namespace) -> int:
    from logdist.analyzer.app import AnalyzerState, Faults, make_app
    from logdist.analyzer.engine import Analysis
    from logdist.auth import Auth, Tokens, audit_reload, check_bind
    from logdist.errors import ConfigError, PacketError

    if args.id is not None and args.pos_id is not None and args.id != args.pos_id:
        raise ConfigError("id", f"given twice: {args.pos_id!r} and --id {args.id!r}")
    port = args.port if args.port is not None else args.pos_port
    if port is None:
        port = 8082
    if not 0 < port < 65536:
        raise ConfigError("port", f"{port} is not a TCP port")
    aid = args.id or args.pos_id or f"analyzer-{port}"
    if args.dedup_window < 2:
        raise ConfigError("dedup-window", "must be at least 2")
    faults = Faults()
    try:
        faults.update(
            {
                "latency_ms": args.latency_ms,
                "error_rate": args.error_rate,
                "fail_status": args.fail_status,
                "retry_after": args.retry_after,
            }
        )
    except PacketError as exc:
        raise ConfigError(exc.detail.split("'")[1] if "'" in exc.detail else "fault", exc.detail) from None
    daemon.setup_logging(f"analyzer:{aid}", args.log_level)
    tokens = Tokens.load(args.ingest_tokens_file, args.admin_tokens_file)
    options = "--admin-tokens-file/--ingest-tokens-file or LOGDIST_ADMIN_TOKENS/LOGDIST_INGEST_TOKENS"
    check_bind("analyzer", args.host, tokens.configured, args.insecure, options)
    state = AnalyzerState(
        id=aid,
        weight=args.weight,
        port=port,
        analysis=Analysis(args.dedup_window, args.stats_window, args.record_ids),
        faults=faults,
        enabled=not args.disabled,
        rng=random.Random(args.seed),
    )
    auth = Auth(tokens, frozenset({"/analyze"}), ingest_needs_ingest_tokens=True)
    ctx = tls.server_tls_from_args(args, "analyzer")
    files = tls.ServerTLS(args.tls_cert_file, args.tls_key_file, args.tls_client_ca_file)

    async def reload() -> None:
        """SIGHUP: the token files again, and the certificate files into the same context
        (rotation without a restart)."""
        if ctx is not None:
            try:
                tls.reload_server(ctx, files)
            except (OSError, ssl.SSLError) as exc:
                log.error("SIGHUP: certificate not reloaded: %s", exc)
            else:
                log.info("SIGHUP: certificate reloaded from %s", files.cert_file)
        try:
            auth.tokens = Tokens.load(args.ingest_tokens_file, args.admin_tokens_file)
        except ConfigError as exc:
            log.error("SIGHUP: tokens not reloaded, %s", exc)
            audit_reload(False)
            return
        audit_reload(True)

    return daemon.serve(make_app(state, auth), args.host, port, grace=5.0, on_reload=reload, ssl_context=ctx)
