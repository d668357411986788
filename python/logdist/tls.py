"""TLS for logdist: the listeners' server contexts, the distributor's outbound context to
https:// analyzers, certificate reload, and the clients' --cacert.

Server side (every daemon role): `tls_cert_file` + `tls_key_file` (both or neither) make the
listener speak TLS 1.2+ with the default ciphers; `tls_client_ca_file` adds mutual TLS: a client
without a certificate signed by that CA is refused at the handshake. `reload_server(ctx, ...)`
loads a new certificate chain into the same context (SIGHUP), so new handshakes present it
without a restart; connections already open keep theirs.

Outbound (the distributor to its analyzers): `https://` endpoints are verified against
`upstream_ca_file`, or the system store when unset; `upstream_cert_file` + `upstream_key_file`
add a client certificate. `Outbound` holds the context the deliveries and health probes use;
`Outbound.rebuild` makes a new one on reload (new connections use it).
"""

from __future__ import annotations

import argparse
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from logdist.errors import ConfigError

if TYPE_CHECKING:
    from logdist.config import DistributorConfig

__all__ = [
    "Outbound",
    "ServerTLS",
    "add_cacert_argument",
    "add_server_arguments",
    "client_context",
    "client_ssl_from_args",
    "listener_context",
    "reload_listener",
    "reload_server",
    "server_context",
    "server_tls_from_args",
    "tools_context",
    "use_cacert",
]


@dataclass(frozen=True)
class ServerTLS:
    """A listener's TLS files: cert and key (both), and the CA of client certs (mTLS), if any."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None


def server_context(tls: ServerTLS) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer, the default ciphers, the chain of `tls`; with a
    client CA, a client certificate is required (refused at the handshake without one)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        ctx.load_verify_locations(cafile=tls.client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def reload_server(ctx: ssl.SSLContext, tls: ServerTLS) -> None:
    """Load the chain of `tls` again into `ctx` (new handshakes present it). Raises
    ssl.SSLError or OSError and leaves the old chain in place when the files are bad."""
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        ctx.load_verify_locations(cafile=tls.client_ca_file)


def client_context(
    cafile: str | None = None, certfile: str | None = None, keyfile: str | None = None
) -> ssl.SSLContext:
    """A verifying client context: against `cafile`, else the system store; with a client
    certificate when `certfile` is given (its key in `keyfile`, or in the same file)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile is not None:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


class Outbound:
    """The context of the distributor's connections to https:// analyzers: `context` is what
    each delivery and health probe passes as aiohttp's `ssl=` (True: aiohttp's default
    verification against the system store, when no upstream_* file is set)."""

    def __init__(self, cfg: DistributorConfig) -> None:
        self.context: ssl.SSLContext | bool = True
        self.rebuild(cfg)

    def rebuild(self, cfg: DistributorConfig) -> None:
        """A new context from the config's upstream_* files (ConfigError naming the key, the old
        context kept, when one cannot be loaded). New connections use it."""
        if cfg.upstream_ca_file is None and cfg.upstream_cert_file is None:
            self.context = True
            return
        try:
            ctx = client_context(cfg.upstream_ca_file, cfg.upstream_cert_file, cfg.upstream_key_file)
        except (OSError, ssl.SSLError) as exc:
            key = "upstream_ca_file" if _bad_ca(cfg.upstream_ca_file) else "upstream_cert_file"
            raise ConfigError(key, f"cannot load: {exc}") from None
        self.context = ctx


def _bad_ca(cafile: str | None) -> bool:
    if cafile is None:
        return False
    try:
        ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError):
        return True
    return False


def listener_context(cfg: DistributorConfig) -> ssl.SSLContext | None:
    """The distributor listener's context from tls_* keys, or None (plain HTTP); ConfigError
    naming the key when a file cannot be loaded."""
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        return None
    try:
        return server_context(ServerTLS(cfg.tls_cert_file, cfg.tls_key_file, cfg.tls_client_ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(_bad_server_key(cfg), f"cannot load: {exc}") from None


def reload_listener(ctx: ssl.SSLContext | None, cfg: DistributorConfig) -> str:
    """SIGHUP: load the tls_* files of `cfg` into the listener's context in place. Returns what
    was done, for the log; ConfigError (the old certificate kept) when they cannot be loaded."""
    if ctx is None:
        return "plain HTTP (TLS takes a restart to turn on)" if cfg.tls_cert_file else "no TLS"
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        return "TLS kept (turning it off takes a restart)"
    try:
        reload_server(ctx, ServerTLS(cfg.tls_cert_file, cfg.tls_key_file, cfg.tls_client_ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(_bad_server_key(cfg), f"cannot load: {exc}") from None
    return f"certificate reloaded from {cfg.tls_cert_file}"


def _bad_server_key(cfg: DistributorConfig) -> str:
    """Which tls_* key names a file that cannot be loaded (best effort)."""
    if cfg.tls_client_ca_file is not None and _bad_ca(cfg.tls_client_ca_file):
        return "tls_client_ca_file"
    return "tls_cert_file"


# --- command-line options ----------------------------------------------------------------------


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """--tls-cert-file, --tls-key-file and --tls-client-ca-file of a daemon's listener."""
    g = p.add_argument_group("TLS on the listener")
    g.add_argument("--tls-cert-file", metavar="PEM", help="serve HTTPS with this certificate chain")
    g.add_argument("--tls-key-file", metavar="PEM", help="the private key of --tls-cert-file")
    g.add_argument("--tls-client-ca-file", metavar="PEM", help="require client certificates signed by this CA")


def server_tls_from_args(args: argparse.Namespace, prog: str) -> ssl.SSLContext | None:
    """The listener's context from the --tls-* options, or None; SystemExit naming the option
    when only one of cert and key is given, or a file cannot be loaded."""
    cert, key, ca = args.tls_cert_file, args.tls_key_file, args.tls_client_ca_file
    if cert is None and key is None:
        if ca is not None:
            raise SystemExit(f"logdist {prog}: --tls-client-ca-file needs --tls-cert-file and --tls-key-file")
        return None
    if cert is None or key is None:
        missing = "--tls-cert-file" if cert is None else "--tls-key-file"
        raise SystemExit(f"logdist {prog}: {missing} is required with the other --tls-* file")
    try:
        return server_context(ServerTLS(cert, key, ca))
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"logdist {prog}: cannot load the TLS files: {exc}") from None


def add_cacert_argument(p: argparse._ActionsContainer) -> None:
    """--cacert: the CA that signed the distributor's (or analyzer's) https certificate."""
    p.add_argument(
        "--cacert", metavar="PEM", help="verify https:// servers against this CA (default: the system store)"
    )


def client_ssl_from_args(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The clients' context for --cacert, or None (the default verification) without it."""
    cafile = getattr(args, "cacert", None)
    return None if cafile is None else client_context(cafile)


#: the blocking tools' context (logdist/tools/cluster.py `request`), set once by use_cacert
_tools_context: ssl.SSLContext | None = None


def use_cacert(args: argparse.Namespace) -> None:
    """A one-shot tool (status, verify-weights, dlq, up) verifies https:// against --cacert."""
    global _tools_context
    _tools_context = client_ssl_from_args(args)


def tools_context() -> ssl.SSLContext | None:
    """The context the blocking tools' requests use (None: the system store)."""
    return _tools_context
