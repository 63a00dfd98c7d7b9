"""The tutorial's walkthrough, exactly as its clients use it, on a fresh database."""

import pytest

import harness
from apiclient import TIMEOUT, expect_json, post_json


@pytest.fixture(scope="module")
def fresh():
    stack = harness.Stack().start()
    yield stack
    stack.close()


def test_walkthrough_add_get_list(fresh, http):
    # 1. add a user the way the tutorial does: with "username"
    response = post_json(http, fresh.url("/add-user"), {"username": "john", "email": "john@example.com"})
    body = expect_json(response, 201)
    assert body == {"message": "User created", "user": {"id": 1, "name": "john", "email": "john@example.com"}}
    assert response.headers["Location"] == "/users/1"

    # 2. fetch it
    body = expect_json(http.get(fresh.url("/user/1"), timeout=TIMEOUT), 200)
    assert body == {"id": 1, "name": "john", "email": "john@example.com"}

    # 3. a second one, then the list in id order
    response = post_json(http, fresh.url("/add-user"), {"username": "jane", "email": "jane@example.com"})
    assert expect_json(response, 201)["user"]["id"] == 2
    body = expect_json(http.get(fresh.url("/users"), timeout=TIMEOUT), 200)
    assert body == [
        {"id": 1, "name": "john", "email": "john@example.com"},
        {"id": 2, "name": "jane", "email": "jane@example.com"},
    ]

    # 4. the health check the tutorial's operators would add
    assert expect_json(http.get(fresh.url("/healthz"), timeout=TIMEOUT), 200) == {"status": "ok"}
