"""Outbound calls (the http processor, later webhooks) go only where the allow list says, checked
on the address actually connected: no rebinding a listed name to 127.0.0.1 or a private range, no
redirect followed off the list, and neither a huge nor a never-ending answer holds the caller."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.services import outbound
from app.services.outbound import AllowList, OutboundError, post_json

Handle = Callable[[BaseHTTPRequestHandler], None]


class LocalServer:
    """A local HTTP server whose POST handler the test chooses; it records every request it gets."""

    def __init__(self, handle: Handle) -> None:
        self.requests: list[dict[str, Any]] = []
        self.closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                handle(self)

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Handle], LocalServer]]:
    started: list[LocalServer] = []

    def start(handle: Handle) -> LocalServer:
        started.append(LocalServer(handle))
        return started[-1]

    yield start
    for server in started:
        server.close()


def ok(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "2")
    handler.end_headers()
    handler.wfile.write(b"ok")


@pytest.fixture
def rebind(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make every name resolve to `address`, as a hostile DNS server would."""

    def to(address: str) -> None:
        monkeypatch.setattr(outbound, "resolve", lambda host, port: [ipaddress.ip_address(address)])

    return to


def test_a_listed_name_rebound_to_loopback_is_refused_before_any_request(
    serve: Callable[[Handle], LocalServer], rebind: Callable[[str], None]
) -> None:
    server = serve(ok)
    rebind("127.0.0.1")
    with pytest.raises(OutboundError, match=r"resolves to 127\.0\.0\.1"):
        post_json(f"http://hooks.example.com:{server.port}/x", {}, allowed=AllowList.parse(["hooks.example.com"]))
    assert server.requests == []


@pytest.mark.parametrize("listed", ["127.0.0.1", "127.0.0.0/8"])
def test_the_address_listed_itself_lets_the_name_through_with_its_own_host_header(
    serve: Callable[[Handle], LocalServer], rebind: Callable[[str], None], listed: str
) -> None:
    server = serve(ok)
    rebind("127.0.0.1")
    allowed = AllowList.parse(["hooks.example.com", listed])
    answer = post_json(
        f"http://hooks.example.com:{server.port}/x?y=1", {"a": 1}, allowed=allowed, headers={"Idempotency-Key": "k"}
    )
    assert (answer.status, answer.text) == (200, "ok")
    [request] = server.requests
    assert request["path"] == "/x?y=1"
    assert request["headers"]["Host"] == f"hooks.example.com:{server.port}"
    assert request["headers"]["Idempotency-Key"] == "k"
    assert json.loads(request["body"]) == {"a": 1}


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "224.0.0.1", "0.0.0.0", "::1",
     "fe80::1", "fc00::1", "::ffff:127.0.0.1", "100.64.0.1", "240.0.0.1"],
)  # fmt: skip
def test_non_public_addresses_are_refused_unless_listed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not AllowList.parse(["hooks.example.com"]).allows_address(ip)
    assert AllowList.parse(["hooks.example.com", address]).allows_address(ip)
    assert AllowList.parse(["93.184.216.34"]).allows_address(ipaddress.ip_address("93.184.216.34"))


def test_hosts_a_url_may_name() -> None:
    allowed = AllowList.parse(["Hooks.Example.com", "10.0.0.0/8", "[::1]"])
    assert allowed.allows_host("hooks.example.com") and allowed.allows_host("HOOKS.example.com.")
    assert allowed.allows_host("10.2.3.4") and allowed.allows_host("::1")
    assert not allowed.allows_host("example.com")
    assert not allowed.allows_host("hooks.example.com.evil.test")
    assert not allowed.allows_host("11.0.0.1")


def test_a_redirect_is_not_followed(serve: Callable[[Handle], LocalServer], rebind: Callable[[str], None]) -> None:
    elsewhere = serve(ok)

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(307)
        handler.send_header("Location", f"http://127.0.0.1:{elsewhere.port}/internal")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server = serve(redirect)
    answer = post_json(f"http://127.0.0.1:{server.port}/", {}, allowed=AllowList.parse(["127.0.0.1"]))
    assert answer.status == 307
    assert len(server.requests) == 1 and elsewhere.requests == []


def test_an_oversized_answer_is_cut_off(serve: Callable[[Handle], LocalServer]) -> None:
    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()  # no length: the body runs until the connection closes
        for _ in range(64):
            handler.wfile.write(b"x" * 65536)

    server = serve(huge)
    allowed = AllowList.parse(["127.0.0.1"])
    with pytest.raises(OutboundError, match="larger than 1048576 bytes"):
        post_json(f"http://127.0.0.1:{server.port}/", {}, allowed=allowed)
    whole = post_json(f"http://127.0.0.1:{server.port}/", {}, allowed=allowed, max_bytes=4 << 20)
    assert whole.body == b"x" * (4 << 20)


@pytest.mark.parametrize("drip_headers", [False, True], ids=["body", "status_line"])
def test_a_slow_drip_is_cut_off_at_the_deadline(serve: Callable[[Handle], LocalServer], drip_headers: bool) -> None:
    """A byte every 50 ms never trips a per-read timeout; the deadline still ends the call."""
    server: LocalServer

    def drip(handler: BaseHTTPRequestHandler) -> None:
        if not drip_headers:
            handler.send_response(200)
            handler.send_header("Content-Length", "100000")
            handler.end_headers()
        while not server.closing.wait(0.05):
            try:
                handler.wfile.write(b"H" if drip_headers else b"x")
                handler.wfile.flush()
            except OSError:
                return

    server = serve(drip)
    began = time.monotonic()
    with pytest.raises(OutboundError, match=r"no complete answer within 1s"):
        post_json(f"http://127.0.0.1:{server.port}/", {}, allowed=AllowList.parse(["127.0.0.1"]), timeout=1)
    assert 0.9 < time.monotonic() - began < 3


def test_refused_before_connecting() -> None:
    allowed = AllowList.parse(["127.0.0.1"])
    with pytest.raises(OutboundError, match="not in the allowed hosts"):
        post_json("http://example.com/", {}, allowed=allowed)
    with pytest.raises(OutboundError, match="scheme 'ftp'"):
        post_json("ftp://127.0.0.1/", {}, allowed=allowed)
