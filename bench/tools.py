#!/usr/bin/env python3
"""Helpers of bench/run.sh (standard library only).

  tools.py render-site   render the shipped nginx site under a path prefix + bench locations
  tools.py users-json    write the users.json the C floor and nginx serve for GET /users
  tools.py seed-sql      print the SQL that seeds N users into usersd's schema
  tools.py notify-wait   wait for READY=1 on a NOTIFY_SOCKET (sd_notify) datagram socket
  tools.py measure       drive every route x target with wrk, write JSON lines
  tools.py proc          VmRSS/VmHWM/Threads of a PID as JSON
  tools.py stream-mem    GET a URL with curl while sampling a PID's RSS every 50 ms
  tools.py expected      byte count and sha256 of GET /users over N seeded users
  tools.py table         print the results table (and write it as markdown)
  tools.py front         run Apache/lighttpd/Caddy/h2o with its shipped site (docs/web-servers/) until TERM
"""
import argparse
import hashlib
import json
import os
import re
import resource
import socket
import sqlite3
import subprocess
import sys
import threading
import time

ROUTE_TITLES = {
    "get_user": "GET /user/<id>",
    "users": "GET /users",
    "add_user": "POST /add-user",
    "mixed": "GET /users/<id> + 10% POST",
    "start_task": "GET /start-task",
}
REFERENCE_TARGETS = ("static", "c", "c-site")


# ------------------------------------------------------------------ nginx site rendering

