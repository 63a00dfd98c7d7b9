"""POST /add-user and POST /users through the shipped nginx site: success shape,
validation tables, body/content-type errors, byte-identical strings."""

import json

import pytest

import harness

from apiclient import TIMEOUT, check_common, create_user, describe, expect_error, expect_json, post_json, send_raw
from conftest import unique_email

CREATE_PATHS = ["/add-user", "/users"]


@pytest.fixture(params=CREATE_PATHS)
def path(request):
    return request.param


# ---------------------------------------------------------------- success


def test_create_returns_201_user_and_location(api, http, path, email):
    user = create_user(http, api.url, "Alice", email, path=path)
    assert user["name"] == "Alice" and user["email"] == email
    assert expect_json(http.get(api.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user


def test_username_is_an_alias_of_name(api, http, path, email):
    body = expect_json(post_json(http, api.url(path), {"username": "bob", "email": email}), 201)
    assert body["user"]["name"] == "bob"


def test_name_wins_over_username(api, http, path, email):
    body = expect_json(post_json(http, api.url(path), {"username": "alias", "name": "real", "email": email}), 201)
    assert body["user"]["name"] == "real"


def test_unknown_fields_are_ignored(api, http, path, email):
    body = expect_json(
        post_json(http, api.url(path), {"name": "x", "email": email, "admin": True, "id": 999999, "extra": {"a": [1]}}), 201
    )
    assert body["user"]["name"] == "x" and body["user"]["id"] != 999999
    assert set(body["user"]) == {"id", "name", "email"}


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
def test_json_content_types_accepted(api, http, content_type, email):
    response = send_raw(http, "POST", api.url("/users"), json.dumps({"name": "ct", "email": email}).encode(), content_type)
    expect_json(response, 201)


def test_ids_increase(api, http):
    first = create_user(http, api.url, "one", unique_email())
    second = create_user(http, api.url, "two", unique_email())
    assert second["id"] > first["id"]


# ---------------------------------------------------------------- strings stored exactly

EXACT_NAMES = {
    "double quotes": 'He said "hi"',
    "single quotes": "O'Brien",
    "sql injection": "'); DROP TABLE users;--",
    "sql injection 2": "Robert'); DELETE FROM users WHERE ('1'='1",
    "emoji": "😀🎉👩‍👩‍👧‍👦",
    "rtl": "שלום עולם مرحبا",
    "backslashes": "back\\slash \\n \\u0041",
    "control-ish": "tab\there",
    "leading/trailing spaces": "  padded name  ",
    "decomposed accent": "e\u0301te\u0301",
    "precomposed accent": "\u00e9t\u00e9",
    "cjk": "山田太郎",
    "html": "<script>alert(1)</script>&amp;",
    "percent": "100% %s %d %n",
    "50 emoji": "😀" * 50,
    "50 ascii": "a" * 50,
    "50 after trim": "  " + "b" * 50 + "  ",
}


@pytest.mark.parametrize("name", list(EXACT_NAMES.values()), ids=list(EXACT_NAMES))
def test_strings_come_back_byte_identical(api, http, name):
    email = unique_email("exact")
    user = create_user(http, api.url, name, email)
    assert user["name"] == name and user["email"] == email
    for path in (f"/user/{user['id']}", f"/users/{user['id']}"):
        got = expect_json(http.get(api.url(path), timeout=TIMEOUT), 200)
        assert got["name"].encode("utf-8") == name.encode("utf-8"), path
        assert got["email"] == email
    listed = expect_json(http.get(api.url(f"/users?after_id={user['id'] - 1}&limit=1"), timeout=TIMEOUT), 200)
    assert listed == [user]


def test_unicode_escapes_in_request_are_decoded(api, http):
    email = unique_email("esc")
    body = ('{"name": "caf\\u00e9 \\ud83d\\ude00 \\"q\\" \\\\ \\/", "email": "%s"}' % email).encode()
    user = expect_json(send_raw(http, "POST", api.url("/add-user"), body), 201)["user"]
    assert user["name"] == 'café 😀 "q" \\ /'
    got = expect_json(http.get(api.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200)
    assert got["name"] == 'café 😀 "q" \\ /'


def test_special_email_stored_exactly(api, http):
    email = f"o'brien+\"tag\"-{unique_email()}".replace("@example.com", "@Example.CO.uk")
    user = create_user(http, api.url, "mail", email)
    assert user["email"] == email
    assert expect_json(http.get(api.url(f"/users/{user['id']}"), timeout=TIMEOUT), 200)["email"] == email


def test_table_survives_sql_fragments(api, http):
    create_user(http, api.url, "x'); DROP TABLE users;--", unique_email("drop"))
    create_user(http, api.url, "ok", unique_email())
    assert isinstance(expect_json(http.get(api.url("/users?limit=1"), timeout=TIMEOUT), 200), list)


# ---------------------------------------------------------------- 422 validation

BAD_NAMES = {
    "empty": "",
    "spaces only": "   ",
    "whitespace only": "\t \n ",
    "51 ascii": "a" * 51,
    "51 emoji": "😀" * 51,
    "51 after trim": " " + "c" * 51 + " ",
    "52 code points in 26 graphemes": "e\u0301" * 26,
}


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_invalid_name_is_422(api, http, path, name):
    expect_error(post_json(http, api.url(path), {"name": name, "email": unique_email()}), 422, field="name")


def test_name_counted_in_code_points_combining_marks_ok(api, http):
    # 50 code points (25 base letters + 25 combining accents) is within the limit.
    create_user(http, api.url, "e\u0301" * 25, unique_email())


def _email_of_length(n):
    domain = "@example.com"
    return "x" * (n - len(domain)) + domain


BAD_EMAILS = {
    "no at": "ab.c",
    "no dot in domain": "a@b",
    "two ats": "a@@b.c",
    "at in domain": "a@b@c.d",
    "empty local": "@b.c",
    "trailing dot": "a@b.",
    "leading dot": "a@.b",
    "empty label": "a@b..c",
    "empty": "",
    "space inside": "a b@c.d",
    "trailing space": "a@b.c ",
    "leading space": " a@b.c",
    "tab": "a@b.\tc",
    "newline": "a@b.c\n",
    "101 chars": _email_of_length(101),
}


@pytest.mark.parametrize("value", list(BAD_EMAILS.values()), ids=list(BAD_EMAILS))
def test_invalid_email_is_422(api, http, path, value):
    expect_error(post_json(http, api.url(path), {"name": "n", "email": value}), 422, field="email")


def test_email_of_100_chars_is_ok(api, http):
    email = unique_email("long").split("@")[0]
    email = (email + "y" * 100)[:88] + "@example.com"
    assert len(email) == 100
    create_user(http, api.url, "long mail", email)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": None, "email": "x@y.zz"}, "name"),
        ({"name": "n", "email": None}, "email"),
        ({"email": "x@y.zz"}, "name"),
        ({"name": "n"}, "email"),
        ({"username": "n"}, "email"),
    ],
    ids=["null name", "null email", "missing name", "missing email", "username without email"],
)
def test_null_or_missing_field_is_422(api, http, path, body, field):
    expect_error(post_json(http, api.url(path), body), 422, field=field)


def test_empty_object_is_422(api, http, path):
    body = expect_error(post_json(http, api.url(path), {}), 422)
    assert body.get("field") in ("name", "email")


def test_duplicate_email_is_409_case_insensitive(api, http, path):
    tag = unique_email("dup").split("@")[0]
    create_user(http, api.url, "first", f"Bob.{tag}@X.io")
    for variant in (f"Bob.{tag}@X.io", f"bob.{tag}@x.io", f"BOB.{tag}@X.IO"):
        expect_error(post_json(http, api.url(path), {"name": "second", "email": variant}), 409)


def test_failed_create_writes_nothing(api, http):
    email = unique_email("nothing")
    expect_error(post_json(http, api.url("/users"), {"name": "", "email": email}), 422, field="name")
    # The email is still free: nothing half-written by the rejected request.
    create_user(http, api.url, "now", email)


# ---------------------------------------------------------------- 400 bad bodies

BAD_BODIES = {
    "truncated": b'{"name":',
    "trailing garbage": b'{"name": "a", "email": "a@b.cc"} x',
    "single quotes": b"{'name': 'a', 'email': 'a@b.cc'}",
    "trailing comma": b'{"name": "a", "email": "a@b.cc",}',
    "array": b'[{"name": "a", "email": "a@b.cc"}]',
    "empty array": b"[]",
    "string": b'"hello"',
    "number": b"42",
    "true": b"true",
    "null": b"null",
    "name number": b'{"name": 123, "email": "a@b.cc"}',
    "name float": b'{"name": 1.5, "email": "a@b.cc"}',
    "name bool": b'{"name": true, "email": "a@b.cc"}',
    "name array": b'{"name": ["x"], "email": "a@b.cc"}',
    "name object": b'{"name": {"first": "x"}, "email": "a@b.cc"}',
    "email true": b'{"name": "a", "email": true}',
    "email number": b'{"name": "a", "email": 7}',
    "email array": b'{"name": "a", "email": ["a@b.cc"]}',
    "invalid utf-8": b'{"name": "\xff\xfe", "email": "a@b.cc"}',
    "invalid utf-8 overlong": b'{"name": "\xc0\xaf", "email": "a@b.cc"}',
    "invalid utf-8 truncated sequence": b'{"name": "ab\xe2\x82", "email": "a@b.cc"}',
    "invalid utf-8 in key": b'{"na\xffme": "a", "email": "a@b.cc"}',
    "empty body": b"",
    "whitespace body": b"   \n",
}


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_bad_body_is_400(api, http, path, body):
    expect_error(send_raw(http, "POST", api.url(path), body), 400)


# ---------------------------------------------------------------- 415 content types

VALID_BODY = b'{"name": "ct", "email": "ct-415@example.com"}'


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "application/xml", None],
    ids=["text/plain", "form", "multipart", "xml", "missing"],
)
def test_non_json_content_type_is_415(api, http, path, content_type):
    response = send_raw(http, "POST", api.url(path), VALID_BODY, content_type)
    expect_error(response, 415)


