"""What a client sends reaches usersd's log escaped, through the shipped nginx site.

nginx percent-decodes the path into DOCUMENT_URI, so `%C2%9B` arrives as the C1
control U+009B (CSI, `ESC [` to terminals that honour 8-bit controls) and
`%E2%80%AE` as U+202E (RIGHT-TO-LEFT OVERRIDE, which reorders what journalctl or a
terminal shows after it). usersd's access line must carry them as `\\u{9b}` and
`\\u{202e}`, keep the request on one line, and never write their raw bytes.
"""

from __future__ import annotations

import re
import time

import pytest

from apiclient import TIMEOUT, expect_error, expect_json
from conftest import unique_email

CSI, RLO = "\u009b", "\u202e"
RAW = {"U+009B": b"\xc2\x9b", "U+202E": b"\xe2\x80\xae"}

#: More scalars that must not reach the log raw: (percent-encoded UTF-8, escaped form).
SPECIALS = {
    "NEL U+0085": ("%C2%85", "\\u{85}"),
    "APC U+009F": ("%C2%9F", "\\u{9f}"),
    "ALM U+061C": ("%D8%9C", "\\u{61c}"),
    "LRM U+200E": ("%E2%80%8E", "\\u{200e}"),
    "RLM U+200F": ("%E2%80%8F", "\\u{200f}"),
    "LS U+2028": ("%E2%80%A8", "\\u{2028}"),
    "PS U+2029": ("%E2%80%A9", "\\u{2029}"),
    "LRE U+202A": ("%E2%80%AA", "\\u{202a}"),
    "RLI U+2067": ("%E2%81%A7", "\\u{2067}"),
    "PDI U+2069": ("%E2%81%A9", "\\u{2069}"),
    "ESC U+001B": ("%1B", "\\u{1b}"),
}

ACCESS_LINE = re.compile(
    r'ts=\S+ level=(info|warning) msg=request request_id=(?P<id>[0-9a-f]{32}) method=(?P<method>[A-Z]+) '
    r'path=(?P<path>"(?:[^"\\]|\\.)*"|\S+) status=(?P<status>\d{3}) duration_ms=\d+\.\d{3}'
)


def access_line(stack, request_id: str, timeout: float = 10.0) -> str:
    """The one log line of the request `request_id`, as soon as usersd has written it."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in stack.service.log_text().split("\n") if f"request_id={request_id}" in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 1, f"expected one access line for {request_id}, got {lines}\n{stack.service.log_tail()}"
    return lines[0]


def assert_no_raw_specials(stack) -> None:
    log = stack.service.log_path.read_bytes()
    for name, raw in RAW.items():
        assert raw not in log, f"{name} reached the log raw:\n{stack.service.log_tail()}"


def test_a_path_with_csi_and_rlo_is_logged_escaped_on_one_line(api, http):
    response = http.get(api.url("/user/7%C2%9B2J%E2%80%AEfdp"), timeout=TIMEOUT)
    expect_error(response, 404, message="User not found")
    line = access_line(api, response.headers["X-Request-Id"])
    match = ACCESS_LINE.fullmatch(line)
    assert match, f"not one whole access line: {line!r}"
    assert match["path"] == '"/user/7\\u{9b}2J\\u{202e}fdp"', line
    assert match["status"] == "404" and match["method"] == "GET"
    assert_no_raw_specials(api)


def test_a_name_with_csi_and_rlo_is_stored_as_sent_and_never_logged_raw(api, http):
    """usersd logs no user's name; the name is kept as sent, and its raw bytes do not
    reach the log by any field of the request's line."""
    name = f"Eve{CSI}31m{RLO}nimda"
    response = http.post(
        api.url("/add-user"), json={"name": name, "email": unique_email("esc")}, timeout=TIMEOUT
    )
    user = expect_json(response, 201)["user"]
    assert user["name"] == name
    assert expect_json(http.get(api.url(f"/user/{user['id']}"), timeout=TIMEOUT), 200)["name"] == name
    match = ACCESS_LINE.fullmatch(access_line(api, response.headers["X-Request-Id"]))
    assert match and match["method"] == "POST" and match["path"] == "/add-user" and match["status"] == "201"
    assert_no_raw_specials(api)


def test_a_post_to_a_path_with_csi_and_rlo_is_logged_escaped(api, http):
    response = http.post(
        api.url("/add-user%C2%9B%E2%80%AE"), json={"name": f"x{CSI}{RLO}", "email": unique_email("esc")},
        timeout=TIMEOUT,
    )
    expect_error(response, 404)
    match = ACCESS_LINE.fullmatch(access_line(api, response.headers["X-Request-Id"]))
    assert match and match["method"] == "POST" and match["path"] == '"/add-user\\u{9b}\\u{202e}"', match
    assert_no_raw_specials(api)


def test_a_request_id_header_with_csi_and_rlo_is_not_logged(api, http):
    """nginx sends its own `$request_id`; a client's X-Request-Id with the raw bytes
    does not reach the log."""
    header = b"id" + RAW["U+009B"] + b"x" + RAW["U+202E"]
    response = http.get(api.url("/healthz"), headers={"X-Request-Id": header}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-Id"].encode() != header
    assert ACCESS_LINE.fullmatch(access_line(api, response.headers["X-Request-Id"]))
    assert_no_raw_specials(api)


@pytest.mark.parametrize("encoded,escaped", list(SPECIALS.values()), ids=list(SPECIALS))
def test_other_controls_separators_and_bidi_marks_are_escaped(api, http, encoded, escaped):
    response = http.get(api.url(f"/user/1{encoded}2"), timeout=TIMEOUT)
    expect_error(response, 404)
    line = access_line(api, response.headers["X-Request-Id"])
    match = ACCESS_LINE.fullmatch(line)
    assert match, f"not one whole access line: {line!r}"
    assert match["path"] == f'"/user/1{escaped}2"', line


def test_ordinary_non_ascii_text_in_a_path_stays_readable(api, http):
    text = "café-😀-שלום"
    response = http.get(api.url(f"/user/{text}"), timeout=TIMEOUT)
    expect_error(response, 404)
    line = access_line(api, response.headers["X-Request-Id"])
    assert f'path="/user/{text}"' in line, line
