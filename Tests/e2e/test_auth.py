"""Access control with API tokens (--auth-file), through the shipped nginx site.

With the file set, every route but /healthz needs `Authorization: Bearer <token>`:
no token or an unknown one is 401 (JSON, WWW-Authenticate: Bearer realm="usersd")
on every path, a token short of the route's scope is 403 naming the scope. The
access log names the token, never shows it; SIGHUP re-reads the file (a bad file
keeps the tokens in force); a bad file at start is exit status 64. The tokens are
made by `usersd token add`, as an operator would.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests

import harness
from apiclient import TIMEOUT, describe, expect_error, expect_json
from conftest import unique_email

REALM = 'Bearer realm="usersd"'


def usersd(*args, env=None, cwd=None, user=None) -> subprocess.CompletedProcess:
    kwargs = {}
    if user is not None:
        kwargs["user"], kwargs["group"], kwargs["extra_groups"] = user, user, []
    return subprocess.run(
        [harness.usersd_bin(), *args], capture_output=True, text=True, timeout=30, env=harness.clean_env(env),
        cwd=cwd, stdin=subprocess.DEVNULL, **kwargs,
    )


def add_token(path: Path, name: str, scope: str) -> str:
    result = usersd("token", "add", name, "--scope", scope, "--auth-file", str(path))
    assert result.returncode == 0, result
    token = result.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token), result
    return token


def bearer(token: str | None) -> dict:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def post_json(http, url: str, obj, token: str | None) -> requests.Response:
    return http.post(url, json=obj, headers=bearer(token), timeout=TIMEOUT)


def wait_for_log(service, text: str, count: int, timeout: float = 10) -> None:
    """Waits until `text` appears `count` times in usersd's log (an event with a deadline)."""
    deadline = time.monotonic() + timeout
    while service.log_text().count(text) < count:
        assert time.monotonic() < deadline, f"no {count}x {text!r} in the log:\n{service.log_tail()}"
        time.sleep(0.05)


class AuthStack:
    """The shipped stack with a token file holding a read, a write and an admin token."""

    def __init__(self, extra_args=()):
        self.dir = Path(harness.make_workdir("usersd-auth-"))
        self.tokens_path = self.dir / "tokens"
        self.tokens = {scope: add_token(self.tokens_path, f"{scope}-bot", scope) for scope in ("read", "write", "admin")}
        self.stack = harness.Stack(args=["--auth-file", str(self.tokens_path), *extra_args], workdir=str(self.dir))

    def start(self) -> "AuthStack":
        self.stack.start()
        return self

    def url(self, path: str) -> str:
        return self.stack.url(path)

    @property
    def service(self):
        return self.stack.service

    def close(self) -> None:
        self.stack.close()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def auth():
    stack = AuthStack().start()
    yield stack
    stack.close()


@pytest.fixture
def make_auth():
    stacks = []

    def make(**kwargs) -> AuthStack:
        stack = AuthStack(**kwargs).start()
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


# --------------------------------------------------------------------------- the matrix

CREDENTIALS = ["none", "wrong", "read", "write", "admin"]


def resource(auth, http, kind: str):
    """A fresh user or queued task to act on (made with the admin token)."""
    admin = bearer(auth.tokens["admin"])
    if kind == "user":
        response = http.post(auth.url("/users"), json={"name": "matrix", "email": unique_email("m")}, headers=admin, timeout=TIMEOUT)
        return expect_json(response, 201)["user"]["id"]
    response = http.post(auth.url("/tasks"), json={"kind": "sleep", "seconds": 1, "delay_seconds": 3600}, headers=admin, timeout=TIMEOUT)
    return expect_json(response, 202)["task"]["id"]


# (method, path template, body, resource kind or None, scope needed or None, status when allowed)
ROUTES = [
    ("GET", "/healthz", None, None, None, 200),
    ("GET", "/users", None, None, "read", 200),
    ("HEAD", "/users", None, None, "read", 200),
    ("GET", "/user/{id}", None, "user", "read", 200),
    ("GET", "/users/{id}", None, "user", "read", 200),
    ("GET", "/users?limit=2", None, None, "read", 200),
    ("GET", "/tasks", None, None, "read", 200),
    ("GET", "/tasks/{id}", None, "task", "read", 200),
    ("POST", "/add-user", "user", None, "write", 201),
    ("POST", "/users", "user", None, "write", 201),
    ("PATCH", "/users/{id}", {"name": "renamed"}, "user", "write", 200),
    ("DELETE", "/users/{id}", None, "user", "write", 204),
    ("GET", "/start-task", None, None, "write", 202),
    ("POST", "/tasks", {"kind": "sleep", "seconds": 0.01}, None, "write", 202),
    ("DELETE", "/tasks/{id}", None, "task", "write", 200),
    ("GET", "/metrics", None, None, "admin", 200),
    # unknown paths and methods: the token first, then the router's answer
    ("GET", "/no/such/route", None, None, "read", 404),
    ("POST", "/no/such/route", {}, None, "write", 404),
    ("DELETE", "/users", None, None, "write", 405),
    ("GET", "/user/999999999", None, None, "read", 404),
]
RANK = {"read": 0, "write": 1, "admin": 2}


