"""Typed, validated configuration of the daemons, and its loaders (JSON, or TOML by suffix).

Every invalid value raises `logdist.errors.ConfigError(key, detail)` naming the key, e.g.
`analyzers[2].weight`. Shapes accepted as they are:

- the compact distributor config: {"port", "analyzers": [{"id", "weight", "endpoint" (full URL
  ending in /analyze), "timeout" (ms), "retry_count"}]}
- the analyzer registration: {"id", "url" (base URL), "weight"}
- the emitter config: {"port", "distributor_urls", "log_generation_rate", "max_concurrency",
  "batch_size", "flush_interval", "emitters_per_distributor"}

Distributor keys of logdist's own (all optional, defaults in DistributorConfig):
  host, queue_size (max messages held, not yet acknowledged), queue_bytes (max bytes of message
  payload held, not yet acknowledged; over either bound ingest answers 429), strategy
  ("alias" | "swrr"), route_key (what places a message: "random", a weighted random pick per
  message, the default; "message_id", its id; or a dotted path to a message field such as
  "source" or "metadata.trace_id": a string's text or a number's; such a message goes to the
  analyzer its key picks by weighted rendezvous hashing among the eligible ones, so the same key
  reaches the same analyzer while the eligible set and the weights stay the same; a message
  without the field is placed at random and counted in keyed_fallback), seed, durability
  ("memory" | "wal"), state_dir, max_body_bytes,
  ingest_buffer_bytes (bytes of request bodies read or processed at once: a body's
  Content-Length is taken when its head arrives, a chunked body's bytes as they arrive; past it
  ingest answers 429; at least max_body_bytes), header_timeout_s (a connection's request head
  must arrive within it, else the connection is closed), body_timeout_s (a body must arrive
  within it of its head, else 408 and close), keepalive_timeout_s (an idle kept-alive
  connection is closed after it), max_connections (connections served at once, per process;
  over it /health still answers and anything else gets 503; the soft RLIMIT_NOFILE is
  raised for it at start, and the bound lowered if the hard limit cannot hold it), these five
  read at start only,
  max_decoded_bytes (gzip bound), max_encoded_members (gzip members, or deflate streams, one body may
  hold), max_messages_per_packet, batch_max_messages, batch_max_bytes,
  linger_ms (how long a busy sender lets a batch fill: busy = a batch in flight, or in wal mode
  one sent within 10 x linger_ms), max_inflight (batches in flight per analyzer), health_interval_ms,
  health_timeout_ms, eject_after (consecutive failures that eject an analyzer: of health probes,
  or of real deliveries (outlier detection): no answer, a timeout, 5xx or 408, not a 429 (throttling)
  nor a permanent 4xx (a refused batch)), ejection_base_ms and ejection_max_ms (the n-th ejection in
  a row holds the analyzer out for min(ejection_max_ms, n x ejection_base_ms); /health does not
  re-admit it before; once re-admitted, one failure before its first acknowledgement ejects it again),
  ejection_decay_ms (each such period of healthy delivery lowers n by one), pending_release_per_s
  (messages per second handed from pending, the backlog no analyzer could take, to the analyzers
  when all the enabled weight is eligible; scaled down by the eligible part of it; 0: all at once),
  retry_base_ms, retry_cap_ms,
  dedup_window (remembered (emitter_id, packet_id) pairs), shutdown_grace_s, timeout and
  retry_count (defaults for analyzers that do not set them), and for durability "wal" (the log
  lives in <state_dir>/wal): wal_max_bytes (bound on disk; full -> 429), wal_segment_bytes,
  wal_commit_delay_us (group-commit batching window), wal_checkpoint_ms (progress persistence).
The admin plane (README "Admin plane"): admin_port (a second listener, on admin_host, default
127.0.0.1, that serves the admin API, the dashboard and every read besides ingest; the main
port then serves only ingest, /health and /metrics, and answers 404 to the rest; must differ
from port; read at start only), allowed_analyzer_hosts (a list of hostnames, "*.example.com"
wildcards, IP addresses and CIDRs such as "10.0.0.0/8": an analyzer whose host matches none is
refused; unset: any host), instance_id (this distributor's id in the X-Logdist-Hop header of
its deliveries; a request whose header names it is refused with 508: a loop; default: random
at each start, the same in every worker of --workers N).
Tokens (logdist/auth.py): ingest_tokens_file and admin_tokens_file (one bearer token per line,
blank lines and # comments ignored, re-read on SIGHUP; the environment variables
LOGDIST_INGEST_TOKENS / LOGDIST_ADMIN_TOKENS, comma-separated, replace them), and
metrics_require_token (false: /metrics stays open; true: it needs an admin token). With no
token configured everything is open, and a non-loopback host is refused unless --insecure.
TLS (logdist/tls.py; file paths, re-read on SIGHUP): tls_cert_file and tls_key_file (both or
neither: the listener serves HTTPS, TLS 1.2+), tls_client_ca_file (mutual TLS: a client without
a certificate signed by it is refused at the handshake), upstream_ca_file (https:// analyzers
are verified against it; unset: the system store), upstream_cert_file and upstream_key_file
(both or neither: the client certificate sent to https:// analyzers).
Analyzer weights are finite numbers in [0, MAX_WEIGHT]; ids and URLs hold no control characters
or whitespace; url and endpoint have a host and no query or fragment, and the endpoint's path
ends in /analyze or /logs (ENDPOINT_SUFFIXES: never a control path such as /disable).
Analyzer keys besides those: "enabled" (bool), "format" (how batches go on the
wire: "batch", a JSON array per POST, the default; "message", one message object per POST, for
analyzers that decode one message; "packet", a packet object {"packet_id", "agent_id", "sent_at",
"log_messages", "metadata"} per POST, for analyzers that decode that object; see distributor/wire.py) and
"message_concurrency" (requests in flight at once to the analyzer with format "message", 1..4096,
default 32). The worker-pool keys of the worker-pool
distributor config (workers, worker_count, ...) and log_level are accepted and ignored.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from logdist.errors import ConfigError

__all__ = [
    "FORMATS",
    "MAX_WEIGHT",
    "AnalyzerSpec",
    "ConfigError",
    "DistributorConfig",
    "EmitterConfig",
    "check_weight_sum",
    "load_distributor_config",
    "load_emitter_config",
    "parse_analyzer",
    "parse_distributor_config",
    "parse_emitter_config",
]


# ---------------------------------------------------------------------------------------------
# small typed readers: each names the key in its error


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(d: dict[str, Any], key: str, path: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
    if key not in d or d[key] is None:
        return default
    v = d[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not _is_int(v):
        raise ConfigError(path + key, f"expected an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ConfigError(path + key, f"must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ConfigError(path + key, f"must be <= {hi}, got {v}")
    return int(v)


def _float(
    d: dict[str, Any],
    key: str,
    path: str,
    default: float,
    lo: float | None = None,
    lo_open: bool = False,
    hi: float | None = None,
) -> float:
    if key not in d or d[key] is None:
        return default
    v = d[key]
    if not (_is_int(v) or isinstance(v, float)):
        raise ConfigError(path + key, f"expected a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise ConfigError(path + key, f"must be finite, got {v!r}")
    if lo is not None and (f <= lo if lo_open else f < lo):
        raise ConfigError(path + key, f"must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None and f > hi:
        raise ConfigError(path + key, f"must be <= {hi:g}, got {v!r}")
    return f


def _str(d: dict[str, Any], key: str, path: str, default: str | None, choices: tuple[str, ...] = ()) -> str | None:
    if key not in d or d[key] is None:
        return default
    v = d[key]
    if not isinstance(v, str):
        raise ConfigError(path + key, f"expected a string, got {v!r}")
    if choices and v not in choices:
        raise ConfigError(path + key, f"must be one of {', '.join(choices)}, got {v!r}")
    return v


def _bool(d: dict[str, Any], key: str, path: str, default: bool) -> bool:
    if key not in d or d[key] is None:
        return default
    v = d[key]
    if not isinstance(v, bool):
        raise ConfigError(path + key, f"expected true or false, got {v!r}")
    return v


def _unprintable(s: str) -> str | None:
    """The first control, format or separator character of `s` (newline, ESC, a bidi
    override ...), or None: such text could forge log lines or drive a terminal."""
    for c in s:
        if unicodedata.category(c)[0] in "CZ" and c != " ":
            return c
    return None


def _http_url(v: object, key: str) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(key, f"expected a URL string, got {v!r}")
    if (c := _unprintable(v)) is not None or " " in v:
        # urlsplit drops tabs and newlines silently: the URL would pass and keep them
        raise ConfigError(key, f"must not contain spaces or control characters ({c or ' '!r}), got {v!r}")
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(key, f"expected an http(s) URL, got {v!r}")
    return v


def _unknown(d: dict[str, Any], known: set[str], path: str) -> None:
    for k in d:
        if k not in known:
            raise ConfigError(path + str(k), "unknown key")


# ---------------------------------------------------------------------------------------------
# analyzers


@dataclass(frozen=True)
class AnalyzerSpec:
    """One analyzer: where to send batches, its weight, and its delivery settings."""

    id: str
    url: str  # base URL: {url}/health is probed
    endpoint: str  # where batches are POSTed (the compact config's "endpoint"; default {url}/analyze)
    weight: float = 1.0
    timeout_s: float = 10.0
    retry_count: int = 3
    enabled: bool = True
    format: str = "batch"  # the wire format: one of FORMATS
    message_concurrency: int = 32  # format "message": requests in flight at once
    token_file: str | None = None  # where the token sent to it (Authorization: Bearer) is read
    token: str | None = field(default=None, repr=False)  # read from token_file; never shown

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "endpoint": self.endpoint,
            "weight": self.weight,
            "timeout": round(self.timeout_s * 1000),
            "retry_count": self.retry_count,
            "enabled": self.enabled,
            "format": self.format,
            "message_concurrency": self.message_concurrency,
            **({"token_file": self.token_file} if self.token_file else {}),
        }


#: the largest weight: weights are relative, and with this bound the sum of any number of
#: analyzers stays finite (an infinite sum cannot define shares)
MAX_WEIGHT = 1e6

#: how batches go on the wire to an analyzer (its "format" key)
FORMATS = ("batch", "message", "packet")
#: the bound on an analyzer's message_concurrency
MAX_MESSAGE_CONCURRENCY = 4096

_ANALYZER_KEYS = {
    "id", "url", "endpoint", "weight", "timeout", "retry_count", "enabled", "format", "message_concurrency",
    "token_file",
}  # fmt: skip


def parse_analyzer(
    d: object,
    path: str = "",
    *,
    default_timeout_ms: float = 10_000,
    default_retry_count: int = 3,
    token_file_ok: bool = True,
) -> AnalyzerSpec:
    """An AnalyzerSpec from the compact config's ({id, weight, endpoint, timeout, retry_count}) or
    the registration's ({id, url, weight}) shape. `path` prefixes key names in errors (e.g. "analyzers[1].").
    `token_file_ok` False (a registration through the API): "token_file" is refused, since it
    would send a file of the distributor's host to the endpoint the caller chose."""
    if not isinstance(d, dict):
        raise ConfigError(path.rstrip(".") or "analyzer", f"expected an object, got {type(d).__name__}")
    _unknown(d, _ANALYZER_KEYS, path)
    aid = d.get("id")
    if not isinstance(aid, str) or not aid or len(aid) > 200 or "/" in aid or "\\" in aid or " " in aid:
        raise ConfigError(path + "id", f"expected a non-empty name without '/' or whitespace, got {aid!r}")
    if (c := _unprintable(aid)) is not None:
        raise ConfigError(path + "id", f"must not contain control characters or whitespace ({c!r}), got {aid!r}")
    if d.get("url") is None and d.get("endpoint") is None:
        raise ConfigError(path + "url", "one of 'url' (base URL) or 'endpoint' (full /analyze URL) is required")
    if d.get("url") is not None:
        url = _http_url(d["url"], path + "url").rstrip("/")
    else:
        p = urlsplit(_http_url(d["endpoint"], path + "endpoint"))
        base_path = p.path[: -len("/analyze")] if p.path.endswith("/analyze") else ""
        url = urlunsplit((p.scheme, p.netloc, base_path, "", "")).rstrip("/")
    endpoint = _http_url(d["endpoint"], path + "endpoint") if d.get("endpoint") is not None else url + "/analyze"
    _check_endpoint_path(url, endpoint, path)
    weight = _float(d, "weight", path, 1.0, lo=0.0, hi=MAX_WEIGHT)
    timeout_ms = _float(d, "timeout", path, default_timeout_ms, lo=0.0, lo_open=True)
    retry_count = _int(d, "retry_count", path, default_retry_count, lo=1, hi=1000)
    enabled = _bool(d, "enabled", path, True)
    fmt = _str(d, "format", path, "batch", FORMATS) or "batch"
    concurrency = _int(d, "message_concurrency", path, 32, lo=1, hi=MAX_MESSAGE_CONCURRENCY)
    token_file = _str(d, "token_file", path, None)
    token = None
    if token_file is not None:
        if not token_file_ok:
            raise ConfigError(path + "token_file", "set in the config file only, not through the API")
        from logdist.auth import read_token_file

        tokens = read_token_file(token_file, path + "token_file")
        if not tokens:
            raise ConfigError(path + "token_file", f"{token_file!r} holds no token")
        token = tokens[0]
    return AnalyzerSpec(
        id=aid, url=url, endpoint=endpoint, weight=weight, timeout_s=timeout_ms / 1000.0,
        retry_count=retry_count, enabled=enabled, format=fmt, message_concurrency=concurrency,
        token_file=token_file, token=token,
    )  # fmt: skip


