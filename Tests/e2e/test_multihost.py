"""Several usersd hosts on one PostgreSQL database (docs/scale-out.md), always on
PostgreSQL whatever USERSD_TEST_BACKEND says: each test starts private clusters
(scripts/pg-cluster.sh) and hosts on 127.0.0.1, behind nginx with the shipped
cluster site (nginx/usersd-cluster.conf) where the test needs it.

- cold start: three hosts on an empty database apply the migrations exactly once;
- freshness: a write acknowledged by one host is seen by the next read on another;
- host kill: kill -9 of one of three hosts under load loses no acknowledged user or
  task, errors only for requests in flight there, nginx skips it within 2 s, and its
  tasks are rescued within the documented bound;
- no double run: every task runs once while hosts start and restart;
- zombie host: a host cut off for longer than the lease (its own network namespace)
  finds its tasks rescued, and its late completions change nothing;
- database restart under load: JSON 503 + Retry-After while it is down, service back
  within 2 s of the database, no acknowledged write lost, no usersd restart;
- access control: one token file on every host, the same answers from each, and a
  revoked token refused by each after its SIGHUP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import harness
from multihost import ClusterNginx, Host, Namespace, can_make_namespaces, wait_until

JSON = {"Content-Type": "application/json"}
#: the rescue bound docs/scale-out.md states: lease 10 s + heartbeat 2 s + poll 0.5 s
RESCUE_BOUND = 15.0


@pytest.fixture
def cluster(tmp_path_factory):
    """A private cluster of this test's own (tests restart or cut it)."""
    cluster = harness.PostgresCluster(Path(harness.make_workdir("usersd-mh-pg-"))).start()
    yield cluster
    cluster.close()


@pytest.fixture
def workdir():
    path = Path(harness.make_workdir("usersd-mh-"))
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class Hosts:
    """Hosts on one database, closed at the end of the test."""

    def __init__(self, workdir: Path, db: str):
        self.workdir = workdir
        self.db = db
        self.all: list[Host] = []
        self.nginx: ClusterNginx | None = None

    def add(self, name: str, args=(), start: bool = True, **kwargs) -> Host:
        host = Host(self.workdir, self.db, name, args=args, **kwargs)
        self.all.append(host)
        if start:
            host.start()
        return host

    def front(self, hosts: list[Host]) -> ClusterNginx:
        self.nginx = ClusterNginx(self.workdir, hosts).start()
        return self.nginx

    def close(self):
        if self.nginx:
            self.nginx.stop()
        for host in self.all:
            host.close()


@pytest.fixture
def hosts_on(workdir):
    made = []

    def make(db: str) -> Hosts:
        hosts = Hosts(workdir, db)
        made.append(hosts)
        return hosts

    yield make
    for hosts in made:
        hosts.close()


def email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


# --------------------------------------------------------------------------- cold start


def test_three_hosts_starting_together_on_an_empty_database_migrate_it_once(cluster, hosts_on):
    db = cluster.new_database("cold")
    hosts = hosts_on(db)
    three = [hosts.add(f"host{i}", start=False) for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda host: host.start(), three))
    assert harness.sql(db, "SELECT version, count(*) FROM schema_migrations GROUP BY version") == [(1, 1)]
    logs = [host.log_text() for host in three]
    assert sum("migrations applied" in log for log in logs) == 1, logs
    [(applied_by,)] = harness.sql(db, "SELECT applied_by FROM schema_migrations")
    pids = [str(host.pid) for host in three]
    assert any(f"/{pid}/" in applied_by for pid in pids), (applied_by, pids)
    # The other two found nothing to do and serve the same schema.
    for host in three:
        assert host.fcgi("GET", "/healthz")[0] == 200


# --------------------------------------------------------------------------- freshness