def expected_status(scope_needed, credential, allowed_status) -> int:
    if scope_needed is None:
        return allowed_status
    if credential in ("none", "wrong"):
        return 401
    return allowed_status if RANK[credential] >= RANK[scope_needed] else 403


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[0]} {r[1]}" for r in ROUTES])
def test_each_route_with_each_credential_gives_the_documented_status(auth, http, route):
    method, template, body, kind, needed, allowed = route
    for credential in CREDENTIALS:
        token = {"none": None, "wrong": "x" * 43}.get(credential, auth.tokens.get(credential))
        path = template.replace("{id}", str(resource(auth, http, kind))) if kind else template
        sent = {"name": "made", "email": unique_email("w")} if body == "user" else body
        kwargs = {"json": sent} if sent is not None else {}
        response = http.request(method, auth.url(path), headers=bearer(token), timeout=TIMEOUT, **kwargs)
        want = expected_status(needed, credential, allowed)
        what = f"{method} {path} with {credential}"
        assert response.status_code == want, f"{what}: {describe(response)}"
        if want == 401:
            assert response.headers.get("WWW-Authenticate", "").startswith(REALM), what
            if method != "HEAD":
                expect_error(response, 401)
        elif want == 403:
            assert response.headers.get("WWW-Authenticate") == f'{REALM}, error="insufficient_scope", scope="{needed}"'
            assert expect_error(response, 403)["scope"] == needed, what


def test_a_token_a_character_off_or_in_another_case_is_refused(auth, http):
    token = auth.tokens["admin"]
    near = [token + "A", token[:-1], token[1:], "A" + token, token.swapcase(), token.upper(), token.lower(),
            token[:20] + ("a" if token[20] != "a" else "b") + token[21:]]
    for candidate in near:
        if candidate == token:
            continue
        response = http.get(auth.url("/users"), headers=bearer(candidate), timeout=TIMEOUT)
        assert response.status_code == 401, describe(response)
        assert response.headers["WWW-Authenticate"] == f'{REALM}, error="invalid_token"'
    assert http.get(auth.url("/users"), headers=bearer(token), timeout=TIMEOUT).status_code == 200


def test_other_schemes_and_malformed_headers_are_401(auth, http):
    token = auth.tokens["admin"]
    for value in [f"Basic {token}", token, "Bearer", f"Bearer{token}", f"Token {token}"]:
        response = http.get(auth.url("/users"), headers={"Authorization": value}, timeout=TIMEOUT)
        expect_error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith(REALM)
    # The scheme is case-insensitive.
    assert http.get(auth.url("/users"), headers={"Authorization": f"bearer {token}"}, timeout=TIMEOUT).status_code == 200


def test_a_401_says_nothing_about_what_exists(auth, http):
    """Without a token, a user that exists and one that does not, a known route and an
    unknown one, all get the same answer."""
    user = resource(auth, http, "user")
    answers = set()
    for path in [f"/user/{user}", "/user/999999999", f"/users/{user}", "/users/999999999", "/nope", "/users"]:
        response = http.get(auth.url(path), timeout=TIMEOUT)
        answers.add((response.status_code, response.content, response.headers["WWW-Authenticate"]))
    assert len(answers) == 1, answers


