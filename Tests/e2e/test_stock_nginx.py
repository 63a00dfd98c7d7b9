"""usersd behind a stock nginx location (include fastcgi_params; fastcgi_pass;
nothing else, no keepalive), and mounted under a prefix with --prefix."""

import json

import pytest

import harness
from apiclient import TIMEOUT, check_common, describe, expect_error, expect_json, post_json, send_raw
from conftest import unique_email


@pytest.fixture(scope="module")
def stock():
    stack = harness.Stack(nginx_kind="stock", args=["--max-body", "1000"]).start()
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def prefixed():
    stack = harness.Stack(nginx_kind="stock", locations=["/api/", "/"], args=["--prefix", "/api"]).start()
    yield stack
    stack.close()


def test_stock_location_serves_main_routes(stock, http):
    url = stock.url
    email = unique_email("stock")
    response = post_json(http, url("/add-user"), {"username": "stocky", "email": email})
    user = expect_json(response, 201)["user"]
    assert user["name"] == "stocky" and response.headers["Location"] == f"/users/{user['id']}"
    second = expect_json(post_json(http, url("/users"), {"name": "second", "email": unique_email("stock")}), 201)["user"]

    assert expect_json(http.get(url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user
    detail = expect_json(http.get(url(f"/users/{user['id']}"), timeout=TIMEOUT), 200)
    assert set(detail) == {"id", "name", "email", "created_at", "updated_at"}
    listed = expect_json(http.get(url("/users"), timeout=TIMEOUT), 200)
    assert user in listed and second in listed
    assert expect_json(http.get(url(f"/users?limit=1&after_id={user['id']}"), timeout=TIMEOUT), 200) == [second]
    patched = expect_json(post_json(http, url(f"/users/{user['id']}"), {"name": "renamed"}, method="PATCH"), 200)
    assert patched["name"] == "renamed"
    response = http.delete(url(f"/users/{second['id']}"), timeout=TIMEOUT)
    assert response.status_code == 204 and response.content == b"", describe(response)
    check_common(response)
    expect_error(http.get(url(f"/user/{second['id']}"), timeout=TIMEOUT), 404, message="User not found")
    assert expect_json(http.get(url("/healthz"), timeout=TIMEOUT), 200) == {"status": "ok"}


def test_stock_location_errors(stock, http):
    url = stock.url
    expect_error(http.get(url("/nope"), timeout=TIMEOUT), 404)
    expect_error(http.get(url("/user/abc"), timeout=TIMEOUT), 404, message="User not found")
    response = http.put(url("/users"), timeout=TIMEOUT)
    expect_error(response, 405)
    assert {"GET", "POST"} <= {m.strip() for m in response.headers.get("Allow", "").split(",")}
    expect_error(send_raw(http, "POST", url("/users"), b'{"name":'), 400)
    expect_error(send_raw(http, "POST", url("/users"), b'{"name": "a", "email": "a@b.cc"}', "text/plain"), 415)
    expect_error(post_json(http, url("/users"), {"name": "", "email": unique_email()}), 422, field="name")
    expect_error(http.get(url("/users?limit=0"), timeout=TIMEOUT), 422, field="limit")
    email = unique_email("dupstock")
    expect_json(post_json(http, url("/users"), {"name": "a", "email": email}), 201)
    expect_error(post_json(http, url("/users"), {"name": "b", "email": email.upper()}), 409)


def test_usersd_own_body_limit_is_413_json(stock, http):
    body = json.dumps({"name": "big", "email": unique_email(), "pad": "x" * 2000}).encode()
    assert len(body) > 2000
    expect_error(send_raw(http, "POST", stock.url("/users"), body), 413)
    expect_error(send_raw(http, "POST", stock.url("/add-user"), body), 413)
    # under the limit (unknown field ignored) is fine
    small = json.dumps({"name": "small", "email": unique_email(), "pad": "x" * 800}).encode()
    assert len(small) <= 1000
    expect_json(send_raw(http, "POST", stock.url("/users"), small), 201)


def test_prefix_mount_serves_routes(prefixed, http):
    url = prefixed.url
    email = unique_email("pfx")
    response = post_json(http, url("/api/add-user"), {"username": "mounted", "email": email})
    user = expect_json(response, 201)["user"]
    assert response.headers.get("Location", "").endswith(f"/users/{user['id']}")
    assert expect_json(http.get(url(f"/api/user/{user['id']}"), timeout=TIMEOUT), 200) == user
    assert user in expect_json(http.get(url("/api/users"), timeout=TIMEOUT), 200)
    assert expect_json(http.get(url(f"/api/users/{user['id']}"), timeout=TIMEOUT), 200)["email"] == email
    assert expect_json(post_json(http, url(f"/api/users/{user['id']}"), {"name": "m2"}, method="PATCH"), 200)["name"] == "m2"
    assert expect_json(http.get(url("/api/healthz"), timeout=TIMEOUT), 200) == {"status": "ok"}
    response = http.delete(url(f"/api/users/{user['id']}"), timeout=TIMEOUT)
    assert response.status_code == 204, describe(response)
    expect_error(http.get(url(f"/api/user/{user['id']}"), timeout=TIMEOUT), 404, message="User not found")


def test_prefix_mount_errors(prefixed, http):
    url = prefixed.url
    user = expect_json(post_json(http, url("/api/users"), {"name": "p", "email": unique_email("pfx")}), 201)["user"]
    # the unprefixed paths are not the API any more
    for path in (f"/user/{user['id']}", "/users", f"/users/{user['id']}", "/healthz", f"/apix/user/{user['id']}", "/api"):
        expect_error(http.get(url(path), timeout=TIMEOUT), 404)
    expect_error(post_json(http, url("/add-user"), {"name": "x", "email": unique_email()}), 404)
    expect_error(http.get(url("/api/nope"), timeout=TIMEOUT), 404)
    response = http.delete(url("/api/add-user"), timeout=TIMEOUT)
    expect_error(response, 405)
    assert "POST" in response.headers.get("Allow", "")
