"""`logdist up`: a whole local pipeline in one command, with a live view of the shares.

It starts, as its own child processes on loopback: four analyzers (8082-8085, weights
0.4/0.3/0.2/0.1), a distributor on 8081 (from a compact config file it writes into the run
directory), and an emitter on 8080 that it sets generating. It then redraws a view of each
analyzer's processed count and share against its weight, the distributor's queue depth and
rates, a few times a second (one line per interval when stdout is not a terminal).
SIGINT/SIGTERM stops the emitter, lets the distributor drain, stops the analyzers (SIGTERM,
then SIGKILL by PID after a grace period), prints the final shares and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from logdist import tls
from logdist.errors import ConfigError
from logdist.procs import die_with_parent, port_free
from logdist.tools import cluster, term

DEFAULT_WEIGHTS = (0.4, 0.3, 0.2, 0.1)


def _csv(kind: type, text: str) -> list[Any]:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of {kind.__name__}: {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--emitter-port", type=int, default=8080, help="emitter port (8080)")
    p.add_argument("--distributor-port", type=int, default=8081, help="distributor port (8081)")
    p.add_argument(
        "--analyzer-ports",
        type=lambda s: _csv(int, s),
        default=None,
        metavar="P1,P2,...",
        help="analyzer ports (default: the ports after the distributor's, one per weight)",
    )
    p.add_argument(
        "--weights",
        type=lambda s: _csv(float, s),
        default=list(DEFAULT_WEIGHTS),
        metavar="W1,W2,...",
        help="analyzer weights (0.4,0.3,0.2,0.1)",
    )
    p.add_argument("--rate", type=float, default=1000.0, help="messages/s the emitter generates (0: none)")
    p.add_argument("--batch-size", type=int, default=50, help="messages per emitter packet (50)")
    p.add_argument("--strategy", choices=("alias", "swrr"), default=None, help="distributor routing strategy")
    p.add_argument("--queue-size", type=int, default=None, help="distributor queue bound (messages)")
    p.add_argument("--run-dir", default=None, help="config files and logs (default: a new temp dir)")
    p.add_argument("--interval", type=float, default=None, help="seconds between redraws (0.25 on a TTY, else 1)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop by itself after S seconds")
    p.add_argument("--grace", type=float, default=10.0, help="seconds a child gets to stop before SIGKILL")
    cluster.add_token_arguments(p)  # the admin token of the whole pipeline (written to <run-dir>/admin.tokens)
    g = p.add_argument_group("TLS: the distributor serves HTTPS; the emitter and this view verify it with --cacert")
    g.add_argument("--tls-cert-file", metavar="PEM", help="the distributor's certificate chain")
    g.add_argument("--tls-key-file", metavar="PEM", help="its private key")
    tls.add_cacert_argument(g)


@dataclass
class Child:
    name: str
    args: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"  # https: the distributor with --tls-cert-file

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Sample:
    t: float
    accepted: int
    acked: int


@dataclass
class Snapshot:
    elapsed: float
    dist: dict[str, Any] = field(default_factory=dict)  # /api/v1/metrics
    queue: dict[str, Any] = field(default_factory=dict)
    emitter: dict[str, Any] = field(default_factory=dict)
    analyzers: list[dict[str, Any]] = field(default_factory=list)
    accepted_rate: float | None = None
    delivered_rate: float | None = None


def _check_ports(args: argparse.Namespace, n_analyzers: int) -> list[int]:
    """The analyzer ports (given, or the ones after the distributor's); all ports distinct and free."""
    ports: list[int] = args.analyzer_ports or [args.distributor_port + 1 + i for i in range(n_analyzers)]
    if len(ports) != n_analyzers:
        raise ConfigError("analyzer-ports", f"{len(ports)} ports for {n_analyzers} weights")
    all_ports = [args.emitter_port, args.distributor_port, *ports]
    if len(set(all_ports)) != len(all_ports):
        raise ConfigError("ports", f"ports must differ: {all_ports}")
    taken = [p for p in all_ports if not port_free(p)]
    if taken:
        raise ConfigError(
            "ports",
            f"in use on 127.0.0.1: {taken} (another `logdist up`?); choose others with "
            "--emitter-port/--distributor-port/--analyzer-ports",
        )
    return ports


class Pipeline:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        weights = [float(w) for w in args.weights]
        if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError("weights", "need at least one weight, none negative, not all zero")
        ports = _check_ports(args, len(weights))
        self.weights = weights
        self.run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="logdist-up-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.token_file = self._write_token_file()
        tok_args = [] if self.token_file is None else ["--admin-tokens-file", str(self.token_file)]
        self.analyzers = [
            Child(
                f"analyzer-{i + 1}",
                ["analyzer", "--id", f"analyzer-{i + 1}", "--port", str(p), "--weight", f"{w:g}", *tok_args],
                p,
                self.run_dir / f"analyzer-{i + 1}.log",
            )
            for i, (p, w) in enumerate(zip(ports, weights, strict=True))
        ]
        dargs = ["distributor", "--config", str(self._write_distributor_config()), "--state-dir"]
        dargs.append(str(self.run_dir / "state"))
        if args.strategy:
            dargs += ["--strategy", args.strategy]
        if args.queue_size:
            dargs += ["--queue-size", str(args.queue_size)]
        scheme = "https" if args.tls_cert_file else "http"
        self.distributor = Child("distributor", dargs, args.distributor_port, self.run_dir / "distributor.log",
                                 scheme=scheme)  # fmt: skip
        em_args = ["emitter", "--config", str(self._write_emitter_config())]
        if args.cacert:
            em_args += ["--cacert", str(Path(args.cacert).resolve())]
        if self.token_file is not None:
            em_args += ["--token-file", str(self.token_file)]
        self.emitter = Child("emitter", em_args, args.emitter_port, self.run_dir / "emitter.log")
        self.samples: deque[Sample] = deque(maxlen=64)
        self.counts: deque[tuple[float, list[int]]] = deque(maxlen=64)
        self.stopping = 0  # stop signals received
        self.t0 = time.monotonic()

    def _write_token_file(self) -> Path | None:
        """--token/--token-file: the pipeline's admin token, in a 0600 file every child reads
        (never on a command line); this process sends it too (cluster.set_token)."""
        token = cluster.read_token(self.args)
        cluster.set_token(self.args)
        if token is None:
            return None
        path = self.run_dir / "admin.tokens"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return path

    def _write_distributor_config(self) -> Path:
        """The distributor's config file, in the compact config shape."""
        path = self.run_dir / "distributor.json"
        analyzers = [
            {"id": a.name, "weight": w, "endpoint": f"{a.url}/analyze", "timeout": 10000, "retry_count": 3}
            for a, w in zip(self.analyzers, self.weights, strict=True)
        ]
        doc: dict[str, Any] = {"port": self.args.distributor_port, "analyzers": analyzers}
        if (self.args.tls_cert_file is None) != (self.args.tls_key_file is None):
            raise ConfigError("tls-cert-file", "--tls-cert-file and --tls-key-file go together")
        if self.args.tls_cert_file:
            doc["tls_cert_file"] = str(Path(self.args.tls_cert_file).resolve())
            doc["tls_key_file"] = str(Path(self.args.tls_key_file).resolve())
        if self.token_file is not None:
            doc["admin_tokens_file"] = str(self.token_file)
        path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        return path

    def _write_emitter_config(self) -> Path:
        path = self.run_dir / "emitter.json"
        doc = {
            "port": self.args.emitter_port,
            "distributor_urls": [f"{self.distributor.url}/logs"],
            "log_generation_rate": self.args.rate,
            "max_concurrency": 5,
            "batch_size": self.args.batch_size,
            "flush_interval": 1000,
            "emitters_per_distributor": 5,
        }
        path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        return path

    @property
    def children(self) -> list[Child]:
        return [*self.analyzers, self.distributor, self.emitter]

    def _start(self, c: Child) -> None:
        with c.log.open("ab") as fh:
            c.proc = subprocess.Popen(
                [sys.executable, "-m", "logdist", *c.args],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                process_group=0,  # a terminal's Ctrl-C reaches `up` only; it stops the children in order
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )

    def _wait_healthy(self, group: list[Child], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(group)
        while pending:
            for c in list(pending):
                assert c.proc is not None
                if c.proc.poll() is not None:
                    raise ChildFailed(c, f"exited with status {c.proc.returncode}")
                try:
                    if cluster.get(c.url + "/health", timeout=1.0).status == 200:
                        pending.remove(c)
                except cluster.Unreachable:
                    pass
            if self.stopping:
                raise Interrupted
            if pending and time.monotonic() > deadline:
                raise ChildFailed(pending[0], f"not healthy after {timeout:.0f} s")
            if pending:
                time.sleep(0.05)

    def start(self) -> None:
        for a in self.analyzers:
            self._start(a)
        self._wait_healthy(self.analyzers)
        self._start(self.distributor)
        self._wait_healthy([self.distributor])
        self._start(self.emitter)
        self._wait_healthy([self.emitter])
        if self.args.rate > 0:
            r = cluster.post(self.emitter.url + "/start", {"rate": self.args.rate})
            if r.status != 200:
                raise ChildFailed(self.emitter, f"POST /start answered {r.status}: {r.doc}")
        self.t0 = time.monotonic()

    # --- observing ----------------------------------------------------------------------

    def _get(self, url: str) -> dict[str, Any]:
        try:
            r = cluster.get(url, timeout=1.0)
        except cluster.Unreachable:
            return {}
        return r.doc if isinstance(r.doc, dict) else {}

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        s = Snapshot(elapsed=now - self.t0)
        if self.distributor.alive():
            s.dist = self._get(self.distributor.url + "/api/v1/metrics")
            s.queue = self._get(self.distributor.url + "/queue")
        if self.emitter.alive():
            s.emitter = self._get(self.emitter.url + "/stats")
        by_id = {a.get("id"): a for a in s.dist.get("analyzers", []) if isinstance(a, dict)}
        total_w = sum(self.weights)
        for a, w in zip(self.analyzers, self.weights, strict=True):
            st = self._get(a.url + "/status") if a.alive() else {}
            dm = by_id.get(a.name, {})
            if not a.alive():
                state = f"exited ({a.proc.returncode if a.proc else '?'})"
            elif not st:
                state = "no answer"
            elif not st.get("enabled", True):
                state = "disabled"
            else:
                state = str(dm.get("state") or "up")
            s.analyzers.append(
                {
                    "id": a.name,
                    "port": a.port,
                    "weight": w,
                    "expected_share": w / total_w,
                    # what the distributor aims for now (renormalised among eligible analyzers)
                    "expected_now": dm.get("expected_share") if dm.get("eligible", True) else 0.0,
                    "processed": st.get("processed_count"),
                    "duplicates": st.get("duplicates"),
                    "state": state,
                }
            )
        total = sum(x["processed"] or 0 for x in s.analyzers)
        for x in s.analyzers:
            x["share"] = (x["processed"] or 0) / total if total else None
        # the recent share: processed in the last few seconds (it shows renormalisation at once)
        counts = [x["processed"] for x in s.analyzers]
        if all(c is not None for c in counts):
            self.counts.append((now, counts))
        base = next((c for t, c in self.counts if now - t <= 5.0), None)
        if base is not None and self.counts and self.counts[-1][1] is not base:
            deltas = [max(0, c - b) for c, b in zip(self.counts[-1][1], base, strict=True)]
            dsum = sum(deltas)
            for x, dlt in zip(s.analyzers, deltas, strict=True):
                x["recent"] = dlt / dsum if dsum else None
        totals = s.dist.get("totals") or {}
        if "accepted" in totals:
            self.samples.append(Sample(now, int(totals.get("accepted", 0)), int(totals.get("acked", 0))))
            old = next((p for p in self.samples if now - p.t <= 2.5), None)
            if old is not None and now - old.t >= 0.5:
                s.accepted_rate = (self.samples[-1].accepted - old.accepted) / (now - old.t)
                s.delivered_rate = (self.samples[-1].acked - old.acked) / (now - old.t)
        return s

    def render(self, s: Snapshot, color: bool) -> tuple[list[str], str]:
        d, q, e = s.dist, s.queue, s.emitter
        totals = d.get("totals") or {}
        head = (
            f"logdist up  distributor {self.distributor.url} ({d.get('backend', '?')}, {d.get('durability', '?')})"
            f"  {s.elapsed:6.1f} s  Ctrl-C stops"
        )
        em = (
            f"emitter      {self.emitter.url}  {term.num(e.get('rate'))} msg/s target  "
            f"sent {term.num(e.get('messages_sent'))}  acked {term.num(e.get('messages_acked'))}  "
            f"retried {term.num(e.get('retried'))}"
        )
        di = (
            f"distributor  queue {term.num(q.get('size'))}  accepted {_rate(s.accepted_rate)}  "
            f"delivered {_rate(s.delivered_rate)}  total accepted {term.num(totals.get('accepted'))}  "
            f"delivered {term.num(totals.get('acked'))}  rejected {term.num(totals.get('rejected'))}"
        )
        rows = []
        for a in s.analyzers:
            recent = a.get("recent")
            target = a["expected_now"] if a["expected_now"] is not None else a["expected_share"]
            b = term.bar(recent or 0.0, 24, marker=target)
            ok = recent is not None and abs(recent - target) <= 0.02
            state = a["state"]
            if color:
                b = term.paint(b, "32" if ok else "33", True)
                bad = state not in ("up", "healthy", "closed", "ok")
                state = term.paint(state, "31" if bad else "32", True)
            rows.append(
                [
                    a["id"],
                    a["port"],
                    f"{a['weight']:g}",
                    term.num(a["processed"]),
                    term.pct(a["share"]),
                    term.pct(recent),
                    term.pct(target),
                    b,
                    state,
                ]
            )
        tbl = term.table(
            [
                "analyzer",
                "port",
                "weight",
                "processed",
                "share",
                "last 5 s",
                "target",
                "last 5 s vs target (|)",
                "state",
            ],
            rows,
            "lrrrrrrll",
        )
        a1 = self.analyzers[0].url
        lines = [head, em, di, "", *tbl.splitlines(), ""]
        lines.append(f"try: curl -X POST {a1}/disable (then /enable)   logdist status --url {self.distributor.url}")
        lines.append(f"logs and configs: {self.run_dir}")
        parts = [
            f"{a['id']} {term.pct(a['share'])}/{term.pct(a['expected_share'], 0)} n={a['processed'] or 0} {a['state']}"
            for a in s.analyzers
        ]
        line = (
            f"t={s.elapsed:.1f}s queue={q.get('size', '-')} accepted/s={_rate(s.accepted_rate, bare=True)} "
            f"delivered/s={_rate(s.delivered_rate, bare=True)} | " + " | ".join(parts)
        )
        return lines, line

    # --- stopping -----------------------------------------------------------------------

    def _terminate(self, group: list[Child], grace: float) -> None:
        for c in group:
            if c.alive():
                assert c.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    c.proc.send_signal(signal.SIGCONT)  # a stopped child must be able to exit
                    c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in group:
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    c.proc.kill()
                c.proc.wait(5)

    def stop_front(self, grace: float) -> None:
        """Stop the emitter, then the distributor (which delivers what it holds first)."""
        if self.emitter.alive():
            with contextlib.suppress(cluster.Unreachable):
                cluster.post(self.emitter.url + "/stop", timeout=2.0)
        self._terminate([self.emitter], grace)
        self._terminate([self.distributor], grace)

    def stop_analyzers(self, grace: float) -> None:
        self._terminate(self.analyzers, grace)

    def final_table(self, s: Snapshot) -> str:
        rows = [
            [a["id"], f"{a['weight']:g}", term.num(a["processed"]), term.pct(a["share"]), term.pct(a["expected_share"])]
            for a in s.analyzers
        ]
        total = sum(a["processed"] or 0 for a in s.analyzers)
        tbl = term.table(["analyzer", "weight", "processed", "share", "expected"], rows, "lrrrr")
        return f"final counts (unique messages each analyzer processed):\n{tbl}\ntotal {term.num(total)}"

    def kill_all(self) -> None:
        for c in self.children:
            if c.alive():
                assert c.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    c.proc.kill()
        for c in self.children:
            if c.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(5)


def _rate(x: float | None, bare: bool = False) -> str:
    if x is None:
        return "-"
    return f"{round(x):,}" if bare else f"{round(x):,}/s"


class Interrupted(Exception):
    """A stop signal arrived while the pipeline was starting."""


class ChildFailed(Exception):
    def __init__(self, child: Child, why: str) -> None:
        super().__init__(f"{child.name} {why}")
        self.child = child


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    tls.use_cacert(args)
    pipeline = Pipeline(args)

    def on_signal(signum: int, frame: object) -> None:
        pipeline.stopping += 1
        if pipeline.stopping >= 3:  # third time: no more patience
            pipeline.kill_all()
            os._exit(1)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    view = term.LiveView(out)
    interval = args.interval if args.interval is not None else (0.25 if view.tty else 1.0)
    color = term.color_enabled(out)
    code = 0
    try:
        print(f"logdist up: starting in {pipeline.run_dir} ...", file=out, flush=True)
        try:
            pipeline.start()
            print(
                f"logdist up: analyzers on {', '.join(str(a.port) for a in pipeline.analyzers)}, "
                f"distributor on {pipeline.distributor.port}, emitter on {pipeline.emitter.port}; Ctrl-C stops",
                file=out,
                flush=True,
            )
        except ChildFailed as exc:
            print(f"logdist up: {exc}; end of its log ({exc.child.log}):\n{_tail(exc.child.log)}", file=sys.stderr)
            code = 1
        except Interrupted:
            pass
        while code == 0 and not pipeline.stopping:
            lines, line = pipeline.render(pipeline.snapshot(), color)
            view.show(lines, line)
            if args.duration is not None and time.monotonic() - pipeline.t0 >= args.duration:
                break
            t_next = time.monotonic() + interval
            while not pipeline.stopping and time.monotonic() < t_next:
                time.sleep(min(0.05, interval))
    finally:
        view.close()
        print(
            "logdist up: stopping: emitter, then the distributor (it drains), then analyzers ...", file=out, flush=True
        )
        try:
            pipeline.stop_front(args.grace)
            if code == 0:
                print(pipeline.final_table(pipeline.snapshot()), file=out, flush=True)
            pipeline.stop_analyzers(args.grace)
        except BaseException:
            pipeline.kill_all()
            raise
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
    if code == 0:
        print("logdist up: stopped", file=out, flush=True)
    return code
