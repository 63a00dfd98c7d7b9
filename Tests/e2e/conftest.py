"""Fixtures for the end-to-end tests (see harness.py).

- `api`: one shipped-nginx + usersd stack per test module (tests there never
  depend on each other's data: unique emails, "contains" checks).
- `make_stack`: a factory for function-scoped stacks (restart, kill, modes).
When a test fails, the tails of usersd's stderr and nginx's logs of every stack
the test used are appended to its report.

Under CI=true (.ci/run exports it) a skipped test fails, with the skip's reason:
CI runs as root on a fresh machine where every test can run, and a skip there would
hide a test that no longer runs. A test that truly cannot run in CI says so with
`@pytest.mark.may_skip_in_ci(reason="...")`; none does today.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import sys

import pytest
import requests

# The suite's helpers (harness, apiclient, fcgi_fuzz, ...) live in support/.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import harness  # noqa: E402

_started_at: dict[str, int] = {}

#: The marker that lets a test skip under CI=true; it must give the reason.
MAY_SKIP_IN_CI = "may_skip_in_ci"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{MAY_SKIP_IN_CI}(reason): this test may skip under CI=true (the reason: why it cannot run there)"
    )


def skip_reason(report) -> str:
    # A skip's longrepr is (path, line, "Skipped: <reason>").
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        path, line, message = report.longrepr
        return f"{message} ({path}:{line})"
    return str(report.longrepr)


def allowed_ci_skip(item) -> str | None:
    """The reason of the test's may_skip_in_ci marker, when it has one that gives it."""
    marker = item.get_closest_marker(MAY_SKIP_IN_CI)
    if marker is None:
        return None
    reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
    if not isinstance(reason, str) or not reason.strip():
        return None
    return reason.strip()


def fail_skip_in_ci(report, item=None) -> None:
    """Under CI=true, turns a skip (not an expected failure) into a failure that
    carries the skip's reason, unless the test is marked may_skip_in_ci with a reason."""
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    if item is not None and allowed_ci_skip(item):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under CI=true, where every end-to-end test must run: {skip_reason(report)}\n"
        f"(scripts/deps.sh test installs what the tests need; a test that cannot run in CI is marked "
        f'@pytest.mark.{MAY_SKIP_IN_CI}(reason="..."))'
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (pytest.skip(allow_module_level=True),
    pytest.importorskip) fails under CI=true too."""
    outcome = yield
    fail_skip_in_ci(outcome.get_result())


def pytest_sessionstart(session):
    exe = Path(harness.usersd_bin())
    if not exe.exists():
        pytest.exit(f"usersd binary not found at {exe}: run `swift build` or set USERSD_BIN", returncode=2)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _started_at[item.nodeid] = len(harness.TRACKED)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    fail_skip_in_ci(report, item)
    if not report.failed:
        return
    first_new = _started_at.get(item.nodeid, len(harness.TRACKED))
    seen = set()
    used = [v for v in item.funcargs.values() if isinstance(v, harness.Stack)]
    for stack in used:
        for obj in (stack.service, stack.nginx):
            seen.add(id(obj))
            report.sections.append((f"{obj.__class__.__name__} log tail ({obj.name})", obj.log_tail()))
    for obj in harness.TRACKED[first_new:]:
        if id(obj) not in seen:
            seen.add(id(obj))
            report.sections.append((f"{obj.__class__.__name__} log tail ({obj.name})", obj.log_tail()))


@pytest.fixture(scope="module")
def api():
    """Shipped nginx config in front of usersd on a fresh socket and database."""
    stack = harness.Stack().start()
    yield stack
    stack.close()


@pytest.fixture
def make_stack():
    stacks = []

    def make(**kwargs) -> harness.Stack:
        stack = harness.Stack(**kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def unique_email(tag: str = "u") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture
def email():
    return unique_email()
