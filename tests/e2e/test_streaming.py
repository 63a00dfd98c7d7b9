"""A large table: 20 000 rows written behind a stopped service's back come out of
GET /users complete and in id order."""

import pytest
import requests

import harness
from apiclient import TIMEOUT, expect_json

COUNT = 20000


@pytest.fixture(scope="module")
def big():
    stack = harness.Stack()
    try:
        stack.start()
        assert stack.service.stop() == 0  # the schema exists now
        seeded = harness.seed_users(stack.service.db, COUNT, tag="big")
        stack.service.start()
    except BaseException:
        stack.close()
        raise
    yield stack, seeded
    stack.close()


def test_get_users_streams_whole_table_in_order(big):
    stack, seeded = big
    response = requests.get(stack.url("/users"), timeout=TIMEOUT)
    users = expect_json(response, 200)
    assert len(users) == COUNT
    ids = [u["id"] for u in users]
    assert ids == sorted(ids) and len(set(ids)) == COUNT
    assert [{"name": u["name"], "email": u["email"]} for u in users] == seeded
    assert all(set(u) == {"id", "name", "email"} for u in users)


def test_paging_through_big_table(big):
    stack, seeded = big
    full = expect_json(requests.get(stack.url("/users"), timeout=TIMEOUT), 200)
    with requests.Session() as http:
        walked, after = [], 0
        while True:
            page = expect_json(http.get(stack.url(f"/users?limit=3000&after_id={after}"), timeout=TIMEOUT), 200)
            walked += page
            if len(page) < 3000:
                break
            after = page[-1]["id"]
    assert walked == full
    tail = expect_json(requests.get(stack.url(f"/users?after_id={full[-501]['id']}"), timeout=TIMEOUT), 200)
    assert tail == full[-500:]


def test_concurrent_full_listings(big):
    from concurrent.futures import ThreadPoolExecutor

    stack, _ = big
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: requests.get(stack.url("/users"), timeout=TIMEOUT), range(8)))
    lengths = [len(expect_json(r, 200)) for r in results]
    assert lengths == [COUNT] * 8


def test_streamed_list_asks_nginx_not_to_spool_it(big):
    """The shipped site buffers answers (one write to the client); the streamed list
    carries X-Accel-Buffering: no so nginx passes it on as it comes. nginx consumes
    the header: clients never see it."""
    import socket

    stack, _ = big
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(stack.service.socket))
        status, headers, body = harness.fastcgi_request(sock, "GET", "/users")
    assert status == 200 and len(body) > 1_000_000
    assert headers.get("x-accel-buffering") == "no"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(stack.service.socket))
        status, headers, _ = harness.fastcgi_request(sock, "GET", "/user/1")
    assert status == 200 and "x-accel-buffering" not in headers
    response = requests.get(stack.url("/users"), timeout=TIMEOUT)
    assert len(expect_json(response, 200)) == COUNT
    assert "X-Accel-Buffering" not in response.headers