def test_415_wrote_nothing(api, http):
    send_raw(http, "POST", api.url("/users"), VALID_BODY, "text/plain")
    listed = expect_json(http.get(api.url("/users"), timeout=TIMEOUT), 200)
    assert all(u["email"] != "ct-415@example.com" for u in listed)


# ---------------------------------------------------------------- 413 body too large


def test_body_over_one_mib_is_413_json_from_nginx(api, http, path):
    body = json.dumps({"name": "big", "email": unique_email(), "pad": "x" * (1024 * 1024)}).encode()
    assert len(body) > 1024 * 1024
    response = send_raw(http, "POST", api.url(path), body)
    assert response.status_code == 413, describe(response)
    assert response.headers.get("Content-Type") == "application/json; charset=utf-8", describe(response)
    assert isinstance(response.json().get("error"), str)


def test_413_from_nginx_carries_request_id(api, http):
    body = b'{"pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    response = send_raw(http, "POST", api.url("/users"), body)
    assert response.status_code == 413
    check_common(response)


def test_body_just_under_limit_is_not_413(api, http):
    # 1 MiB minus a little: passes nginx and usersd; the unknown field is ignored.
    email = unique_email()
    prefix = json.dumps({"name": "almost", "email": email, "pad": ""}).encode()[:-2]
    body = prefix + b"x" * (1024 * 1024 - len(prefix) - 2) + b'"}'
    assert len(body) == 1024 * 1024
    user = expect_json(send_raw(http, "POST", api.url("/users"), body), 201)["user"]
    assert user["email"] == email


def test_a_nul_in_a_name_is_stored_or_refused_never_cut(api, http):
    """U+0000 in a name: SQLite stores it as given; PostgreSQL text cannot hold it, so
    there it is a 422 naming the field (never a 500, never a name cut short)."""
    name = "before\u0000after"
    response = post_json(http, api.url("/users"), {"name": name, "email": unique_email("nul")})
    if harness.BACKEND == "postgres":
        expect_error(response, 422, field="name")
    else:
        user = expect_json(response, 201)["user"]
        assert user["name"] == name
        assert expect_json(http.get(api.url(f"/users/{user['id']}"), timeout=TIMEOUT), 200)["name"] == name
