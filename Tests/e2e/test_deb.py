"""The Debian package: scripts/build-deb.sh builds dist/usersd_<version>_amd64.deb;
its contents and control data are right; it installs with dpkg -i, the installed
usersd runs (and serves through nginx) without the Swift toolchain, its units
verify in place, and dpkg -r removes it.

Slow-ish: a release build with the Swift runtime linked statically (1-3 minutes
from scratch, seconds when .build-deb/ is current).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

import harness
from apiclient import TIMEOUT, create_user, expect_json
from conftest import unique_email
from harness import REPO_ROOT

pytestmark = pytest.mark.slow

BUILD_TIMEOUT = 900
EXPECTED_FILES = {
    "usr/bin/usersd": 0o755,
    "lib/systemd/system/usersd.socket": 0o644,
    "lib/systemd/system/usersd.service": 0o644,
    "etc/nginx/sites-available/usersd": 0o644,
    "etc/default/usersd": 0o644,
    "usr/share/doc/usersd/README.md": 0o644,
    "usr/share/doc/usersd/copyright": 0o644,
    "usr/share/doc/usersd/deploy.md": 0o644,
    "usr/share/man/man8/usersd.8.gz": 0o644,
}
#: files in the package that are byte-identical copies of the repository's
SAME_AS_REPO = {
    "lib/systemd/system/usersd.socket": "systemd/usersd.socket",
    "lib/systemd/system/usersd.service": "systemd/usersd.service",
    "etc/nginx/sites-available/usersd": "nginx/usersd.conf",
    "etc/default/usersd": "packaging/usersd.default",
    "usr/share/doc/usersd/README.md": "README.md",
    "usr/share/doc/usersd/deploy.md": "docs/deploy.md",
}


def run(*argv, check=True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))}: exit {result.returncode}\n{result.stdout}{result.stderr}")
    return result


@pytest.fixture(scope="module")
def deb() -> Path:
    for tool in ("dpkg-deb", "dpkg"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not found: the package is built and installed on Debian only")
    result = run("bash", REPO_ROOT / "scripts" / "build-deb.sh", timeout=BUILD_TIMEOUT, check=False)
    assert result.returncode == 0, f"scripts/build-deb.sh failed:\n{result.stderr[-4000:]}"
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.parent == REPO_ROOT / "dist" and path.exists(), result.stdout
    return path


@pytest.fixture(scope="module")
def extracted(deb, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deb-root")
    run("dpkg-deb", "-x", deb, root)
    return root


def control_fields(deb) -> dict[str, str]:
    info = run("dpkg-deb", "-f", deb).stdout
    fields, key = {}, None
    for line in info.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def test_name_version_and_control(deb, extracted):
    version = run(extracted / "usr/bin/usersd", "--version").stdout.split()
    assert version[0] == "usersd"
    assert deb.name == f"usersd_{version[1]}_amd64.deb"
    fields = control_fields(deb)
    assert fields["Package"] == "usersd" and fields["Version"] == version[1] and fields["Architecture"] == "amd64"
    depends = [d.strip().split()[0] for d in fields["Depends"].split(",")]
    for library in ("libc6", "libfcgi0ldbl", "libsqlite3-0"):
        assert library in depends, fields["Depends"]
    assert not any("swift" in d for d in depends), fields["Depends"]
    assert int(fields["Installed-Size"]) > 0 and fields.get("Maintainer") and fields.get("Description")
    info = run("dpkg-deb", "-I", deb).stdout
    for member in ("control", "md5sums", "conffiles", "postinst", "prerm", "postrm"):
        assert re.search(rf"\s{member}\s", info), info
    with_conffiles = subprocess.run(
        f"dpkg-deb --ctrl-tarfile {deb} | tar -xO ./conffiles", shell=True, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(with_conffiles) == ["/etc/default/usersd", "/etc/nginx/sites-available/usersd"]


def test_contents(deb, extracted):
    listing = run("dpkg-deb", "-c", deb).stdout.splitlines()
    entries = {}
    for line in listing:
        mode, owner, _size, _date, _time, name = line.split(None, 5)
        entries[name.removeprefix("./").rstrip("/")] = (mode, owner)
    for path, mode in EXPECTED_FILES.items():
        assert path in entries, f"{path} missing from the package:\n" + "\n".join(listing)
        assert entries[path][1] == "root/root", (path, entries[path])
        assert oct(os.stat(extracted / path).st_mode & 0o7777) == oct(mode), path
    for packaged, source in SAME_AS_REPO.items():
        assert (extracted / packaged).read_bytes() == (REPO_ROOT / source).read_bytes(), f"{packaged} != {source}"
    # a man page generated from --help: every option is in it
    page = gzip.decompress((extracted / "usr/share/man/man8/usersd.8.gz").read_bytes()).decode()
    assert page.startswith(".TH USERSD 8 ")
    help_text = run(extracted / "usr/bin/usersd", "--help").stdout
    for flag in re.findall(r"^\s+(--[a-z-]+)", help_text, re.M):
        assert flag.replace("-", "\\-") in page, f"{flag} not in the man page"


def test_binary_is_stripped_and_needs_no_swift_toolchain(extracted):
    binary = extracted / "usr/bin/usersd"
    libraries = run("ldd", binary).stdout
    assert "/opt/swift" not in libraries and "not found" not in libraries and "swift" not in libraries, libraries
    if shutil.which("readelf"):
        sections = run("readelf", "-S", "-W", binary).stdout
        assert ".symtab" not in sections, "not stripped"


def installed_version() -> str | None:
    result = run("dpkg-query", "-W", "-f=${Status} ${Version}", "usersd", check=False)
    return result.stdout if result.returncode == 0 and "installed" in result.stdout.split() else None


def test_install_run_and_remove(deb, tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("dpkg -i needs root (CI runs the suite as root on a throwaway machine)")
    if installed_version():
        pytest.skip(f"usersd is already installed here ({installed_version()}): not replacing it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        result = run("dpkg", "-i", "--force-confdef", "--force-confold", deb, check=False, env=env, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"dpkg -i failed (missing Depends?):\n{result.stdout}{result.stderr}"
        assert installed_version().startswith("install ok installed")

        binary = "/usr/bin/usersd"
        version = run(binary, "--version").stdout.strip()
        assert version == f"usersd {control_fields(deb)['Version']}"
        # runs without the Swift toolchain: nothing resolves into it
        assert "swift" not in run("ldd", binary).stdout
        check = run(binary, "check", "--db", tmp_path / "x.sqlite3", check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        # the shipped nginx site agrees with usersd's defaults
        site = run(binary, "check", "--db", tmp_path / "x.sqlite3", "--nginx", "/etc/nginx/sites-available/usersd", check=False)
        assert site.returncode == 0, site.stdout + site.stderr
        assert "warn" not in (site.stdout + site.stderr).lower(), site.stdout + site.stderr
        # the installed units verify where they are (ExecStart and the man page exist now)
        if shutil.which("systemd-analyze"):
            verify = run(
                "systemd-analyze", "verify", "/lib/systemd/system/usersd.socket", "/lib/systemd/system/usersd.service",
                check=False,
            )
            assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), verify.stdout + verify.stderr

        # the installed (release, static, stripped) binary serves through nginx,
        # activated the way usersd.socket does it
        monkeypatch.setenv("USERSD_BIN", binary)
        stack = harness.Stack(mode="systemd").start()
        try:
            with requests.Session() as http:
                user = create_user(http, stack.url, "from the .deb ✓", unique_email("deb"))
                assert expect_json(http.get(stack.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200) == user
            assert stack.service.stop() == 0
        finally:
            stack.close()

        removed = run("dpkg", "-r", "usersd", check=False, env=env, stdin=subprocess.DEVNULL)
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert not os.path.exists(binary) and not os.path.exists("/lib/systemd/system/usersd.service")
        # remove keeps the conffiles; purge takes them too
        assert os.path.exists("/etc/default/usersd")
    finally:
        if installed_version() is not None or run("dpkg-query", "-W", "usersd", check=False).returncode == 0:
            run("dpkg", "--purge", "usersd", check=False, env=env, stdin=subprocess.DEVNULL)
    assert not os.path.exists("/etc/default/usersd")
    assert not os.path.exists("/etc/nginx/sites-available/usersd")