def _code_part(line):
    """The part of an nginx config line before a comment (quote aware)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i], line[i:]
    return line, ""


def _strip_comments(text):
    return "\n".join(_code_part(l)[0] for l in text.splitlines())


def _block(text, start):
    """Text of the {...} block whose header starts at `start` (comments stripped text)."""
    depth, i = 0, text.index("{", start)
    quote = None
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
        i += 1
    raise ValueError("unbalanced braces")


def _directives(block):
    """Top-level directives of a block body as tuples of words (nested blocks skipped)."""
    body = block[block.index("{") + 1:block.rindex("}")]
    out, depth, cur = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            cur = ""
            continue
        if depth:
            continue
        if ch == ";":
            words = cur.split()
            if words:
                out.append(tuple(words))
            cur = ""
        else:
            cur += ch
    return out


def render_site(a):
    src = open(a.site).read()
    code = _strip_comments(src)
    m_up = re.search(r"\bupstream\s+(\S+)\s*\{", code)
    if not m_up:
        sys.exit("render-site: no upstream block in %s" % a.site)
    upstream_name = m_up.group(1)
    upstream_block = _block(code, m_up.start())
    m_loc = re.search(r"\blocation\s+/\s*\{", code)
    if not m_loc:
        sys.exit("render-site: no 'location /' in %s" % a.site)
    location_block = _block(code, m_loc.start())
    prefix = a.prefix.rstrip("/")

    out, listen_done, server_done, warnings = [], False, False, []
    for line in src.splitlines():
        c, comment = _code_part(line)
        c = re.sub(r"(\bserver\s+)unix:[^\s;]+", r"\1unix:" + a.socket, c)
        if re.match(r"\s*listen\s", c):
            if listen_done:
                continue
            c = re.sub(r"listen\s+[^;]+;", "listen 127.0.0.1:%s backlog=4096;" % a.port, c)
            listen_done = True
        if re.search(r"\blocation\s+~", c):
            warnings.append("regex location left as is (not under %s): %s" % (prefix, c.strip()))
        c = re.sub(r"(\blocation\s+(?:=\s*|\^~\s*)?)/", r"\1" + prefix + "/", c)
        if not server_done and re.search(r"\bserver\s*\{", c):
            c = c + "\n    # bench: the reference targets share this server block\n" \
                    "    include %s/bench-locations.conf;" % a.run
            server_done = True
        out.append(c + comment)
    if not (listen_done and server_done):
        sys.exit("render-site: no server block with a listen directive in %s" % a.site)
    site = "# rendered by bench/tools.py render-site from %s: socket, listen,\n" \
           "# location paths under %s and the bench include changed; nothing else.\n" % (a.site, prefix)
    site += "\n".join(out) + "\n"

    locations = open(a.locations_template).read().replace("@RUN@", a.run).replace("@BENCH@", a.bench)
    def copy_of_shipped(name, prefix, what):
        """A copy of the shipped upstream (to $RUN/NAME.sock) and 'location /' (under prefix)."""
        nonlocal site, locations
        upstream = name.replace("-", "_")
        up = re.sub(r"upstream\s+\S+", "upstream " + upstream, upstream_block, count=1)
        up = re.sub(r"(\bserver\s+)unix:[^\s;]+", r"\1unix:%s/%s.sock" % (a.run, name), up)
        loc = re.sub(r"location\s+/", "location %s/" % prefix.rstrip("/"), location_block, count=1)
        loc = re.sub(r"fastcgi_pass\s+[^;]+;", "fastcgi_pass %s;" % upstream, loc)
        site = "# %s: a copy of the shipped upstream for %s\n" % (name, what) + up + "\n" + site
        locations += "\n# %s: %s behind a copy of the shipped 'location /'\n" % (name, what) + loc + "\n"

    if a.c_site:
        # The C floor behind an exact copy of the shipped location and upstream:
        # separates nginx-setting costs from usersd's own.
        copy_of_shipped("c-site", a.c_site_prefix, "the C floor")
    if a.usersd_auth:
        # usersd with --auth-file, behind the same settings as usersd itself.
        copy_of_shipped("usersd-auth", a.usersd_auth, "usersd with access control")
    open(os.path.join(a.run, "site.conf"), "w").write(site)
    open(os.path.join(a.run, "bench-locations.conf"), "w").write(locations)

    # What differs between the floor's settings and the shipped ones.
    floor_loc = {("fastcgi_keep_conn", "on")}
    floor_up = {("keepalive", str(a.keepalive))}
    diffs = []
    for d in _directives(location_block):
        if d[0] == "fastcgi_pass" or d in floor_loc:
            continue
        if d == ("include", "fastcgi_params"):
            diffs.append("include fastcgi_params (the stock file; the floor uses bench/nginx/fastcgi_params.floor, "
                         "which strips the URL prefix in nginx; usersd strips it itself with --prefix %s)" % prefix)
            continue
        diffs.append(" ".join(d))
    if ("fastcgi_keep_conn", "on") not in _directives(location_block):
        diffs.append("(no fastcgi_keep_conn on)")
    for d in _directives(upstream_block):
        if d[0] == "server" or d in floor_up:
            continue
        diffs.append("upstream: " + " ".join(d))
    json.dump({"upstream": upstream_name, "location_vs_floor": diffs, "warnings": warnings},
              open(os.path.join(a.run, "site-diff.json"), "w"))
    for w in warnings:
        print("render-site: warning: " + w, file=sys.stderr)


# ------------------------------------------------------------------ seeding

def user_obj(i):
    return '{"id":%d,"name":"User %d","email":"user%d@example.com"}' % (i, i, i)


def users_json(a):
    with open(a.out, "w") as f:
        f.write("[" + ",".join(user_obj(i) for i in range(1, a.n + 1)) + "]")


def seed_sql(a):
    ts = "2026-01-01T00:00:00.000Z"
    print(".timeout 10000")
    print("BEGIN;")
    print("WITH RECURSIVE s(i) AS (SELECT %d UNION ALL SELECT i + 1 FROM s WHERE i < %d)" % (a.first, a.last))
    print("INSERT INTO users (id, name, email, email_key, created_at, updated_at)")
    print("  SELECT i, 'User ' || i, 'user' || i || '@example.com', lower('user' || i || '@example.com'),")
    print("         '%s', '%s' FROM s;" % (ts, ts))
    print("COMMIT;")


def expected_of(count):
    h, n = hashlib.sha256(), 0
    chunk = []
    h.update(b"[")
    n += 1
    for i in range(1, count + 1):
        s = (user_obj(i) if i == 1 else "," + user_obj(i))
        chunk.append(s)
        if len(chunk) == 10000:
            b = "".join(chunk).encode()
            h.update(b)
            n += len(b)
            chunk = []
    b = ("".join(chunk) + "]").encode()
    h.update(b)
    n += len(b)
    return {"bytes": n, "sha256": h.hexdigest()}


def expected(a):
    print(json.dumps(expected_of(a.n)))


# ------------------------------------------------------------------ processes

def notify_wait(a):
    """Bind a NOTIFY_SOCKET and wait for READY=1 (exit 0), the watched PID dying (2), or timeout (1)."""
    try:
        os.unlink(a.socket)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(a.socket)
    s.settimeout(0.1)
    t0 = time.monotonic()
    while time.monotonic() - t0 < a.timeout:
        try:
            data = s.recv(4096)
        except socket.timeout:
            data = b""
        if b"READY=1" in data.split(b"\n"):
            print("%.3f" % (time.monotonic() - t0))
            return 0
        if a.pidfile and os.path.exists(a.pidfile):
            try:
                pid = int(open(a.pidfile).read().strip() or "0")
                if pid and not os.path.exists("/proc/%d" % pid):
                    print("died", file=sys.stderr)
                    return 2
                st = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] if pid else "R"
                if st == "Z":
                    print("died", file=sys.stderr)
                    return 2
            except (OSError, ValueError):
                pass
    print("timeout", file=sys.stderr)
    return 1


def proc_status(pid):
    out = {}
    try:
        for line in open("/proc/%d/status" % pid):
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(v.split()[0])
            elif k == "Threads":
                out[k] = int(v)
    except OSError:
        pass
    return out


def proc(a):
    d = proc_status(a.pid)
    if a.kind:
        d = dict(kind=a.kind, pid=a.pid, **d)
        if a.after_s is not None:
            d["after_s"] = a.after_s
    print(json.dumps(d))


CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK


def kernel_softirq_pids():
    """ksoftirqd threads: loopback TCP at high rates runs much of its work there."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if open("/proc/%s/comm" % d).read().startswith("ksoftirqd"):
                    out.append(int(d))
            except OSError:
                pass
    return out


