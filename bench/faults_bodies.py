"""Hostile bodies (faults scenario 11): 20 MB bodies declared and chunked, malformed and deeply
nested JSON, XXE and entity expansion, wrong content types, at the API and both webhook endpoints."""

from __future__ import annotations

import json
import socket
import uuid
from urllib.parse import urlsplit

from bench.faults_common import Answers, Context, Outcome, make_tokens
from bench.faults_hostile import Probe, _counts, _hubspot_headers
from bench.stack import WEBHOOK_TOKEN


def raw_post(url: str, headers: dict[str, str], body_chunks, *, chunked: bool = False) -> tuple[int | None, bytes]:
    """POST over a bare socket, streaming the body, and read the answer even when the server
    answered early and stopped reading (a 413 for a 20 MB body). (status, body)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = [f"POST {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1", f"Host: {parts.netloc}",
            "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    if chunked:
        head.append("Transfer-Encoding: chunked")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    try:
        for chunk in body_chunks:
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server stopped reading: its answer is waiting in our receive buffer
    data = b""
    try:
        while part := sock.recv(65536):
            data += part
    except OSError:
        pass
    finally:
        sock.close()
    if not data.startswith(b"HTTP/"):
        return None, data
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head_bytes.lower():
        body = _unchunk(body)
    return int(head_bytes.split(b" ", 2)[1]), body


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + rest[:size], rest[size + 2 :]
    return out


def bad_bodies(ctx: Context) -> Outcome:
    """20 MB bodies (declared and chunked), malformed and deeply nested JSON, XXE and entity
    expansion, and wrong content types, at the API and both webhook endpoints: each gets a 4xx
    JSON error, nothing is stored, nothing answers 5xx."""
    stack, outcome = ctx.stack, Outcome("oversized_malformed_xxe_bodies")
    answers = Answers()
    token = make_tokens(stack, 1)[0]
    auth = {"Authorization": f"Bearer {token}"}
    probe = Probe(stack, outcome, answers)
    before = _counts(stack)
    big = 20 * 1024 * 1024
    mb = b"x" * (1024 * 1024)
    json_head = b'{"email": "big@faults.example.com", "first_name": "'
    oversized = {
        "api 20 MB": ("/contacts", {**auth, "Content-Type": "application/json"}),
        "hubspot 20 MB": ("/webhooks/hubspot", {"Content-Type": "application/json"}),
        "salesforce 20 MB": (f"/webhooks/salesforce?token={WEBHOOK_TOKEN}", {"Content-Type": "text/xml"}),
    }
    for name, (path, headers) in oversized.items():
        for chunked in (False, True):
            label = f"{name}{' chunked' if chunked else ''}"
            sized = headers if chunked else {**headers, "Content-Length": str(big)}
            status, body = raw_post(stack.api_url + path, sized, [json_head] + [mb] * 20, chunked=chunked)
            probe.results[label] = status or "no answer"
            ok = status == 413
            outcome.check(ok, f"{label}: {status}, wanted 413")
            outcome.check(_is_json_error(body), f"{label}: error body is not the JSON error shape: {body[:120]!r}")
            if status and status >= 500:
                answers.unexpected.append(f"{label} -> {status}")
    jheaders = {**auth, "Content-Type": "application/json"}
    for name, data in {
        "api truncated JSON": b'{"email": "a@faults.example.com", "first_na',
        "api invalid UTF-8": b'{"email": "\xff\xfe@faults.example.com"}',
        "api JSON array": b'[{"email": "a@faults.example.com"}]',
        "api nested 100k deep": b"[" * 100_000 + b"]" * 100_000,
        "api NaN": b'{"email": "a@faults.example.com", "first_name": NaN}',
        "api empty body": b"",
    }.items():
        probe.send(name, "POST", "/contacts", 400, data=data, headers=jheaders)
    for name, ctype in {"api text/plain": "text/plain", "api form": "application/x-www-form-urlencoded",
                        "api XML": "application/xml"}.items():  # fmt: skip
        probe.send(name, "POST", "/contacts", 415, data=b"email=a@faults.example.com",
                   headers={**auth, "Content-Type": ctype})  # fmt: skip
    plain = {"Content-Type": "text/plain"}
    probe.send("hubspot text/plain", "POST", "/webhooks/hubspot", 415, data=b"[]", headers=plain)
    hs_url = stack.api_url + "/webhooks/hubspot"
    garbage = b'[{"eventId": 1, "subscriptionType": '
    probe.send("hubspot signed garbage", "POST", "/webhooks/hubspot", 400, data=garbage,
               headers=_hubspot_headers(hs_url, garbage))  # fmt: skip
    sf = f"/webhooks/salesforce?token={WEBHOOK_TOKEN}"
    xml = {"Content-Type": "text/xml"}
    xxe = (b'<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
           b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>&xxe;'
           b"</soapenv:Body></soapenv:Envelope>")  # fmt: skip
    laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              + b"".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'.encode()
                         for i in range(1, 10))
              + b"]><lolz>&lol9;</lolz>")  # fmt: skip
    for name, data in {"salesforce XXE": xxe, "salesforce billion laughs": laughs,
                       "salesforce malformed XML": b"<soapenv:Envelope><unclosed>",
                       "salesforce not SOAP": b"<hello>world</hello>"}.items():  # fmt: skip
        probe.send(name, "POST", sf, 400, data=data, headers=xml)
    probe.send("salesforce text/plain", "POST", sf, 415, data=b"hi", headers={"Content-Type": "text/plain"})
    probe.send("salesforce JSON no signature", "POST", "/webhooks/salesforce", 401, data=b'{"events": []}',
               headers={"Content-Type": "application/json"})  # fmt: skip
    after = _counts(stack)
    outcome.check(after == before, f"hostile bodies stored something: {before} -> {after}")
    # Not hostile, and after the count (its sync echoes back as webhook events): a small valid
    # body sent chunked, without Content-Length, is read whole and creates the contact.
    status, body = raw_post(
        stack.api_url + "/contacts",
        {**auth, "Content-Type": "application/json"},
        [b'{"email": "chunked-', uuid.uuid4().hex[:8].encode(), b'@faults.example.com"}'],
        chunked=True,
    )
    outcome.details["small_chunked_json_post"] = f"{status} {body[:100]!r}"
    outcome.check(status == 201, f"a small chunked JSON contact was not created: {status} {body[:200]!r}")
    outcome.five_xx = answers.five_xx
    outcome.details["answers"] = probe.results
    outcome.details.update(answers.summary())
    outcome.seconds_to_converge = 0.0
    return outcome


def _is_json_error(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and {"code", "message"} <= set(parsed)
