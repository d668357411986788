"""TLS on real processes: HTTPS ingest (curl and logdist's own emitter), plain HTTP to a TLS
port, mutual TLS, the distributor delivering to https:// analyzers (the right CA: zero loss; a
wrong CA: nothing delivered, the analyzer out of rotation), and certificate rotation by SIGHUP.

Certificates are made at test time by trustme (a throw-away CA per test); no key is committed.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from logdist.config import ConfigError, parse_distributor_config
from waiting import wait_until

Daemon = Any  # tests/conftest.py's Daemon

ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class Pki:
    """A CA and the files of its certificates, under `dir`."""

    ca: trustme.CA
    dir: Path

    @property
    def ca_file(self) -> str:
        return str(self.dir / "ca.pem")

    def leaf(self, name: str, *identities: str, cn: str | None = None) -> tuple[str, str]:
        """(cert file, key file) of a new certificate for `identities` (default: loopback)."""
        cert = self.ca.issue_cert(*(identities or ("127.0.0.1", "localhost")), common_name=cn or name)
        cert_path, key_path = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_path))
        cert.private_key_pem.write_to_path(str(key_path))
        return str(cert_path), str(key_path)


def _pki(root: Path, name: str) -> Pki:
    d = root / name
    d.mkdir()
    p = Pki(trustme.CA(), d)
    p.ca.cert_pem.write_to_path(p.ca_file)
    return p


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return _pki(tmp_path, "pki")


def _ctx(cafile: str, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


def call(
    port: int, method: str, path: str, ctx: ssl.SSLContext | None, body: Any = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """One request over HTTPS (`ctx`) or plain HTTP (None): (status, decoded JSON)."""
    conn: http.client.HTTPConnection
    if ctx is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = conn.getresponse()
        raw = r.read()
        return r.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def packet(ids: list[str], pid: str) -> dict[str, Any]:
    msgs = [{"id": i, "level": "INFO", "source": "tls", "message": f"m {i}"} for i in ids]
    return {"emitter_id": "tls-test", "packet_id": pid, "messages": msgs}


def wait_https(d: Daemon, ctx: ssl.SSLContext | None) -> None:
    """Wait until `d` answers /health (over HTTPS when `ctx`), or fail with its log."""

    def up() -> bool:
        if d.proc.poll() is not None:
            raise AssertionError(f"{d.args} exited with {d.proc.returncode}:\n{d.log.read_text()[-3000:]}")
        return call(d.port, "GET", "/health", ctx, timeout=2)[0] == 200

    wait_until(up, 30, f"{d.args[0]} on port {d.port} to answer /health")


def write_config(tmp: Path, analyzers: list[dict[str, Any]], **kw: Any) -> Path:
    cfg: dict[str, Any] = {
        "analyzers": analyzers,
        "state_dir": str(tmp / "state"),
        "health_interval_ms": 200,
        "health_timeout_ms": 1000,
        "retry_base_ms": 20,
        "retry_cap_ms": 300,
        "eject_after": 2,
        **kw,
    }
    path = tmp / "distributor.json"
    path.write_text(json.dumps(cfg))
    return path


def plain_analyzer(spawn: Callable[..., Daemon], aid: str = "a1") -> Daemon:
    return spawn("analyzer", "--id", aid, "--port", "{port}", "--record-ids")


def tls_distributor(
    spawn: Callable[..., Daemon], tmp: Path, pki: Pki, analyzers: list[dict[str, Any]], **kw: Any
) -> Daemon:
    cert, key = pki.leaf("server")
    path = write_config(tmp, analyzers, tls_cert_file=cert, tls_key_file=key, **kw)
    d = spawn("distributor", "--config", str(path), "--port", "{port}", wait=False)
    return d


def analyzer_row(aid: str, url: str) -> dict[str, Any]:
    return {"id": aid, "url": url, "weight": 1, "timeout": 2000, "retry_count": 2}


def ids_of(analyzer: Daemon, ctx: ssl.SSLContext | None = None) -> list[str]:
    status, doc = call(analyzer.port, "GET", "/ids", ctx)
    assert status == 200, doc
    return doc["ids"]  # type: ignore[no-any-return]


# --- ingest ------------------------------------------------------------------------------------


def test_https_ingest_with_curl(spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: TLS ingest with curl not tested (the emitter test covers HTTPS ingest)")
    a = plain_analyzer(spawn)
    d = tls_distributor(spawn, tmp_path, pki, [analyzer_row("a1", a.url)])
    wait_https(d, _ctx(pki.ca_file))
    body = json.dumps(packet(["c1", "c2", "c3"], "p1"))
    url = f"https://127.0.0.1:{d.port}/logs"
    out = subprocess.run(
        ["curl", "-sS", "--cacert", pki.ca_file, "-H", "Content-Type: application/json", "-d", body,
         "-o", "/dev/null", "-w", "%{http_code}", url],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout in ("200", "202"), out.stdout
    wait_until(lambda: sorted(ids_of(a)) == ["c1", "c2", "c3"], 30, "the analyzer to receive the 3 messages")
    # curl without the CA refuses the server's certificate (exit 60: peer certificate cannot be authenticated)
    bad = subprocess.run(["curl", "-sS", "-d", body, url], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 60, (bad.returncode, bad.stderr)


def test_https_ingest_with_the_emitter(spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki) -> None:
    a = plain_analyzer(spawn)
    d = tls_distributor(spawn, tmp_path, pki, [analyzer_row("a1", a.url)])
    wait_https(d, _ctx(pki.ca_file))
    out = subprocess.run(
        [sys.executable, "-m", "logdist", "generate", "--url", f"https://127.0.0.1:{d.port}", "--cacert",
         pki.ca_file, "--count", "500", "--batch", "50", "--rate", "0", "--json", "--quiet", "--seed", "1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout)
    assert summary["acked"] == 500, summary
    wait_until(lambda: len(ids_of(a)) == 500, 30, "the analyzer to receive the 500 messages")


def test_plain_http_to_a_tls_port_fails_cleanly(spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki) -> None:
    a = plain_analyzer(spawn)
    d = tls_distributor(spawn, tmp_path, pki, [analyzer_row("a1", a.url)])
    ctx = _ctx(pki.ca_file)
    wait_https(d, ctx)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        call(d.port, "POST", "/logs", None, packet(["h1"], "p1"))
    # a client that does not trust the CA refuses the certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        call(d.port, "GET", "/health", _ctx(_pki(tmp_path, "other").ca_file))
    assert call(d.port, "GET", "/health", ctx)[0] == 200  # and the daemon is fine
    assert ids_of(a) == []


def test_mtls_refuses_a_client_without_a_certificate(spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki) -> None:
    a = plain_analyzer(spawn)
    clients = _pki(tmp_path, "clients")
    d = tls_distributor(spawn, tmp_path, pki, [analyzer_row("a1", a.url)], tls_client_ca_file=clients.ca_file)
    with_cert = _ctx(pki.ca_file, clients.leaf("client", "client.test"))
    wait_https(d, with_cert)
    # no client certificate: refused at the handshake (TLS 1.3 reports it at the first read)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(d.port, "POST", "/logs", _ctx(pki.ca_file), packet(["m1"], "p1"))
    # a certificate from another CA: refused too
    stranger = _ctx(pki.ca_file, _pki(tmp_path, "strangers").leaf("stranger", "stranger.test"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(d.port, "POST", "/logs", stranger, packet(["m2"], "p2"))
    status, doc = call(d.port, "POST", "/logs", with_cert, packet(["m3"], "p3"))
    assert status in (200, 202), doc
    wait_until(lambda: ids_of(a) == ["m3"], 30, "the analyzer to receive only m3")


# --- outbound: the distributor to https:// analyzers ---------------------------------------------


def tls_analyzer(spawn: Callable[..., Daemon], pki: Pki, aid: str, *extra: str) -> Daemon:
    cert, key = pki.leaf(aid)
    a = spawn("analyzer", "--id", aid, "--port", "{port}", "--record-ids", "--tls-cert-file", cert,
              "--tls-key-file", key, *extra, wait=False)  # fmt: skip
    return a


def send(port: int, ctx: ssl.SSLContext | None, tag: str, packets: int, size: int) -> list[str]:
    sent: list[str] = []
    for p in range(packets):
        ids = [f"{tag}-{p}-{i}" for i in range(size)]
        status, doc = call(port, "POST", "/logs", ctx, packet(ids, f"{tag}-{p}"))
        assert status in (200, 202), doc
        sent.extend(ids)
    return sent


def test_https_analyzers_with_upstream_ca_lose_nothing(spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki) -> None:
    upstream = _pki(tmp_path, "upstream")
    analyzers = [tls_analyzer(spawn, upstream, f"a{i}") for i in (1, 2)]
    actx = _ctx(upstream.ca_file)
    for a in analyzers:
        wait_https(a, actx)
    rows = [analyzer_row(f"a{i}", f"https://127.0.0.1:{a.port}") for i, a in zip((1, 2), analyzers, strict=True)]
    d = tls_distributor(spawn, tmp_path, pki, rows, upstream_ca_file=upstream.ca_file)
    ctx = _ctx(pki.ca_file)
    wait_https(d, ctx)
    sent = send(d.port, ctx, "z", 40, 50)
    wait_until(lambda: call(d.port, "GET", "/queue", ctx)[1]["size"] == 0, 60, "the queue to drain")
    got = [i for a in analyzers for i in ids_of(a, actx)]
    assert sorted(got) == sorted(sent), f"{len(set(sent) - set(got))} lost, {len(got) - len(set(got))} twice"
    assert all(got_one for got_one in (ids_of(a, actx) for a in analyzers)), "both analyzers take a share"


def test_a_wrong_upstream_ca_delivers_nothing_and_takes_the_analyzer_out(
    spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki
) -> None:
    upstream, wrong = _pki(tmp_path, "upstream"), _pki(tmp_path, "wrong")
    a = tls_analyzer(spawn, upstream, "a1")
    actx = _ctx(upstream.ca_file)
    wait_https(a, actx)
    d = tls_distributor(spawn, tmp_path, pki, [analyzer_row("a1", f"https://127.0.0.1:{a.port}")],
                        upstream_ca_file=wrong.ca_file)  # fmt: skip
    ctx = _ctx(pki.ca_file)
    wait_https(d, ctx)
    send(d.port, ctx, "w", 4, 25)

    def row() -> dict[str, Any]:
        return call(d.port, "GET", "/api/v1/metrics", ctx)[1]["analyzers"][0]  # type: ignore[no-any-return]

    out = wait_until(lambda: (r := row())["state"] in ("down", "ejected") and r, 30, "a1 to be taken out")
    assert out["acked"] == 0, out
    assert "CERTIFICATE_VERIFY_FAILED" in (out["last_error"] or ""), out["last_error"]
    assert ids_of(a, actx) == []  # nothing was accepted by a server it could not verify
    assert call(d.port, "GET", "/queue", ctx)[1]["size"] == 100  # still held, not dropped


# --- rotation ---------------------------------------------------------------------------------------


def served_cert(port: int, ctx: ssl.SSLContext) -> tuple[str, str]:
    """(serial number, common name) of the certificate a new connection to `port` is shown."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        cert = s.getpeercert()
    assert cert is not None
    cn = next(v for rdn in cert["subject"] for k, v in rdn if k == "commonName")
    return str(cert["serialNumber"]), str(cn)