def children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                f = open("/proc/%s/stat" % d).read().rsplit(")", 1)[1].split()
                if int(f[1]) == pid:
                    kids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


# ------------------------------------------------------------------ measuring

def run_wrk(a, url, mode, tag, seconds, token=""):
    cmd = ["wrk", "-t%d" % a.wrk_threads, "-c%d" % a.conns, "-d%ds" % seconds, "--timeout", a.wrk_timeout,
           "-s", a.lua, url, "--", mode, str(a.nusers), tag] + ([token] if token else [])
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    j = None
    for line in p.stdout.splitlines():
        if line.startswith("WRKJSON "):
            j = json.loads(line[8:])
    return j, p.stdout


def log_lines(path, start, end):
    if end <= start:
        return []
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start).decode(errors="replace").splitlines()


LOG_LINE = re.compile(r'^\S+ (\d{3}) \S+ "[^"]*" "\S+ (\S+)')


def status_counts(lines, prefix):
    """Statuses of the nginx 'bench' log lines whose path is under prefix."""
    counts = {}
    for line in lines:
        m = LOG_LINE.match(line)
        if not m:
            continue
        if prefix and not m.group(2).startswith(prefix + "/"):
            continue
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def busy_seconds():
    """CPU time all CPUs spent busy (not idle/iowait), from /proc/stat."""
    f = open("/proc/stat").readline().split()[1:]
    v = [int(x) for x in f]
    # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK


def db_scalar(db, sql):
    try:
        con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    except sqlite3.Error as e:
        return [("error: %s" % e,)]