def test_a_refused_write_touches_nothing(auth, http):
    """401 and 403 come before the body is read: nothing is created, and a refused
    request's body does not upset the kept-alive FastCGI connection after it."""
    email = unique_email("refused")
    for _ in range(30):
        for token in (None, auth.tokens["read"]):
            response = post_json(http, auth.url("/users"), {"name": "refused", "email": email}, token)
            assert response.status_code in (401, 403), describe(response)
            # the next request on the same connections is answered normally
            listed = http.get(auth.url("/users"), headers=bearer(auth.tokens["read"]), timeout=TIMEOUT)
            assert listed.status_code == 200, describe(listed)
    assert email not in listed.text
    # a large body without a token: refused unread, 401
    big = b"{" + b" " * 900_000 + b"}"
    response = http.post(auth.url("/users"), data=big, headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    assert response.status_code == 401, describe(response)


def test_healthz_is_open_and_the_watchdog_probe_is_unaffected(auth, http):
    assert expect_json(http.get(auth.url("/healthz"), timeout=TIMEOUT), 200) == {"status": "ok"}
    assert expect_json(http.get(auth.url("/healthz"), headers=bearer("wrong"), timeout=TIMEOUT), 200) == {"status": "ok"}


def test_the_log_names_the_token_and_never_shows_it(auth, http):
    for scope, token in auth.tokens.items():
        response = http.get(auth.url("/metrics" if scope == "admin" else "/users"), headers=bearer(token), timeout=TIMEOUT)
        assert response.status_code == 200
        request_id = response.headers["X-Request-Id"]
        wait_for_log(auth.service, f"request_id={request_id}", 1)
        line = next(l for l in auth.service.log_text().splitlines() if f"request_id={request_id}" in l)
        assert f"token_name={scope}-bot" in line, line
    # a 403 names the token too; a 401 names none
    response = post_json(http, auth.url("/users"), {}, auth.tokens["read"])
    wait_for_log(auth.service, f"request_id={response.headers['X-Request-Id']}", 1)
    line = next(l for l in auth.service.log_text().splitlines() if response.headers["X-Request-Id"] in l)
    assert "status=403" in line and "token_name=read-bot" in line, line
    wrong = "w" * 43
    response = http.get(auth.url("/users"), headers=bearer(wrong), timeout=TIMEOUT)
    wait_for_log(auth.service, f"request_id={response.headers['X-Request-Id']}", 1)
    line = next(l for l in auth.service.log_text().splitlines() if response.headers["X-Request-Id"] in l)
    assert "status=401" in line and "token_name" not in line, line
    # no token, right or wrong, anywhere in usersd's or nginx's logs
    logs = auth.service.log_text()
    for path in (auth.stack.nginx.run_dir / "logs").glob("*.log"):
        logs += path.read_text(errors="replace")
    for token in [*auth.tokens.values(), wrong]:
        assert token not in logs


def test_serving_line_says_whether_access_control_is_on(auth, make_stack):
    assert re.search(r'msg=serving .*access_control="on \(3 tokens from ', auth.service.log_text()), auth.service.log_tail()
    open_stack = make_stack().start()
    assert 'access_control="off (no --auth-file: every route is open)"' in open_stack.service.log_text()
    assert requests.get(open_stack.url("/users"), timeout=TIMEOUT).status_code == 200


# --------------------------------------------------------------------------- SIGHUP


def test_sighup_takes_added_and_revoked_tokens_without_a_restart(make_auth, http):
    auth = make_auth()
    pid = auth.service.pid
    new = add_token(auth.tokens_path, "newcomer", "write")
    assert http.get(auth.url("/users"), headers=bearer(new), timeout=TIMEOUT).status_code == 401
    auth.service.send_signal(signal.SIGHUP)
    wait_for_log(auth.service, "reloaded the token file (SIGHUP)", 1)
    assert re.search(r'msg="reloaded the token file \(SIGHUP\)" .*tokens=4', auth.service.log_text())
    response = post_json(http, auth.url("/users"), {"name": "new", "email": unique_email("n")}, new)
    assert response.status_code == 201, describe(response)

    result = usersd("token", "revoke", "read-bot", "--auth-file", str(auth.tokens_path))
    assert result.returncode == 0, result
    assert http.get(auth.url("/users"), headers=bearer(auth.tokens["read"]), timeout=TIMEOUT).status_code == 200
    auth.service.send_signal(signal.SIGHUP)
    wait_for_log(auth.service, "reloaded the token file (SIGHUP)", 2)
    assert http.get(auth.url("/users"), headers=bearer(auth.tokens["read"]), timeout=TIMEOUT).status_code == 401
    assert http.get(auth.url("/users"), headers=bearer(new), timeout=TIMEOUT).status_code == 200
    assert auth.service.pid == pid and auth.service.running()


@pytest.mark.parametrize("damage", ["malformed", "world-readable", "missing"])
def test_a_bad_file_on_reload_keeps_the_tokens_in_force(make_auth, http, damage):
    auth = make_auth()
    path = auth.tokens_path
    if damage == "malformed":
        path.write_text(path.read_text() + "oops read not-a-hash\n")
    elif damage == "world-readable":
        path.write_text(path.read_text().replace("read-bot", "renamed-bot"))
        path.chmod(0o644)
    else:
        path.unlink()
    auth.service.send_signal(signal.SIGHUP)
    wait_for_log(auth.service, "token file not reloaded (SIGHUP)", 1)
    line = next(l for l in auth.service.log_text().splitlines() if "token file not reloaded" in l)
    assert "level=error" in line and "tokens=3" in line, line
    for scope, token in auth.tokens.items():
        assert http.get(auth.url("/users"), headers=bearer(token), timeout=TIMEOUT).status_code == 200, scope
    # the log line of a request still names the old token
    response = http.get(auth.url("/users"), headers=bearer(auth.tokens["read"]), timeout=TIMEOUT)
    wait_for_log(auth.service, response.headers["X-Request-Id"], 1)
    assert "token_name=read-bot" in next(l for l in auth.service.log_text().splitlines() if response.headers["X-Request-Id"] in l)


# --------------------------------------------------------------------------- start


@pytest.mark.parametrize("problem", ["missing", "directory", "world-readable", "world-writable", "malformed", "duplicate"])
def test_a_bad_file_at_start_is_exit_64_and_touches_nothing(tmp_path, problem):
    path = tmp_path / "tokens"
    good = f"a read {'0' * 64}\n"
    if problem == "directory":
        path.mkdir()
    elif problem != "missing":
        text = {"malformed": "a read\n", "duplicate": good + f"a write {'1' * 64}\n"}.get(problem, good)
        path.write_text(text)
        path.chmod({"world-readable": 0o644, "world-writable": 0o602}.get(problem, 0o600))
    db, sock = tmp_path / "users.sqlite3", tmp_path / "usersd.sock"
    result = usersd("serve", "--socket", str(sock), "--db", str(db), "--auth-file", str(path), cwd=tmp_path)
    assert result.returncode == 64, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], result.stderr
    assert not db.exists() and not sock.exists()


