"""Where an analyzer may point: never at this distributor, never outside allowed_analyzer_hosts.

`check_spec` is run on every analyzer of a registration, a PATCH, the config file at start and
on reload (config.py's parse_analyzer has already refused a query, a fragment, and an endpoint
whose path is not /analyze or /logs). It raises ConfigError naming the key (`url` or
`endpoint`) and the reason; the admin API answers it as 400 bad_analyzer.

* Self: the host of the URL is resolved (loop.getaddrinfo, at most RESOLVE_TIMEOUT_S; never on
  the event loop's thread) and each address, with the URL's port, is compared with every
  listener of this distributor: the main port, the admin port, and the workers' control ports.
  A listener on a wildcard address (0.0.0.0, ::) owns the port on every local address; a local
  address is one a socket can bind (exact, with no interface list to read). An unspecified
  destination (0.0.0.0) reaches the local host, so it matches every listener's port. A host
  that does not resolve is not refused by this check (it cannot reach us now; if it later
  resolves to us, the X-Logdist-Hop header refuses the loop at our own ingest).
* Allowed hosts: a hostname matches an entry equal to it or a "*.domain" entry (any name
  below domain, not domain itself); an IP literal, or failing a name match every address the
  name resolves to, must lie in one of the CIDR (or IP) entries. A name that does not resolve
  and matches no name entry is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from logdist.config import AnalyzerSpec, ConfigError, DistributorConfig

#: bound on one name's resolution during a check
RESOLVE_TIMEOUT_S = 2.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})


def _plain(a: Address) -> Address:
    return a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a


def _literal(host: str) -> Address | None:
    try:
        return _plain(ipaddress.ip_address(host.strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


async def resolve(host: str, port: int) -> list[Address] | None:
    """The addresses of `host` (an IP literal as it is), or None when it does not resolve in time."""
    lit = _literal(host)
    if lit is not None:
        return [lit]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S)
    except (OSError, TimeoutError, UnicodeError):
        return None
    out: list[Address] = []
    for *_, sockaddr in infos:
        a = _literal(str(sockaddr[0]))
        if a is not None and a not in out:
            out.append(a)
    return out


def is_local(a: Address) -> bool:
    """True when `a` is one of this machine's addresses (a socket can bind it)."""
    if a.is_unspecified or a.is_loopback:
        return True
    fam = socket.AF_INET6 if a.version == 6 else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        try:
            s.bind((str(a), 0))
        except OSError:
            return False
    return True


def listeners(cfg: DistributorConfig, control_ports: Iterable[int] = ()) -> list[tuple[str, int]]:
    """Every (host, port) this distributor listens on."""
    out = [(cfg.host, cfg.port)]
    if cfg.admin_port is not None:
        out.append((cfg.admin_host, cfg.admin_port))
    out += [("127.0.0.1", p) for p in control_ports]
    return out


def _target(url: str) -> tuple[str, int]:
    p = urlsplit(url)
    return (p.hostname or ""), (p.port or (443 if p.scheme == "https" else 80))


async def _is_self(addrs: list[Address], port: int, own: list[tuple[str, int]]) -> str | None:
    for host, lport in own:
        if lport != port or lport == 0:
            continue
        mine = None if host in _WILDCARDS else (await resolve(host, lport) or [])
        for a in addrs:
            if a.is_unspecified or (a in mine if mine is not None else is_local(a)):
                return f"{a} port {port} is this distributor's own listener {host}:{lport}"
    return None


def _name_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    name = host.lower().rstrip(".")
    for entry in allowed:
        e = entry.lower().rstrip(".")
        if e.startswith("*.") and name.endswith(e[1:]) and len(name) > len(e) - 1:
            return True
        if e == name:
            return True
    return False


def _networks(allowed: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for entry in allowed:
        with contextlib.suppress(ValueError):
            out.append(ipaddress.ip_network(entry, strict=False))
    return out


def _outside(host: str, addrs: list[Address] | None, allowed: tuple[str, ...]) -> str | None:
    if _literal(host) is None and _name_allowed(host, allowed):
        return None
    if addrs is None:
        return f"host {host!r} matches no allowed_analyzer_hosts name and does not resolve"
    nets = _networks(allowed)
    for a in addrs:
        if not any(a.version == n.version and a in n for n in nets):
            return f"host {host!r} ({a}) is outside allowed_analyzer_hosts"
    return None


async def check_spec(
    spec: AnalyzerSpec, cfg: DistributorConfig, control_ports: Iterable[int] = (), path: str = ""
) -> None:
    """ConfigError when `spec` points at this distributor or outside the allowed hosts."""
    own = listeners(cfg, control_ports)
    for key, url in (("endpoint", spec.endpoint), ("url", spec.url)):  # where batches go, first
        host, port = _target(url)
        addrs = await resolve(host, port)
        why = await _is_self(addrs, port, own) if addrs else None
        if why is not None:
            raise ConfigError(path + key, f"points at this distributor itself: {why}")
        if cfg.allowed_analyzer_hosts is not None:
            why = _outside(host, addrs, cfg.allowed_analyzer_hosts)
            if why is not None:
                raise ConfigError(path + key, why)


async def check_config(cfg: DistributorConfig, control_ports: Iterable[int] = ()) -> None:
    """check_spec for every analyzer of a config (at start and on reload)."""
    ports = tuple(control_ports)
    for i, spec in enumerate(cfg.analyzers):
        await check_spec(spec, cfg, ports, f"analyzers[{i}].")