def size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def measure(a):
    targets = []  # (name, prefix, [pids], bearer token or "")
    for spec in a.target:
        name, prefix, pids, token = (spec.split("=", 3) + ["", ""])[:4]
        targets.append((name, prefix, [int(p) for p in pids.split(",") if p], token))
    base = "http://127.0.0.1:%s" % a.port
    runtag = str(int(time.time()))
    results = open(a.results, "a")
    for route in a.routes.split():
        for name, prefix, pids, token in targets:
            # A target behind another web server (SERVER=...) is a whole URL; its
            # statuses are wrk's (nginx's access log does not see it).
            url = prefix if prefix.startswith("http") else base + prefix
            tag = "%s-%s-%s" % (runtag, name, route)
            is_usersd = name.startswith("usersd")
            # usersd-auth is a usersd of its own, on its own copy of the database
            db = a.auth_db if name == "usersd-auth" else a.db
            rec = {"kind": "wrk", "route": route, "target": name, "url": url}
            u0 = db_scalar(db, "SELECT count(*) FROM users")[0][0] if is_usersd and db else None
            w0 = size(a.log)
            warm = None
            if a.warmup > 0:
                warm, _ = run_wrk(a, url, route, "w" + tag, a.warmup, token)
            m0 = size(a.log)
            ng = [a.nginx_pid] + children(a.nginx_pid)
            c_app, c_ng = cpu_seconds(pids), cpu_seconds(ng)
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            ksoft = kernel_softirq_pids()
            k0 = cpu_seconds(ksoft)
            b0 = busy_seconds()
            t0 = time.monotonic()
            res, raw = run_wrk(a, url, route, "m" + tag, a.duration, token)
            wall = time.monotonic() - t0
            busy = busy_seconds() - b0
            c_ksoft = cpu_seconds(ksoft) - k0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            c_app, c_ng = cpu_seconds(pids) - c_app, cpu_seconds(ng) - c_ng
            time.sleep(0.5)  # let nginx log what was in flight when wrk stopped
            m1 = size(a.log)
            open(os.path.join(a.logdir, "wrk-%s-%s.txt" % (name, route)), "w").write(raw)
            if res is None:
                print("measure: no wrk result for %s %s:\n%s" % (name, route, raw), file=sys.stderr)
                res = {"requests": 0, "rps": 0}
            rec.update(res)
            st = status_counts(log_lines(a.log, m0, m1), prefix)
            wst = status_counts(log_lines(a.log, w0, m0), prefix)
            rec["statuses"] = {k: v for k, v in st.items() if k != "499"}
            rec["client_closed_499"] = st.get("499", 0)
            rec["non2xx"] = sum(rec["statuses"].values())
            rec["sock_errors"] = sum(res.get(k, 0) for k in ("err_connect", "err_read", "err_write", "err_timeout"))
            rec["errors"] = max(rec["non2xx"], res.get("non2xx3xx", 0)) + rec["sock_errors"]
            if warm:
                rec["warmup"] = {k: warm.get(k) for k in ("requests", "rps", "p99_ms", "max_ms", "non2xx3xx",
                                                           "err_connect", "err_read", "err_write", "err_timeout")}
                rec["warmup"]["statuses"] = {k: v for k, v in wst.items() if k != "499"}
            rec["wall_s"] = round(wall, 3)
            n = max(res.get("requests", 0), 1)
            rec["app_cpu_s"] = round(c_app, 3) if pids else None
            rec["nginx_cpu_s"] = round(c_ng, 3)
            rec["wrk_cpu_s"] = round((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime), 3)
            # CPU time used by everything else on the machine meanwhile (a compile, ...)
            rec["ksoftirqd_cpu_s"] = round(c_ksoft, 3)
            rec["other_cpu_s"] = round(busy - c_app - c_ng - rec["wrk_cpu_s"] - c_ksoft, 3)
            rec["cpu_capacity_s"] = round(wall * (os.cpu_count() or 1), 3)
            rec["app_us_per_req"] = round(c_app / n * 1e6, 1) if pids else None
            rec["nginx_us_per_req"] = round(c_ng / n * 1e6, 1)
            if is_usersd and pids:
                rec["usersd_proc"] = proc_status(pids[0])
            if is_usersd and db:
                time.sleep(0.5)
                u1 = db_scalar(db, "SELECT count(*) FROM users")[0][0]
                rec["rows_added"] = u1 - u0 if isinstance(u1, int) and isinstance(u0, int) else None
                if route == "add_user":
                    ok = res.get("requests", 0) - res.get("non2xx3xx", 0)
                    if warm:
                        ok += warm.get("requests", 0) - warm.get("non2xx3xx", 0)
                    rec["answered_2xx_incl_warmup"] = ok
                if route == "start_task":
                    rec["tasks"] = dict(db_scalar(db, "SELECT state, count(*) FROM tasks GROUP BY state"))
            results.write(json.dumps(rec) + "\n")
            results.flush()
            print("[bench %s] %-10s %-7s %8.0f req/s  p50 %6.2f ms  p99 %7.2f ms  max %8.2f ms  errors %d%s" % (
                time.strftime("%H:%M:%S"), route, name, res.get("rps", 0), res.get("p50_ms", 0),
                res.get("p99_ms", 0), res.get("max_ms", 0), rec["errors"],
                (" %s" % rec["statuses"]) if rec["statuses"] else ""), file=sys.stderr, flush=True)


