"""The command line: --help/--version exit 0; a bad setting is one line on stderr
and exit status 64."""

import subprocess

import pytest

import harness


def run(args, env=None, cwd=None, timeout=20):
    return subprocess.run(
        [harness.usersd_bin(), *args],
        capture_output=True,
        timeout=timeout,
        env=harness.clean_env(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["-h"]], ids=" ".join)
def test_help(args, tmp_path):
    result = run(args, cwd=tmp_path)
    assert result.returncode == 0, result
    assert b"usersd" in result.stdout and b"--socket" in result.stdout
    assert not (tmp_path / "data").exists(), "help must not create a database"


def test_version(tmp_path):
    result = run(["--version"], cwd=tmp_path)
    assert result.returncode == 0, result
    line = result.stdout.decode().strip()
    assert line and "\n" not in line
    assert any(ch.isdigit() for ch in line)


@pytest.mark.parametrize(
    "args, env",
    [
        (["serve", "--max-body", "abc"], None),
        (["--nope"], None),
        (["serve", "--nope"], None),
        (["serve", "--max-body"], None),
        (["serve", "--max-body", "-5"], None),
        (["serve", "--max-connections", "many"], None),
        (["serve", "--shutdown-grace", "soon"], None),
        (["serve", "--worker-scheduling", "fifo"], None),
        (["frobnicate"], None),
        (["serve"], {"USERSD_MAX_BODY": "abc"}),
    ],
    ids=["max-body abc", "unknown flag", "serve unknown flag", "missing value", "negative max-body",
         "max-connections word", "shutdown-grace word", "worker-scheduling fifo", "unknown command", "env twin abc"],
)
def test_bad_setting_exits_64_with_one_line(args, env, tmp_path):
    # otherwise valid settings first, so only the bad one can be the reason
    valid = ["--socket", str(tmp_path / "s.sock"), "--db", str(tmp_path / "db.sqlite3")]
    result = run([*valid, *args], env=env, cwd=tmp_path)
    assert result.returncode == 64, result
    lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    assert not (tmp_path / "s.sock").exists()
    assert not (tmp_path / "db.sqlite3").exists()
