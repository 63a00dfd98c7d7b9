"""A FastCGI fuzzer that talks straight to usersd's unix socket (no nginx).

Every case is a list of byte chunks written to one fresh connection, then the
write side is shut down (so the server always sees EOF eventually) and the
answer is read until the server closes the connection. A case never waits on
the server forever: a server that neither answers nor closes within the case
timeout after EOF is reported as a hang.

Case families (all derived from one seed, so a run is reproducible):

  valid          well-formed requests of every route (the control group)
  truncated      a well-formed stream cut at a random byte, then EOF
  dropped        cut mid-record and the socket closed without reading (RST-ish)
  oversized      records of 65535 bytes, bodies over the 1 MiB limit, 64 KiB params
  version        records with a version other than 1
  type           records of unknown / server-to-client / management types
  role           BEGIN_REQUEST with roles other than RESPONDER, short BEGIN bodies
  nvlength       malformed name-value lengths: 4-byte lengths up to 0x7fffffff,
                 lengths past the end of the record / stream, and the
                 CVE-2025-23016 shape (name + value lengths that overflow a 32-bit
                 sum) -- Debian's libfcgi carries the fix; this is the regression
  noparams       params without REQUEST_METHOD / DOCUMENT_URI, or none at all
  content_length CONTENT_LENGTH lying in both directions, non-numeric, negative, huge
  stdin_long     stdin longer than declared, stdin after the empty end record
  abort          FCGI_ABORT_REQUEST before / during / after the request
  mpx            a second request id interleaved with the first (libfcgi does not
                 multiplex: it must refuse or ignore it, never mix them up)
  keepalive      several requests on one FCGI_KEEP_CONN connection, some malformed
  mutated        a valid stream with random bytes flipped / inserted / deleted
  random         random bytes
  chunked        a valid stream written one small random chunk at a time

    python3 Tests/e2e/support/fcgi_fuzz.py /path/to/usersd.sock --seed 1 --count 3000
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import harness

VERSION = 1
BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR, DATA = 1, 2, 3, 4, 5, 6, 7, 8
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
RESPONDER, AUTHORIZER, FILTER = 1, 2, 3
KEEP_CONN = 1

# --------------------------------------------------------------------------- encoding


def record(kind: int, request_id: int, content: bytes = b"", *, version: int = VERSION, padding: int | None = None,
           declared_length: int | None = None) -> bytes:
    """One record; `declared_length` lets the header lie about the content length."""
    if padding is None:
        padding = (8 - len(content) % 8) % 8
    length = len(content) if declared_length is None else declared_length
    return struct.pack("!BBHHBB", version & 0xFF, kind & 0xFF, request_id & 0xFFFF, length & 0xFFFF, padding & 0xFF, 0) + content + b"\0" * padding


def nv_length(n: int, force_long: bool = False) -> bytes:
    if n < 128 and not force_long:
        return bytes([n])
    return struct.pack("!I", (n & 0x7FFFFFFF) | 0x80000000)


def nv_pair(name: bytes, value: bytes) -> bytes:
    return nv_length(len(name)) + nv_length(len(value)) + name + value


def encode_params(params: dict) -> bytes:
    out = b""
    for name, value in params.items():
        n = name.encode() if isinstance(name, str) else name
        v = value.encode() if isinstance(value, str) else value
        out += nv_pair(n, v)
    return out


def stream_records(kind: int, request_id: int, data: bytes, chunk: int = 65535) -> bytes:
    """`data` as records of at most `chunk` bytes, then the empty end-of-stream record."""
    out = b""
    for start in range(0, len(data), chunk):
        out += record(kind, request_id, data[start : start + chunk])
    return out + record(kind, request_id, b"")


def begin(request_id: int = 1, role: int = RESPONDER, flags: int = 0) -> bytes:
    return record(BEGIN_REQUEST, request_id, struct.pack("!HB5x", role, flags))


def http_params(method: str, uri: str, body: bytes = b"", content_type: str = "application/json",
                content_length: str | None = None, extra: dict | None = None) -> dict:
    params = harness.stock_params(method, uri, body, content_type if body else "")
    if content_length is not None:
        params["CONTENT_LENGTH"] = content_length
    params.update(extra or {})
    return params


def request_bytes(params: dict | bytes, body: bytes = b"", request_id: int = 1, flags: int = 0,
                  params_chunk: int = 65535) -> bytes:
    encoded = params if isinstance(params, bytes) else encode_params(params)
    return begin(request_id, flags=flags) + stream_records(PARAMS, request_id, encoded, params_chunk) + stream_records(STDIN, request_id, body)


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    family: str
    index: int
    chunks: list[bytes]
    #: "response": a complete answer (END_REQUEST, a Status) is required;
    #: "any": whatever the server does, short of hanging, crashing or a 5xx.
    expect: str = "any"
    #: the statuses a "response" case may get (None: any < 500)
    statuses: tuple | None = None
    #: how many END_REQUEST records a "response" case needs (keep-alive cases > 1)
    responses: int = 1
    #: close the socket right after writing, without reading (a dropped client)
    drop: bool = False
    #: pause between chunks (seconds), for slow-writer cases
    pause: float = 0.0
    #: each chunk is one request on a kept connection: wait for its END_REQUEST before
    #: sending the next (what nginx does with fastcgi_keep_conn; it never pipelines)
    sequential: bool = False
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.family}#{self.index}" + (f" ({self.note})" if self.note else "")


@dataclass
class Outcome:
    case: Case
    kind: str  # "closed" (server closed after answering or not) | "hang" | "reset" | "error"
    statuses: list[int] = field(default_factory=list)
    end_requests: list[tuple[int, int, int]] = field(default_factory=list)  # (request id, app status, protocol status)
    record_types: list[int] = field(default_factory=list)
    stdout: bytes = b""
    elapsed: float = 0.0
    detail: str = ""

    def problems(self) -> list[str]:
        """What is wrong with this outcome, per the case's expectation."""
        found = []
        if self.kind == "hang":
            found.append(f"hang: no answer and no close within the timeout ({self.detail})")
        if self.kind == "error":
            found.append(f"malformed answer: {self.detail}")
        if any(status >= 500 for status in self.statuses):
            found.append(f"5xx status {self.statuses}")
        if self.case.expect == "response" and not self.case.drop:
            complete = [e for e in self.end_requests if e[2] == 0]
            if len(complete) < self.case.responses or len(self.statuses) < self.case.responses:
                found.append(f"expected {self.case.responses} complete answer(s), got ends={self.end_requests} statuses={self.statuses} kind={self.kind} {self.detail}")
            elif self.case.statuses is not None and any(s not in self.case.statuses for s in self.statuses[: self.case.responses]):
                found.append(f"status {self.statuses} not in {self.case.statuses}")
        return found