# ------------------------------------------------------------------ memory run

def stream_mem(a):
    samples, stop = [], threading.Event()
    peak = {"VmRSS": 0}

    def sampler():
        while not stop.is_set():
            s = proc_status(a.pid)
            if s:
                samples.append((time.monotonic(), s.get("VmRSS", 0)))
                if s.get("VmRSS", 0) > peak.get("VmRSS", 0):
                    peak.clear()
                    peak.update(s)
            time.sleep(0.05)

    before = proc_status(a.pid)
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    t0 = time.monotonic()
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total} "
                        "%{time_starttransfer}", a.url], stdout=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    stop.set()
    th.join()
    code, nbytes, ttotal, tfirst = (p.stdout.split() + ["0"] * 4)[:4]
    time.sleep(2)
    after = proc_status(a.pid)
    rec = {
        "kind": "memory_stream", "url": a.url, "nusers": a.nusers, "insert_s": a.insert_s,
        "http_status": int(code), "bytes": int(nbytes),
        "time_s": float(ttotal), "ttfb_s": float(tfirst), "wall_s": round(wall, 3),
        "samples": len(samples), "peak_rss_kb": peak.get("VmRSS", 0), "peak": peak,
        "before": before, "after_2s": after, "sha_ok": None,
    }
    rec["expected"] = expected_of(a.nusers)
    if a.verify:
        # second, untimed pass: hash what usersd sends
        h = hashlib.sha256()
        c = subprocess.Popen(["curl", "-s", a.url], stdout=subprocess.PIPE)
        for chunk in iter(lambda: c.stdout.read(1 << 20), b""):
            h.update(chunk)
        c.wait()
        rec["sha_ok"] = h.hexdigest() == rec["expected"]["sha256"]
    print(json.dumps(rec))


# ------------------------------------------------------------------ table

def fmt_ms(v):
    if v is None:
        return "-"
    return "%.2f" % v if v < 100 else "%.0f" % v


def mb(kb):
    return "%.1f MB" % (kb / 1024.0) if kb else "?"


