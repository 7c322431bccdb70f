"""Calls out of the service to URLs its users supply: the `http` processor today, completion
webhooks (CALLBACK_ALLOWED_HOSTS, app/services/callbacks.py), both through `post`.

Checking the URL's host name against an allow list is not enough: a listed name can resolve, or be
re-pointed between the check and the call (DNS rebinding), to 127.0.0.1, a private range or a cloud
metadata address, and turn the service on itself or its neighbours. So the name is resolved once,
each address is checked, and the connection goes to that very address, with the name in the Host
header and in TLS (SNI and the certificate check). Loopback, private, link-local, multicast,
unspecified and reserved addresses are refused unless that address, or a CIDR holding it, is on the
list itself. Redirects are not followed (a 3xx is the answer: its target was never checked), the
body is cut off at `MAX_RESPONSE_BYTES`, and the whole call, connect to last byte, has a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_RESPONSE_BYTES = 1 << 20
_CHUNK = 64 * 1024


class OutboundError(Exception):
    """The call was refused before it was made, failed, or was cut off; the message says which."""


@dataclass(frozen=True)
class AllowList:
    """An allow list as configured: host names, and addresses or CIDRs (`10.0.0.0/8`, `::1`)."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            value = entry.strip().lower().strip("[]")
            if not value:
                continue
            try:
                networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                names.add(value.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows_host(self, host: str) -> bool:
        """Whether a URL may name `host` at all: a listed name, or an address the list holds."""
        host = host.lower().strip("[]")
        if host.rstrip(".") in self.names:
            return True
        try:
            return self._listed(ipaddress.ip_address(host))
        except ValueError:
            return False

    def allows_address(self, address: IPAddress) -> bool:
        """Whether we may connect to `address`: listed explicitly, or a public unicast address."""
        if self._listed(address):
            return True
        address = _unmapped(address)
        return address.is_global and not address.is_multicast

    def _listed(self, address: IPAddress) -> bool:
        candidates = {address, _unmapped(address)}
        return any(candidate in network for candidate in candidates for network in self.networks)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses `host` has now, in the resolver's order (tests replace this to rebind a name)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    found: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found


def post_json(
    url: str,
    payload: Any,
    *,
    allowed: AllowList,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> Response:
    """POST `payload` as JSON to `url` under the rules above; `timeout` bounds the whole call."""
    body = json.dumps(payload).encode()
    return post(url, body, allowed=allowed, headers=headers, timeout=timeout, max_bytes=max_bytes)


def post(
    url: str,
    body: bytes,
    *,
    allowed: AllowList,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> Response:
    """POST these very bytes (a signed body must be sent as signed) as JSON to `url`, as `post_json` does."""
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        raise OutboundError(f"scheme {parts.scheme!r} is not http or https")
    if not allowed.allows_host(host):
        raise OutboundError(f"host {host!r} is not in the allowed hosts")
    https = parts.scheme == "https"
    try:
        port = parts.port or (443 if https else 80)
        addresses = resolve(host, port)
    except (OSError, ValueError) as exc:
        raise OutboundError(f"cannot resolve {host!r}: {exc}") from exc
    permitted = [address for address in addresses if allowed.allows_address(address)]
    if not permitted:
        shown = ", ".join(str(address) for address in addresses) or "nothing"
        raise OutboundError(f"{host!r} resolves to {shown}: not allowed unless the address itself is listed")

    sock = _connect(permitted, port, deadline, timeout)
    cut = threading.Event()

    def cut_off() -> None:
        # Per-read timeouts cannot stop a server that drips a byte at a time: at the deadline the
        # socket is shut down under the reader, wherever it waits.
        cut.set()
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), cut_off)
    watchdog.daemon = True
    watchdog.start()
    try:
        if https:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        conn_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
        conn = conn_class(host, port, timeout=timeout)
        conn.sock = sock  # already connected to the checked address: http.client will not resolve again
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        answer = conn.getresponse()
        received = bytearray()
        while chunk := answer.read1(_CHUNK):
            received += chunk
            if len(received) > max_bytes:
                raise OutboundError(f"response larger than {max_bytes} bytes")
        if cut.is_set():
            raise OutboundError(f"no complete answer within {timeout:g}s")
        return Response(answer.status, bytes(received))
    except (OSError, http.client.HTTPException) as exc:
        if cut.is_set():
            raise OutboundError(f"no complete answer within {timeout:g}s") from exc
        raise OutboundError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        watchdog.cancel()
        sock.close()


def _connect(addresses: list[IPAddress], port: int, deadline: float, timeout: float) -> socket.socket:
    """A TCP connection to the first of `addresses` that answers before the deadline."""
    errors = []
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            sock = socket.create_connection((str(address), port), timeout=remaining)
        except OSError as exc:
            errors.append(f"{address}: {exc}")
            continue
        sock.settimeout(timeout)
        return sock
    raise OutboundError("cannot connect: " + ("; ".join(errors) or f"no answer within {timeout:g}s"))


def _unmapped(address: IPAddress) -> IPAddress:
    """::ffff:127.0.0.1 is 127.0.0.1: judge an IPv4-mapped IPv6 address as the IPv4 one it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
