"""Small HTTP helpers shared by the tests: send JSON or raw bodies, and check the
contract every answer must keep (JSON content type, X-Request-Id, error shape)."""

from __future__ import annotations

import json

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