def table(a):
    meta, rows, mem = {}, [], {}
    for line in open(a.results):
        line = line.strip()
        if not line:
            continue
        d = json.loads(line)
        kind = d.get("kind")
        if kind == "meta":
            meta = d
        elif kind == "wrk":
            rows.append(d)
        elif kind and kind.startswith("memory"):
            mem[kind] = d
        elif kind == "usersd_stop":
            mem[kind] = d
    ref = {(r["target"], r["route"]): r for r in rows}
    lines_txt, lines_md = [], []

    def both(s=""):
        lines_txt.append(s)
        lines_md.append(s)

    if meta:
        both("usersd benchmark — %s" % meta.get("date", ""))
        both("")
        both("- machine: %s, %s CPUs, kernel %s; nginx %s, wrk %s" % (
            meta.get("cpu_model", "?"), meta.get("cpus"), meta.get("kernel"), meta.get("nginx"), meta.get("wrk")))
        both("- usersd: %s (git %s)%s" % (meta.get("usersd_version"), meta.get("git", "?"),
                                          ", `%s`" % meta["usersd_cmd"] if meta.get("usersd_cmd") else ""))
    if meta.get("conns"):
        both("- wrk: %s threads, %s connections, %s s per run after %s s warmup; %s users seeded; "
             "C floor %s threads; upstream keepalive %s" % (
                 meta.get("wrk_threads"), meta.get("conns"), meta.get("duration_s"), meta.get("warmup_s"),
                 meta.get("nusers"), meta.get("c_threads"), meta.get("keepalive")))
        if meta.get("users_bytes_equal") is not None:
            both("- GET /users bytes: usersd %s the C floor's users.json (%s bytes)" % (
                "identical to" if meta.get("users_bytes_equal") else "DIFFERENT from", meta.get("users_json_bytes")))
        if meta.get("site_diff"):
            both("- usersd location = shipped nginx/usersd.conf; differs from the floor's location in: "
                 + "; ".join("`%s`" % x for x in meta["site_diff"]))
        both("")
    hdr = ["route", "target", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "x c", "x static", "app µs/req"]
    out = []
    notes = []
    for r in rows:
        rps = r.get("rps", 0)
        c = ref.get(("c", r["route"]), {}).get("rps")
        s = ref.get(("static", r["route"]), {}).get("rps")
        err = str(r.get("errors", 0))
        if r.get("statuses"):
            err += " (" + ", ".join("%s×%d" % (k, v) for k, v in sorted(r["statuses"].items())) + ")"
        if r.get("sock_errors"):
            err += " sock %d" % r["sock_errors"]
        title = ROUTE_TITLES.get(r["route"], r["route"])
        if r["route"] == "users" and meta.get("nusers"):
            title += " (%s rows)" % meta["nusers"]
        out.append([
            title, r["target"], "%.0f" % rps, fmt_ms(r.get("p50_ms")), fmt_ms(r.get("p99_ms")),
            fmt_ms(r.get("max_ms")), err,
            "%.3f" % (rps / c) if c and r["target"] not in ("c", "static") else "-",
            "%.3f" % (rps / s) if s and r["target"] != "static" else "-",
            "%.1f" % r["app_us_per_req"] if r.get("app_us_per_req") is not None else "-",
        ])
        if r.get("other_cpu_s") is not None and r.get("cpu_capacity_s") and \
                r["other_cpu_s"] > 0.1 * r["cpu_capacity_s"]:
            notes.append("%s %s: other processes used %.1f of %.1f CPU-seconds during the run: figures disturbed" % (
                r["target"], r["route"], r["other_cpu_s"], r["cpu_capacity_s"]))
        plain = ref.get(("usersd", r["route"]), {}).get("rps")
        if r["target"] == "usersd-auth" and plain:
            notes.append("usersd-auth %s: %.3f× usersd (with a token, access control on / without, off)" % (
                r["route"], rps / plain))
        cs = ref.get(("c-site", r["route"]), {}).get("rps")
        if r["target"] == "usersd" and cs:
            notes.append("usersd %s: %.3f× the C floor behind the shipped location (c-site)" % (r["route"], rps / cs))
        if r.get("warmup", {}).get("statuses"):
            notes.append("%s %s warmup: non-2xx %s" % (r["target"], r["route"], r["warmup"]["statuses"]))
        if r["route"] == "add_user" and r.get("answered_2xx_incl_warmup") is not None:
            ok = r["rows_added"] is not None and r["rows_added"] >= r["answered_2xx_incl_warmup"]
            notes.append("%s add_user: %d answered 2xx (warmup + run), %s rows added: %s" % (
                r["target"], r["answered_2xx_incl_warmup"], r.get("rows_added"),
                "every 2xx is in the database" if ok else "ROWS MISSING"))
        if r["route"] == "start_task" and r.get("tasks"):
            notes.append("%s start_task: tasks by state after the run %s" % (r["target"], r["tasks"]))
    prev = None
    disp = []
    for o in out:
        d = list(o)
        if d[0] == prev:
            d[0] = ""
        else:
            prev = d[0]
        disp.append(d)
    if disp:
        w = [max(len(h), *(len(o[i]) for o in disp)) for i, h in enumerate(hdr)]
        fmt = "  ".join("%-" + str(x) + "s" if i < 2 or i == 6 else "%" + str(x) + "s" for i, x in enumerate(w))
        lines_txt.append(fmt % tuple(hdr))
        for o in disp:
            lines_txt.append(fmt % tuple(o))
        lines_md.append("| " + " | ".join(hdr) + " |")
        lines_md.append("|" + "|".join("---" if i < 2 or i == 6 else "---:" for i in range(len(hdr))) + "|")
        for o in disp:
            cells = [x.replace("|", "\\|") for x in o]
            if cells[0]:
                cells[0] = "`%s`" % cells[0]
            lines_md.append("| " + " | ".join(cells) + " |")
        both("")
    if disp:
        both("errors = non-2xx answers (from nginx's log; wrk only counts >= 400) + socket errors; "
         "x c / x static = req/s over the C floor's / nginx's of the same route in this run; "
         "app µs/req = CPU time of the back end process per request.")
    stop = mem.get("usersd_stop")
    if stop:
        notes.append("usersd (throughput instance) stopped on SIGTERM in %s s with exit status %s" % (
            stop.get("seconds"), stop.get("exit")))
    for n in notes:
        both("- " + n)

    # memory
    ms, mi = mem.get("memory_stream"), mem.get("memory_idle")
    if ms or mi:
        both("")
        both("Memory (usersd with default settings, fresh database):")
        if mi:
            both("- idle RSS %.1f s after READY=1: %s (VmHWM %s, %s threads)" % (
                mi.get("after_s", 0), mb(mi.get("VmRSS")), mb(mi.get("VmHWM")), mi.get("Threads")))
        if ms:
            if ms.get("insert_s") is not None:
                both("- inserting %s users with sqlite3 (one transaction, usersd running): %.1f s" % (
                    "{:,}".format(ms.get("nusers", 0)), ms["insert_s"]))
            exp = ms.get("expected", {})
            both("- GET /users of %s users through nginx with curl: HTTP %s, %s bytes in %.2f s (%.1f MB/s), "
                 "first byte after %.3f s; bytes %s expected%s" % (
                     "{:,}".format(ms.get("nusers", 0)), ms.get("http_status"), "{:,}".format(ms.get("bytes", 0)),
                     ms.get("time_s", 0), ms.get("bytes", 0) / 1e6 / max(ms.get("time_s", 1e-9), 1e-9),
                     ms.get("ttfb_s", 0), "==" if ms.get("bytes") == exp.get("bytes") else "!= (%s)" % exp.get("bytes"),
                     {True: ", sha256 == expected", False: ", SHA256 DIFFERS", None: ""}[ms.get("sha_ok")]))
            pk = ms.get("peak", {})
            both("- usersd RSS while streaming (sampled every 50 ms, %d samples): peak %s (anon %s, file %s), "
                 "before %s, 2 s after %s; VmHWM after %s" % (
                     ms.get("samples", 0), mb(ms.get("peak_rss_kb")), mb(pk.get("RssAnon")), mb(pk.get("RssFile")),
                     mb(ms.get("before", {}).get("VmRSS")), mb(ms.get("after_2s", {}).get("VmRSS")),
                     mb(ms.get("after_2s", {}).get("VmHWM"))))

    # issue 5 targets
    checks = []

    def chk(label, ok, detail):
        checks.append("%s %s: %s" % ("met" if ok else "NOT met", label, detail))

    def r_of(t, route):
        return ref.get((t, route))
    u, c = r_of("usersd", "get_user"), r_of("c", "get_user")
    if u and c and c.get("rps"):
        chk("GET /user/<id> ≥ 0.9× C", u["rps"] >= 0.9 * c["rps"], "%.3f×" % (u["rps"] / c["rps"]))
        if c.get("p99_ms"):
            chk("GET /user/<id> p99 ≤ 1.5× C p99", u["p99_ms"] <= 1.5 * c["p99_ms"],
                "%.2f ms vs %.2f ms (%.2f×)" % (u["p99_ms"], c["p99_ms"], u["p99_ms"] / c["p99_ms"]))
    for route, lim in (("add_user", 0.6), ("users", 0.6)):
        u, c = r_of("usersd", route), r_of("c", route)
        if u and c and c.get("rps"):
            chk("%s ≥ %.1f× C" % (ROUTE_TITLES[route], lim), u["rps"] >= lim * c["rps"], "%.3f×" % (u["rps"] / c["rps"]))
    u, plain = r_of("usersd-auth", "get_user"), r_of("usersd", "get_user")
    if u and plain and plain.get("rps"):
        chk("(issue 23) GET /user/<id> with a token ≥ 0.95× without", u["rps"] >= 0.95 * plain["rps"],
            "%.0f vs %.0f req/s (%.3f×), p99 %.2f vs %.2f ms" % (
                u["rps"], plain["rps"], u["rps"] / plain["rps"], u.get("p99_ms", 0), plain.get("p99_ms", 0)))
    urows = [r for r in rows if r["target"] in ("usersd", "usersd-auth")]
    if urows:
        bad = ["%s: %d" % (r["route"], r["errors"]) for r in urows if r.get("errors")]
        chk("no errors / non-2xx from usersd", not bad, ", ".join(bad) if bad else "0 in every run")
    if ms:
        chk("streaming peak RSS < 64 MB", 0 < ms.get("peak_rss_kb", 0) < 64 * 1024, mb(ms.get("peak_rss_kb")))
    if mi:
        chk("idle RSS < 32 MB", 0 < mi.get("VmRSS", 0) < 32 * 1024, mb(mi.get("VmRSS")))
    if checks:
        both("")
        both("Issue #5 targets measurable here (the 3.5× PHP-FPM target needs ../shared/bench/bench.sh):")
        for x in checks:
            both("- " + x)
    print("\n".join(lines_txt))
    if a.markdown_out:
        with open(a.markdown_out, "w") as f:
            f.write("# Latest `bench/run.sh` results\n\n")
            f.write("Command: `%s`\n\n" % meta.get("command", "bench/run.sh"))
            f.write("\n".join(lines_md) + "\n")


