"""Packet dedup by (emitter_id, packet_id) and a hash of the content: a re-sent packet is
acknowledged and delivered once; a packet id reused with other content (a client restarted
and numbering from packet-1 again) is a new packet, delivered, counted and logged."""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from logdist.config import DistributorConfig
from logdist.distributor.admission import Admission, Admitted, IngestReply
from logdist.distributor.ledger import PacketLedger, content_hash
from logdist.distributor.wal_store import WalStore

from .conftest import Cluster, call, get, packet


def processed(cluster: Cluster, aid: str) -> tuple[int, int]:
    """(unique messages, duplicates) the analyzer has seen."""
    doc = get(cluster.analyzers[aid].url + "/processed")
    return int(doc["processed_count"]), int(doc["duplicates"])


def post(cluster: Cluster, body: object) -> dict[str, object]:
    status, doc, _ = call("POST", cluster.url + "/logs", body)
    assert status == 200, (status, doc)
    return doc  # type: ignore[no-any-return]


def test_same_id_same_content_is_a_duplicate_other_content_a_new_packet(cluster: Cluster) -> None:
    cluster.analyzer("a1")
    d = cluster.distributor({"a1": 1.0})
    first = packet(["r-1", "r-2"], "em", "packet-1")
    assert not post(cluster, first).get("duplicate")
    assert post(cluster, first)["duplicate"] is True  # a retry: acknowledged, not routed again
    # the emitter restarted and numbers its packets from 1 again: new content, same id
    again = packet(["n-1", "n-2", "n-3"], "em", "packet-1")
    doc = post(cluster, again)
    assert not doc.get("duplicate") and doc["accepted"] == 3
    assert post(cluster, again)["duplicate"] is True  # and its own retry is a duplicate
    for i in range(3):  # more reuses by the same emitter within the minute: logged once
        post(cluster, packet([f"m-{i}"], "em", "packet-1"))
    cluster.drained()
    assert sorted(cluster.ids("a1")) == ["m-0", "m-1", "m-2", "n-1", "n-2", "n-3", "r-1", "r-2"]
    assert processed(cluster, "a1") == (8, 0)  # each delivered exactly once
    totals = cluster.metrics()["totals"]
    assert (totals["duplicate_packets"], totals["reused_packet_ids"]) == (2, 4)
    status, text, _ = call("GET", cluster.url + "/metrics")
    assert status == 200 and "\nlogdist_reused_packet_ids_total 4\n" in text
    assert d.log.read_text().count("re-sent packet id") == 1


def test_messages_without_ids_in_a_reused_packet_get_ids_of_their_own(cluster: Cluster) -> None:
    """Messages without an id are given "<emitter>/<packet>/<i>"; in a packet that reuses an id
    those would be the earlier packet's ids, which the analyzer drops as duplicates."""
    cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0})
    one = {"emitter_id": "em", "packet_id": "packet-1", "messages": [{"message": "before the restart"}]}
    two = {"emitter_id": "em", "packet_id": "packet-1", "messages": [{"message": "after the restart"}]}
    post(cluster, one)
    assert not post(cluster, two).get("duplicate")
    assert post(cluster, two)["duplicate"] is True
    cluster.drained()
    ids = cluster.ids("a1")
    assert len(ids) == 2 and "em/packet-1/0" in ids
    assert processed(cluster, "a1") == (2, 0)


def test_a_body_that_differs_only_in_bytes_is_other_content(cluster: Cluster) -> None:
    """The hash is of the decoded body: gzip of the same bytes is the same content; the same
    messages in another layout are other content (stored again, the analyzers count the ids
    once)."""
    cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0})
    body = json.dumps(packet(["g-1"], "em", "p-9")).encode()
    assert not post(cluster, body).get("duplicate")
    status, doc, _ = call("POST", cluster.url + "/logs", gzip.compress(body),
                          {"Content-Type": "application/json", "Content-Encoding": "gzip"})  # fmt: skip
    assert (status, doc["duplicate"]) == (200, True)
    assert not post(cluster, body.replace(b", ", b",")).get("duplicate")
    cluster.drained()
    assert processed(cluster, "a1") == (1, 1)
    assert cluster.metrics()["totals"]["reused_packet_ids"] == 1


@dataclass
class OpenGate:
    """What admission reads from the engine: a config, no router (all pending), always open."""

    cfg: DistributorConfig
    router: None = None
    held: int = 0

    def closed_because(self) -> str | None:
        return None


async def test_a_retry_waits_for_the_same_content_being_stored_not_for_other_content(tmp_path: Path) -> None:
    ledger = PacketLedger(100)
    store = WalStore(tmp_path)  # the run's backend
    async for _ in store.recover(ledger.remember):
        pass
    adm = Admission(OpenGate(DistributorConfig(state_dir=str(tmp_path))), store, ledger)
    a = json.dumps(packet(["a-1"], "em", "p-1")).encode()
    b = json.dumps(packet(["b-1"], "em", "p-1")).encode()
    # All three arrive while the first is being written: the retry of the same content waits
    # for that write and is a duplicate; the other content does not wait and is stored too.
    first, retry, other = await asyncio.gather(adm.admit(a, "auto"), adm.admit(a, "auto"), adm.admit(b, "auto"))
    assert isinstance(first, Admitted) and isinstance(other, Admitted)
    assert isinstance(retry, IngestReply) and retry.payload.get("duplicate") is True
    assert adm.figures()["duplicate_packets"] == 1 and adm.figures()["reused_packet_ids"] == 1
    assert ledger.keys() == [(("em", "p-1"), content_hash(b))]  # the latest content of the id
    await store.close()