#: the paths an analyzer endpoint may end in: an analyzer's /analyze, or a distributor's ingest
#: (/logs, /api/v1/logs). Never a control path (/disable, /enable, /fault, ...): a registered
#: endpoint must not make the distributor POST wherever it is told.
ENDPOINT_SUFFIXES = ("/analyze", "/logs")


def _check_endpoint_path(url: str, endpoint: str, path: str) -> None:
    for key, v in (("url", url), ("endpoint", endpoint)):
        p = urlsplit(v)
        if p.query or p.fragment or "?" in v or "#" in v:
            raise ConfigError(path + key, f"must have no query or fragment, got {v!r}")
        if not p.hostname:
            raise ConfigError(path + key, f"names no host, got {v!r}")
    if not urlsplit(endpoint).path.endswith(ENDPOINT_SUFFIXES):
        raise ConfigError(path + "endpoint", f"its path must end in {' or '.join(ENDPOINT_SUFFIXES)} (batches are "
                          f"POSTed there; never a control path such as /disable), got {endpoint!r}")  # fmt: skip


def check_weight_sum(weights: list[float], key: str = "analyzers") -> None:
    """The weights together must define shares: their sum must be finite. (Each is at most
    MAX_WEIGHT, so this holds for any real number of analyzers; checked all the same, since
    an infinite sum would refuse every packet.) All zero stays allowed: traffic waits."""
    total = sum(weights)
    if not math.isfinite(total):
        raise ConfigError(key, f"the weights sum to {total!r}, which cannot define shares")


