"""Concurrent writes through nginx: every create answered, ids distinct, the
unique email enforced exactly once under a race."""

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from apiclient import TIMEOUT, describe, expect_error, expect_json, post_json
from conftest import unique_email


def run_concurrently(n, fn):
    """Runs fn(i) in n threads released together by a barrier; returns the results."""
    barrier = threading.Barrier(n)

    def task(i):
        with requests.Session() as session:
            barrier.wait(timeout=60)
            return fn(session, i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(task, range(n)))


def test_200_concurrent_creates(api, http):
    tag = unique_email("c").split("@")[0]
    emails = [f"{tag}-{i}@example.com" for i in range(200)]

    def create(session, i):
        path = "/add-user" if i % 2 else "/users"
        return post_json(session, api.url(path), {"name": f"concurrent {i}", "email": emails[i]})

    responses = run_concurrently(200, create)
    users = []
    for i, response in enumerate(responses):
        body = expect_json(response, 201)
        assert body["user"]["email"] == emails[i] and body["user"]["name"] == f"concurrent {i}"
        assert response.headers["Location"] == f"/users/{body['user']['id']}"
        users.append(body["user"])
    ids = [u["id"] for u in users]
    assert len(set(ids)) == 200

    listed = expect_json(http.get(api.url("/users"), timeout=TIMEOUT), 200)
    by_id = {u["id"]: u for u in listed}
    for user in users:
        assert by_id.get(user["id"]) == user
    # and each one reads back on its own
    for user in random.sample(users, 20):
        assert expect_json(http.get(api.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user


@pytest.mark.parametrize("case_variants", [False, True], ids=["same spelling", "case variants"])
def test_50_concurrent_creates_of_one_email(api, http, case_variants):
    email = unique_email("race")
    rng = random.Random(7)

    def spelling(i):
        if not case_variants:
            return email
        return "".join(c.upper() if rng.random() < 0.5 else c for c in email)

    spellings = [spelling(i) for i in range(50)]

    def create(session, i):
        return post_json(session, api.url("/users"), {"name": f"racer {i}", "email": spellings[i]})

    responses = run_concurrently(50, create)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 49, [describe(r) for r in responses if r.status_code not in (201, 409)] or statuses
    winner = next(r for r in responses if r.status_code == 201)
    for response in responses:
        if response.status_code == 409:
            expect_error(response, 409)
    user = expect_json(winner, 201)["user"]
    listed = expect_json(http.get(api.url("/users"), timeout=TIMEOUT), 200)
    assert [u for u in listed if u["email"].lower() == email.lower()] == [user]
