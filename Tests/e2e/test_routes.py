"""Every other route through the shipped nginx site: reads, PATCH, DELETE, the
list and its paging, 404/405, health, metrics, X-Request-Id."""

import http.client
import os
import stat
from datetime import datetime

import pytest

from apiclient import TIMEOUT, check_common, create_user, describe, expect_error, expect_json, post_json, send_raw
from conftest import unique_email

BAD_IDS = ["999999999", "abc", "-1", "0", "99999999999999999999999", "9223372036854775808", "1abc", "1.0", "%20"]


@pytest.fixture
def user(api, http):
    return create_user(http, api.url, "Route User", unique_email("route"))


def iso8601(value):
    assert isinstance(value, str), value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, f"timestamp without a zone: {value}"
    return parsed


# ---------------------------------------------------------------- GET /user/<id>, GET /users/<id>


def test_get_seed_user_has_exactly_three_keys(api, http, user):
    body = expect_json(http.get(api.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200)
    assert body == user


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_get_seed_user_unknown_is_404(api, http, bad_id):
    expect_error(http.get(api.url(f"/user/{bad_id}"), timeout=TIMEOUT), 404, message="User not found")


def test_get_resource_has_timestamps(api, http, user):
    body = expect_json(http.get(api.url(f"/users/{user['id']}"), timeout=TIMEOUT), 200)
    assert set(body) == {"id", "name", "email", "created_at", "updated_at"}
    assert {k: body[k] for k in ("id", "name", "email")} == user
    assert iso8601(body["created_at"]) <= iso8601(body["updated_at"])


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_get_resource_unknown_is_404(api, http, bad_id):
    expect_error(http.get(api.url(f"/users/{bad_id}"), timeout=TIMEOUT), 404, message="User not found")


def test_head_is_answered_without_body(api, http, user):
    response = http.head(api.url(f"/user/{user['id']}"), timeout=TIMEOUT)
    assert response.status_code == 200, describe(response)
    check_common(response)
    assert response.content == b""


# ---------------------------------------------------------------- PATCH /users/<id>


def test_patch_name(api, http, user):
    before = expect_json(http.get(api.url(f"/users/{user['id']}"), timeout=TIMEOUT), 200)
    body = expect_json(post_json(http, api.url(f"/users/{user['id']}"), {"name": "Renamed"}, method="PATCH"), 200)
    assert set(body) == {"id", "name", "email", "created_at", "updated_at"}
    assert body["name"] == "Renamed" and body["email"] == user["email"] and body["id"] == user["id"]
    assert body["created_at"] == before["created_at"]
    assert iso8601(body["updated_at"]) >= iso8601(before["updated_at"])
    assert expect_json(http.get(api.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200)["name"] == "Renamed"


def test_patch_email(api, http, user):
    new = unique_email("patched")
    body = expect_json(post_json(http, api.url(f"/users/{user['id']}"), {"email": new}, method="PATCH"), 200)
    assert body["email"] == new and body["name"] == user["name"]
    assert expect_json(http.get(api.url(f"/users/{user['id']}"), timeout=TIMEOUT), 200)["email"] == new
    # the old address is free again
    create_user(http, api.url, "takes old", user["email"])


def test_patch_both_and_unknown_fields_ignored(api, http, user):
    new = unique_email("both")
    body = expect_json(
        post_json(http, api.url(f"/users/{user['id']}"), {"name": " Both ", "email": new, "id": 1, "x": 2}, method="PATCH"), 200
    )
    assert (body["id"], body["name"], body["email"]) == (user["id"], " Both ", new)


def test_patch_own_email_in_other_case_is_not_a_conflict(api, http, user):
    upper = user["email"].upper()
    body = expect_json(post_json(http, api.url(f"/users/{user['id']}"), {"email": upper}, method="PATCH"), 200)
    assert body["email"] == upper


def test_patch_duplicate_email_is_409(api, http, user):
    other = create_user(http, api.url, "other", unique_email("other"))
    response = post_json(http, api.url(f"/users/{user['id']}"), {"email": other["email"].upper()}, method="PATCH")
    expect_error(response, 409)
    assert expect_json(http.get(api.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "a" * 51}, "name"),
        ({"name": None}, "name"),
        ({"email": "a@b"}, "email"),
        ({"email": "a@@b.c"}, "email"),
        ({"email": None}, "email"),
        ({"name": "ok", "email": "bad"}, "email"),
        ({"name": None, "email": "null-name-patch@example.com"}, "name"),
        ({"name": "ok", "email": None}, "email"),
    ],
    ids=["empty name", "blank name", "long name", "null name", "no dot", "two ats", "null email", "bad email",
         "null name + email", "name + null email"],
)
def test_patch_invalid_is_422_and_changes_nothing(api, http, user, body, field):
    expect_error(post_json(http, api.url(f"/users/{user['id']}"), body, method="PATCH"), 422, field=field)
    assert expect_json(http.get(api.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user


@pytest.mark.parametrize("body", [{}, {"foo": 1}, {"id": 5}], ids=["empty", "unknown", "id only"])
def test_patch_without_known_field_is_422(api, http, user, body):
    expect_error(post_json(http, api.url(f"/users/{user['id']}"), body, method="PATCH"), 422)


@pytest.mark.parametrize(
    "raw",
    [b'{"name":', b"[]", b'"x"', b'{"name": 123}', b'{"email": true}', b'{"name": ["x"]}', b'{"name": "\xff"}', b""],
    ids=["truncated", "array", "string", "name number", "email bool", "name array", "bad utf-8", "empty"],
)
def test_patch_bad_body_is_400(api, http, user, raw):
    expect_error(send_raw(http, "PATCH", api.url(f"/users/{user['id']}"), raw), 400)


def test_patch_wrong_content_type_is_415(api, http, user):
    expect_error(send_raw(http, "PATCH", api.url(f"/users/{user['id']}"), b'{"name": "x"}', "text/plain"), 415)


@pytest.mark.parametrize("bad_id", ["999999999", "abc", "0", "-1", "99999999999999999999999"])
def test_patch_unknown_is_404(api, http, bad_id):
    expect_error(post_json(http, api.url(f"/users/{bad_id}"), {"name": "x"}, method="PATCH"), 404, message="User not found")


# ---------------------------------------------------------------- DELETE /users/<id>


def test_delete_then_404(api, http, user):
    response = http.delete(api.url(f"/users/{user['id']}"), timeout=TIMEOUT)
    assert response.status_code == 204, describe(response)
    check_common(response)
    assert response.content == b""
    expect_error(http.get(api.url(f"/user/{user['id']}"), timeout=TIMEOUT), 404, message="User not found")
    expect_error(http.get(api.url(f"/users/{user['id']}"), timeout=TIMEOUT), 404, message="User not found")
    expect_error(http.delete(api.url(f"/users/{user['id']}"), timeout=TIMEOUT), 404, message="User not found")
    expect_error(post_json(http, api.url(f"/users/{user['id']}"), {"name": "x"}, method="PATCH"), 404)
    listed = expect_json(http.get(api.url("/users"), timeout=TIMEOUT), 200)
    assert user["id"] not in [u["id"] for u in listed]


def test_deleted_email_can_be_used_again(api, http, user):
    assert http.delete(api.url(f"/users/{user['id']}"), timeout=TIMEOUT).status_code == 204
    again = create_user(http, api.url, "again", user["email"])
    assert again["id"] != user["id"]


@pytest.mark.parametrize("bad_id", ["999999999", "abc", "0", "-1", "99999999999999999999999"])
def test_delete_unknown_is_404(api, http, bad_id):
    expect_error(http.delete(api.url(f"/users/{bad_id}"), timeout=TIMEOUT), 404, message="User not found")


# ---------------------------------------------------------------- GET /users


def test_list_is_ordered_and_has_three_keys(api, http):
    created = [create_user(http, api.url, f"list{i}", unique_email("list")) for i in range(3)]
    listed = expect_json(http.get(api.url("/users"), timeout=TIMEOUT), 200)
    assert isinstance(listed, list)
    ids = [u["id"] for u in listed]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert all(set(u) == {"id", "name", "email"} for u in listed)
    for user in created:
        assert user in listed


def test_keyset_paging(api, http):
    created = [create_user(http, api.url, f"page{i}", unique_email("page")) for i in range(5)]
    first = created[0]["id"]
    page = expect_json(http.get(api.url(f"/users?limit=2&after_id={first}"), timeout=TIMEOUT), 200)
    assert page == created[1:3]
    assert expect_json(http.get(api.url(f"/users?after_id={created[3]['id']}&limit=100"), timeout=TIMEOUT), 200)[0] == created[4]
    assert expect_json(http.get(api.url(f"/users?after_id={created[4]['id']}"), timeout=TIMEOUT), 200) == []
    assert len(expect_json(http.get(api.url("/users?limit=1"), timeout=TIMEOUT), 200)) == 1
    assert expect_json(http.get(api.url("/users?after_id=999999999999"), timeout=TIMEOUT), 200) == []


def test_paging_walk_equals_full_list(api, http):
    for i in range(4):
        create_user(http, api.url, f"walk{i}", unique_email("walk"))
    full = expect_json(http.get(api.url("/users"), timeout=TIMEOUT), 200)
    walked, after = [], 0
    while True:
        page = expect_json(http.get(api.url(f"/users?limit=3&after_id={after}"), timeout=TIMEOUT), 200)
        assert len(page) <= 3
        walked += page
        if len(page) < 3:
            break
        after = page[-1]["id"]
    assert walked == full


@pytest.mark.parametrize(
    "query, field",
    [
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("limit=1e2", "limit"),
        ("after_id=-1", "after_id"),
        ("after_id=abc", "after_id"),
        ("after_id=2.5", "after_id"),
        ("limit=5&after_id=x", "after_id"),
    ],
)
def test_list_bad_paging_is_422(api, http, query, field):
    expect_error(http.get(api.url(f"/users?{query}"), timeout=TIMEOUT), 422, field=field)


# ---------------------------------------------------------------- health, metrics, 404/405


def test_healthz(api, http):
    assert expect_json(http.get(api.url("/healthz"), timeout=TIMEOUT), 200) == {"status": "ok"}


def test_metrics_from_localhost(api, http):
    response = http.get(api.url("/metrics"), timeout=TIMEOUT)
    assert response.status_code == 200, describe(response)
    assert response.headers.get("Content-Type", "").startswith("text/plain"), response.headers
    assert b"# TYPE" in response.content


def test_metrics_forbidden_from_other_address(api):
    # 127.0.0.2 is loopback too, but not in the site's allow list.
    conn = http.client.HTTPConnection("127.0.0.1", api.nginx.port, timeout=TIMEOUT, source_address=("127.0.0.2", 0))
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 403
    assert response.getheader("Content-Type") == "application/json; charset=utf-8"
    assert b'"error"' in body


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("PUT", "/users", {"GET", "POST"}),
        ("DELETE", "/users", {"GET", "POST"}),
        ("DELETE", "/add-user", {"POST"}),
        ("GET", "/add-user", {"POST"}),
        ("POST", "/user/1", {"GET"}),
        ("DELETE", "/user/1", {"GET"}),
        ("PUT", "/users/1", {"GET", "PATCH", "DELETE"}),
        ("POST", "/users/1", {"GET", "PATCH", "DELETE"}),
        ("POST", "/healthz", {"GET"}),
        # nginx refuses TRACE before any location; the shipped site hands it to usersd
        ("TRACE", "/users/1", {"GET", "PATCH", "DELETE"}),
        ("TRACE", "/add-user", {"POST"}),
    ],
)
def test_wrong_method_is_405_with_allow(api, http, method, path, allowed):
    response = http.request(method, api.url(path), timeout=TIMEOUT)
    expect_error(response, 405)
    allow = {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()}
    assert allowed <= allow, f"Allow: {response.headers.get('Allow')!r}"
    assert method not in allow


def test_wrong_method_with_body_is_405(api, http):
    response = post_json(http, api.url("/users"), {"name": "x", "email": unique_email()}, method="PUT")
    expect_error(response, 405)
    assert "POST" in response.headers.get("Allow", "")


@pytest.mark.parametrize("path", ["/", "/nope", "/users/1/extra", "/user/", "/adduser", "/add-user/1", "/usersx", "/api/users"])
def test_unknown_path_is_404_json(api, http, path):
    expect_error(http.get(api.url(path), timeout=TIMEOUT), 404)


def test_request_ids_are_unique(api, http):
    ids = {http.get(api.url("/healthz"), timeout=TIMEOUT).headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5


def test_socket_mode_is_0660(api):
    mode = stat.S_IMODE(os.stat(api.service.socket).st_mode)
    assert mode == 0o660, oct(mode)