# ---------------------------------------------------------------------------------------------
# distributor


@dataclass(frozen=True)
class DistributorConfig:
    port: int = 8080
    host: str = "127.0.0.1"
    analyzers: tuple[AnalyzerSpec, ...] = ()
    queue_size: int = 200_000
    queue_bytes: int = 256 << 20
    strategy: str = "alias"
    route_key: str = "random"
    seed: int | None = None
    durability: str = "memory"
    wal_max_bytes: int = 1 << 30
    wal_segment_bytes: int = 64 << 20
    wal_commit_delay_us: int = 0
    wal_checkpoint_ms: float = 500.0
    state_dir: str = "./logdist-state"
    max_body_bytes: int = 8 << 20
    ingest_buffer_bytes: int = 64 << 20
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    max_connections: int = 1024
    max_decoded_bytes: int = 32 << 20
    max_encoded_members: int = 1024
    max_messages_per_packet: int = 10_000
    batch_max_messages: int = 2_000
    batch_max_bytes: int = 1 << 20
    linger_ms: float = 2.0
    max_inflight: int = 4
    health_interval_ms: float = 500.0
    health_timeout_ms: float = 1000.0
    eject_after: int = 3
    ejection_base_ms: float = 5000.0
    ejection_max_ms: float = 300_000.0
    ejection_decay_ms: float = 30_000.0
    pending_release_per_s: float = 50_000.0
    retry_base_ms: float = 50.0
    retry_cap_ms: float = 2000.0
    dedup_window: int = 100_000
    shutdown_grace_s: float = 10.0
    timeout: float = 10_000.0  # ms, default for analyzers
    retry_count: int = 3  # default for analyzers
    admin_port: int | None = None  # a separate admin listener (None: the admin API is on port)
    admin_host: str = "127.0.0.1"
    allowed_analyzer_hosts: tuple[str, ...] | None = None  # None: any host
    instance_id: str | None = None  # the hop id; None: one is drawn at start (distributor.run)
    ingest_tokens_file: str | None = None
    admin_tokens_file: str | None = None
    metrics_require_token: bool = False
    tls_cert_file: str | None = None  # the listener serves HTTPS (with tls_key_file)
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None  # mTLS: client certs signed by this CA required
    upstream_ca_file: str | None = None  # https:// analyzers verified against it (else the system store)
    upstream_cert_file: str | None = None  # client cert sent to https:// analyzers (with upstream_key_file)
    upstream_key_file: str | None = None
    source: str | None = field(default=None, compare=False)  # the file it came from

    def with_overrides(self, **kw: Any) -> DistributorConfig:
        """A copy with the given non-None values replaced, validated again."""
        kw = {k: v for k, v in kw.items() if v is not None}
        cfg = replace(self, **kw)
        _validate_distributor(cfg)
        return cfg


