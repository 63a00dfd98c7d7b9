#!/usr/bin/env python3
"""Instructions per request (valgrind callgrind): a deterministic A/B measure.

wrk figures on a shared 2-core machine drift 10-40 % between runs, too much to see a
5 % change. This runs one FastCGI responder under callgrind, sends N requests over one
kept FastCGI connection (the params a stock nginx `include fastcgi_params` sends),
and prints the user-space instructions (Ir) per request over those N — the same
binary gives the same figure to within a percent or so. Kernel time is not counted.

    python3 bench/callgrind.py .build/release/usersd get 2000    # GET /user/<id>
    python3 bench/callgrind.py .build/release/usersd post 1000   # POST /add-user
    python3 bench/callgrind.py /path/to/hello get 2000           # the C floor (bench/c-floor)

A binary whose file name starts with "usersd" (usersd, usersd-before, ...) is run as
`usersd serve`; any other is run as the C floor (`BINARY SOCKET THREADS`).
    CONNECTIONS=32 python3 bench/callgrind.py .build/release/usersd post 2000

Needs valgrind (Debian package). usersd gets a fresh database with 50 users first.
With CONNECTIONS=N the requests go over N kept connections at once, as under load:
for POST that is the only deterministic view of group commit (many jobs per
transaction, welcome tasks run in batches); one connection is the worst case of
a commit per request. With NEWCONN=1 each request comes on a connection of its
own (as when nginx closes connections beyond its idle keepalive cache): the
difference to the default is what a new connection costs. With AUTH=1 usersd runs
with --auth-file (one write token from `usersd token add`) and every request carries
it (`HTTP_AUTHORIZATION`, as nginx passes the header): the difference to the default
is what access control costs.
"""
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "e2e", "support"))
import harness  # noqa: E402  (the e2e suite's FastCGI record helpers)

FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN = 1, 3, 4, 5


TOKEN = ""  # AUTH=1: the bearer token every request carries


def request(sock: socket.socket, method: str, uri: str, body: bytes = b"") -> None:
    """One request on a kept connection (FCGI_KEEP_CONN), the params of stock nginx."""
    params = harness.stock_params(method, uri, body, "application/json" if body else "")
    if TOKEN:
        params["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    encoded = b"".join(
        harness._fcgi_length(len(k)) + harness._fcgi_length(len(v.encode())) + k.encode() + v.encode()
        for k, v in params.items()
    )
    out = harness._fcgi_record(FCGI_BEGIN_REQUEST, 1, struct.pack("!HB5x", 1, 1))
    out += harness._fcgi_record(FCGI_PARAMS, 1, encoded) + harness._fcgi_record(FCGI_PARAMS, 1, b"")
    if body:
        out += harness._fcgi_record(FCGI_STDIN, 1, body)
    out += harness._fcgi_record(FCGI_STDIN, 1, b"")
    sock.sendall(out)
    while True:
        _, kind, _, size, padding, _ = struct.unpack("!BBHHBB", harness._recv_exact(sock, 8))
        harness._recv_exact(sock, size + padding)
        if kind == FCGI_END_REQUEST:
            return


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[2] not in ("get", "post"):
        sys.exit(__doc__)
    binary, route, count = os.path.abspath(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    is_usersd = os.path.basename(binary).startswith("usersd")
    work = tempfile.mkdtemp(prefix="usersd-callgrind-")
    sock_path, output = f"{work}/app.sock", f"{work}/callgrind.out"

    def start(prefix: list[str]) -> subprocess.Popen:
        if os.path.exists(sock_path):
            os.unlink(sock_path)
        args = [binary, "serve", "--socket", sock_path, "--db", f"{work}/users.sqlite3", "--log-level", "warning"] \
            if is_usersd else [binary, sock_path, "4"]
        if is_usersd and TOKEN:
            args += ["--auth-file", f"{work}/tokens"]
        # `usersd serve` re-executes itself to set GLIBC_TUNABLES unless it is set
        # (Sources/Lifecycle/MallocTuning.swift); under valgrind that exec would leave
        # valgrind behind, so the same settings are passed in.
        env = dict(os.environ)
        if is_usersd:
            env.setdefault("GLIBC_TUNABLES", "glibc.malloc.mxfast=0:glibc.malloc.tcache_count=32")
        process = subprocess.Popen(prefix + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        for _ in range(600):
            if os.path.exists(sock_path):
                break
            time.sleep(0.1)
        return process

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(120)
        for _ in range(600):
            try:
                sock.connect(sock_path)
                return sock
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"cannot connect to {sock_path} (started as {'usersd serve' if is_usersd else 'the C floor'})")

    def one(sock: socket.socket, i: int) -> None:
        if route == "get":
            request(sock, "GET", f"/user/{1 + i % 50}")
        else:
            request(sock, "POST", "/add-user", f'{{"name":"n{i}","email":"u{i}@example.com"}}'.encode())

    global TOKEN
    try:
        if is_usersd and os.environ.get("AUTH") == "1":
            made = subprocess.run([binary, "token", "add", "bench", "--scope", "write", "--auth-file", f"{work}/tokens"],
                                  capture_output=True, text=True, check=True)
            TOKEN = made.stdout.strip()
        if is_usersd:  # seed 50 users without valgrind
            process = start([])
            with connect() as sock:
                for i in range(50):
                    request(sock, "POST", "/add-user", f'{{"name":"seed {i}","email":"seed{i}@example.com"}}'.encode())
            process.terminate()
            process.wait()
        process = start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={output}"])
        with connect() as sock:
            for i in range(20):  # warm up: statement caches, thread start, first allocations
                one(sock, 100_000 + i)
            subprocess.run(["callgrind_control", "--zero", str(process.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            connections = int(os.environ.get("CONNECTIONS", "1"))
            if os.environ.get("NEWCONN"):
                for i in range(count):
                    with connect() as own:
                        one(own, i)
            elif connections == 1:
                for i in range(count):
                    one(sock, i)
            else:
                def share(first: int) -> None:
                    with connect() as own:
                        for i in range(first, count, connections):
                            one(own, i)
                threads = [threading.Thread(target=share, args=(first,)) for first in range(connections)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            # Let background work of these requests (welcome tasks) finish; under
            # valgrind a batch of them takes longer.
            time.sleep(0.5 if connections == 1 else 3)
            subprocess.run(["callgrind_control", "--dump", str(process.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        process.terminate()
        process.wait()
        annotated = subprocess.run(["callgrind_annotate", f"{output}.1"], capture_output=True, text=True).stdout
        total = int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", annotated).group(1).replace(",", ""))
        print(f"{os.path.basename(binary)} {route}{' with a token (AUTH=1)' if TOKEN else ''}: "
              f"{total / count:,.0f} instructions per request over {count} requests")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
