"""Helpers for test_systemd.py: read the shipped systemd units, and run usersd the
way systemd would under usersd.service's hardening, without systemd as PID 1.

Imported by the tests, and run as a program it is the last step before usersd:

    python3 unitsandbox.py --unit systemd/usersd.service --uid 65534 --gid 65534 \
        --pidfile PID -- /path/to/usersd serve

It then, in this order (the order systemd's exec step uses):
  - unshares the network, IPC and UTS namespaces (PrivateNetwork=, PrivateIPC=,
    ProtectHostname=),
  - drops every capability from the bounding set and switches to an unprivileged
    uid/gid with no supplementary groups (DynamicUser=, CapabilityBoundingSet=),
  - sets no_new_privs (NoNewPrivileges=) and the kernel's memory-deny-write-execute
    (PR_SET_MDWE, what newer systemd uses for MemoryDenyWriteExecute=),
  - loads seccomp filters equivalent to what systemd 252 loads for the unit:
    the SystemCallFilter= allow-list (default action from SystemCallErrorNumber=),
    the MemoryDenyWriteExecute= rules (mmap W+X, mprotect/pkey_mprotect +X, shmat
    SHM_EXEC) and RestrictAddressFamilies=,
  - sets LISTEN_PID / WATCHDOG_PID to its own pid when LISTEN_FDS / WATCHDOG_USEC
    are set (the pid survives exec), writes it to --pidfile, and execs the command.

Only the Python standard library and libseccomp.so.2 (a dependency of systemd) are
used, so any python3 runs it. Everything it imports is imported before it drops
privileges (the interpreter's library may not be readable by the unprivileged user).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import os
import re
import shlex
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

# --------------------------------------------------------------------------- units


def parse_unit(path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}} of a unit file (continuation lines joined)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for raw in Path(path).read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path}: {line!r} outside a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_environment(service: dict[str, list[str]]) -> dict[str, str]:
    """The Environment= assignments of a [Service] section."""
    env = {}
    for value in service.get("Environment", []):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            env[key] = val
    return env


# --------------------------------------------------------------------------- syscall sets


@lru_cache(maxsize=None)
def _group(name: str) -> frozenset[str]:
    """The system calls of one systemd syscall group (@name), nested groups expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        names |= _group(entry) if entry.startswith("@") else {entry}
    return frozenset(names)


def expand(entry: str) -> set[str]:
    return set(_group(entry)) if entry.startswith("@") else {entry}


def allowed_syscalls(service: dict[str, list[str]]) -> set[str] | None:
    """The allow-list systemd builds from SystemCallFilter= lines (None: no filter).

    Like systemd: the first non-inverted assignment starts an allow-list that also
    includes @default; later `~` assignments remove from it, later plain ones add."""
    allowed: set[str] | None = None
    for value in service.get("SystemCallFilter", []):
        invert = value.startswith("~")
        entries = value.lstrip("~").split()
        if allowed is None:
            assert not invert, "a deny-list unit is not what usersd.service ships"
            allowed = set(_group("@default"))
        for entry in entries:
            names = expand(entry)
            allowed = allowed - names if invert else allowed | names
    return allowed


# --------------------------------------------------------------------------- libseccomp

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_NE = 1
SCMP_CMP_MASKED_EQ = 7
SCMP_FLTATR_CTL_NNP = 3


