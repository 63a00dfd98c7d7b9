"""Small HTTP helpers shared by the tests: send JSON or raw bodies, and check the
contract every answer must keep (JSON content type, X-Request-Id, error shape)."""

from __future__ import annotations

import json
import socket

import requests

from harness import JSON_TYPE, parse_json

TIMEOUT = 30


def post_json(session, url: str, obj, method: str = "POST") -> requests.Response:
    return session.request(method, url, data=json.dumps(obj).encode(), headers={"Content-Type": "application/json"}, timeout=TIMEOUT)


def send_raw(session, method: str, url: str, body: bytes, content_type: str | None = "application/json") -> requests.Response:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    # requests adds no Content-Type of its own for a bytes body.
    return session.request(method, url, data=body, headers=headers, timeout=TIMEOUT)


def describe(response) -> str:
    return f"{response.request.method} {response.request.url} -> {response.status_code} {response.content[:300]!r}"


def check_common(response) -> None:
    assert response.headers.get("X-Request-Id"), f"no X-Request-Id: {describe(response)}"
    assert response.status_code < 500, f"5xx: {describe(response)}"


def expect_json(response, status: int):
    """Asserts status, JSON content type, X-Request-Id; returns the parsed body."""
    assert response.status_code == status, describe(response)
    check_common(response)
    assert response.headers.get("Content-Type") == JSON_TYPE, f"Content-Type {response.headers.get('Content-Type')!r}: {describe(response)}"
    return parse_json(response)


def expect_error(response, status: int, field: str | None = None, message: str | None = None) -> dict:
    body = expect_json(response, status)
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], f"not an error object: {describe(response)}"
    if field is not None:
        assert body.get("field") == field, f"expected field {field!r}: {describe(response)}"
    if message is not None:
        assert body["error"] == message, describe(response)
    return body


def create_user(session, base_url, name: str, email: str, path: str = "/add-user") -> dict:
    """POST and check the 201 contract; returns the created user."""
    response = post_json(session, base_url(path), {"name": name, "email": email})
    body = expect_json(response, 201)
    assert body["message"] == "User created", describe(response)
    user = body["user"]
    assert set(user) == {"id", "name", "email"}, describe(response)
    assert isinstance(user["id"], int) and user["id"] >= 1
    assert response.headers.get("Location") == f"/users/{user['id']}", describe(response)
    return user


def raw_http(port: int, method: str, target: str, source: str = "127.0.0.1", body: bytes = b"",
             headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 request with the target sent exactly as given (no client-side
    normalisation or re-quoting); returns (status, lower-case headers, decoded body)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    head_lines = head.decode("latin-1").split("\r\n")
    found = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head_lines[1:])}
    if found.get("transfer-encoding") == "chunked":
        decoded, rest = b"", payload
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size.split(b";")[0], 16)
            if n == 0:
                break
            decoded, rest = decoded + rest[:n], rest[n + 2:]
        payload = decoded
    return int(head_lines[0].split()[1]), found, payload