def rotate(pki: Pki, target: tuple[str, str], name: str) -> None:
    """Write a new certificate (and key) over the files `target` (as a deploy tool would)."""
    cert, key = pki.leaf(name)
    Path(target[0]).write_bytes(Path(cert).read_bytes())
    Path(target[1]).write_bytes(Path(key).read_bytes())


def test_sighup_rotates_the_distributor_certificate(spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki) -> None:
    a = plain_analyzer(spawn)
    d = tls_distributor(spawn, tmp_path, pki, [analyzer_row("a1", a.url)])
    ctx = _ctx(pki.ca_file)
    wait_https(d, ctx)
    serial, cn = served_cert(d.port, ctx)
    assert cn == "server"
    rotate(pki, (str(pki.dir / "server.crt"), str(pki.dir / "server.key")), "server-rotated")
    d.signal(signal.SIGHUP)
    new = wait_until(lambda: (c := served_cert(d.port, ctx))[0] != serial and c, 30, "the new certificate")
    assert new[1] == "server-rotated"
    assert call(d.port, "POST", "/logs", ctx, packet(["r1"], "p1"))[0] in (200, 202)
    wait_until(lambda: ids_of(a) == ["r1"], 30, "r1 delivered")


def test_sighup_rotates_the_analyzer_certificate(spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki) -> None:
    a = tls_analyzer(spawn, pki, "a1")
    ctx = _ctx(pki.ca_file)
    wait_https(a, ctx)
    serial, cn = served_cert(a.port, ctx)
    assert cn == "a1"
    rotate(pki, (str(pki.dir / "a1.crt"), str(pki.dir / "a1.key")), "a1-rotated")
    a.signal(signal.SIGHUP)
    new = wait_until(lambda: (c := served_cert(a.port, ctx))[0] != serial and c, 30, "the new certificate")
    assert new[1] == "a1-rotated"