_DIST_KEYS = {f for f in DistributorConfig.__dataclass_fields__ if f != "source"}
#: keys of the worker-pool distributor config that have no meaning here (one event loop does the
#: work its worker pool did); accepted so its files load as they are, and otherwise ignored
WORKER_POOL_KEYS = frozenset({"workers", "worker_count", "worker_pool_size", "num_workers", "max_workers", "log_level"})
DURABILITY_MODES: tuple[str, ...] = ("memory", "wal")


#: the TLS file keys (paths; see logdist/tls.py)
TLS_KEYS = ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "upstream_ca_file", "upstream_cert_file",
            "upstream_key_file")  # fmt: skip


def _validate_tls(c: DistributorConfig) -> None:
    """Cert and key come in pairs; a client CA needs the listener's TLS."""
    for cert, key in (("tls_cert_file", "tls_key_file"), ("upstream_cert_file", "upstream_key_file")):
        if (getattr(c, cert) is None) != (getattr(c, key) is None):
            missing = cert if getattr(c, cert) is None else key
            raise ConfigError(missing, f"{cert} and {key} go together: set both or neither")
    if c.tls_client_ca_file is not None and c.tls_cert_file is None:
        raise ConfigError("tls_client_ca_file", "needs tls_cert_file and tls_key_file (client certs need TLS)")


