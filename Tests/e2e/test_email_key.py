"""Email uniqueness under Unicode caseless matching (SPEC §2), through nginx: NFC +
full case folding, format characters refused, emails stored byte for byte; and
migration 7, which rebuilds the keys of an existing database and refuses to start
one where two users' emails become one."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import uuid

import pytest
import requests

import harness
from apiclient import TIMEOUT, create_user, expect_error, expect_json, post_json

# Each pair: one email for SPEC §2, written two ways; `{t}` makes it unique per test.
PAIRS = {
    "precomposed and decomposed é": ("caf\u00e9.{t}@x.io", "cafe\u0301.{t}@x.io"),
    "STRASSE and straße": ("STRASSE.{t}@x.io", "stra\u00dfe.{t}@x.io"),
    "long s": ("\u017fam.{t}@x.io", "sam.{t}@x.io"),
    "capital sharp s and ss": ("STRA\u1e9eE.{t}@X.IO", "strasse.{t}@x.io"),
}


def tagged(template: str) -> str:
    return template.format(t=uuid.uuid4().hex[:12])


def spelled(pair: tuple[str, str]) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:12]
    return pair[0].format(t=tag), pair[1].format(t=tag)


@pytest.mark.parametrize("reverse", [False, True], ids=["first-second", "second-first"])
@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
def test_caseless_equal_email_is_409_and_stored_as_given(api, http, pair, reverse):
    first, second = spelled(pair)[::-1] if reverse else spelled(pair)
    user = create_user(http, api.url, "first", first)
    # Stored exactly as given: only the key is folded.
    assert user["email"] == first
    assert expect_json(http.get(api.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200)["email"] == first
    for path in ("/add-user", "/users"):
        expect_error(post_json(http, api.url(path), {"name": "second", "email": second}), 409, field="email")


@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
def test_patch_to_a_caseless_equal_email_is_409(api, http, pair):
    first, second = spelled(pair)
    create_user(http, api.url, "holder", first)
    other = create_user(http, api.url, "other", tagged("other.{t}@x.io"))
    response = post_json(http, api.url(f"/users/{other['id']}"), {"email": second}, method="PATCH")
    expect_error(response, 409, field="email")
    assert expect_json(http.get(api.url(f"/user/{other['id']}"), timeout=TIMEOUT), 200) == other


def test_patch_own_email_to_another_spelling_keeps_it_as_given(api, http):
    first, second = spelled(PAIRS["STRASSE and straße"])
    user = create_user(http, api.url, "self", first)
    body = expect_json(post_json(http, api.url(f"/users/{user['id']}"), {"email": second}, method="PATCH"), 200)
    assert body["email"] == second


@pytest.mark.parametrize(
    "template, character, code_point",
    [("sam\u200b.{t}@x.io", "\u200b", "U+200B"), ("\u202e{t}@x.io", "\u202e", "U+202E"),
     ("sa\u200dm.{t}@x.io", "\u200d", "U+200D"), ("\ufeffsam.{t}@x.io", "\ufeff", "U+FEFF")],
    ids=["zero-width space", "right-to-left override", "zero-width joiner", "byte order mark"],
)
def test_format_characters_are_422_naming_email(api, http, template, character, code_point):
    email = tagged(template)
    for path in ("/add-user", "/users"):
        body = expect_error(post_json(http, api.url(path), {"name": "x", "email": email}), 422, field="email")
        assert "format characters" in body["error"] and body["error"].endswith(code_point), body
    user = create_user(http, api.url, "x", tagged("fmt.{t}@x.io"))
    response = post_json(http, api.url(f"/users/{user['id']}"), {"email": email}, method="PATCH")
    expect_error(response, 422, field="email")
    # Nothing was stored: the same address without the invisible character is free.
    create_user(http, api.url, "y", email.replace(character, ""))


# ------------------------------------------------------------------ migration 7


def run(*args):
    return subprocess.run([harness.usersd_bin(), *args], capture_output=True, text=True, timeout=60,
                          env=harness.clean_env())


def version6_database(path, emails: list[str]) -> None:
    """A database as usersd 6 left it: the schema (7 adds no table), keys lower-cased."""
    migrated = run("migrate", "--db", str(path))
    assert migrated.returncode == 0, migrated.stderr
    connection = sqlite3.connect(str(path))
    try:
        with connection:
            connection.execute("DELETE FROM schema_migrations WHERE version = 7")
            connection.executemany(
                "INSERT INTO users (name, email, email_key, created_at, updated_at) VALUES ('n', ?, ?, 'c', 'u')",
                [(email, email.lower()) for email in emails],
            )
    finally:
        connection.close()


def contents(path) -> tuple[str, list[str]]:
    """The file's hash and its rows, dumped."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    connection = sqlite3.connect(str(path))
    try:
        return digest, list(connection.iterdump())
    finally:
        connection.close()