def test_a_write_acknowledged_by_one_host_is_read_by_the_next_request_on_another(cluster, hosts_on):
    db = cluster.new_database("fresh")
    hosts = hosts_on(db)
    three = [hosts.add(f"host{i}") for i in range(3)]
    stale = []
    status, body = three[0].fcgi("POST", "/users", {"name": "v0", "email": email("fresh")})
    assert status == 201, body
    user_id = body["user"]["id"]
    for i in range(1000):
        writer, reader = three[i % 3], three[(i + 1) % 3]
        if i % 10 == 0:
            # a new user, read at once elsewhere (by id and in the full list)
            status, body = writer.fcgi("POST", "/users", {"name": f"n{i}", "email": email(f"f{i}")})
            assert status == 201, body
            status, seen = reader.fcgi("GET", f"/users/{body['user']['id']}")
            if status != 200:
                stale.append((i, "create", status))
            continue
        status, body = writer.fcgi("PATCH", f"/users/{user_id}", {"name": f"v{i}"})
        assert status == 200, body
        status, seen = reader.fcgi("GET", f"/users/{user_id}")
        if status != 200 or seen["name"] != f"v{i}" or seen["updated_at"] != body["updated_at"]:
            stale.append((i, "patch", seen))
    status, listing = three[1].fcgi("GET", "/users")
    assert status == 200 and len(listing) == 101
    assert stale == [], f"{len(stale)} stale answers, first: {stale[:3]}"


# --------------------------------------------------------------------------- host kill


def test_kill9_of_one_host_under_load_loses_nothing_acknowledged(cluster, hosts_on):
    duration = float(os.environ.get("USERSD_MH_DURATION", "60"))
    kill_at = duration / 3
    db = cluster.new_database("kill")
    hosts = hosts_on(db)
    three = [hosts.add(f"host{i}") for i in range(3)]
    nginx = hosts.front(three)
    victim = three[1]
    started = time.monotonic()
    killed_at = [None]
    outcomes = []  # (t, kind, status, payload)
    lock = threading.Lock()
    stop = threading.Event()

    def client(n):
        with requests.Session() as session:
            i = 0
            while not stop.is_set():
                i += 1
                t0 = time.monotonic() - started
                try:
                    if n == 7:
                        # one client submits tasks at a pace the hosts keep up with
                        r = session.post(nginx.url("/tasks"), json={"kind": "sleep", "seconds": 0.5}, headers=JSON,
                                         timeout=30)
                        kind = "task"
                        time.sleep(0.1)
                    else:
                        r = session.post(nginx.url("/add-user"), json={"name": f"c{n}", "email": email(f"k{n}")},
                                         headers=JSON, timeout=30)
                        kind = "user"
                    try:
                        payload = r.json()
                    except ValueError:
                        payload = None
                    record = (t0, time.monotonic() - started, kind, r.status_code, payload, r.headers)
                except requests.RequestException as error:
                    record = (t0, time.monotonic() - started, "error", 0, str(error), {})
                with lock:
                    outcomes.append(record)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, n) for n in range(8)]
        time.sleep(kill_at)
        victim.kill9()
        killed_at[0] = time.monotonic() - started
        killed_wall = time.time()
        time.sleep(duration - kill_at)
        stop.set()
        for future in futures:
            future.result()

    kill = killed_at[0]
    failures = [o for o in outcomes if o[3] not in (201, 202)]
    # Errors only for requests in flight on the killed host: they began before the kill
    # and ended after it, at most one per client; nginx skipped the host after its first
    # failure, so nothing fails once 2 s have passed.
    assert len(failures) <= 8, failures[:10]
    for began, ended, kind, status, payload, headers in failures:
        assert began <= kill + 0.05 and ended >= kill - 0.05, (began, ended, kill, status, payload)
        assert status == 503 and "error" in (payload or {}) and int(headers.get("Retry-After", "0")) > 0, payload
    assert all(o[0] < kill + 2 or o[3] in (201, 202) for o in outcomes)

    users = [o[4]["user"] for o in outcomes if o[2] == "user" and o[3] == 201]
    tasks = [o[4]["task"] for o in outcomes if o[2] == "task" and o[3] == 202]
    assert len(users) > 100 and len(tasks) > duration * 2, (len(users), len(tasks))
    rows = harness.sql(db, "SELECT id, email FROM users")
    by_id = {row[0]: row[1] for row in rows}
    assert len(rows) == len(set(row[1] for row in rows))
    for user in users:
        assert by_id.get(user["id"]) == user["email"], user
    survivors = [three[0], three[2]]
    for user in users:
        for host in survivors:
            status, seen = host.fcgi("GET", f"/users/{user['id']}")
            assert status == 200 and seen["email"] == user["email"], (host.name, user, seen)

    # Every acknowledged task ends succeeded; the killed host's (claimed there, so their
    # attempt 1 died with it) are rescued within the documented bound.
    ids = [task["id"] for task in tasks]

    def all_done():
        rows = harness.sql(db, f"SELECT id, state, attempts FROM tasks WHERE kind = 'sleep' AND id IN "
                               f"({','.join(map(str, ids))})")
        return rows if all(row[1] in ("succeeded", "failed", "cancelled") for row in rows) else None

    done = wait_until(all_done, RESCUE_BOUND + 30, "every acknowledged task finished", interval=0.5)
    assert {row[1] for row in done} == {"succeeded"}, [row for row in done if row[1] != "succeeded"][:5]
    assert all(row[2] in (1, 2) for row in done)
    # The second attempts are the killed host's tasks, taken over by a survivor: each
    # started within the bound after the kill (its lease expired, a reaper re-queued it).
    from datetime import datetime

    rescued = harness.sql(db, "SELECT id, started_at FROM tasks WHERE kind = 'sleep' AND attempts = 2")
    for task_id, started_at in rescued:
        began = datetime.strptime(started_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=__import__("datetime").timezone.utc)
        assert began.timestamp() - killed_wall <= RESCUE_BOUND, (task_id, started_at, killed_wall)
    print(f"host kill: {len(users)} users, {len(tasks)} tasks acknowledged, {len(failures)} errors in flight, "
          f"{len(rescued)} tasks rescued from the killed host")