def _validate_distributor(c: DistributorConfig) -> None:
    _validate_tls(c)
    if not (0 <= c.port <= 65535):
        raise ConfigError("port", f"must be 0..65535, got {c.port}")
    if c.strategy not in ("alias", "swrr"):
        raise ConfigError("strategy", f"must be alias or swrr, got {c.strategy!r}")
    bad_key = route_key_error(c.route_key)
    if bad_key is not None:
        raise ConfigError("route_key", bad_key)
    if c.durability not in DURABILITY_MODES:
        raise ConfigError("durability", f"must be one of {', '.join(DURABILITY_MODES)}, got {c.durability!r}")
    for key in ("queue_size", "queue_bytes", "ingest_buffer_bytes", "max_connections",
                "max_body_bytes", "max_decoded_bytes", "max_encoded_members", "max_messages_per_packet",
                "batch_max_messages", "batch_max_bytes", "max_inflight", "eject_after", "dedup_window",
                "wal_max_bytes", "wal_segment_bytes"):  # fmt: skip
        if getattr(c, key) < 1:
            raise ConfigError(key, f"must be >= 1, got {getattr(c, key)}")
    for key in ("header_timeout_s", "body_timeout_s", "keepalive_timeout_s"):
        if not getattr(c, key) > 0:
            raise ConfigError(key, f"must be > 0, got {getattr(c, key)}")
    if c.ingest_buffer_bytes < c.max_body_bytes:
        raise ConfigError("ingest_buffer_bytes", f"must be >= max_body_bytes ({c.max_body_bytes}), so that any "
                          f"body fits, got {c.ingest_buffer_bytes}")  # fmt: skip
    if c.retry_cap_ms < c.retry_base_ms or c.retry_base_ms <= 0:
        raise ConfigError("retry_cap_ms", "need 0 < retry_base_ms <= retry_cap_ms")
    if c.ejection_max_ms < c.ejection_base_ms or c.ejection_base_ms < 0:
        raise ConfigError("ejection_max_ms", "need 0 <= ejection_base_ms <= ejection_max_ms")
    if c.ejection_decay_ms <= 0 or c.pending_release_per_s < 0:
        key = "ejection_decay_ms" if c.ejection_decay_ms <= 0 else "pending_release_per_s"
        raise ConfigError(key, f"must be {'> 0' if key == 'ejection_decay_ms' else '>= 0'}, got {getattr(c, key)}")
    _validate_admin_plane(c)