def test_start_refuses_a_database_whose_users_collide(tmp_path):
    db = tmp_path / "users.sqlite3"
    version6_database(db, ["STRASSE@x.io", "bob@x.io", "stra\u00dfe@x.io", "caf\u00e9@x.io", "cafe\u0301@x.io"])
    before = contents(db)

    served = subprocess.run(
        [harness.usersd_bin(), "serve", "--socket", str(tmp_path / "usersd.sock"), "--db", str(db)],
        capture_output=True, text=True, timeout=60, env=harness.clean_env(),
    )
    assert served.returncode != 0
    # (In the log line the `\` of `\u{301}` is escaped once more.)
    for text in ("users 1 <STRASSE@x.io> and 3 <stra\u00dfe@x.io>", "users 4 <caf\u00e9@x.io> and 5 <cafe\\\\u{301}@x.io>",
                 "UPDATE users SET email = ", "DELETE FROM users WHERE id = 3", f"sqlite3 '{db}'"):
        assert text in served.stderr, served.stderr
    assert contents(db) == before

    migrated = run("migrate", "--db", str(db))
    assert migrated.returncode == 1, migrated.stderr
    assert "users 1 <STRASSE@x.io> and 3 <stra\u00dfe@x.io>" in migrated.stderr, migrated.stderr
    assert contents(db) == before
    with sqlite3.connect(str(db)) as connection:
        assert connection.execute("SELECT max(version) FROM schema_migrations").fetchone() == (6,)

    # The fix the message gives: another email for one user of each pair, then start again.
    connection = sqlite3.connect(str(db))
    with connection:
        connection.execute("UPDATE users SET email = 'other@x.io' WHERE id = 1")
        connection.execute("DELETE FROM users WHERE id = 5")
    connection.close()
    migrated = run("migrate", "--db", str(db))
    assert migrated.returncode == 0 and "applied migrations 7" in migrated.stdout, migrated.stderr
    with sqlite3.connect(str(db)) as connection:
        rows = connection.execute("SELECT id, email, email_key FROM users ORDER BY id").fetchall()
    connection.close()
    assert rows == [(1, "other@x.io", "other@x.io"), (2, "bob@x.io", "bob@x.io"),
                    (3, "stra\u00dfe@x.io", "strasse@x.io"), (4, "caf\u00e9@x.io", "caf\u00e9@x.io")]


@harness.sqlite_only("SQLite migration 7 rebuilds the keys of a version-6 file; PostgreSQL starts at its own schema")
def test_start_rebuilds_the_keys_of_a_version6_database(make_stack):
    stack = make_stack()
    version6_database(stack.service.db, ["STRASSE@x.io", "\u017fam@x.io", "cafe\u0301@x.io"])
    stack.start()
    with sqlite3.connect(str(stack.service.db)) as connection:
        keys = [row[0] for row in connection.execute("SELECT email_key FROM users ORDER BY id")]
    connection.close()
    assert keys == ["strasse@x.io", "sam@x.io", "caf\u00e9@x.io"]
    with requests.Session() as http:
        for email in ("stra\u00dfe@x.io", "SAM@x.io", "caf\u00e9@x.io"):
            expect_error(post_json(http, stack.url("/users"), {"name": "again", "email": email}), 409, field="email")
        users = expect_json(http.get(stack.url("/users"), timeout=TIMEOUT), 200)
    assert [u["email"] for u in users] == ["STRASSE@x.io", "\u017fam@x.io", "cafe\u0301@x.io"]