# --------------------------------------------------------------------------- the command line


def test_token_add_list_revoke(tmp_path):
    path = tmp_path / "sub" / "tokens"
    result = usersd("token", "add", "ci", "--scope", "read", "--auth-file", str(path))
    assert result.returncode == 73, result  # its directory does not exist
    path = tmp_path / "tokens"
    token = add_token(path, "ci", "read")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # the file holds the hash, never the token
    import hashlib

    assert path.read_text() == f"ci read {hashlib.sha256(token.encode()).hexdigest()}\n"
    # appending keeps the file's mode; a comment and a line without a newline stay
    path.chmod(0o640)
    path.write_text("# ours\n" + path.read_text().rstrip("\n"))
    second = add_token(path, "ops", "admin")
    assert second != token
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_text().startswith("# ours\nci read ")
    listed = usersd("token", "list", "--auth-file", str(path))
    assert listed.returncode == 0 and listed.stdout.split() == ["ci", "read", "ops", "admin"], listed
    assert token not in listed.stdout and second not in listed.stdout

    duplicate = usersd("token", "add", "ci", "--scope", "write", "--auth-file", str(path))
    assert duplicate.returncode == 65 and "exists already" in duplicate.stderr, duplicate
    revoked = usersd("token", "revoke", "ci", "--auth-file", str(path))
    assert revoked.returncode == 0, revoked
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_text().startswith("# ours\nops admin ")
    again = usersd("token", "revoke", "ci", "--auth-file", str(path))
    assert again.returncode == 65 and "no token named 'ci'" in again.stderr, again

    # USERSD_AUTH_FILE, and the path from an --env-file
    assert usersd("token", "list", env={"USERSD_AUTH_FILE": str(path)}).stdout.split() == ["ops", "admin"]
    env_file = tmp_path / "usersd.env"
    env_file.write_text(f"USERSD_AUTH_FILE={path}\n")
    assert usersd("token", "list", "--env-file", str(env_file)).stdout.split() == ["ops", "admin"]


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["token", "list"], 64, "no token file"),
        (["token", "list", "--auth-file", "{dir}/none"], 66, "no such file"),
        (["token", "revoke", "x", "--auth-file", "{dir}/none"], 66, "no such file"),
        (["token", "list", "--auth-file", "{dir}/open"], 77, "every user may read"),
        (["token", "add", "x", "--scope", "read", "--auth-file", "{dir}/open"], 77, "every user may read"),
        (["token", "add", "x", "--scope", "read", "--auth-file", "{dir}/bad"], 65, "line 1"),
        (["token", "add", "x", "--scope", "root", "--auth-file", "{dir}/t"], 64, "--scope"),
        (["token", "add", "x y", "--scope", "read", "--auth-file", "{dir}/t"], 64, "token name"),
    ],
    ids=["no file", "list missing", "revoke missing", "list open", "add open", "add malformed", "bad scope", "bad name"],
)
def test_token_command_errors(tmp_path, args, status, message):
    (tmp_path / "open").write_text("")
    (tmp_path / "open").chmod(0o644)
    (tmp_path / "bad").write_text("x\n")
    (tmp_path / "bad").chmod(0o600)
    result = usersd(*[a.replace("{dir}", str(tmp_path)) for a in args])
    assert result.returncode == status, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "t").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files for another user")