def test_a_bad_certificate_on_reload_keeps_the_old_one(spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki) -> None:
    a = plain_analyzer(spawn)
    d = tls_distributor(spawn, tmp_path, pki, [analyzer_row("a1", a.url)])
    ctx = _ctx(pki.ca_file)
    wait_https(d, ctx)
    before = served_cert(d.port, ctx)
    (pki.dir / "server.key").write_text("not a key\n")
    d.signal(signal.SIGHUP)
    wait_until(lambda: "config not reloaded" in d.log.read_text(), 30, "the reload to be refused")
    assert "tls_cert_file" in d.log.read_text()
    assert served_cert(d.port, ctx) == before


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"tls_cert_file": "c.pem"}, "tls_key_file"),
        ({"tls_key_file": "k.pem"}, "tls_cert_file"),
        ({"upstream_cert_file": "c.pem"}, "upstream_key_file"),
        ({"tls_client_ca_file": "ca.pem"}, "tls_client_ca_file"),
    ],
)
def test_tls_keys_come_in_pairs(keys: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_distributor_config(keys)
    assert err.value.key == named


def test_an_unreadable_certificate_stops_the_start(spawn: Callable[..., Daemon], tmp_path: Path) -> None:
    path = write_config(tmp_path, [], tls_cert_file=str(tmp_path / "missing.crt"),
                        tls_key_file=str(tmp_path / "missing.key"))  # fmt: skip
    d = spawn("distributor", "--config", str(path), "--port", "{port}", wait=False)
    assert d.proc.wait(30) != 0
    assert "tls_cert_file" in d.log.read_text()


# --- the tools' --cacert ------------------------------------------------------------------------


def logdist(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logdist", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_status_dlq_and_verify_weights_take_cacert(spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki) -> None:
    a = plain_analyzer(spawn)
    d = tls_distributor(spawn, tmp_path, pki, [analyzer_row("a1", a.url)])
    ctx = _ctx(pki.ca_file)
    wait_https(d, ctx)
    url = f"https://127.0.0.1:{d.port}"
    send(d.port, ctx, "s", 2, 10)
    wait_until(lambda: len(ids_of(a)) == 20, 30, "20 messages delivered")
    status = logdist("status", "--url", url, "--cacert", pki.ca_file, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["metrics"]["analyzers"][0]["acked"] == 20
    dlq = logdist("dlq", "list", "--url", url, "--cacert", pki.ca_file, "--json")
    assert dlq.returncode == 0, dlq.stderr
    assert json.loads(dlq.stdout)["count"] == 0
    verify = logdist("verify-weights", "--url", url, "--cacert", pki.ca_file, "--json")
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["total_ok"], verify.stdout
    # without the CA: the certificate is refused, with one line, exit 1
    refused = logdist("status", "--url", url)
    assert refused.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr


def test_up_serves_https_ingest(spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki) -> None:
    from logdist.procs import free_port

    cert, key = pki.leaf("server")
    ports = [free_port() for _ in range(4)]
    up = spawn(
        "up", "--emitter-port", str(ports[0]), "--distributor-port", str(ports[1]), "--analyzer-ports",
        f"{ports[2]},{ports[3]}", "--weights", "1,1", "--rate", "500", "--interval", "0.3", "--run-dir",
        str(tmp_path / "run"), "--tls-cert-file", cert, "--tls-key-file", key, "--cacert", pki.ca_file,
        port=ports[0], wait=False,
    )  # fmt: skip
    ctx = _ctx(pki.ca_file)

    def acked() -> int:
        assert up.proc.poll() is None, up.log.read_text()
        doc = call(ports[1], "GET", "/api/v1/metrics", ctx, timeout=2)[1]
        return sum(r["acked"] for r in doc["analyzers"])  # type: ignore[no-any-return]

    wait_until(lambda: acked() > 0, 60, "messages from up's emitter, over HTTPS, delivered")
    up.signal(signal.SIGINT)
    assert up.proc.wait(30) == 0, up.log.read_text()


def test_mtls_to_analyzers_with_upstream_client_certificates(
    spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki
) -> None:
    upstream, clients = _pki(tmp_path, "upstream"), _pki(tmp_path, "clients")
    a = tls_analyzer(spawn, upstream, "a1", "--tls-client-ca-file", clients.ca_file)
    mine = clients.leaf("distributor", "distributor.test")
    actx = _ctx(upstream.ca_file, mine)
    wait_https(a, actx)
    # the analyzer refuses a client without a certificate
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(a.port, "GET", "/health", _ctx(upstream.ca_file))
    d = tls_distributor(spawn, tmp_path, pki, [analyzer_row("a1", f"https://127.0.0.1:{a.port}")],
                        upstream_ca_file=upstream.ca_file, upstream_cert_file=mine[0],
                        upstream_key_file=mine[1])  # fmt: skip
    ctx = _ctx(pki.ca_file)
    wait_https(d, ctx)
    sent = send(d.port, ctx, "m", 5, 20)
    wait_until(lambda: sorted(ids_of(a, actx)) == sorted(sent), 30, "the 100 messages delivered over mTLS")


def test_the_emitter_server_serves_https(spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki) -> None:
    cert, key = pki.leaf("emitter")
    e = spawn("emitter", "--port", "{port}", "--tls-cert-file", cert, "--tls-key-file", key, wait=False)
    wait_https(e, _ctx(pki.ca_file))
    # only one of the pair: refused at start, naming the missing flag
    half = logdist("emitter", "--port", "1", "--tls-cert-file", cert)
    assert half.returncode != 0
    assert "--tls-key-file" in half.stderr


def test_workers_serve_tls_and_rotate_on_sighup(spawn: Callable[..., Daemon], tmp_path: Path, pki: Pki) -> None:
    a = plain_analyzer(spawn)
    cert, key = pki.leaf("server")
    path = write_config(tmp_path, [analyzer_row("a1", a.url)], tls_cert_file=cert, tls_key_file=key)
    d = spawn("distributor", "--config", str(path), "--port", "{port}", "--workers", "2", wait=False)
    ctx = _ctx(pki.ca_file)
    wait_https(d, ctx)
    wait_until(lambda: call(d.port, "GET", "/health", ctx)[1].get("status") == "ok", 30, "both workers up")
    sent = send(d.port, ctx, "w", 10, 10)
    wait_until(lambda: sorted(ids_of(a)) == sorted(sent), 30, "the 100 messages delivered")
    serial, _ = served_cert(d.port, ctx)
    rotate(pki, (cert, key), "server-rotated")
    d.signal(signal.SIGHUP)  # the supervisor passes it to every worker
    # each new connection may reach either worker: both must show the new certificate
    wait_until(
        lambda: all(served_cert(d.port, ctx)[1] == "server-rotated" for _ in range(20)), 30, "every worker rotated"
    )
    assert served_cert(d.port, ctx)[0] != serial
