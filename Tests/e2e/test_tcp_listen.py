"""FastCGI over TCP (`--listen HOST:PORT`) for web servers on other hosts: served
through nginx like the unix socket, and only to peers in `--allow-from`, since
FastCGI carries no authentication."""

from __future__ import annotations

import re
import socket
import time

import requests

import fcgi_fuzz as fz
from apiclient import TIMEOUT, create_user, expect_json
from conftest import unique_email


def test_the_api_over_tcp_through_nginx(make_stack, http):
    stack = make_stack(mode="tcp", nginx_kind="stock").start()
    user = create_user(http, stack.url, "Tee Cee", unique_email("tcp"))
    assert expect_json(http.get(stack.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user
    assert "msg=serving socket=127.0.0.1:" in stack.service.log_text()


def test_peers_outside_allow_from_are_closed_at_once_and_logged(make_stack):
    """With --allow-from 127.0.0.1/32, a peer at 127.0.0.2 gets its connection closed
    before anything is read; 127.0.0.1 is served."""
    stack = make_stack(mode="tcp", nginx_kind="stock", args=["--allow-from", "127.0.0.1/32"]).start()
    request = fz.request_bytes(fz.http_params("GET", "/healthz"))

    def exchange(source: str) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as peer:
            peer.settimeout(TIMEOUT)
            peer.bind((source, 0))
            peer.connect(("127.0.0.1", stack.service.tcp_port))
            try:
                peer.sendall(request)
                data = b""
                while chunk := peer.recv(65536):
                    data += chunk
            except ConnectionResetError:
                return b""
            return data

    assert exchange("127.0.0.2") == b""
    answered = exchange("127.0.0.1")
    assert fz.count_ends(answered) == 1 and b"Status: 200" in answered
    deadline = time.monotonic() + 10
    while not re.search(r"connection refused: peer not in --allow-from\" peer=127\.0\.0\.2", stack.service.log_text()):
        assert time.monotonic() < deadline, stack.service.log_text()[-2000:]
        time.sleep(0.05)
    # The web server's own requests (from 127.0.0.1) still pass.
    assert requests.get(stack.url("/healthz"), timeout=TIMEOUT).status_code == 200