# --------------------------------------------------------------------------- no double run


def test_no_task_runs_twice_while_hosts_start_and_restart(cluster, hosts_on):
    users_wanted = int(os.environ.get("USERSD_MH_USERS", "10000"))
    tasks_wanted = int(os.environ.get("USERSD_MH_TASKS", "2000"))
    db = cluster.new_database("double")
    hosts = hosts_on(db)
    three = [hosts.add(f"host{i}", args=["--task-concurrency", "8", "--task-grace", "5"]) for i in range(3)]
    fourth = hosts.add("host3", args=["--task-concurrency", "8"], start=False)
    nginx = hosts.front(three + [fourth])
    created, accepted = [], []
    lock = threading.Lock()

    def work(n):
        with requests.Session() as session:
            for i in range(n, users_wanted + tasks_wanted, 16):
                for _ in range(20):
                    if i < users_wanted:
                        r = session.post(nginx.url("/add-user"), json={"name": f"d{i}", "email": f"d{i}@example.com"},
                                         headers=JSON, timeout=30)
                    else:
                        r = session.post(nginx.url("/tasks"), json={"kind": "sleep", "seconds": 0.02},
                                         headers={**JSON, "Idempotency-Key": f"double-{i}"}, timeout=30)
                    if r.status_code in (201, 202):
                        break
                    assert r.status_code in (409, 503), r.text  # a retry after a 503 may find the user made
                    if r.status_code == 409:
                        break
                    time.sleep(0.05)
                with lock:
                    (created if i < users_wanted else accepted).append(r.json())

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(work, n) for n in range(16)]
        wait_until(lambda: len(created) > users_wanted // 3, 120, "a third of the users")
        fourth.start()  # a fourth host joins
        wait_until(lambda: len(created) >= users_wanted or len(accepted) > tasks_wanted // 3, 120, "load under way")
        assert three[1].restart() == 0  # SIGTERM (running tasks re-queued), then a new process
        for future in futures:
            future.result()

    def settled():
        [(open_tasks,)] = harness.sql(db, "SELECT count(*) FROM tasks WHERE state IN ('queued', 'running')")
        return open_tasks == 0

    wait_until(settled, 120, "every task finished", interval=0.5)
    assert harness.sql(db, "SELECT count(*) FROM users") == [(users_wanted,)]
    assert harness.sql(db, "SELECT state, attempts, count(*) FROM tasks GROUP BY state, attempts") == [
        ("succeeded", 1, users_wanted + tasks_wanted)]
    assert harness.sql(db, "SELECT count(*), count(DISTINCT user_id) FROM outbox") == [(users_wanted, users_wanted)]


# --------------------------------------------------------------------------- zombie host


@pytest.mark.skipif(not can_make_namespaces(), reason="needs root and ip netns (CI has both)")
def test_a_host_cut_off_longer_than_the_lease_is_rescued_and_its_late_completions_change_nothing(workdir,
                                                                                                  hosts_on):
    tag = f"{os.getpid() % 10000}"
    ns = Namespace(tag, subnet=(os.getpid() % 200) + 20).create()
    cluster = None
    try:
        port = harness.free_port()
        cluster = harness.PostgresCluster(Path(harness.make_workdir("usersd-mh-pg-")), port=port,
                                          listen=ns.outside).start()
        name = f"zombie_{os.getpid()}"
        harness.psql(cluster.uri(), f"CREATE DATABASE {name}")
        local = cluster.uri(name)
        hosts = hosts_on(local)
        # The zombie reaches the database over the veth link only.
        zombie = Host(workdir, f"postgresql://postgres@{ns.outside}:{port}/{name}", "zombie",
                      args=["--allow-from", f"{ns.outside}/32"], address=ns.inside, netns=ns.name)
        hosts.all.append(zombie)
        zombie.start()
        ids = []
        for _ in range(4):
            status, body = zombie.fcgi("POST", "/tasks", {"kind": "sleep", "seconds": 6})
            assert status == 202, body
            ids.append(body["task"]["id"])
        id_list = ",".join(map(str, ids))
        def owners():
            found = dict(harness.sql(local, f"SELECT id, owner FROM tasks WHERE id IN ({id_list})"))
            return found if all(found.values()) else None

        claimed = wait_until(owners, 10, "the zombie claimed its tasks")
        zombie_owner = f"/{zombie.pid}/"
        assert all(zombie_owner in owner for owner in claimed.values()), claimed
        # The other hosts join once the zombie runs its tasks (so none of them could
        # have claimed one first); starting, they leave its live leases alone.
        rescuers = [hosts.add(f"host{i}") for i in range(2)]
        assert dict(harness.sql(local, f"SELECT id, owner FROM tasks WHERE id IN ({id_list})")) == claimed
        cut_at = time.monotonic()
        ns.cut()
        # Its leases run out on the database's clock; another host's reaper re-queues the
        # tasks and a host with a free slot claims them (attempt 2).
        wait_until(lambda: (found := owners()) and all(zombie_owner not in owner for owner in found.values()),
                   RESCUE_BOUND + 5, "the zombie's tasks rescued", interval=0.2)
        rescued_after = time.monotonic() - cut_at
        assert rescued_after <= RESCUE_BOUND, rescued_after
        ns.mend()
        # The zombie's attempts finished meanwhile (6 s); their completions reach the
        # database now, and the fence refuses every one of them.
        wait_until(lambda: zombie.metric("usersd_task_moves_fenced_total") >= len(ids), 40,
                   "the zombie's late completions refused", interval=0.5)

        def finished():
            rows = harness.sql(local, f"SELECT id, state, attempts, owner FROM tasks WHERE id IN ({id_list})")
            return rows if all(row[1] == "succeeded" for row in rows) else None

        rows = wait_until(finished, 30, "the rescued attempts finished", interval=0.2)
        assert {row[2] for row in rows} == {2}, rows
        assert all(zombie_owner not in row[3] for row in rows), rows
        snapshot = harness.sql(local, f"SELECT * FROM tasks WHERE id IN ({id_list}) ORDER BY id")
        # Nothing the zombie does later changes them; it serves on, healthy.
        assert zombie.fcgi("GET", "/healthz", timeout=30)[0] == 200
        for host in rescuers:
            assert host.fcgi("GET", f"/tasks/{ids[0]}")[1]["attempts"] == 2
        assert harness.sql(local, f"SELECT * FROM tasks WHERE id IN ({id_list}) ORDER BY id") == snapshot
        print(f"zombie host: {len(ids)} tasks rescued {rescued_after:.1f} s after the cut, "
              f"{zombie.metric('usersd_task_moves_fenced_total'):.0f} late moves fenced")
    finally:
        ns.delete()
        if cluster:
            cluster.close()


# --------------------------------------------------------------------------- database restart


def test_a_database_restart_under_load_answers_503_then_recovers_within_2s_without_losing_writes(cluster,
                                                                                                 hosts_on):
    db = cluster.new_database("restart")
    hosts = hosts_on(db)
    two = [hosts.add(f"host{i}") for i in range(2)]
    nginx = hosts.front(two)
    outcomes = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n):
        with requests.Session() as session:
            while not stop.is_set():
                t0 = time.monotonic()
                r = session.post(nginx.url("/add-user"), json={"name": f"r{n}", "email": email(f"r{n}")},
                                 headers=JSON, timeout=30)
                with lock:
                    outcomes.append((t0, time.monotonic(), r.status_code, r.json(), r.headers.get("Retry-After")))

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client, n) for n in range(6)]
        time.sleep(2)
        cluster.restart()  # pg_ctl restart -m fast
        time.sleep(2)
        cluster.stop()  # pg_ctl stop -m fast, and down for 3 s
        down_at = time.monotonic()
        time.sleep(3)
        starting_at = time.monotonic()  # the server may answer before pg_ctl -w returns
        cluster.start()
        up_at = time.monotonic()
        time.sleep(3)
        stop.set()
        for future in futures:
            future.result()

    statuses = {o[2] for o in outcomes}
    assert statuses <= {201, 503}, statuses
    failed = [o for o in outcomes if o[2] == 503]
    assert failed, "no request met the stopped database"
    for o in failed:
        assert "error" in o[3] and o[4] and int(o[4]) > 0, o
    during = [o for o in outcomes if o[0] > down_at + 0.5 and o[1] < starting_at]
    assert during and all(o[2] == 503 for o in during)
    first_after = min(o[1] for o in outcomes if o[0] >= up_at and o[2] == 201)
    assert first_after - up_at <= 2.0, first_after - up_at
    assert all(o[2] == 201 for o in outcomes if o[0] >= up_at + 2.0)
    acknowledged = [o[3]["user"] for o in outcomes if o[2] == 201]
    stored = {row[0]: row[1] for row in harness.sql(db, "SELECT id, email FROM users")}
    assert all(stored.get(user["id"]) == user["email"] for user in acknowledged)
    assert all(host.running() for host in two)  # no usersd restart
    for host in two:
        assert host.fcgi("GET", "/healthz")[0] == 200
    print(f"database restart: {len(acknowledged)} users acknowledged and stored, {len(failed)} answered 503, "
          f"service back {first_after - up_at:.2f} s after the database")


