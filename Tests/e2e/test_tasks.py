"""Background tasks through nginx: /start-task, the /tasks API, the welcome outbox,
cancellation, the queue bound, and durability across kill -9 and graceful restarts.

Waiting for a task's state polls GET /tasks/<id> until a deadline: the test waits for
the event it names, it never sleeps to hope a race away.
"""

from __future__ import annotations

import signal
import time

import requests

import harness
from conftest import unique_email

JSON = {"Content-Type": "application/json"}


def post_task(stack, body, headers=None):
    return requests.post(stack.url("/tasks"), json=body, headers={**JSON, **(headers or {})}, timeout=10)


def task(stack, task_id):
    response = requests.get(stack.url(f"/tasks/{task_id}"), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_state(stack, task_id, states, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        current = task(stack, task_id)
        if current["state"] in states:
            return current
        assert time.monotonic() < deadline, f"task {task_id} still {current['state']} after {timeout}s: {current}"
        time.sleep(0.05)


def test_start_task_answers_at_once_and_the_task_completes(api):
    started = time.monotonic()
    response = requests.get(api.url("/start-task"), timeout=10)
    answered = time.monotonic() - started
    assert response.status_code == 202, response.text
    assert answered < 1.0, f"/start-task took {answered:.2f}s"
    body = response.json()
    assert body["message"] == "Task started"
    created = body["task"]
    assert created["kind"] == "sleep" and created["payload"] == {"seconds": 5}
    assert created["state"] in ("queued", "running")
    assert response.headers["Location"] == f"/tasks/{created['id']}"
    done = wait_for_state(api, created["id"], {"succeeded", "failed", "cancelled"}, timeout=20)
    assert done["state"] == "succeeded"
    assert done["attempts"] == 1
    assert done["result"] == {"slept_seconds": 5}
    assert time.monotonic() - started >= 4.5
    log = api.service.log_text()
    assert "Background task completed" in log and f"task_id={created['id']}" in log


def test_user_requests_stay_prompt_while_four_long_tasks_run(api):
    ids = [post_task(api, {"kind": "sleep", "seconds": 30}).json()["task"]["id"] for _ in range(4)]
    for task_id in ids:
        wait_for_state(api, task_id, {"running"})
    with requests.Session() as session:
        for index in range(20):
            started = time.monotonic()
            created = session.post(api.url("/add-user"), json={"name": "busy", "email": unique_email(f"busy{index}")},
                                   headers=JSON, timeout=10)
            fetched = session.get(api.url(f"/user/{created.json()['user']['id']}"), timeout=10)
            elapsed = time.monotonic() - started
            assert created.status_code == 201 and fetched.status_code == 200
            assert elapsed < 2.0, f"a create + read took {elapsed:.2f}s while tasks ran"
    for task_id in ids:
        assert requests.delete(api.url(f"/tasks/{task_id}"), timeout=15).json()["state"] == "cancelled"


def test_post_tasks_location_get_list_and_idempotency(api):
    response = post_task(api, {"kind": "sleep", "seconds": 0.2}, headers={"Idempotency-Key": "e2e-key-1"})
    assert response.status_code == 202
    created = response.json()["task"]
    assert response.headers["Location"] == f"/tasks/{created['id']}"
    again = post_task(api, {"kind": "sleep", "seconds": 0.2}, headers={"Idempotency-Key": "e2e-key-1"})
    assert again.status_code == 202 and again.json()["task"]["id"] == created["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    done = wait_for_state(api, created["id"], {"succeeded"})
    assert done["result"] == {"slept_seconds": 0.2}
    listed = requests.get(api.url("/tasks"), params={"state": "succeeded", "limit": 1000}, timeout=10).json()
    assert created["id"] in [t["id"] for t in listed]
    assert all(t["state"] == "succeeded" for t in listed)
    explicit = post_task(api, {"kind": "sleep", "payload": {"seconds": 0.1}, "max_attempts": 2})
    assert explicit.status_code == 202 and explicit.json()["task"]["max_attempts"] == 2


def test_bad_task_input_is_a_clear_4xx(api):
    cases = [
        ({"kind": "nope"}, 422, "kind"),
        ({}, 422, "kind"),
        ({"kind": 5}, 400, "kind"),
        ({"kind": "sleep", "seconds": 0}, 422, "seconds"),
        ({"kind": "sleep", "seconds": 3601}, 422, "seconds"),
        ({"kind": "sleep", "seconds": "5"}, 422, "seconds"),
        ({"kind": "sleep", "max_attempts": 0}, 422, "max_attempts"),
        ({"kind": "sleep", "payload": [1]}, 400, "payload"),
        ({"kind": "welcome", "user_id": -1}, 422, "kind"),
    ]
    for body, status, field in cases:
        response = post_task(api, body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["field"] == field, (body, response.text)
    malformed = requests.post(api.url("/tasks"), data=b'{"kind":', headers=JSON, timeout=10)
    assert malformed.status_code == 400 and "error" in malformed.json()
    assert requests.post(api.url("/tasks"), data=b"kind=sleep", timeout=10).status_code == 415
    bad_state = requests.get(api.url("/tasks"), params={"state": "bogus"}, timeout=10)
    assert bad_state.status_code == 422 and bad_state.json()["field"] == "state"
    for path in ("/tasks/abc", "/tasks/0", "/tasks/999999999"):
        response = requests.get(api.url(path), timeout=10)
        assert response.status_code == 404 and response.json() == {"error": "Task not found"}
    assert requests.put(api.url("/tasks/1"), timeout=10).status_code == 405


def test_cancel_queued_then_running_then_finished(api):
    queued = post_task(api, {"kind": "sleep", "seconds": 1, "delay_seconds": 600}).json()["task"]
    cancelled = requests.delete(api.url(f"/tasks/{queued['id']}"), timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["attempts"] == 0
    again = requests.delete(api.url(f"/tasks/{queued['id']}"), timeout=10)
    assert again.status_code == 409 and "error" in again.json()
    running = post_task(api, {"kind": "sleep", "seconds": 600}).json()["task"]
    wait_for_state(api, running["id"], {"running"})
    stopped = requests.delete(api.url(f"/tasks/{running['id']}"), timeout=15)
    assert stopped.status_code == 200 and stopped.json()["state"] == "cancelled"
    assert task(api, running["id"])["state"] == "cancelled"
    assert requests.delete(api.url("/tasks/999999999"), timeout=10).status_code == 404


def test_cancel_of_a_task_that_already_succeeded_is_409(api):
    created = post_task(api, {"kind": "sleep", "seconds": 0.1}).json()["task"]
    wait_for_state(api, created["id"], {"succeeded"})
    response = requests.delete(api.url(f"/tasks/{created['id']}"), timeout=10)
    assert response.status_code == 409, response.text
    assert response.json() == {"error": "Task already succeeded", "field": "state"}
    assert task(api, created["id"])["state"] == "succeeded"


def test_internal_task_kinds_cannot_be_created_by_clients(make_stack):
    """`welcome` is enqueued only with a new user, in the user's transaction: POST /tasks
    with it is 422 naming `kind`, whatever the payload and whether the user exists, and
    writes no task row and no outbox row. The list of kinds an unknown kind gets back
    does not name it; the client kinds still work."""
    stack = make_stack().start()

    def counts():
        tasks = harness.sql(stack.service.db, "SELECT count(*) FROM tasks")[0][0]
        outbox = harness.sql(stack.service.db, "SELECT count(*) FROM outbox")[0][0]
        return tasks, outbox

    def refused(user_id):
        for body in ({"kind": "welcome", "user_id": user_id}, {"kind": "welcome", "payload": {"user_id": user_id}}):
            response = post_task(stack, body, headers={"Idempotency-Key": f"internal-{user_id}"})
            assert response.status_code == 422, (body, response.text)
            assert response.json()["field"] == "kind", response.text
            assert "internal" in response.json()["error"], response.text

    refused(1)  # no such user yet
    assert counts() == (0, 0)
    user = requests.post(stack.url("/users"), json={"name": "Ida", "email": unique_email("internal")},
                         headers=JSON, timeout=10).json()["user"]
    deadline = time.monotonic() + 20
    while counts() != (1, 1):
        assert time.monotonic() < deadline, f"the new user's welcome never ran: {counts()}"
        time.sleep(0.05)
    refused(user["id"])  # a real user, who already has their welcome
    assert counts() == (1, 1)

    unknown = post_task(stack, {"kind": "nope"})
    assert unknown.status_code == 422 and unknown.json()["field"] == "kind"
    assert "sleep" in unknown.json()["error"] and "welcome" not in unknown.json()["error"]
    started = requests.get(stack.url("/start-task"), timeout=10)
    assert started.status_code == 202 and started.json()["task"]["kind"] == "sleep"
    posted = post_task(stack, {"kind": "sleep", "seconds": 0.1})
    assert posted.status_code == 202, posted.text
    assert wait_for_state(stack, posted.json()["task"]["id"], {"succeeded"})["result"] == {"slept_seconds": 0.1}
    assert harness.sql(stack.service.db, "SELECT count(*) FROM outbox") == [(1,)]
    assert harness.sql(stack.service.db, "SELECT count(*) FROM tasks WHERE kind = 'welcome'") == [(1,)]


def test_a_new_user_gets_exactly_one_welcome_row_in_the_outbox(api):
    response = requests.post(api.url("/users"), json={"name": "Wendy", "email": unique_email("welcome")},
                             headers=JSON, timeout=10)
    user = response.json()["user"]
    deadline = time.monotonic() + 20
    while True:
        tasks = requests.get(api.url("/tasks"), params={"state": "succeeded", "limit": 1000}, timeout=10).json()
        mine = [t for t in tasks if t["kind"] == "welcome" and t["payload"] == {"user_id": user["id"]}]
        if mine:
            break
        assert time.monotonic() < deadline, "welcome task never succeeded"
        time.sleep(0.05)
    rows = harness.sql(api.service.db, "SELECT recipient FROM outbox WHERE user_id = ?", (user["id"],))
    assert rows == [(user["email"],)]


def test_welcome_tasks_of_concurrent_creates_all_run_once_while_every_slot_is_busy(make_stack):
    """Welcome tasks run by id without a slot: with the only slot held by a long sleep,
    300 users created from 16 threads each get one succeeded welcome task and one
    outbox row, and no welcome task is left queued or running."""
    from concurrent.futures import ThreadPoolExecutor

    stack = make_stack(args=["--task-concurrency", "1"]).start()
    blocker = post_task(stack, {"kind": "sleep", "seconds": 600}).json()["task"]
    wait_for_state(stack, blocker["id"], {"running"})

    def create(i):
        response = requests.post(stack.url("/add-user"), json={"name": f"W {i}", "email": unique_email(f"w{i}")},
                                 headers=JSON, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()["user"]["id"]

    with ThreadPoolExecutor(16) as pool:
        ids = set(pool.map(create, range(300)))
    assert len(ids) == 300
    deadline = time.monotonic() + 30
    while True:
        pending = harness.sql(
            stack.service.db, "SELECT count(*) FROM tasks WHERE kind = 'welcome' AND state IN ('queued', 'running')")[0][0]
        if pending == 0:
            break
        assert time.monotonic() < deadline, f"{pending} welcome tasks still pending"
        time.sleep(0.05)
    user_id = "json_extract(payload, '$.user_id')" if harness.BACKEND == "sqlite" else "(payload::json->>'user_id')"
    welcomes = harness.sql(stack.service.db, f"SELECT {user_id}, state, attempts FROM tasks WHERE kind = 'welcome'")
    outbox = [row[0] for row in harness.sql(stack.service.db, "SELECT user_id FROM outbox")]
    assert sorted(w[0] for w in welcomes) == sorted(ids)
    assert {(w[1], w[2]) for w in welcomes} == {("succeeded", 1)}
    assert sorted(outbox) == sorted(ids)
    assert task(stack, blocker["id"])["state"] == "running"
    # The counts /metrics reports (written once per group commit) are the rows'.
    assert metrics_task_counts(stack) == sql_task_counts(stack)


def metrics_task_counts(stack):
    """usersd_tasks{state="..."} from /metrics, the states with tasks."""
    text = requests.get(stack.url("/metrics"), timeout=10).text
    counts = {}
    for line in text.splitlines():
        if line.startswith('usersd_tasks{state="'):
            state = line.split('"')[1]
            value = int(float(line.rsplit(" ", 1)[1]))
            if value:
                counts[state] = value
    return counts


def sql_task_counts(stack):
    return dict(harness.sql(stack.service.db, "SELECT state, count(*) FROM tasks GROUP BY state"))


def test_concurrent_enqueues_stop_exactly_at_the_queue_bound(make_stack):
    """Forty POST /tasks at once against a bound of ten: concurrent enqueues share
    group commits, and each still counts the ones queued before it in the same
    transaction, so exactly ten are accepted and thirty get 503. (Which requests
    share a transaction is up to timing; without that count this failed in one of
    three runs. The unit test QueueBoundInOneTransactionTests fixes the batch.)"""
    from concurrent.futures import ThreadPoolExecutor
    import threading

    stack = make_stack(args=["--task-queue-limit", "10"]).start()
    barrier = threading.Barrier(40)

    def enqueue(i):
        with requests.Session() as session:
            barrier.wait(timeout=30)
            return session.post(stack.url("/tasks"), json={"kind": "sleep", "delay_seconds": 600},
                                headers=JSON, timeout=30).status_code

    with ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(enqueue, range(40)))
    assert sorted(statuses) == [202] * 10 + [503] * 30
    assert sql_task_counts(stack) == {"queued": 10}
    assert metrics_task_counts(stack) == {"queued": 10}


def test_queue_bound_answers_503_with_retry_after(make_stack):
    stack = make_stack(args=["--task-queue-limit", "2"]).start()
    for _ in range(2):
        assert post_task(stack, {"kind": "sleep", "delay_seconds": 600}).status_code == 202
    full = post_task(stack, {"kind": "sleep", "delay_seconds": 600})
    assert full.status_code == 503
    assert int(full.headers["Retry-After"]) > 0
    assert "error" in full.json()
    assert requests.get(stack.url("/start-task"), timeout=10).status_code == 503


def test_kill9_while_a_task_runs_then_it_runs_again_and_succeeds(make_stack):
    stack = make_stack().start()
    created = post_task(stack, {"kind": "sleep", "seconds": 2}).json()["task"]
    wait_for_state(stack, created["id"], {"running"})
    stack.service.kill9()
    stack.service.start()
    done = wait_for_state(stack, created["id"], {"succeeded", "failed", "cancelled"}, timeout=30)
    assert done["state"] == "succeeded"
    assert done["attempts"] == 2  # the interrupted attempt counts
    if harness.BACKEND == "sqlite":
        assert "re-queued tasks interrupted by a restart" in stack.service.log_text()
    else:
        # A shared database: the new process never takes the old one's task at start-up
        # (it might be another live host's); the task's lease expires, and it is rescued.
        assert "re-queued tasks whose lease expired" in stack.service.log_text()


def test_graceful_shutdown_puts_running_tasks_back_and_they_run_after_restart(make_stack):
    stack = make_stack(args=["--task-grace", "0.2"]).start()
    created = post_task(stack, {"kind": "sleep", "seconds": 3}).json()["task"]
    wait_for_state(stack, created["id"], {"running"})
    assert stack.service.stop(signal.SIGTERM) == 0
    [(state, attempts)] = harness.sql(stack.service.db, "SELECT state, attempts FROM tasks WHERE id = ?", (created["id"],))
    assert (state, attempts) == ("queued", 0)
    stack.service.start()
    done = wait_for_state(stack, created["id"], {"succeeded", "failed", "cancelled"}, timeout=30)
    assert done["state"] == "succeeded" and done["attempts"] == 1
