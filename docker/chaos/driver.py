"""Chaos-suite traffic: steady packets to a distributor, recording which ones it accepted.

    python driver.py --url https://127.0.0.1:18081/logs --out DIR [--rate 200] [--batch 20]
        [--token-file FILE] [--cacert PEM]

With --token-file, every packet carries `Authorization: Bearer <its first token line>` (an ingest
token); an https:// URL is verified against --cacert (else the system store).

Runs until DIR/stop exists. Each worker sends packets of --batch messages, paced so that all of
them together offer about --rate messages/s. A packet is retried with the same packet_id (so the
distributor deduplicates) on connection errors, timeouts, 5xx, 408 and 429 (honouring
Retry-After), until it gets a 2xx or --give-up seconds have passed since the stop request. Every
2xx appends "packet_id count" to DIR/acked (message ids are f"{packet_id}-{i}", i < count); the
last line of DIR/driver.json is the summary.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import ssl
import threading
import time
import urllib.parse
from datetime import UTC, datetime

LEVELS = ["DEBUG", "INFO", "INFO", "INFO", "WARN", "ERROR"]
SOURCES = ["api", "auth", "db", "cache", "worker"]


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.packets_acked = 0
        self.messages_acked = 0
        self.duplicates = 0
        self.retries = 0
        self.errors: dict[str, int] = {}
        self.given_up = 0

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self.retries += 1


def packet(run: str, worker: int, seq: int, batch: int) -> tuple[str, bytes]:
    pid = f"{run}-w{worker}-{seq}"
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    msgs = [
        {
            "id": f"{pid}-{i}",
            "timestamp": now,
            "level": random.choice(LEVELS),
            "source": random.choice(SOURCES),
            "message": f"chaos message {i} of packet {seq}",
            "metadata": {"worker": str(worker)},
        }
        for i in range(batch)
    ]
    body = {
        "packet_id": pid,
        "agent_id": "chaos",
        "emitter_id": f"chaos-{run}-w{worker}",
        "timestamp": now,
        "messages": msgs,
    }
    return pid, json.dumps(body).encode()


def worker(
    idx: int,
    args: argparse.Namespace,
    run: str,
    stats: Stats,
    acked: threading.Lock,
    stop: threading.Event,
    stopped_at: list[float],
) -> None:
    url = urllib.parse.urlsplit(args.url)
    headers = {"Content-Type": "application/json", **args.auth}
    interval = args.workers * args.batch / args.rate
    seq = 0
    conn: http.client.HTTPConnection | None = None
    next_at = time.monotonic()
    while not stop.is_set():
        seq += 1
        pid, body = packet(run, idx, seq, args.batch)
        delay = 0.05
        while True:
            if stop.is_set() and stopped_at and time.monotonic() - stopped_at[0] > args.give_up:
                with stats.lock:
                    stats.given_up += 1
                return
            try:
                if conn is None:
                    conn = connect(url, args)
                conn.request("POST", url.path or "/logs", body, headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
                retry_after = resp.getheader("Retry-After")
            except (OSError, http.client.HTTPException) as e:
                stats.error(type(e).__name__)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if 200 <= status < 300:
                dup = False
                try:
                    dup = bool(json.loads(data).get("duplicate"))
                except ValueError:
                    pass
                with acked:
                    args.acked_file.write(f"{pid} {args.batch}\n")
                    args.acked_file.flush()
                with stats.lock:
                    stats.packets_acked += 1
                    stats.messages_acked += args.batch
                    stats.duplicates += dup
                break
            if status >= 500 or status in (408, 429):
                stats.error(f"http_{status}")
                try:
                    wait = float(retry_after) if retry_after else delay
                except ValueError:
                    wait = delay
                time.sleep(min(wait, 2.0))
                delay = min(delay * 2, 1.0)
                continue
            # Any other 4xx is a bug in the driver or the distributor: record and move on.
            stats.error(f"http_{status}_rejected")
            with stats.lock:
                stats.given_up += 1
            break
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            stop.wait(pause)
        else:
            next_at = time.monotonic()


def connect(url: urllib.parse.SplitResult, args: argparse.Namespace) -> http.client.HTTPConnection:
    if url.scheme == "https":
        ctx = ssl.create_default_context(cafile=args.cacert)
        return http.client.HTTPSConnection(url.hostname, url.port, timeout=args.timeout, context=ctx)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=args.timeout)


def first_token(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                return {"Authorization": f"Bearer {line}"}
    raise SystemExit(f"driver: no token line in {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rate", type=float, default=200.0, help="messages/s offered in total")
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--give-up", type=float, default=60.0, help="seconds after the stop request")
    ap.add_argument("--token-file", help="file whose first token line is sent as the bearer token")
    ap.add_argument("--cacert", help="verify an https:// URL against this CA")
    args = ap.parse_args()
    args.auth = first_token(args.token_file)
    os.makedirs(args.out, exist_ok=True)
    args.acked_file = open(os.path.join(args.out, "acked"), "a", encoding="utf-8")
    run = f"r{int(time.time())}"
    stats = Stats()
    acked = threading.Lock()
    stop = threading.Event()
    stopped_at: list[float] = []
    threads = [
        threading.Thread(target=worker, args=(i, args, run, stats, acked, stop, stopped_at), daemon=True)
        for i in range(args.workers)
    ]
    for t in threads:
        t.start()
    stop_file = os.path.join(args.out, "stop")
    last = time.monotonic()
    while not os.path.exists(stop_file):
        time.sleep(0.2)
        if time.monotonic() - last >= 10:
            last = time.monotonic()
            with stats.lock:
                print(
                    f"    [traffic] acked {stats.messages_acked} messages, {stats.retries} retries "
                    f"{dict(sorted(stats.errors.items()))}",
                    flush=True,
                )
    stopped_at.append(time.monotonic())
    stop.set()
    for t in threads:
        t.join()
    summary = {
        "run": run,
        "packets_acked": stats.packets_acked,
        "messages_acked": stats.messages_acked,
        "duplicate_answers": stats.duplicates,
        "retries": stats.retries,
        "errors": stats.errors,
        "given_up": stats.given_up,
        "complete": stats.given_up == 0,
    }
    with open(os.path.join(args.out, "driver.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f)
    print(f"    [traffic] stopped: {json.dumps(summary)}", flush=True)
    return 0 if summary["complete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
