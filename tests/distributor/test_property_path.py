"""Property-based test of the whole path, ingest -> route -> deliver, with a real distributor
process and real analyzers, on both backends and both durabilities.

Hypothesis generates packets (tests/fuzz/hostile.py): every shape (packet, log_messages, bare
array, NDJSON), numbers and strings at their limits (1e-999, 2^64 and beyond, -2^63, the
largest double, escaped and raw NUL, surrogate pairs and lone surrogates, escaped and raw,
overlong UTF-8, deep values, 3 kB strings) and packets that mix valid messages with one that
ingest must refuse. Properties, for each packet:

* a valid packet gets a 2xx counting all its messages, and every one is delivered exactly once
  to one analyzer: counted once there (no duplicate, no two analyzers), with its own id or the
  one the distributor gave it; and the ones that reach the witness analyzer have the same
  meaning (json.loads) as the message sent, id aside;
* a refused packet gets a 4xx JSON {"error", "detail"} with the predicted code, whose detail
  names the message (its index, or a byte offset inside it), and delivers nothing: after each
  packet, what the analyzers counted equals what ingest accepted, exactly;
* no message goes to dead letters, and the daemon answers /health all along.

The analyzers are two real `logdist analyzer` processes (--record-ids) and one witness: a real
HTTP server on loopback in this process that speaks the analyzer API and keeps each message
as it arrived, so that its meaning can be compared (a logdist analyzer keeps only ids and
tallies). Example counts: tests/fuzz/profiles.py (`make fuzz` runs 20 times as many).
"""

from __future__ import annotations

import http.server
import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz import hostile
from fuzz.profiles import budget

from .conftest import Cluster, call, get, wait_until

pytestmark = pytest.mark.slow


class Witness:
    """An analyzer that keeps every message it is sent (GET /health, POST /analyze)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.lock = threading.Lock()
        witness = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(200, {"status": "ok", "id": "w"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                msgs = json.loads(body)
                with witness.lock:
                    witness.messages.extend(msgs)
                self._answer(200, {"accepted": len(msgs), "duplicates": 0})

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def taken(self) -> list[Any]:
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def witness() -> Iterator[Witness]:
    w = Witness()
    yield w
    w.close()


class Path:
    """The cluster under test and what it has delivered so far."""

    def __init__(self, cluster: Cluster, witness: Witness) -> None:
        self.cluster = cluster
        self.witness = witness
        self.accepted = 0
        self.seen_ids: set[str] = set()  # repr of every id delivered so far
        self.witnessed = 0

    def delivered(self) -> tuple[int, list[Any], list[Any]]:
        """(messages counted by all analyzers, the real analyzers' ids, the witness's messages)."""
        ids: list[Any] = []
        counted = 0
        for aid in ("a1", "a2"):
            proc = get(self.cluster.analyzers[aid].url + "/processed")
            assert proc["duplicates"] == 0, f"{aid} was sent a message twice"
            counted += proc["received"]
            ids += self.cluster.ids(aid)
        msgs = self.witness.taken()
        return counted + len(msgs), ids, msgs

    def settle(self) -> tuple[list[Any], list[Any]]:
        """Waits until the analyzers counted exactly what ingest accepted; returns what is new
        since the last call (ids at the real analyzers, messages at the witness)."""
        cl = self.cluster
        wait_until(lambda: self.delivered()[0] >= self.accepted, 60, "delivery of the accepted messages")
        cl.drained()
        counted, ids, msgs = self.delivered()
        assert counted == self.accepted, f"analyzers counted {counted} messages, ingest accepted {self.accepted}"
        new_msgs = msgs[self.witnessed :]
        self.witnessed = len(msgs)
        new_ids = [i for i in ids if repr(i) not in self.seen_ids]
        return new_ids, new_msgs

    def healthy(self) -> None:
        dist = self.cluster.dist
        assert dist is not None and dist.proc is not None and dist.proc.poll() is None, "the distributor died"
        st, doc, _ = call("GET", self.cluster.url + "/health")
        assert st == 200, (st, doc)


def check_delivery(
    path: Path, built: hostile.Built, specs: list[hostile.MessageSpec], new_ids: list[Any], new_msgs: list[Any]
) -> None:
    """Every message of the packet reached one analyzer once, the witness's unchanged in meaning."""
    sent = [hostile.meaning(t) for t in built.texts]
    got_ids = new_ids + [m["id"] for m in new_msgs]
    keys = [repr(i) for i in got_ids]
    assert len(set(keys)) == len(keys) == len(sent), f"delivered ids {got_ids}, sent {len(sent)} messages"
    assert not set(keys) & path.seen_ids, "an id was delivered again"
    path.seen_ids.update(keys)
    own = {repr(m["id"]): m for m in sent if "id" in m}
    assert own.keys() <= set(keys), f"messages missing: {sorted(own.keys() - set(keys))}"
    given_ids = [i for i in got_ids if repr(i) not in own]
    noid = [n for n, m in enumerate(sent) if "id" not in m]
    assert sorted(int(str(i).rsplit("/", 1)[1]) for i in given_ids) == noid, given_ids
    for m in new_msgs:
        key = repr(m["id"])
        want = own.get(key)
        if want is None:
            want = {**sent[int(m["id"].rsplit("/", 1)[1])], "id": m["id"]}
        assert m == want, f"the message changed on the way:\nsent {want!r}\ngot  {m!r}"


