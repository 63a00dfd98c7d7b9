"""A large table: 20 000 rows written behind a stopped service's back come out of
GET /users complete and in id order."""

import re
import socket
import time

import pytest
import requests

import harness
from apiclient import TIMEOUT, expect_json

COUNT = 20000


@pytest.fixture(scope="module")
def big():
    stack, seeded = harness.seeded_stack(COUNT, tag="big")
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


def test_streamed_list_is_left_to_nginx_buffering(big):
    """The streamed list is not marked X-Accel-Buffering: no: nginx buffers it (to a
    temporary file past its buffers), reading it from usersd at full speed whatever
    the client's pace."""
    import socket

    stack, _ = big
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(stack.service.socket))
        status, headers, body = harness.fastcgi_request(sock, "GET", "/users")
    assert status == 200 and len(body) > 1_000_000
    assert "x-accel-buffering" not in headers
    response = requests.get(stack.url("/users"), timeout=TIMEOUT)
    assert len(expect_json(response, 200)) == COUNT


# ---------------------------------------------------------------- stalled and failing streams

HUGE = 100_000


@pytest.fixture(scope="module")
def huge():
    """100,000 users behind the shipped site; usersd serves at most 16 connections
    and drops a connection whose writes stall for 2 s."""
    stack, _ = harness.seeded_stack(HUGE, tag="huge", args=["--max-connections", "16", "--write-timeout", "2"])
    yield stack
    stack.close()


def _finished_lists(service) -> list[str]:
    return re.findall(r"^.*msg=request .*path=/users status=200 .*$", service.log_text(), re.M)


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def test_clients_that_stop_reading_hold_no_usersd_thread(huge):
    """60 clients start GET /users of 100,000 users and stop reading after 100
    bytes. usersd (16 connections at most) still hands every list over in full, so
    200 GET /user/<id> meanwhile all answer 200 and quickly."""
    stack = huge
    already = len(_finished_lists(stack.service))
    stalled = []
    try:
        for _ in range(60):
            client = socket.create_connection(("127.0.0.1", stack.nginx.port), timeout=TIMEOUT)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.sendall(b"GET /users HTTP/1.1\r\nHost: localhost\r\n\r\n")
            stalled.append(client)
        for client in stalled:
            assert len(client.recv(100)) > 0
        # Each list's access line is written when its last byte went to nginx.
        _wait_for(lambda: len(_finished_lists(stack.service)) >= already + 60, 120, "60 lists handed to nginx")
        latencies = []
        with requests.Session() as http:
            for n in range(200):
                start = time.monotonic()
                response = http.get(stack.url(f"/user/{1 + n * 397 % HUGE}"), timeout=TIMEOUT)
                latencies.append(time.monotonic() - start)
                assert response.status_code == 200, response.text[:200]
        latencies.sort()
        assert latencies[int(len(latencies) * 0.99) - 1] < 0.5, latencies[-5:]
    finally:
        for client in stalled:
            client.close()


def test_a_peer_that_stops_reading_is_dropped_after_the_write_timeout(huge):
    """Behind a web server that does not buffer, the peer is the client's pace: a
    FastCGI peer that reads nothing of a 7 MB list is dropped after --write-timeout
    (2 s here), logged as aborted, without FCGI_END_REQUEST; others are served."""
    import fcgi_fuzz as fz

    stack = huge
    with socket.socket(socket.AF_UNIX) as peer:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.connect(str(stack.service.socket))
        peer.sendall(fz.request_bytes(fz.http_params("GET", "/users", extra={"REQUEST_ID": "stalled-peer"})))
        line = _wait_for(
            lambda: re.search(r"msg=request request_id=stalled-peer .*status=200 .*aborted=true", stack.service.log_text()),
            30, "the stalled stream to be dropped")
        assert line
        peer.settimeout(TIMEOUT)
        data = b""
        while chunk := peer.recv(1 << 20):
            data += chunk
    assert fz.count_ends(data) == 0 and len(data) < 7_000_000
    assert requests.get(stack.url("/user/1"), timeout=TIMEOUT).status_code == 200


@harness.sqlite_only("corrupts the SQLite file under a running stream")
def test_a_stream_that_fails_midway_is_cut_not_ended(make_stack):
    """A database read that fails after the head of GET /users went out (here: pages
    of the file are zeroed under the running service) must not look like a complete
    answer: usersd drops the connection, nginx cuts the client's response, and the
    access line says aborted."""
    import os

    stack = make_stack()
    stack.start()
    assert stack.service.stop() == 0
    harness.seed_users(stack.service.db, HUGE, tag="cut")
    stack.service.start()
    # The rows lie in the file in id order: zero a band of pages three quarters in, so
    # the first rows read fine and a later page is malformed. (The file keeps its size:
    # SQLite refuses a file shorter than its header says before reading anything.)
    size = os.path.getsize(stack.service.db)
    with open(stack.service.db, "r+b") as file:
        file.seek(size * 7 // 10 // 4096 * 4096)
        file.write(bytes(size // 10 // 4096 * 4096))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        response = requests.get(stack.url("/users"), timeout=TIMEOUT, stream=True)
        assert response.status_code == 200
        for _ in response.iter_content(65536):
            pass
    _wait_for(lambda: re.search(r"msg=request .*path=/users status=200 .*aborted=true", stack.service.log_text()),
              10, "the aborted access line")
