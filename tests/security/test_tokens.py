"""Bearer tokens (logdist/auth.py) on real processes: the distributor's admin and ingest routes,
the analyzers' control endpoints, token rotation through SIGHUP, the environment overrides,
/metrics open or closed, the application/json rule of admin requests, the audit line, the
refusal of a non-loopback bind without tokens, --workers N, and the clients' --token flags.

Every refused request is checked to have changed nothing (the state is read back after)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from logdist.auth import token_id
from logdist.procs import free_port, free_ports_below_ephemeral

ROOT = Path(__file__).resolve().parents[2]


def _helpers() -> ModuleType:
    # the distributor suite's helpers (real analyzers + distributor), loaded by path
    spec = importlib.util.spec_from_file_location("_dist_helpers_sec", ROOT / "tests/distributor/conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


H = _helpers()
cluster = H.cluster  # the fixture

ADMIN = "adm-7f3c9a51e2d84b60-secret"
ADMIN_NEW = "adm-new-0b1d2e3f4a5b6c7d-secret"
INGEST = "ing-4c2e8f1a9b7d3e50-secret"
TO_ANALYZER = "ana-91e0c2d4f6a8b3c5-secret"  # the distributor -> analyzer token (an ingest token there)
WRONG = "not-a-token-at-all"
ALL_SECRETS = (ADMIN, ADMIN_NEW, INGEST, TO_ANALYZER)


def bearer(tok: str | None) -> dict[str, str]:
    return {} if tok is None else {"Authorization": f"Bearer {tok}"}


def call(
    method: str, url: str, body: Any = None, tok: str | None = None, **hdrs: str
) -> tuple[int, Any, dict[str, str]]:
    st, doc, headers = H.call(method, url, body, {**bearer(tok), **hdrs})
    return st, doc, headers  # type: ignore[no-any-return]


def write(path: Path, *tokens: str) -> Path:
    path.write_text("# tokens, one a line\n\n" + "\n".join(tokens) + "\n")
    return path


def secured(c: Any, tmp: Path, **kw: Any) -> None:
    """a1: an analyzer that wants the admin token for control and TO_ANALYZER for /analyze;
    a distributor with admin and ingest tokens that sends TO_ANALYZER to a1."""
    admin_file = write(tmp / "admin.tokens", ADMIN)
    ana_ingest = write(tmp / "analyzer-ingest.tokens", TO_ANALYZER)
    c.analyzer("a1", "--admin-tokens-file", str(admin_file), "--ingest-tokens-file", str(ana_ingest))
    cfg = c.write_config({"a1": 1.0}, **kw)
    doc = json.loads(cfg.read_text())
    doc["analyzers"][0]["token_file"] = str(ana_ingest)
    doc.update(admin_tokens_file=str(admin_file), ingest_tokens_file=str(write(tmp / "ingest.tokens", INGEST)))
    doc.update(kw)
    cfg.write_text(json.dumps(doc))
    c.dist = c.spawn("distributor", "--config", str(cfg), "--port", "{port}")


def logs_of(c: Any) -> str:
    return "".join(d.log.read_text() for d in [*c.analyzers.values(), c.dist] if d is not None)


def assert_no_token_in_logs(c: Any) -> None:
    text = logs_of(c)
    for secret in ALL_SECRETS:
        assert secret not in text


#: (method, path, body) of every distributor admin endpoint; "{id}" is a1
ADMIN_ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/", None),
    ("GET", "/queue", None),
    ("GET", "/api/v1/metrics", None),
    ("GET", "/api/v1/analyzers", None),
    ("GET", "/api/v1/analyzers/a1", None),
    ("POST", "/api/v1/analyzers", {"id": "rogue", "url": "http://127.0.0.1:9/", "weight": 1000}),
    ("PATCH", "/api/v1/analyzers/a1", {"weight": 1000}),
    ("DELETE", "/api/v1/analyzers/a1", None),
    ("GET", "/api/v1/dead-letters", None),
    ("POST", "/api/v1/dead-letters/replay", {}),
    ("POST", "/api/v1/wal/acknowledge-loss", None),
]


def dist_state(c: Any) -> Any:
    st, doc, _ = call("GET", c.url + "/api/v1/analyzers", tok=ADMIN)
    assert st == 200, doc
    return [(a["id"], a["weight"], a["enabled"]) for a in doc["analyzers"]]


def test_distributor_admin_refuses_no_wrong_and_ingest_tokens(cluster: Any, tmp_path: Path) -> None:
    secured(cluster, tmp_path)
    before = dist_state(cluster)
    for method, path, body in ADMIN_ENDPOINTS:
        for tok, want in ((None, 401), (WRONG, 401), (INGEST, 403)):
            st, doc, hdrs = call(method, cluster.url + path, body, tok)
            assert st == want, (method, path, tok, st, doc)
            assert doc["error"] == ("unauthorized" if want == 401 else "forbidden") and doc["detail"]
            if want == 401:
                assert hdrs["www-authenticate"].startswith("Bearer")
    assert dist_state(cluster) == before == [("a1", 1.0, True)]  # nothing changed
    # open: /health, /metrics (metrics_require_token is false)
    assert call("GET", cluster.url + "/health")[0] == 200
    assert call("GET", cluster.url + "/metrics")[0] == 200
    # the admin token does it all
    st, doc, _ = call("POST", cluster.url + "/api/v1/analyzers", {"id": "a2", "url": "http://127.0.0.1:9"}, ADMIN)
    assert st == 201, doc
    assert call("DELETE", cluster.url + "/api/v1/analyzers/a2", tok=ADMIN)[0] == 200
    assert call("GET", cluster.url + "/", tok=ADMIN)[0] == 200
    # the audit: one line per change, refused or not, naming the token by its id only
    log = cluster.dist.log.read_text()
    assert f"audit: who={token_id(ADMIN)} from=127.0.0.1:" in log
    assert "what=POST /api/v1/analyzers result=201" in log and "what=DELETE /api/v1/analyzers/a2 result=200" in log
    assert "audit: who=anonymous" in log and f"who={token_id(INGEST)}" in log and "result=403" in log
    assert_no_token_in_logs(cluster)


def test_ingest_needs_a_token_and_reaches_a_token_guarded_analyzer(cluster: Any, tmp_path: Path) -> None:
    secured(cluster, tmp_path)
    body = H.packet(["m1", "m2"], pid="p1")
    assert call("POST", cluster.url + "/logs", body)[0] == 401
    assert call("POST", cluster.url + "/logs", body, WRONG)[0] == 401
    st, doc, _ = call("POST", cluster.url + "/logs", body, INGEST)
    assert st in (200, 202), doc
    st, doc, _ = call("POST", cluster.url + "/api/v1/logs", H.packet(["m3"], pid="p2"), ADMIN)  # admin may ingest
    assert st in (200, 202), doc
    a1 = cluster.analyzers["a1"]

    def delivered() -> bool:  # the distributor sent its token_file's token to /analyze
        s, d, _ = call("GET", a1.url + "/ids", tok=ADMIN)
        return s == 200 and sorted(d["ids"]) == ["m1", "m2", "m3"]

    H.wait_until(delivered, 30, "delivery to a1 with the distributor's token")
    assert call("POST", a1.url + "/analyze", [{"id": "x", "message": "m"}])[0] == 401
    assert call("POST", a1.url + "/analyze", [{"id": "x", "message": "m"}], INGEST)[0] == 401
    assert_no_token_in_logs(cluster)


ANALYZER_CONTROL: list[tuple[str, str, Any]] = [
    ("GET", "/status", None),
    ("GET", "/processed", None),
    ("GET", "/stats", None),
    ("GET", "/ids", None),
    ("GET", "/fault", None),
    ("POST", "/fault", {"fail_status": 500}),
    ("POST", "/disable", None),
    ("POST", "/enable", None),
]


def test_analyzer_control_endpoints_need_the_admin_token(cluster: Any, tmp_path: Path) -> None:
    admin_file = write(tmp_path / "admin.tokens", ADMIN)
    ingest_file = write(tmp_path / "ingest.tokens", INGEST)
    a = cluster.analyzer("a1", "--admin-tokens-file", str(admin_file), "--ingest-tokens-file", str(ingest_file))
    st0, before, _ = call("GET", a.url + "/status", tok=ADMIN)
    assert st0 == 200 and before["enabled"] and before["faults"]["fail_status"] is None
    for method, path, body in ANALYZER_CONTROL:
        for tok, want in ((None, 401), (WRONG, 401), (INGEST, 403)):
            st, doc, hdrs = call(method, a.url + path, body, tok)
            assert st == want, (method, path, tok, st, doc)
            if want == 401:
                assert hdrs["www-authenticate"].startswith("Bearer")
    st, after, _ = call("GET", a.url + "/status", tok=ADMIN)
    assert after["enabled"] and after["faults"] == before["faults"]  # nothing changed
    assert call("GET", a.url + "/health")[0] == 200  # open
    assert call("POST", a.url + "/disable", tok=ADMIN)[1]["status"] == "disabled"
    assert call("GET", a.url + "/health")[0] == 503
    assert call("POST", a.url + "/analyze", [{"id": "x", "message": "m"}], INGEST)[0] == 503  # passes auth
    log = a.log.read_text()
    assert f"audit: who={token_id(ADMIN)}" in log and "what=POST /disable result=200" in log
    assert ADMIN not in log and INGEST not in log


def test_admin_posts_must_be_json_with_and_without_tokens(cluster: Any, tmp_path: Path) -> None:
    """A cross-site form can send text/plain without a preflight: refused with 415."""
    cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0})  # no token: loopback, open, but JSON-only admin changes
    text = json.dumps({"id": "rogue", "url": "http://127.0.0.1:9", "weight": 1000})
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        st, doc, _ = call("POST", cluster.url + "/api/v1/analyzers", text.encode(), **{"Content-Type": ctype})
        assert st == 415 and doc["error"] == "unsupported_media_type", (ctype, st, doc)
        assert call("POST", cluster.analyzers["a1"].url + "/disable", b"", **{"Content-Type": ctype})[0] == 415
    assert [a["id"] for a in H.get(cluster.url + "/api/v1/analyzers")["analyzers"]] == ["a1"]
    assert call("GET", cluster.analyzers["a1"].url + "/health")[0] == 200  # still enabled
    assert "what=POST /api/v1/analyzers result=415" in cluster.dist.log.read_text()


def test_token_rotation_through_sighup(cluster: Any, tmp_path: Path) -> None:
    secured(cluster, tmp_path)
    url = cluster.url + "/api/v1/analyzers"
    admin_file = tmp_path / "admin.tokens"
    assert call("GET", url, tok=ADMIN_NEW)[0] == 401
    write(admin_file, ADMIN, ADMIN_NEW)  # 1. add the new one
    cluster.dist.signal(signal.SIGHUP)
    H.wait_until(lambda: call("GET", url, tok=ADMIN_NEW)[0] == 200, 30, "the new token after reload")
    assert call("GET", url, tok=ADMIN)[0] == 200  # both work while clients move
    write(admin_file, ADMIN_NEW)  # 2. remove the old one
    cluster.dist.signal(signal.SIGHUP)
    H.wait_until(lambda: call("GET", url, tok=ADMIN)[0] == 401, 30, "the old token refused after reload")
    assert call("GET", url, tok=ADMIN_NEW)[0] == 200
    log = cluster.dist.log.read_text()
    assert log.count("audit: who=signal from=local what=SIGHUP reload result=ok") == 2
    assert_no_token_in_logs(cluster)


def test_env_overrides_and_metrics_require_token(cluster: Any, tmp_path: Path) -> None:
    cluster.analyzer("a1")
    cfg = cluster.write_config({"a1": 1.0}, metrics_require_token=True,
                               admin_tokens_file=str(write(tmp_path / "admin.tokens", ADMIN)))  # fmt: skip
    env = {"LOGDIST_ADMIN_TOKENS": f"{ADMIN_NEW}, other-admin", "LOGDIST_INGEST_TOKENS": INGEST}
    cluster.dist = cluster.spawn("distributor", "--config", str(cfg), "--port", "{port}", env=env)
    url = cluster.url
    assert call("GET", url + "/api/v1/analyzers", tok=ADMIN)[0] == 401  # the env replaced the file
    assert call("GET", url + "/api/v1/analyzers", tok="other-admin")[0] == 200
    assert call("GET", url + "/metrics")[0] == 401
    assert call("GET", url + "/metrics", tok=INGEST)[0] == 403
    assert call("GET", url + "/metrics", tok=ADMIN_NEW)[0] == 200
    assert call("GET", url + "/health")[0] == 200
    assert call("POST", url + "/logs", H.packet(["e1"]), INGEST)[0] in (200, 202)


@pytest.mark.parametrize("role", ["distributor", "analyzer"])
def test_non_loopback_bind_needs_tokens_or_insecure(role: str, tmp_path: Path, spawn: Callable[..., Any]) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "logdist", role, "--host", "0.0.0.0", "--port", str(port)]
    if role == "distributor":
        argv += ["--state-dir", str(tmp_path / "state")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGDIST_") or k == "LOGDIST_PURE"}
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "0.0.0.0" in lines[0] and "--insecure" in lines[0] and "TOKENS" in lines[0], lines
    # with --insecure it starts (probed on loopback), and warns
    extra = ["--state-dir", str(tmp_path / "state2")] if role == "distributor" else []
    d = spawn(role, "--host", "0.0.0.0", "--port", "{port}", "--insecure", *extra)
    assert "--insecure: listening on 0.0.0.0 with no token" in d.log.read_text()
    # with a token it starts without --insecure and without the warning
    tok = write(tmp_path / "admin.tokens", ADMIN)
    if role == "analyzer":
        d2 = spawn(role, "--host", "0.0.0.0", "--port", "{port}", "--admin-tokens-file", str(tok))
    else:
        cfg = tmp_path / "d.json"
        cfg.write_text(json.dumps({"admin_tokens_file": str(tok), "state_dir": str(tmp_path / "state3")}))
        d2 = spawn(role, "--config", str(cfg), "--host", "0.0.0.0", "--port", "{port}")
    assert "--insecure" not in d2.log.read_text()


@pytest.mark.slow
def test_workers_forward_admin_requests_with_tokens(cluster: Any, tmp_path: Path) -> None:
    """--workers 2: a change reaches both workers (over the private ports, with the run's
    secret), a token-less one reaches neither."""
    cluster.analyzer("a1")
    cfg = cluster.write_config({"a1": 1.0}, admin_tokens_file=str(write(tmp_path / "admin.tokens", ADMIN)))
    port = free_ports_below_ephemeral(1)[0]
    cluster.dist = cluster.spawn("distributor", "--config", str(cfg), "--port", str(port), "--workers", "2",
                                 port=port)  # fmt: skip
    url = cluster.url
    ws = H.wait_until(lambda: call("GET", url + "/health")[1].get("workers"), 30, "both workers")
    assert len(ws) == 2
    assert call("POST", url + "/api/v1/analyzers", {"id": "a2", "url": "http://127.0.0.1:9"})[0] == 401
    st, doc, _ = call("POST", url + "/api/v1/analyzers", {"id": "a2", "url": "http://127.0.0.1:9"}, ADMIN)
    assert st == 201, doc
    st, doc, _ = call("GET", url + "/api/v1/metrics", tok=ADMIN)
    assert st == 200 and all("a2" in w["analyzers"] for w in doc["per_worker"]), doc
    st, doc, _ = call("DELETE", url + "/api/v1/analyzers/a2", tok=ADMIN)
    assert st == 200, doc


def test_status_and_dlq_clients_take_a_token(cluster: Any, tmp_path: Path) -> None:
    secured(cluster, tmp_path)
    tok_file = write(tmp_path / "client.token", ADMIN)

    def logdist(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "logdist", *args], capture_output=True, text=True,
                              timeout=60, cwd=ROOT)  # fmt: skip

    p = logdist("status", "--url", cluster.url, "--token-file", str(tok_file))
    assert p.returncode == 0 and "a1" in p.stdout, p.stderr
    p = logdist("status", "--url", cluster.url)
    assert p.returncode == 1 and "401" in p.stderr
    p = logdist("dlq", "list", "--url", cluster.url, "--token", ADMIN, "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["dead_letters"] == [], p.stderr
    p = logdist("dlq", "replay", "--url", cluster.url, "--token-file", str(tok_file), "--json")
    assert p.returncode == 0, p.stderr
    p = logdist("dlq", "replay", "--url", cluster.url, "--token", INGEST)
    assert p.returncode == 1 and "403" in p.stderr
    p = logdist("generate", "--url", cluster.url + "/logs", "--count", "20", "--token", INGEST, "--json", "-q")
    assert p.returncode == 0 and json.loads(p.stdout)["acked"] == 20, (p.stdout, p.stderr)


def test_token_file_is_refused_through_the_api(cluster: Any, tmp_path: Path) -> None:
    """Registering {"token_file": "/etc/shadow"} would send a line of a local file to an
    endpoint the caller chose: token_file is a config-file key only."""
    secured(cluster, tmp_path)
    body = {"id": "a9", "url": "http://127.0.0.1:9", "token_file": str(tmp_path / "admin.tokens")}
    st, doc, _ = call("POST", cluster.url + "/api/v1/analyzers", body, ADMIN)
    assert st == 400 and doc["field"] == "token_file", doc
    st, doc, _ = call("PATCH", cluster.url + "/api/v1/analyzers/a1", {"token_file": "/etc/hostname"}, ADMIN)
    assert st == 400, doc
    st, doc, _ = call("GET", cluster.url + "/api/v1/analyzers/a1", tok=ADMIN)
    assert doc["token_file"].endswith("analyzer-ingest.tokens") and TO_ANALYZER not in json.dumps(doc)
    st, doc, _ = call("PATCH", cluster.url + "/api/v1/analyzers/a1", {"weight": 2}, ADMIN)  # keeps its token
    assert st == 200 and doc["weight"] == 2, doc
    assert call("POST", cluster.url + "/logs", H.packet(["t1"], pid="t"), INGEST)[0] in (200, 202)
    H.wait_until(lambda: "t1" in call("GET", cluster.analyzers["a1"].url + "/ids", tok=ADMIN)[1]["ids"], 30, "t1")