_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _validate_admin_plane(c: DistributorConfig) -> None:
    if c.admin_port is not None:
        if not 1 <= c.admin_port <= 65535:
            raise ConfigError("admin_port", f"must be a fixed port 1..65535, got {c.admin_port}")
        if c.admin_port == c.port:
            raise ConfigError("admin_port", f"must differ from port ({c.port})")
    if c.instance_id is not None and not _INSTANCE_ID.fullmatch(c.instance_id):
        raise ConfigError("instance_id", f"expected 1..64 of A-Z a-z 0-9 . _ -, got {c.instance_id!r}")
    for i, entry in enumerate(c.allowed_analyzer_hosts or ()):
        if host_pattern_error(entry) is not None:
            raise ConfigError(f"allowed_analyzer_hosts[{i}]", str(host_pattern_error(entry)))


def host_pattern_error(entry: object) -> str | None:
    """Why `entry` is no allowed_analyzer_hosts entry (a hostname, "*.domain", an IP address or
    a CIDR), or None."""
    if not isinstance(entry, str) or not entry:
        return f"expected a hostname, *.domain, an IP address or a CIDR, got {entry!r}"
    try:
        ipaddress.ip_network(entry, strict=False)
        return None
    except ValueError:
        pass
    name = entry[2:] if entry.startswith("*.") else entry
    if not _HOSTNAME.fullmatch(name):
        return f"expected a hostname, *.domain, an IP address or a CIDR, got {entry!r}"
    return None


_HOSTNAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                       r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?")  # fmt: skip


def route_key_error(key: object) -> str | None:
    """Why `key` is no route_key, or None: "random", "message_id", or member names joined by
    dots, none empty, with no control or space character."""
    if key in ("random", "message_id"):
        return None
    if not isinstance(key, str) or not all(key.split(".")):
        return f"must be random, message_id or a dotted field path such as metadata.trace_id, got {key!r}"
    c = _unprintable(key)
    if c is not None or " " in key:
        return f"a field path holds no control or space character, got {key!r}"
    return None


def _hosts(d: dict[str, Any]) -> tuple[str, ...] | None:
    v = d.get("allowed_analyzer_hosts")
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        raise ConfigError("allowed_analyzer_hosts", f"expected a list of hosts, got {v!r}")
    return tuple(v)