ROUTES_GET = ["/healthz", "/users?limit=3", "/user/1", "/users/1", "/tasks?limit=2", "/tasks/1", "/nope", "/user/abc", "/users/999999999"]


def _random_text(rng: random.Random, n: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz ÄéΩ✓😀'\";--<>%\\\u200f"
    return "".join(rng.choice(alphabet) for _ in range(n))


def _valid_request(rng: random.Random, i: int, unique: str) -> tuple[bytes, tuple]:
    """A well-formed request and the statuses it may get."""
    choice = rng.randrange(6)
    if choice == 0:
        uri = rng.choice(ROUTES_GET)
        return request_bytes(http_params("GET", uri)), (200, 404)
    if choice == 1:
        body = json.dumps({"name": _random_text(rng, rng.randint(1, 20)), "email": f"fz{unique}-{i}@example.com"}).encode()
        return request_bytes(http_params("POST", "/add-user", body), body), (201, 409, 422)
    if choice == 2:
        body = json.dumps({"name": _random_text(rng, 60), "email": "x"}).encode()
        return request_bytes(http_params("POST", "/users", body), body), (422,)
    if choice == 3:
        return request_bytes(http_params("PUT", "/users")), (405,)
    if choice == 4:
        body = b'{"kind": "sleep", "seconds": 0.01}'
        return request_bytes(http_params("POST", "/tasks", body), body), (202,)
    return request_bytes(http_params("HEAD", "/healthz")), (200,)


def generate(seed: int, count: int, unique: str = "", overflow: bool = True) -> list[Case]:
    """`count` cases, deterministically from `seed` (each case from its own sub-seed).
    `overflow=False` leaves out the OVERFLOW_LENGTHS shapes (for a run that must not
    stop at the first crash they cause; test them on their own)."""
    families = [
        ("valid", 8), ("truncated", 10), ("dropped", 6), ("oversized", 4), ("version", 5), ("type", 7), ("role", 4),
        ("nvlength", 10), ("noparams", 5), ("content_length", 7), ("stdin_long", 5), ("abort", 6), ("mpx", 6),
        ("keepalive", 5), ("mutated", 12), ("random", 6), ("chunked", 4),
    ]
    names = [name for name, weight in families for _ in range(weight)]
    master = random.Random(seed)
    cases = []
    for i in range(count):
        rng = random.Random(master.getrandbits(64))
        family = names[i % len(names)] if i < len(names) else rng.choice(names)
        builder = BUILDERS[family]
        if family == "nvlength":
            cases.append(builder(rng, i, unique or str(seed), overflow))
        else:
            cases.append(builder(rng, i, unique or str(seed)))
    return cases


def _valid(rng, i, unique):
    data, statuses = _valid_request(rng, i, unique)
    return Case("valid", i, [data], expect="response", statuses=statuses)


def _truncated(rng, i, unique):
    data, _ = _valid_request(rng, i, unique)
    cut = rng.randrange(1, len(data))
    return Case("truncated", i, [data[:cut]], note=f"cut at {cut}/{len(data)}")


def _dropped(rng, i, unique):
    data, _ = _valid_request(rng, i, unique)
    cut = rng.randrange(1, len(data))
    return Case("dropped", i, [data[:cut]], drop=True, note=f"dropped at {cut}/{len(data)}")


def _oversized(rng, i, unique):
    variant = rng.randrange(5)
    if variant == 0:  # a 2 MiB body without CONTENT_LENGTH: 413 after discarding
        body = b"{" + b" " * (2 * 1024 * 1024) + b"}"
        return Case("oversized", i, [request_bytes(http_params("POST", "/add-user", body, content_length=""), body)],
                    expect="response", statuses=(413,), note="2 MiB body, no length")
    if variant == 1:  # declared over the limit: 413 without reading it all
        body = b"x" * 70000
        return Case("oversized", i, [request_bytes(http_params("POST", "/add-user", body, content_length=str(5 * 1024 * 1024)), body)],
                    expect="response", statuses=(413,), note="declared 5 MiB")
    if variant == 2:  # 135 KB of header values split over params records: over usersd's 64 KiB limit
        params = http_params("GET", "/healthz", extra={"HTTP_X_BIG": "v" * 65000, "HTTP_X_BIG2": "w" * 70000})
        return Case("oversized", i, [request_bytes(params, params_chunk=rng.choice([65535, 4096, 7]))],
                    expect="response", statuses=(431,), note="huge params")
    if variant == 3:  # thousands of params (about 36 KB: under the 64 KiB limit)
        extra = {f"HTTP_X_H{n}": str(n) for n in range(2000)}
        return Case("oversized", i, [request_bytes(http_params("GET", "/healthz", extra=extra))], expect="response", statuses=(200,),
                    note="2000 params")
    # a record that claims 65535 bytes with 255 bytes of padding, content random
    content = rng.randbytes(65535)
    return Case("oversized", i, [begin() + record(PARAMS, 1, content, padding=255)], note="65535-byte params record of garbage")


def _version(rng, i, unique):
    data, _ = _valid_request(rng, i, unique)
    version = rng.choice([0, 2, 3, 0x7F, 0xFF])
    where = rng.randrange(3)
    if where == 0:  # the first record
        data = bytes([version]) + data[1:]
    else:  # a later record: find a record boundary
        offsets = _record_offsets(data)
        at = offsets[min(len(offsets) - 1, rng.randrange(1, max(2, len(offsets))))]
        data = data[:at] + bytes([version]) + data[at + 1 :]
    return Case("version", i, [data], note=f"version {version} in record {where}")


def _record_offsets(data: bytes) -> list[int]:
    offsets, at = [], 0
    while at + 8 <= len(data):
        offsets.append(at)
        _, _, _, length, padding, _ = struct.unpack("!BBHHBB", data[at : at + 8])
        at += 8 + length + padding
    return offsets


def _type(rng, i, unique):
    variant = rng.randrange(6)
    data, statuses = _valid_request(rng, i, unique)
    if variant == 0:  # an unknown type before the request (request id 1)
        kind = rng.choice([0, 12, 13, 99, 200, 255])
        return Case("type", i, [record(kind, 1, rng.randbytes(rng.randrange(0, 40))) + data], note=f"type {kind} first")
    if variant == 1:  # a management record (request id 0): GET_VALUES must be answered, others UNKNOWN_TYPE
        names = encode_params({"FCGI_MAX_CONNS": "", "FCGI_MAX_REQS": "", "FCGI_MPXS_CONNS": ""})
        kind = rng.choice([GET_VALUES, 0, 12, 99, 255, UNKNOWN_TYPE])
        # libfcgi answers GET_VALUES_RESULT / UNKNOWN_TYPE; what follows on that connection
        # is its business (nginx never sends management records).
        return Case("type", i, [record(kind, 0, names) + data], note=f"management type {kind}")
    if variant == 2:  # server-to-client types sent by the client, mid-request
        kind = rng.choice([END_REQUEST, STDOUT, STDERR, GET_VALUES_RESULT, UNKNOWN_TYPE, DATA])
        offsets = _record_offsets(data)
        at = rng.choice(offsets[1:] or [0])
        return Case("type", i, [data[:at] + record(kind, 1, rng.randbytes(rng.randrange(0, 24))) + data[at:]], note=f"type {kind} mid")
    if variant == 3:  # a request that begins with something other than BEGIN_REQUEST
        kind = rng.choice([PARAMS, STDIN, DATA, ABORT_REQUEST])
        return Case("type", i, [record(kind, 1, b"abc") + data], note=f"{kind} before begin")
    if variant == 4:  # two BEGIN_REQUESTs for the same id
        return Case("type", i, [begin() + data], note="double begin")
    # a GET_VALUES with garbage content
    return Case("type", i, [record(GET_VALUES, 0, rng.randbytes(rng.randrange(1, 64)))], note="garbage GET_VALUES")


def _role(rng, i, unique):
    variant = rng.randrange(3)
    data, _ = _valid_request(rng, i, unique)
    if variant == 0:
        role = rng.choice([0, AUTHORIZER, FILTER, 4, 0xFFFF])
        return Case("role", i, [begin(role=role) + data[16:]], note=f"role {role}")
    if variant == 1:  # a BEGIN_REQUEST body shorter / longer than 8 bytes
        body = rng.randbytes(rng.choice([0, 1, 3, 7, 9, 16, 200]))
        return Case("role", i, [record(BEGIN_REQUEST, 1, body) + data[16:]], note=f"begin body {len(body)} bytes")
    flags = rng.choice([0xFF, 0x80, 0x02])
    return Case("role", i, [begin(flags=flags) + data[16:]], expect="response", note=f"flags {flags:#x}")


#: Name/value length pairs whose sum + 2 overflows a signed or unsigned 32-bit int
#: (libfcgi's ReadParams allocates nameLen + valueLen + 2 bytes).
OVERFLOW_LENGTHS = [
    (0x7FFFFFFF, 0x7FFFFFFF),  # sum wraps to 0 (the CVE's heap overflow shape)
    (0x7FFFFFFE, 0x7FFFFFFF),
    (0x7FFFFFFF, 0x7FFFFFFD),
    (0x7FFFFFFF, 1),  # signed overflow
    (1, 0x7FFFFFFF),
    (0x40000000, 0x40000000),
    (0x7FFFFFF0, 0x10),
    (0x3FFFFFFF, 0x3FFFFFFF),
    (0x7FFFFFFE, 0),  # one length alone: + 2 is 2^31
    (0x10000000, 0x70000000),
]
#: Huge lengths whose sum does not overflow (a large allocation, then EOF).
HUGE_LENGTHS = [(0x50000000, 0), (0x7FFFFFFD, 0), (0, 0x7FFFFFFD), (0x20000000, 0x20000000), (0x7FFFFFFF, 0x7FFFFFFF)]


def _nvlength(rng, i, unique, overflow=True):
    variant = rng.randrange(8)
    tail = encode_params(http_params("GET", "/healthz"))
    if variant == 0:  # CVE-2025-23016: lengths whose 32-bit sum (+2) overflows
        name_len, value_len = rng.choice(OVERFLOW_LENGTHS if overflow else HUGE_LENGTHS)
        content = nv_length(name_len, True) + nv_length(value_len, True) + rng.randbytes(rng.randrange(0, 4000))
        note = f"CVE-2025-23016 shape {name_len:#x}+{value_len:#x}"
    elif variant == 1:  # a length past the end of the params stream
        content = tail + nv_length(rng.randrange(200, 70000), True) + nv_length(5) + b"NAMEvalue"
        note = "length past end"
    elif variant == 2:  # a 4-byte length cut short by the end of the record / stream
        content = tail + bytes([0x80, 0x00])
        note = "short 4-byte length"
    elif variant == 3:  # huge value length, then nothing
        content = nv_length(4) + nv_length(0x7FFFFFFF, True) + b"HTTP"
        note = "value 0x7fffffff"
    elif variant == 4:  # zero-length names and values, names without '='
        content = nv_pair(b"", b"") * rng.randrange(1, 50) + nv_pair(b"", b"x") + nv_pair(b"X", b"") + tail
        note = "empty names"
    elif variant == 5:  # NUL bytes and '=' inside names and values
        content = nv_pair(b"HTTP_A\0B", b"v\0w") + nv_pair(b"REQUEST_METHOD=POST", b"GET") + nv_pair(b"HTTP_=", b"==") + tail
        note = "NULs and '='"
    elif variant == 6:  # lengths in the 1-byte form with the high bit pattern of the 4-byte form
        content = bytes([0x80]) + tail
        note = "lone high-bit byte"
    else:  # random length bytes
        content = rng.randbytes(rng.randrange(1, 16)) + tail
        note = "random length bytes"
    chunks = begin() + stream_records(PARAMS, 1, content, chunk=rng.choice([65535, 1000, 13])) + stream_records(STDIN, 1, b"")
    return Case("nvlength", i, [chunks], note=note)


def _noparams(rng, i, unique):
    variant = rng.randrange(4)
    if variant == 0:
        params = {}
    elif variant == 1:
        params = http_params("GET", "/healthz")
        del params["REQUEST_METHOD"]
    elif variant == 2:
        params = {"REQUEST_METHOD": rng.choice(["", "get", "G E T", "X" * 5000, "DELETE\r\nX: y", "\u00e9"])}
    else:
        params = http_params("GET", "/healthz")
        for key in ("DOCUMENT_URI", "REQUEST_URI", "SCRIPT_NAME"):
            params.pop(key)
    return Case("noparams", i, [request_bytes(params)], expect="response", note=f"variant {variant}")


def _content_length(rng, i, unique):
    body = json.dumps({"name": "cl", "email": f"cl{unique}-{i}@example.com"}).encode()
    declared = rng.choice([
        "0", "1", str(len(body) - 5), str(len(body) + 100), str(len(body) * 1000), "-1", "-99999999999", "abc", " 12",
        "99999999999999999999999", "0x10", "1e3", str(1024 * 1024), str(1024 * 1024 + 1), "",
    ])
    params = http_params("POST", "/add-user", body, content_length=declared)
    return Case("content_length", i, [request_bytes(params, body)], expect="response", note=f"CONTENT_LENGTH={declared!r} real={len(body)}")


def _stdin_long(rng, i, unique):
    body = json.dumps({"name": "sl", "email": f"sl{unique}-{i}@example.com"}).encode()
    variant = rng.randrange(3)
    if variant == 0:  # more stdin than declared
        params = http_params("POST", "/add-user", body, content_length=str(len(body) // 2))
        return Case("stdin_long", i, [request_bytes(params, body + b" " * rng.randrange(1, 5000))], expect="response", note="more than declared")
    if variant == 1:  # stdin records after the empty end-of-stdin record
        data = request_bytes(http_params("POST", "/add-user", body), body) + record(STDIN, 1, b"trailing") + record(STDIN, 1, b"")
        return Case("stdin_long", i, [data], expect="response", note="stdin after end")
    # DATA records (FILTER role only) for a responder
    data = request_bytes(http_params("GET", "/healthz")) + stream_records(DATA, 1, b"data" * 100)
    return Case("stdin_long", i, [data], expect="response", note="DATA stream")


def _abort(rng, i, unique):
    data, _ = _valid_request(rng, i, unique)
    offsets = _record_offsets(data)
    at = rng.choice(offsets + [len(data)])
    abort = record(ABORT_REQUEST, rng.choice([1, 1, 2, 0]))
    return Case("abort", i, [data[:at] + abort + data[at:]], note=f"abort at {at}/{len(data)}")


def _mpx(rng, i, unique):
    one, statuses = _valid_request(rng, i, unique)
    other_id = rng.choice([2, 3, 0xFFFF])
    two = request_bytes(http_params("GET", "/healthz"), request_id=other_id)
    a, b = _record_offsets(one), _record_offsets(two)
    # interleave the records of both requests
    merged, x, y = b"", 0, 0
    pieces_one = [one[s : (a + [len(one)])[k + 1]] for k, s in enumerate(a)]
    pieces_two = [two[s : (b + [len(two)])[k + 1]] for k, s in enumerate(b)]
    while x < len(pieces_one) or y < len(pieces_two):
        if y >= len(pieces_two) or (x < len(pieces_one) and rng.random() < 0.5):
            merged += pieces_one[x]
            x += 1
        else:
            merged += pieces_two[y]
            y += 1
    return Case("mpx", i, [merged], note=f"ids 1 and {other_id}")


def _keepalive(rng, i, unique):
    n = rng.randrange(2, 6)
    chunks, good = [], 0
    pipelined = rng.random() < 0.2
    for k in range(n):
        if rng.random() < 0.25:
            part, _ = _valid_request(rng, i * 10 + k, unique)
            chunks.append(part[: rng.randrange(1, len(part))])  # a broken one ends the connection
            break
        chunks.append(request_bytes(http_params("GET", rng.choice(ROUTES_GET)), flags=KEEP_CONN))
        good += 1
    if pipelined:
        # Several requests written at once: libfcgi may drop what follows the first
        # (nginx never pipelines on a FastCGI connection); it must not hang or crash.
        return Case("keepalive", i, [b"".join(chunks)], note=f"{len(chunks)} pipelined")
    return Case("keepalive", i, chunks, expect="response" if good else "any", responses=good, statuses=(200, 404),
                sequential=True, note=f"{good} requests then {'a broken one' if len(chunks) > good else 'EOF'}")


def _mutated(rng, i, unique):
    data = bytearray(_valid_request(rng, i, unique)[0])
    for _ in range(rng.randrange(1, 8)):
        op = rng.randrange(3)
        at = rng.randrange(len(data))
        if op == 0:
            data[at] = rng.randrange(256)
        elif op == 1:
            data[at:at] = rng.randbytes(rng.randrange(1, 16))
        else:
            del data[at : at + rng.randrange(1, 16)]
    return Case("mutated", i, [bytes(data)])


def _random(rng, i, unique):
    n = rng.choice([1, 7, 8, 9, 64, 1000, 70000])
    return Case("random", i, [rng.randbytes(n)], note=f"{n} bytes")


def _chunked(rng, i, unique):
    data, statuses = _valid_request(rng, i, unique)
    chunks, at = [], 0
    while at < len(data):
        size = rng.choice([1, 1, 2, 3, 7, 8, 9, 100])
        chunks.append(data[at : at + size])
        at += size
    return Case("chunked", i, chunks[:400] + [b"".join(chunks[400:])], expect="response", statuses=statuses, pause=0.0)


BUILDERS = {
    "valid": _valid, "truncated": _truncated, "dropped": _dropped, "oversized": _oversized, "version": _version,
    "type": _type, "role": _role, "nvlength": _nvlength, "noparams": _noparams, "content_length": _content_length,
    "stdin_long": _stdin_long, "abort": _abort, "mpx": _mpx, "keepalive": _keepalive, "mutated": _mutated,
    "random": _random, "chunked": _chunked,
}

# --------------------------------------------------------------------------- running


def _parse_answer(data: bytes, outcome: Outcome) -> None:
    at = 0
    stdout: dict[int, bytes] = {}
    while at + 8 <= len(data):
        version, kind, request_id, length, padding, _ = struct.unpack("!BBHHBB", data[at : at + 8])
        if version != VERSION:
            outcome.kind, outcome.detail = "error", f"answer record with version {version}"
            return
        content = data[at + 8 : at + 8 + length]
        if len(content) < length:
            outcome.detail = f"answer cut inside a record ({len(data) - at} of {8 + length + padding} bytes)"
            break
        outcome.record_types.append(kind)
        if kind == STDOUT:
            stdout[request_id] = stdout.get(request_id, b"") + content
        elif kind == END_REQUEST:
            app_status, protocol_status = struct.unpack("!IB3x", content[:8]) if len(content) >= 8 else (-1, -1)
            outcome.end_requests.append((request_id, app_status, protocol_status))
            out = stdout.pop(request_id, b"")
            outcome.stdout += out
            status = _status_of(out)
            if status is not None:
                outcome.statuses.append(status)
        at += 8 + length + padding
    else:
        if at != len(data):
            outcome.detail = f"{len(data) - at} trailing bytes after the last record"


def _status_of(stdout: bytes) -> int | None:
    if not stdout:
        return None
    head = stdout.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"status:"):
            try:
                return int(line.split(b":", 1)[1].split()[0])
            except (ValueError, IndexError):
                return -1
    return 200


def records(data: bytes) -> tuple[list[tuple[int, int, bytes]], int]:
    """(type, request id, content) of each complete record in `data`, and the number
    of bytes they take (any rest is a record still arriving)."""
    found, at = [], 0
    while at + 8 <= len(data):
        _, kind, request_id, length, padding, _ = struct.unpack("!BBHHBB", data[at : at + 8])
        if at + 8 + length + padding > len(data):
            break
        found.append((kind, request_id, data[at + 8 : at + 8 + length]))
        at += 8 + length + padding
    return found, at


def count_ends(data: bytes) -> int:
    return sum(kind == END_REQUEST for kind, _, _ in records(data)[0])


def _read_until_ends(sock: socket.socket, previous: bytes, ends: int, timeout: float) -> bytes:
    """Reads until the answer so far holds `ends` END_REQUEST records, EOF or the timeout."""
    got = b""
    deadline = time.monotonic() + timeout
    while count_ends(previous + got) < ends and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        got += chunk
    return got


def run_case(socket_path: str, case: Case, timeout: float = 10.0) -> Outcome:
    outcome = Outcome(case, "closed")
    start = time.monotonic()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
        answer = b""
        try:
            for number, chunk in enumerate(case.chunks, 1):
                sock.sendall(chunk)
                if case.pause:
                    time.sleep(case.pause)
                if case.sequential and number <= case.responses:
                    answer += _read_until_ends(sock, answer, number, timeout)
        except (BrokenPipeError, ConnectionResetError) as error:
            # The server gave up on the stream early (e.g. after a protocol error): fine.
            outcome.detail = f"write: {error.__class__.__name__}"
        if case.drop:
            # A client that vanishes: RST instead of FIN when unread data is pending.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            outcome.elapsed = time.monotonic() - start
            return outcome
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome.kind, outcome.detail = "hang", f"{len(answer)} bytes of answer, no close"
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                outcome.kind, outcome.detail = "hang", f"{len(answer)} bytes of answer, no close"
                break
            except ConnectionResetError:
                outcome.kind = "reset"
                break
            if not chunk:
                break
            answer += chunk
        _parse_answer(answer, outcome)
    except OSError as error:
        outcome.kind, outcome.detail = "error", f"connect/IO: {error!r}"
    finally:
        sock.close()
    outcome.elapsed = time.monotonic() - start
    return outcome


def run_cases(socket_path: str, cases: list[Case], parallel: int = 8, timeout: float = 10.0) -> list[Outcome]:
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(lambda case: run_case(socket_path, case, timeout), cases))


def hold_connections(socket_path: str, count: int, hold: float, seed: int = 0) -> list[Outcome]:
    """`count` connections open at once: each writes a partial request, waits until all
    are open plus `hold` seconds, then either completes it (and must get an answer) or
    drops it. Returns the outcomes of the completed ones."""
    rng = random.Random(seed)
    barrier = threading.Barrier(count + 1)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def one(k: int) -> None:
        complete = k % 3 != 0
        data = request_bytes(http_params("GET", "/healthz"))
        cut = rng.randrange(1, len(data))
        case = Case("parallel", k, [data], expect="response" if complete else "any", statuses=(200,), drop=not complete)
        outcome = Outcome(case, "closed")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        try:
            sock.connect(socket_path)
            sock.sendall(data[:cut])
        except OSError as error:
            outcome.kind, outcome.detail = "error", f"connect: {error!r}"
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass
        time.sleep(hold)
        try:
            if outcome.kind != "error":
                if complete:
                    sock.sendall(data[cut:])
                    sock.shutdown(socket.SHUT_WR)
                    answer = b""
                    while True:
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        answer += chunk
                    _parse_answer(answer, outcome)
                else:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except socket.timeout:
            outcome.kind, outcome.detail = "hang", "no answer within 30 s"
        except OSError as error:
            outcome.kind, outcome.detail = "error", repr(error)
        finally:
            sock.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(count)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:
        pass
    for thread in threads:
        thread.join(90)
    return outcomes


def summarize(outcomes: list[Outcome]) -> dict:
    by_family: dict[str, dict] = {}
    for outcome in outcomes:
        entry = by_family.setdefault(outcome.case.family, {"cases": 0, "answered": 0, "problems": 0})
        entry["cases"] += 1
        entry["answered"] += bool(outcome.end_requests)
        entry["problems"] += bool(outcome.problems())
    return by_family


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("socket")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--no-overflow", action="store_true", help="leave out the CVE-2025-23016 overflow shapes")
    args = parser.parse_args()
    start = time.monotonic()
    outcomes = run_cases(args.socket, generate(args.seed, args.count, overflow=not args.no_overflow), args.parallel)
    bad = [(o.case.label, o.problems()) for o in outcomes if o.problems()]
    for label, problems in bad[:50]:
        print(label, problems)
    print(json.dumps(summarize(outcomes), indent=1))
    print(f"{len(outcomes)} cases in {time.monotonic() - start:.1f}s, {len(bad)} with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
