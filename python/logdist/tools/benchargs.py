"""The end-to-end benchmark's flags, defined once: bench/e2e.py and `logdist bench` both
build their parser with `add_arguments`. Standard library only, and it imports neither of
them (e2e.py imports this; `logdist bench` imports this and loads e2e.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

SYSTEMS = "logdist-memory,logdist-memory-tls,logdist-wal,nginx,haproxy"


def _default_out(bench_dir: Path | None) -> str:
    base = bench_dir if bench_dir is not None else Path.cwd() / "bench"
    return str(base / "results" / "latest.json")


def find_bench_dir(explicit: str | None = None) -> Path | None:
    """bench/ of the source tree: --bench-dir, $LOGDIST_BENCH_DIR, next to this package's
    source tree, or ./bench."""
    candidates = [explicit, os.environ.get("LOGDIST_BENCH_DIR")]
    candidates.append(str(Path(__file__).resolve().parents[3] / "bench"))  # python/logdist/tools/..
    candidates.append(str(Path.cwd() / "bench"))
    for c in candidates:
        if c and (Path(c) / "e2e.py").is_file():
            return Path(c).resolve()
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of the end-to-end bench, on `parser`."""
    _add_what(parser)
    _add_load(parser)
    _add_logdist(parser)
    _add_run(parser)


def _add_what(parser: argparse.ArgumentParser) -> None:
    """What is measured: the mode, the systems, the sinks."""
    parser.add_argument(
        "--mode",
        choices=("throughput", "bounded", "analyzer"),
        default="throughput",
        help="throughput: the side-by-side table (default); bounded: check that RSS stays "
        "bounded (429s, not growth) when every sink is down; analyzer: one `logdist analyzer` "
        "alone, messages/s and messages/s per CPU core",
    )
    parser.add_argument(
        "--systems",
        default=SYSTEMS,
        help=f"comma-separated subset of {SYSTEMS} (also logdist-memory-py, logdist-wal-py: the same on the "
        "pure-Python core; logdist-memory-1w, logdist-wal-1w: one process; logdist-memory@base, "
        "logdist-wal@base: from --baseline-tree, added by default when it is given)",
    )
    parser.add_argument(
        "--formats",
        default="batch",
        help="the analyzers' wire formats: each logdist system runs once per format, comma-separated from "
        "batch,message,packet (default batch); a run in another format than batch is reported as "
        "SYSTEM/FORMAT (e.g. logdist-memory/message), its deliveries counted by logdist's acknowledgements",
    )
    parser.add_argument(
        "--sinks",
        choices=("nginx", "analyzer"),
        default="nginx",
        help="nginx: cheap 204 sinks (the distributor alone); analyzer: four `logdist analyzer` "
        "processes (the whole pipeline)",
    )
    parser.add_argument(
        "--baseline-tree",
        default=None,
        metavar="DIR",
        help="another checkout's source tree (its python/ holds its own built core): adds the systems "
        "logdist-memory@base and logdist-wal@base, run from DIR/python with the same flags, to compare "
        "two versions side by side in one run",
    )


def _add_load(parser: argparse.ArgumentParser) -> None:
    """How the load is driven (wrk)."""
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured run (default 8)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per system; figures are medians (3)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds before the runs (3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument(
        "--half-connections", type=int, default=16, help="connections for the paced half-rate latency run (16)"
    )
    parser.add_argument(
        "--no-half-rate", dest="half_rate", action="store_false", help="skip the paced half-rate latency run"
    )
    parser.add_argument(
        "--id-mode",
        choices=("message", "packet", "static"),
        default="message",
        help="message: packet and message ids unique per request (default); packet: only the "
        "packet id; static: one fixed body",
    )


def _add_logdist(parser: argparse.ArgumentParser) -> None:
    """How the systems under test are run."""
    parser.add_argument("--proxy-workers", type=int, default=2, help="nginx workers / HAProxy threads (2)")
    parser.add_argument(
        "--logdist-workers",
        type=int,
        default=2,
        help="`logdist distributor --workers N` for logdist-memory/-wal (2: one per core here, as nginx's "
        "workers); the -1w systems run one process",
    )
    parser.add_argument("--sink-workers", type=int, default=1, help="worker processes of the nginx sinks (1)")
    parser.add_argument("--pure", action="store_true", help="run logdist on the pure-Python backend (LOGDIST_PURE=1)")
    parser.add_argument(
        "--logdist-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `logdist distributor` (repeatable), e.g. --logdist-arg=--queue-size=100000",
    )
    parser.add_argument(
        "--logdist-config",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a distributor config key for the logdist systems (repeatable), e.g. "
        "--logdist-config wal_checkpoint_ms=2000",
    )
    parser.add_argument(
        "--durability",
        choices=("memory", "wal"),
        default="memory",
        help="logdist durability for --mode bounded (memory)",
    )
    parser.add_argument("--bounded-duration", type=float, default=20.0, help="seconds of load for --mode bounded (20)")


def _add_run(parser: argparse.ArgumentParser) -> None:
    """The run itself: dependencies, work dir, output, profiling."""
    bench_dir = find_bench_dir()
    parser.add_argument("--install-deps", action="store_true", help="apt-get install nginx, haproxy, wrk first")
    parser.add_argument(
        "--workdir", default=None, help="where the temp work dir goes (configs, logs, the WAL); default $TMPDIR"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp work dir (configs, logs)")
    parser.add_argument("--out", default=_default_out(bench_dir), help="JSON results file (bench/results/latest.json)")
    parser.add_argument(
        "--profile", action="store_true", help="one extra full-load run of each logdist system under py-spy"
    )
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native (Rust frames too)")
    parser.add_argument("--bench-dir", default=None, help="the source tree's bench/ directory (auto-detected)")