@pytest.mark.parametrize("durability", ["memory", "wal"])
def test_ingest_route_deliver_property(cluster: Cluster, witness: Witness, durability: str) -> None:
    cluster.analyzer("a1")
    cluster.analyzer("a2")
    cluster.analyzers["w"] = witness  # the config only needs its url
    # Long timeouts and no ejection: a retry or a reroute under CI load would be a legitimate
    # redelivery (at least once), which this test would count as a duplicate.
    cfg_path = cluster.write_config(
        {"a1": 1.0, "a2": 1.0, "w": 1.0},
        durability=durability,
        linger_ms=2,
        health_timeout_ms=10000,
        eject_after=1000,
    )
    cfg = json.loads(cfg_path.read_text())
    for a in cfg["analyzers"]:
        a["timeout"] = 30000
    cfg_path.write_text(json.dumps(cfg))
    cluster.dist = cluster.spawn("distributor", "--config", str(cfg_path), "--port", "{port}")
    path = Path(cluster, witness)
    uids = itertools.count()
    packets = itertools.count()

    @given(
        specs=hostile.messages(max_size=6),
        shape=st.sampled_from(hostile.SHAPES),
        with_pid=st.booleans(),
    )
    @budget(40)
    def one_packet(specs: list[hostile.MessageSpec], shape: str, with_pid: bool) -> None:
        n = next(packets)
        tag = f"pp{durability[0]}{n}"  # a new emitter and packet id each time: never a duplicate
        built = hostile.build(specs, shape, [next(uids) for _ in specs], tag, f"p{n}" if with_pid else None)
        st_, doc, hdrs = call("POST", cluster.url + "/logs", built.body, {"Content-Type": built.content_type})
        if hostile.expected_verdict(specs) is None:
            assert 200 <= st_ < 300, f"a valid packet was refused: {st_} {doc}"
            assert doc["accepted"] == len(specs), doc
            path.accepted += len(specs)
        else:
            assert 400 <= st_ < 500, f"a poisoned packet got {st_} {doc}"
            assert hdrs["content-type"].startswith("application/json"), hdrs
            assert isinstance(doc, dict) and set(doc) == {"error", "detail"}, doc
            hostile.check_refusal(built, shape, specs, doc["error"], doc["detail"])
        new_ids, new_msgs = path.settle()
        if 200 <= st_ < 300:
            check_delivery(path, built, specs, new_ids, new_msgs)
        else:
            assert not new_ids and not new_msgs, "a refused packet delivered messages"
        path.healthy()

    one_packet()
    assert path.witnessed > 0, "no message reached the witness: its share is a third"
    totals = cluster.metrics()["totals"]
    assert totals["dead_letters"] == 0, totals
    letters = get(cluster.url + "/api/v1/dead-letters")
    assert not letters["dead_letters"], letters
    path.healthy()