def SCMP_ACT_ERRNO(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _libseccomp():
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    return lib


def _rule(lib, ctx, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number < 0:
        return  # not a syscall of this architecture (e.g. arm_fadvise64_64)
    array = (_ArgCmp * max(1, len(cmps)))(*[_ArgCmp(*c) for c in cmps])
    rc = lib.seccomp_rule_add_array(ctx, action, number, len(cmps), array)
    if rc < 0 and rc != -errno.EEXIST:
        raise OSError(-rc, f"seccomp_rule_add {name}")


def load_filters(service: dict[str, list[str]], lib=None) -> None:
    lib = lib or _libseccomp()
    errno_name = (service.get("SystemCallErrorNumber") or [""])[-1]
    deny = SCMP_ACT_ERRNO(getattr(errno, errno_name)) if errno_name else SCMP_ACT_KILL_PROCESS

    filters = []

    if (service.get("MemoryDenyWriteExecute") or ["no"])[-1] == "yes":
        # systemd 252 seccomp_memory_deny_write_execute(): EPERM for these.
        prot_exec, prot_write, shm_exec = 0x4, 0x2, 0o100000
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        eperm = SCMP_ACT_ERRNO(errno.EPERM)
        _rule(lib, ctx, eperm, "mmap", (2, SCMP_CMP_MASKED_EQ, prot_exec | prot_write, prot_exec | prot_write))
        _rule(lib, ctx, eperm, "mprotect", (2, SCMP_CMP_MASKED_EQ, prot_exec, prot_exec))
        _rule(lib, ctx, eperm, "pkey_mprotect", (2, SCMP_CMP_MASKED_EQ, prot_exec, prot_exec))
        _rule(lib, ctx, eperm, "shmat", (2, SCMP_CMP_MASKED_EQ, shm_exec, shm_exec))
        filters.append(ctx)

    families = (service.get("RestrictAddressFamilies") or [""])[-1].split()
    if families == ["AF_UNIX"]:
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        _rule(lib, ctx, SCMP_ACT_ERRNO(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_NE, int(socket.AF_UNIX), 0))
        filters.append(ctx)
    elif families:
        raise ValueError(f"RestrictAddressFamilies={families}: extend unitsandbox.py")

    # Like systemd, the allow-list goes last: it does not allow seccomp() itself.
    allowed = allowed_syscalls(service)
    if allowed is not None:
        ctx = lib.seccomp_init(deny)
        for name in sorted(allowed):
            _rule(lib, ctx, SCMP_ACT_ALLOW, name)
        filters.append(ctx)

    for ctx in filters:
        lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1)
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise OSError(-rc, "seccomp_load")


# --------------------------------------------------------------------------- the exec step

CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET = 0x04000000, 0x08000000, 0x40000000
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 24, 38, 65, 1
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4


def _check(rc: int, what: str) -> None:
    if rc != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unit", required=True)
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    parser.add_argument("--pidfile")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    service = parse_unit(args.unit)["Service"]
    yes = lambda key: (service.get(key) or ["no"])[-1] == "yes"  # noqa: E731

    seccomp = _libseccomp()
    allowed_syscalls(service)  # resolves the groups with systemd-analyze while still root
    if "LISTEN_FDS" in os.environ:
        os.environ["LISTEN_PID"] = str(os.getpid())
    if "WATCHDOG_USEC" in os.environ:
        os.environ["WATCHDOG_PID"] = str(os.getpid())
    if args.pidfile:
        Path(args.pidfile).write_text(str(os.getpid()))

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    flags = (CLONE_NEWNET if yes("PrivateNetwork") else 0) | (CLONE_NEWIPC if yes("PrivateIPC") else 0)
    flags |= CLONE_NEWUTS if yes("ProtectHostname") else 0
    if flags:
        _check(libc.unshare(flags), "unshare")

    if (service.get("CapabilityBoundingSet") or [None])[-1] == "":
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
        for cap in range(last + 1):
            _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    os.setgroups([])
    os.setresgid(args.gid, args.gid, args.gid)
    os.setresuid(args.uid, args.uid, args.uid)
    if (service.get("UMask") or [""])[-1]:
        os.umask(int(service["UMask"][-1], 8))

    if yes("NoNewPrivileges") or service.get("SystemCallFilter") or yes("MemoryDenyWriteExecute"):
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if yes("MemoryDenyWriteExecute"):
        # The kernel's own MDWE (Linux >= 6.3), on top of the seccomp rules below.
        if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
            _check(-1, "PR_SET_MDWE")

    sys.stdout.flush()
    sys.stderr.flush()
    load_filters(service, seccomp)
    os.execv(command[0], command)


# --------------------------------------------------------------------------- strace audit


_LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$")
_RESULT = re.compile(r"\)\s+=\s+(-?\d+)(?:\s.*)?$")


def audit_strace(log_path, exe_path: str) -> dict:
    """Reads an `strace -f -o LOG` log and returns what the process that exec'd
    `exe_path` (and the threads and children it created afterwards) did:
    {"syscalls": {name: count}, "opened": [(path, flags)], "wx_maps": [line],
    "socket_families": [first argument of each socket()], "pids": {pid}}."""
    tracked: set[str] = set()
    counts: dict[str, int] = {}
    opened: list[tuple[str, str]] = []
    wx: list[str] = []
    families: list[str] = []
    for line in Path(log_path).read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        pid, resumed, name, rest = m.group(1), m.group(2), m.group(3), m.group(4)
        if pid not in tracked:
            # execve("EXE", [...], ...) = 0 (or <unfinished ...> when threads interleave)
            if name == "execve" and rest.startswith(f'"{exe_path}"') and ("= 0" in rest or "<unfinished" in rest):
                tracked.add(pid)
            continue
        syscall = name or resumed
        if name:  # count each call once, at its start
            counts[syscall] = counts.get(syscall, 0) + 1
        if syscall in ("clone", "clone3", "fork", "vfork"):
            r = _RESULT.search(rest)
            if r and int(r.group(1)) > 0:
                tracked.add(r.group(1))
        if name in ("open", "openat", "openat2", "creat"):
            p = re.search(r'"((?:[^"\\]|\\.)*)"', rest)
            if p:
                flags = rest[p.end():].split(",")[1].strip() if "," in rest[p.end():] else ""
                opened.append((p.group(1), flags))
        if name == "socket":
            families.append(rest.split(",")[0].strip())
        if name in ("mmap", "mprotect", "pkey_mprotect") and "PROT_EXEC" in rest and (
            name != "mmap" or "PROT_WRITE" in rest
        ):
            wx.append(line)
    return {"syscalls": counts, "opened": opened, "wx_maps": wx, "socket_families": families, "pids": tracked}


if __name__ == "__main__":
    main(sys.argv[1:])
