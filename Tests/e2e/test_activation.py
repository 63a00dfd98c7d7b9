"""The ways a supervisor hands usersd its socket: spawn-fcgi (fd 0), systemd
socket activation (LISTEN_FDS, fd 3), and the USERSD_* environment twins."""

import os
import signal

import pytest
import requests

import harness
from apiclient import TIMEOUT, create_user, expect_json
from conftest import unique_email


def exercise(stack):
    with requests.Session() as http:
        user = create_user(http, stack.url, "activated", unique_email("act"))
        assert expect_json(http.get(stack.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user
        assert expect_json(http.get(stack.url(f"/users/{user['id']}"), timeout=TIMEOUT), 200)["email"] == user["email"]
        assert user in expect_json(http.get(stack.url("/users"), timeout=TIMEOUT), 200)
        assert expect_json(http.get(stack.url("/healthz"), timeout=TIMEOUT), 200) == {"status": "ok"}
        return user


@pytest.mark.parametrize("mode", ["spawn-fcgi", "systemd", "env"])
def test_activation_mode_serves_through_nginx(make_stack, mode):
    stack = make_stack(mode=mode).start()
    service = stack.service
    # the launcher exec'd usersd in place: the pid we hold is usersd's
    assert os.path.realpath(f"/proc/{service.pid}/exe") == os.path.realpath(harness.usersd_bin())
    if mode == "systemd":
        # the connection that triggered the activation is served too
        status, headers, body = service.activation_response
        assert status == 200, (status, body)
        assert headers.get("content-type") == harness.JSON_TYPE
    user = exercise(stack)

    assert service.stop(signal.SIGTERM) == 0
    assert service.notify.seen("STOPPING=1"), service.notify.lines
    service.start()
    assert expect_json(requests.get(stack.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user
    exercise(stack)
    assert service.stop() == 0


def test_db_from_environment_twin(make_stack):
    stack = make_stack(mode="env").start()
    user = exercise(stack)
    assert stack.service.stop() == 0
    assert stack.service.db.exists()
    import sqlite3

    with sqlite3.connect(str(stack.service.db)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        row = connection.execute("SELECT name, email FROM users WHERE id = ?", (user["id"],)).fetchone()
    assert row == (user["name"], user["email"])
