"""Fixtures for the end-to-end tests (see harness.py).

- `api`: one shipped-nginx + usersd stack per test module (tests there never
  depend on each other's data: unique emails, "contains" checks).
- `make_stack`: a factory for function-scoped stacks (restart, kill, modes).
When a test fails, the tails of usersd's stderr and nginx's logs of every stack
the test used are appended to its report.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import requests

import harness

_started_at: dict[str, int] = {}


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
