"""The emitter role: synthetic traffic for a distributor, and a log shipper.

`logdist emitter [--config FILE] [--port N] [--url URL ...]` runs the emitter server, the v0
emitter API (`server`); `logdist emitter --once --url URL ...` (also `logdist generate`) runs the
one-shot generator with the Go-style generator flags (`oneshot`); `logdist emitter --ship PATH
... [--follow]` ships real log lines and resumes from checkpoints (`ship`, `tail`,
`checkpoint`). Messages come from `messages`, delivery with retry and failover from `sender`.
"""

from __future__ import annotations

import argparse

from logdist import daemon, tls


def add_arguments(p: argparse.ArgumentParser) -> None:
    from logdist.emitter.oneshot import add_oneshot_arguments

    p.add_argument("--config", metavar="FILE", help="emitter config, the compact config shape (JSON or TOML)")
    p.add_argument("--port", type=int, default=None, help="listen port (overrides the config; default 8080)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1; 0.0.0.0 in Docker)")
    p.add_argument("--start", type=float, default=None, metavar="RATE", help="server: start generating RATE msgs/s")
    p.add_argument("--once", action="store_true", help="one-shot generator instead of a server (like `generate`)")
    p.add_argument("--log-level", default="INFO")
    sh = p.add_argument_group("shipping real logs (at-least-once; --url/--config give the distributors)")
    sh.add_argument(
        "--ship",
        metavar="PATH",
        nargs="+",
        action="extend",
        help="send each line of these files or globs ('-': stdin) as a message; repeatable",
    )
    sh.add_argument("--follow", "-f", action="store_true", help="keep shipping what is appended; follow rotation")
    sh.add_argument("--source", help="the messages' source (default: the file name)")
    sh.add_argument("--flush-ms", type=float, default=1000.0, help="send a partial batch after this long (1000)")
    sh.add_argument(
        "--state-file", metavar="PATH", help="checkpoints of the files (default: <state-dir>/ship-<hash>.json)"
    )
    sh.add_argument("--state-dir", default="./logdist-state", help="where the default state file lives")
    sh.add_argument("--glob-interval", type=float, default=1.0, metavar="S", help="--follow: re-scan paths (1 s)")
    sh.add_argument(
        "--rotate-wait", type=float, default=5.0, metavar="S", help="read a rotated-away file until idle this long (5)"
    )
    sh.add_argument(
        "--stop-timeout", type=float, default=30.0, metavar="S", help="on SIGTERM, wait this long for acks (30)"
    )
    sh.add_argument("--progress", type=float, default=10.0, metavar="S", help="progress line on stderr every S s")
    g = p.add_argument_group("one-shot generator (--once; --url also overrides distributor_urls in server mode)")
    add_oneshot_arguments(g, url_required=False)  # type: ignore[arg-type]
    tls.add_server_arguments(p)  # the emitter server's listener


def run(args: argparse.Namespace) -> int:
    from logdist.config import EmitterConfig, load_emitter_config
    from logdist.emitter.server import make_app, with_urls
    from logdist.errors import ConfigError

    config = load_emitter_config(args.config) if args.config else EmitterConfig()
    config = with_urls(config, args.url)
    if args.ship:
        from logdist.emitter.ship import run_ship

        return run_ship(args, list(config.distributor_urls))
    if args.once:
        from logdist.emitter.oneshot import run_oneshot

        return run_oneshot(args, list(config.distributor_urls))
    port = args.port if args.port is not None else config.port
    if not 0 < port < 65536:
        raise ConfigError("port", f"{port} is not a TCP port")
    daemon.setup_logging("emitter", args.log_level)
    give_up = args.give_up_after if args.give_up_after > 0 else None
    from logdist.emitter.oneshot import read_token

    server_ssl = tls.server_tls_from_args(args, "emitter")
    app = make_app(config, emitter_id=args.emitter_id, give_up_after_s=give_up, autostart_rate=args.start,
                   token=read_token(args), client_ssl=tls.client_ssl_from_args(args))  # fmt: skip
    return daemon.serve(app, args.host, port, grace=10.0, ssl_context=server_ssl)
