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


def test_reads_are_never_stale_while_the_user_changes(api, http):
    """usersd caches users by id: no read that starts after a PATCH or DELETE was
    answered may return the user from before it, whichever route reads it."""
    user = post_json(http, api.url("/users"), {"name": "0", "email": unique_email("stale")})
    uid = expect_json(user, 201)["user"]["id"]
    acknowledged = [0]  # the version every read that starts now must see; -1: deleted
    deleting = threading.Event()  # set before the DELETE is sent
    stop = threading.Event()
    problems = []

    def reader(path):
        last = 0
        with requests.Session() as session:
            while not stop.is_set():
                floor = acknowledged[0]
                response = session.get(api.url(path), timeout=TIMEOUT)
                if response.status_code == 404 and deleting.is_set():
                    continue  # the DELETE was sent: a concurrent read may see it
                if response.status_code != 200 or floor < 0:
                    problems.append((path, describe(response)))
                    return
                seen = int(response.json()["name"])
                if seen < floor or seen < last:
                    problems.append((path, f"saw version {seen} after {max(floor, last)}"))
                last = seen

    readers = [threading.Thread(target=reader, args=(p,)) for p in [f"/user/{uid}", f"/users/{uid}"] * 2]
    for thread in readers:
        thread.start()
    try:
        for version in range(1, 101):
            expect_json(post_json(http, api.url(f"/users/{uid}"), {"name": str(version)}, method="PATCH"), 200)
            acknowledged[0] = version
            for path in (f"/user/{uid}", f"/users/{uid}"):
                assert expect_json(http.get(api.url(path), timeout=TIMEOUT), 200)["name"] == str(version)
        deleting.set()
        assert http.delete(api.url(f"/users/{uid}"), timeout=TIMEOUT).status_code == 204
        acknowledged[0] = -1
        for path in (f"/user/{uid}", f"/users/{uid}"):
            expect_error(http.get(api.url(path), timeout=TIMEOUT), 404)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert problems == []