# --------------------------------------------------------------------------- access control


def test_one_token_file_gives_the_same_answers_on_every_host(cluster, hosts_on, workdir):
    tokens_path = workdir / "tokens"

    def token_command(*args) -> str:
        result = subprocess.run([harness.usersd_bin(), "token", *args, "--auth-file", str(tokens_path)],
                                capture_output=True, text=True, timeout=30, env=harness.clean_env())
        assert result.returncode == 0, result
        return result.stdout.strip()

    writer, reader = token_command("add", "writer", "--scope", "write"), token_command("add", "reader", "--scope", "read")
    hosts = hosts_on(cluster.new_database("auth"))
    three = [hosts.add(f"host{i}", args=["--auth-file", str(tokens_path)]) for i in range(3)]

    def bearer(token: str) -> dict:
        return {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    status, body = three[0].fcgi("POST", "/users", {"name": "a", "email": email("auth")}, params=bearer(writer))
    assert status == 201, body
    user_id = body["user"]["id"]
    status, body = three[1].fcgi("POST", "/tasks", {"kind": "sleep", "seconds": 0.1}, params=bearer(writer))
    assert status == 202, body
    task_id = body["task"]["id"]
    for host in three:
        assert host.fcgi("GET", f"/users/{user_id}")[0] == 401
        assert host.fcgi("GET", f"/users/{user_id}", params=bearer(reader + "x"))[0] == 401
        status, body = host.fcgi("GET", f"/users/{user_id}", params=bearer(reader))
        assert (status, body["id"]) == (200, user_id), body
        assert host.fcgi("GET", f"/tasks/{task_id}", params=bearer(reader))[0] == 200
        status, body = host.fcgi("POST", "/users", {"name": "b", "email": email("auth")}, params=bearer(reader))
        assert status == 403 and body["scope"] == "write", body

    token_command("revoke", "reader")
    for host in three:
        host.send_signal(signal.SIGHUP)
    for host in three:
        wait_until(lambda: "reloaded the token file (SIGHUP)" in host.log_text(), 10, f"{host.name} reloads")
        assert host.fcgi("GET", f"/users/{user_id}", params=bearer(reader))[0] == 401
        assert host.fcgi("GET", f"/users/{user_id}", params=bearer(writer))[0] == 200
        wait_until(lambda: "token_name=writer" in host.log_text(), 10, f"{host.name} logs the token's name")
        log = host.log_text()
        assert writer not in log and reader not in log