# ------------------------------------------------------------------ other web servers

def front(a):
    """Starts one of the other web servers in front of usersd's socket with its
    shipped site (the e2e suite's helper, Tests/e2e/support/webservers.py), writes
    its port to --port-file and its pids to --pid-file, and stops it on TERM."""
    import signal
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "e2e", "support"))
    import webservers
    server = webservers.make_server(a.kind, a.run, a.socket)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    server.start()
    try:
        with open(a.pid_file, "w") as f:
            f.write(",".join(str(p) for p in [server.proc.pid] + children(server.proc.pid)))
        with open(a.port_file, "w") as f:
            f.write(str(server.port))
        while not stopping.wait(0.5):
            if server.proc.poll() is not None:
                print("front: %s exited: %s" % (a.kind, server.log_tail()), file=sys.stderr)
                return 1
    finally:
        server.stop()


# ------------------------------------------------------------------ main

def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("render-site")
    for k in ("site", "socket", "port", "prefix", "run", "bench", "locations-template"):
        s.add_argument("--" + k, required=True)
    s.add_argument("--keepalive", type=int, required=True)
    s.add_argument("--c-site", action="store_true")
    s.add_argument("--c-site-prefix", default="/c-site")
    s.add_argument("--usersd-auth", metavar="PREFIX", help="a copy of the shipped location for usersd-auth")
    s = sub.add_parser("users-json")
    s.add_argument("n", type=int)
    s.add_argument("out")
    s = sub.add_parser("seed-sql")
    s.add_argument("first", type=int)
    s.add_argument("last", type=int)
    s = sub.add_parser("expected")
    s.add_argument("n", type=int)
    s = sub.add_parser("notify-wait")
    s.add_argument("socket")
    s.add_argument("--timeout", type=float, default=60)
    s.add_argument("--pidfile")
    s = sub.add_parser("proc")
    s.add_argument("pid", type=int)
    s.add_argument("--kind")
    s.add_argument("--after-s", type=float)
    s = sub.add_parser("stream-mem")
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--url", required=True)
    s.add_argument("--nusers", type=int, required=True)
    s.add_argument("--insert-s", type=float)
    s.add_argument("--verify", action="store_true")
    s = sub.add_parser("measure")
    s.add_argument("--target", action="append", required=True, help="name=url_prefix=pid[,pid][=bearer token]")
    s.add_argument("--routes", required=True)
    s.add_argument("--port", required=True)
    s.add_argument("--nusers", type=int, required=True)
    s.add_argument("--conns", type=int, required=True)
    s.add_argument("--wrk-threads", type=int, required=True)
    s.add_argument("--wrk-timeout", required=True)
    s.add_argument("--duration", type=int, required=True)
    s.add_argument("--warmup", type=int, required=True)
    s.add_argument("--lua", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("--logdir", required=True)
    s.add_argument("--nginx-pid", type=int, required=True)
    s.add_argument("--db")
    s.add_argument("--auth-db", help="usersd-auth's database")
    s.add_argument("--results", required=True)
    s = sub.add_parser("front")
    for k in ("kind", "socket", "run", "port-file", "pid-file"):
        s.add_argument("--" + k, required=True)
    s = sub.add_parser("table")
    s.add_argument("results")
    s.add_argument("--markdown-out")
    a = p.parse_args()
    fn = {"render-site": render_site, "users-json": users_json, "seed-sql": seed_sql, "expected": expected,
          "notify-wait": notify_wait, "proc": proc, "stream-mem": stream_mem, "measure": measure,
          "table": table, "front": front}[a.cmd]
    sys.exit(fn(a) or 0)


if __name__ == "__main__":
    main()