def parse_distributor_config(d: object, source: str | None = None) -> DistributorConfig:
    if not isinstance(d, dict):
        raise ConfigError("(top level)", f"expected an object, got {type(d).__name__}")
    _unknown(d, _DIST_KEYS | WORKER_POOL_KEYS, "")
    base = DistributorConfig()
    timeout = _float(d, "timeout", "", base.timeout, lo=0.0, lo_open=True)
    retry_count = _int(d, "retry_count", "", base.retry_count, lo=1, hi=1000)
    raw = d.get("analyzers", [])
    if not isinstance(raw, list):
        raise ConfigError("analyzers", f"expected a list, got {type(raw).__name__}")
    specs: list[AnalyzerSpec] = []
    seen: set[str] = set()
    for i, a in enumerate(raw):
        spec = parse_analyzer(a, f"analyzers[{i}].", default_timeout_ms=timeout, default_retry_count=retry_count)
        if spec.id in seen:
            raise ConfigError(f"analyzers[{i}].id", f"duplicate analyzer id {spec.id!r}")
        seen.add(spec.id)
        specs.append(spec)
    check_weight_sum([s.weight for s in specs])
    seed = d.get("seed")
    if seed is not None and not _is_int(seed):
        raise ConfigError("seed", f"expected an integer, got {seed!r}")
    cfg = DistributorConfig(
        port=_int(d, "port", "", base.port, 0, 65535),
        host=_str(d, "host", "", base.host) or base.host,
        analyzers=tuple(specs),
        queue_size=_int(d, "queue_size", "", base.queue_size, lo=1),
        queue_bytes=_int(d, "queue_bytes", "", base.queue_bytes, lo=1),
        strategy=_str(d, "strategy", "", base.strategy, ("alias", "swrr")) or base.strategy,
        route_key=_str(d, "route_key", "", base.route_key) or "",  # "" is refused by name below
        seed=seed,
        durability=_str(d, "durability", "", base.durability, DURABILITY_MODES) or base.durability,
        wal_max_bytes=_int(d, "wal_max_bytes", "", base.wal_max_bytes, lo=1),
        wal_segment_bytes=_int(d, "wal_segment_bytes", "", base.wal_segment_bytes, lo=1),
        wal_commit_delay_us=_int(d, "wal_commit_delay_us", "", base.wal_commit_delay_us, lo=0, hi=1_000_000),
        wal_checkpoint_ms=_float(d, "wal_checkpoint_ms", "", base.wal_checkpoint_ms, lo=0.0, lo_open=True),
        state_dir=_str(d, "state_dir", "", base.state_dir) or base.state_dir,
        max_body_bytes=_int(d, "max_body_bytes", "", base.max_body_bytes, lo=1),
        ingest_buffer_bytes=_int(d, "ingest_buffer_bytes", "", base.ingest_buffer_bytes, lo=1),
        header_timeout_s=_float(d, "header_timeout_s", "", base.header_timeout_s, lo=0.0, lo_open=True),
        body_timeout_s=_float(d, "body_timeout_s", "", base.body_timeout_s, lo=0.0, lo_open=True),
        keepalive_timeout_s=_float(d, "keepalive_timeout_s", "", base.keepalive_timeout_s, lo=0.0, lo_open=True),
        max_connections=_int(d, "max_connections", "", base.max_connections, lo=1),
        max_decoded_bytes=_int(d, "max_decoded_bytes", "", base.max_decoded_bytes, lo=1),
        max_encoded_members=_int(d, "max_encoded_members", "", base.max_encoded_members, lo=1),
        max_messages_per_packet=_int(d, "max_messages_per_packet", "", base.max_messages_per_packet, lo=1),
        batch_max_messages=_int(d, "batch_max_messages", "", base.batch_max_messages, lo=1),
        batch_max_bytes=_int(d, "batch_max_bytes", "", base.batch_max_bytes, lo=1),
        linger_ms=_float(d, "linger_ms", "", base.linger_ms, lo=0.0),
        max_inflight=_int(d, "max_inflight", "", base.max_inflight, lo=1, hi=1024),
        health_interval_ms=_float(d, "health_interval_ms", "", base.health_interval_ms, lo=0.0, lo_open=True),
        health_timeout_ms=_float(d, "health_timeout_ms", "", base.health_timeout_ms, lo=0.0, lo_open=True),
        eject_after=_int(d, "eject_after", "", base.eject_after, lo=1),
        ejection_base_ms=_float(d, "ejection_base_ms", "", base.ejection_base_ms, lo=0.0, hi=86_400_000.0),
        ejection_max_ms=_float(d, "ejection_max_ms", "", base.ejection_max_ms, lo=0.0, hi=86_400_000.0),
        ejection_decay_ms=_float(d, "ejection_decay_ms", "", base.ejection_decay_ms, lo=0.0, lo_open=True),
        pending_release_per_s=_float(d, "pending_release_per_s", "", base.pending_release_per_s, lo=0.0),
        retry_base_ms=_float(d, "retry_base_ms", "", base.retry_base_ms, lo=0.0, lo_open=True),
        retry_cap_ms=_float(d, "retry_cap_ms", "", base.retry_cap_ms, lo=0.0, lo_open=True),
        dedup_window=_int(d, "dedup_window", "", base.dedup_window, lo=1),
        shutdown_grace_s=_float(d, "shutdown_grace_s", "", base.shutdown_grace_s, lo=0.0),
        timeout=timeout,
        retry_count=retry_count,
        admin_port=_int(d, "admin_port", "", 0, 0, 65535) if d.get("admin_port") is not None else None,
        admin_host=_str(d, "admin_host", "", base.admin_host) or base.admin_host,
        allowed_analyzer_hosts=_hosts(d),
        instance_id=_str(d, "instance_id", "", None),
        ingest_tokens_file=_str(d, "ingest_tokens_file", "", None),
        admin_tokens_file=_str(d, "admin_tokens_file", "", None),
        metrics_require_token=_bool(d, "metrics_require_token", "", False),
        tls_cert_file=_str(d, "tls_cert_file", "", None),
        tls_key_file=_str(d, "tls_key_file", "", None),
        tls_client_ca_file=_str(d, "tls_client_ca_file", "", None),
        upstream_ca_file=_str(d, "upstream_ca_file", "", None),
        upstream_cert_file=_str(d, "upstream_cert_file", "", None),
        upstream_key_file=_str(d, "upstream_key_file", "", None),
        source=source,
    )
    _validate_distributor(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------
# emitter


@dataclass(frozen=True)
class EmitterConfig:
    port: int = 8080
    distributor_urls: tuple[str, ...] = ("http://127.0.0.1:8081/logs",)
    log_generation_rate: float = 10.0  # messages per second
    max_concurrency: int = 5
    batch_size: int = 50
    flush_interval: float = 1000.0  # ms
    emitters_per_distributor: int = 5


_EMITTER_KEYS = set(EmitterConfig.__dataclass_fields__)


def _ingest_url(v: object, key: str) -> str:
    """A distributor URL; one with no path gets /logs appended."""
    url = _http_url(v, key)
    p = urlsplit(url)
    if p.path in ("", "/"):
        return urlunsplit((p.scheme, p.netloc, "/logs", p.query, ""))
    return url


def parse_emitter_config(d: object) -> EmitterConfig:
    if not isinstance(d, dict):
        raise ConfigError("(top level)", f"expected an object, got {type(d).__name__}")
    _unknown(d, _EMITTER_KEYS, "")
    base = EmitterConfig()
    urls = d.get("distributor_urls", list(base.distributor_urls))
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not urls:
        raise ConfigError("distributor_urls", f"expected a non-empty list of URLs, got {urls!r}")
    return EmitterConfig(
        port=_int(d, "port", "", base.port, 0, 65535),
        distributor_urls=tuple(_ingest_url(u, f"distributor_urls[{i}]") for i, u in enumerate(urls)),
        log_generation_rate=_float(d, "log_generation_rate", "", base.log_generation_rate, lo=0.0),
        max_concurrency=_int(d, "max_concurrency", "", base.max_concurrency, lo=1),
        batch_size=_int(d, "batch_size", "", base.batch_size, lo=1),
        flush_interval=_float(d, "flush_interval", "", base.flush_interval, lo=0.0, lo_open=True),
        emitters_per_distributor=_int(d, "emitters_per_distributor", "", base.emitters_per_distributor, lo=1),
    )


# ---------------------------------------------------------------------------------------------
# files


def _read(path: str | Path) -> Any:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError("(file)", f"cannot read {str(p)!r}: {exc.strerror or exc}") from exc
    try:
        if p.suffix.lower() == ".toml":
            return tomllib.loads(raw.decode("utf-8"))
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "TOML" if p.suffix.lower() == ".toml" else "JSON"
        raise ConfigError("(file)", f"{str(p)!r} is not valid {kind}: {exc}") from exc


def load_distributor_config(path: str | Path) -> DistributorConfig:
    return parse_distributor_config(_read(path), source=str(path))


def load_emitter_config(path: str | Path) -> EmitterConfig:
    return parse_emitter_config(_read(path))