def test_a_file_made_by_root_in_the_services_directory_is_the_services():
    """What docs/deploy.md has the operator do: `sudo usersd token add` into the
    service's state directory (owned by its DynamicUser). The new file takes the
    directory's owner, so the service, running as that user, can read it; a revoke
    keeps the owner."""
    top = Path(harness.make_workdir("usersd-auth-owner-"))
    top.chmod(0o755)  # the service user must reach the state directory inside
    state = top / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)
    state.chmod(0o700)
    path = state / "tokens"
    add_token(path, "ci", "read")
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, 0o600)
    as_service = usersd("check", "--auth-file", str(path), "--db", str(state / "users.sqlite3"), user=65534)
    assert as_service.returncode == 0, as_service
    assert f"access control: on, {path}: 1 tokens (1 read, 0 write, 0 admin)" in as_service.stdout
    add_token(path, "ops", "admin")
    assert usersd("token", "revoke", "ci", "--auth-file", str(path)).returncode == 0
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, 0o600)
    import shutil

    shutil.rmtree(top)


def test_check_reports_the_token_file(tmp_path):
    db = str(tmp_path / "users.sqlite3")
    off = usersd("check", "--db", db)
    assert off.returncode == 0 and "access control: off" in off.stdout, off
    path = tmp_path / "tokens"
    add_token(path, "a", "read")
    add_token(path, "b", "admin")
    on = usersd("check", "--db", db, "--auth-file", str(path))
    assert on.returncode == 0 and f"access control: on, {path}: 2 tokens (1 read, 0 write, 1 admin)" in on.stdout, on
    path.chmod(0o644)
    bad = usersd("check", "--db", db, "--auth-file", str(path))
    assert bad.returncode == 1 and "access control:" in bad.stdout and "every user may read" in bad.stdout, bad


# --------------------------------------------------------------------------- nginx limit_req


def uncomment_limit_req(site: str) -> str:
    """The shipped site with its commented-out rate limit turned on, as its comment
    tells an operator to: the "#" right before each directive removed (directive
    lines are the commented lines with no space after the "#", or four in the map)."""
    return re.sub(r"(?m)^(\s*)#(?=\S|    )", r"\1", site)


class LimitedNginx(harness.Nginx):
    """The shipped site with the rate limit on, its rate slowed to one write a minute
    so that nothing refills while the test runs: the burst is then exact."""

    def _render(self):
        conf = super()._render()
        site = self.run_dir / "site.conf"
        text = uncomment_limit_req(site.read_text())
        assert "rate=10r/s;" in text
        site.write_text(text.replace("rate=10r/s;", "rate=1r/m;"))
        return conf


def test_the_sites_recommended_limit_req_limits_writes_only(make_stack):
    shipped = (harness.REPO_ROOT / "nginx" / "usersd.conf").read_text()
    turned_on = uncomment_limit_req(shipped)
    # exactly the map, the zone and the two limit_req lines change
    changed = [line for old, line in zip(shipped.splitlines(), turned_on.splitlines()) if old != line]
    assert len(changed) == 8 and sum("limit_req" in line for line in changed) == 3, changed
    stack = make_stack()
    stack.nginx = LimitedNginx(stack.dir, stack.service.socket)
    stack.service.nginx = stack.nginx
    stack.start()
    with requests.Session() as http:
        # reads are never limited
        for _ in range(60):
            assert http.get(stack.url("/users?limit=1"), timeout=TIMEOUT).status_code == 200
        # writes from one address: one, a burst of 20 more, then 429
        statuses = [http.post(stack.url("/users"), json={"name": "w", "email": unique_email("lim")}, timeout=TIMEOUT)
                    for _ in range(30)]
        codes = [r.status_code for r in statuses]
        assert codes == [201] * 21 + [429] * 9, codes
        limited = next(r for r in statuses if r.status_code == 429)
        assert limited.headers.get("Retry-After") == "1"
        expect_error(limited, 429)
        # the seed's GET /start-task is a write: limited too, while reads still pass
        assert http.get(stack.url("/start-task"), timeout=TIMEOUT).status_code == 429
        assert http.get(stack.url("/users?limit=1"), timeout=TIMEOUT).status_code == 200
