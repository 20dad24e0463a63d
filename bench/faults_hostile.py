"""Hostile input: forged, replayed and stale webhooks; oversized, malformed, XXE and mistyped
bodies; injection strings, unicode and maximum-length values round-tripped through both CRMs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import requests

from bench.faults_common import (
    FIELDS,
    Answers,
    Context,
    Expected,
    Outcome,
    create_contacts,
    finish,
    json_error,
    make_tokens,
    new_prefix,
    patch_contacts,
    query,
    wait_idle,
)
from bench.faults_inbound import external_ids
from bench.stack import ORGANIZATION_ID, SECRET, WEBHOOK_TOKEN, Stack, _plain_session

OTHER_ORG = "00D000000000002EAA"
UI_USER = "005000000000099AAA"


def _counts(stack: Stack) -> tuple[int, int]:
    ((contacts, events),) = query(
        stack, "SELECT (SELECT count(*) FROM contacts_contact), (SELECT count(*) FROM webhooks_webhookevent)"
    )
    return contacts, events


class Probe:
    """Sends hostile requests and checks each answer: the status wanted, a JSON error body."""

    def __init__(self, stack: Stack, outcome: Outcome, answers: Answers) -> None:
        self.stack, self.outcome, self.answers = stack, outcome, answers
        self.session = _plain_session(2)
        self.results: dict[str, int | str] = {}

    def send(self, name: str, method: str, path: str, want: int | tuple[int, ...], *, json_body: bool = True,
             **kwargs: Any) -> requests.Response | None:  # fmt: skip
        wanted = (want,) if isinstance(want, int) else want
        try:
            response = self.session.request(method, self.stack.api_url + path, timeout=60, **kwargs)
        except requests.RequestException as exc:
            self.results[name] = f"no answer: {exc.__class__.__name__}"
            self.outcome.failures.append(f"{name}: no answer")
            return None
        self.answers.record(method, path, response)
        self.results[name] = response.status_code
        self.outcome.check(response.status_code in wanted, f"{name}: {response.status_code}, wanted {wanted}")
        if json_body and response.status_code >= 400:
            self.outcome.check(json_error(response), f"{name}: error body is not the JSON error shape")
        return response


# --- 10: forged, replayed and stale webhooks -------------------------------------------------------
def _hubspot_headers(url: str, body: bytes, *, secret: str = SECRET, at_ms: int | None = None) -> dict[str, str]:
    timestamp = str(at_ms if at_ms is not None else int(time.time() * 1000))
    message = b"POST" + url.encode() + body + timestamp.encode()
    signature = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
    return {"Content-Type": "application/json", "X-HubSpot-Signature-v3": signature,
            "X-HubSpot-Request-Timestamp": timestamp}  # fmt: skip


def _hubspot_event(object_id: str, prop: str, value: str) -> bytes:
    event = {
        "eventId": random.randrange(10**12, 10**13), "subscriptionId": 777, "portalId": 62515, "appId": 1234567,
        "occurredAt": int(time.time() * 1000), "subscriptionType": "contact.propertyChange", "attemptNumber": 0,
        "objectId": int(object_id), "changeSource": "CRM_UI", "propertyName": prop, "propertyValue": value,
    }  # fmt: skip
    return json.dumps([event]).encode()


def _outbound_message(record: dict[str, Any], *, org: str = ORGANIZATION_ID, **changes: str) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    fields = {**{k: record.get(k) for k in ("Id", "AccountId", "Email", "FirstName", "LastName", "Phone", "Title")},
              **changes, "LastModifiedById": UI_USER, "LastModifiedDate": now, "SystemModstamp": now}  # fmt: skip
    body = "".join(f"<sf:{k}>{escape(str(v))}</sf:{k}>" for k, v in fields.items() if v is not None)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org}</OrganizationId><ActionId>04k000000000001AAA</ActionId>"
        f"<Notification><Id>04l{uuid.uuid4().hex[:15]}</Id>"
        '<sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        f"{body}</sObject></Notification></notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


def _change_event(record_id: str, *, secret: str = SECRET, at: int | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"events": [{"eventId": uuid.uuid4().hex, "ChangeEventHeader": {
        "entityName": "Contact", "recordIds": [record_id], "changeType": "DELETE", "changedFields": [],
        "commitTimestamp": int(time.time() * 1000), "commitUser": UI_USER}}]}).encode()  # fmt: skip
    timestamp = str(at if at is not None else int(time.time()))
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Signature": f"sha256={digest}",
                  "X-Signature-Timestamp": timestamp}  # fmt: skip


def forged_webhooks(ctx: Context) -> Outcome:
    """Deliveries an attacker could send: HubSpot with a wrong signature, a tampered body, a
    timestamp 6 minutes old or ahead, no signature; Salesforce from another org, without or with
    a wrong token, change events with a bad HMAC or a stale timestamp (a DELETE: the worst if it
    got through). Each is refused (401/415) and stores nothing. One valid delivery per CRM is
    applied once; replayed byte for byte it adds no row and changes nothing."""
    stack, outcome, prefix = ctx.stack, Outcome("forged_replayed_stale_webhooks"), new_prefix("forge")
    answers, expected = Answers(), Expected()
    create_contacts(stack, answers, expected, prefix=prefix, count=4, clients=2)
    outcome.check(wait_idle(stack, time.monotonic() + 60), "the target contacts never synced")
    ids = external_ids(stack, prefix)
    email = sorted(ids)[0]
    hs_id, sf_id = ids[email]["hubspot"], ids[email]["salesforce"]
    sf_record = next(r for r in stack.salesforce.records() if r["Id"] == sf_id)
    hs_path, sf_path = "/webhooks/hubspot", f"/webhooks/salesforce?token={WEBHOOK_TOKEN}"
    hs_url = stack.api_url + hs_path
    probe = Probe(stack, outcome, answers)
    before = _counts(stack)
    began = time.monotonic()
    forged = _hubspot_event(hs_id, "firstname", "Forged")
    probe.send("hubspot wrong secret", "POST", hs_path, 401, data=forged,
               headers=_hubspot_headers(hs_url, forged, secret="not-the-secret"))  # fmt: skip
    probe.send("hubspot tampered body", "POST", hs_path, 401, data=forged.replace(b"Forged", b"Forgec"),
               headers=_hubspot_headers(hs_url, forged))  # fmt: skip
    old = int((time.time() - 360) * 1000)
    probe.send("hubspot timestamp 6 min old", "POST", hs_path, 401, data=forged,
               headers=_hubspot_headers(hs_url, forged, at_ms=old))  # fmt: skip
    probe.send("hubspot timestamp 6 min ahead", "POST", hs_path, 401, data=forged,
               headers=_hubspot_headers(hs_url, forged, at_ms=int((time.time() + 360) * 1000)))  # fmt: skip
    probe.send("hubspot unsigned", "POST", hs_path, 401, data=forged, headers={"Content-Type": "application/json"})
    probe.send("hubspot signed for another URL", "POST", hs_path, 401, data=forged,
               headers=_hubspot_headers("https://evil.example.com/webhooks/hubspot", forged))  # fmt: skip
    xml = {"Content-Type": "text/xml; charset=utf-8"}
    probe.send("salesforce other org", "POST", sf_path, 401, json_body=False,
               data=_outbound_message(sf_record, org=OTHER_ORG, FirstName="Forged"), headers=xml)  # fmt: skip
    probe.send("salesforce wrong token", "POST", "/webhooks/salesforce?token=guess", 401, json_body=False,
               data=_outbound_message(sf_record, FirstName="Forged"), headers=xml)  # fmt: skip
    probe.send("salesforce no token", "POST", "/webhooks/salesforce", 401, json_body=False,
               data=_outbound_message(sf_record, FirstName="Forged"), headers=xml)  # fmt: skip
    body, headers = _change_event(sf_id, secret="not-the-secret")
    probe.send("salesforce event bad hmac", "POST", "/webhooks/salesforce", 401, data=body, headers=headers)
    body, headers = _change_event(sf_id, at=int(time.time()) - 360)
    probe.send("salesforce event 6 min old", "POST", "/webhooks/salesforce", 401, data=body, headers=headers)
    outcome.check(_counts(stack) == before, f"forged deliveries stored something: {before} -> {_counts(stack)}")
    # One genuine delivery per CRM, then the same bytes again (a replay within the window).
    real = _hubspot_event(hs_id, "firstname", "Genuine")
    real_headers = _hubspot_headers(hs_url, real)
    probe.send("hubspot valid", "POST", hs_path, 200, data=real, headers=real_headers)
    message = _outbound_message(sf_record, Title="Genuine Title")
    probe.send("salesforce valid", "POST", sf_path, 200, json_body=False, data=message, headers=xml)
    stored = _counts(stack)
    outcome.check(stored[1] == before[1] + 2, f"the valid deliveries stored {stored[1] - before[1]} events, not 2")
    wait_idle(stack, time.monotonic() + 30)
    (version_after_valid,) = query(stack, "SELECT version FROM contacts_contact WHERE lower(email) = %s", [email])
    probe.send("hubspot replay", "POST", hs_path, 200, data=real, headers=real_headers)
    probe.send("salesforce replay", "POST", sf_path, 200, json_body=False, data=message, headers=xml)
    outcome.check(_counts(stack) == stored, "a replayed delivery stored a new row")
    wait_idle(stack, time.monotonic() + 30)
    (version_after_replay,) = query(stack, "SELECT version FROM contacts_contact WHERE lower(email) = %s", [email])
    outcome.check(version_after_replay == version_after_valid, "a replay changed the contact again")
    current = list(expected.state[email] or ())
    current[1], current[5] = "Genuine", "Genuine Title"
    expected.state[email] = tuple(current)
    outcome.details["answers"] = probe.results
    return finish(outcome, stack, expected, answers, since=began, prefix=prefix)


# --- 11: oversized, malformed, XXE and mistyped bodies ----------------------------------------------
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
    return int(head_bytes.split(b" ", 2)[1]), body


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
            outcome.check(status == 413, f"{label}: {status}, wanted 413")
            outcome.check(_is_json_error(body), f"{label}: error body is not the JSON error shape")
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


# --- 12: injection strings, unicode and maximum lengths ----------------------------------------------
def _fit(text: str, length: int) -> str:
    """`text` repeated or cut to exactly `length` characters."""
    return (text * (length // max(1, len(text)) + 1))[:length]


NASTY = [
    {"first_name": "'; DROP TABLE contacts;--", "last_name": "Robert'); DELETE FROM x WHERE ('1'='1",
     "company": "O'Reilly \\' OR Name LIKE '%", "job_title": "</Title><Title>pwned</Title>",
     "phone": "+1 (555) 010-0000 ext. 42"},
    {"first_name": "<script>alert(1)</script>", "last_name": "\" onmouseover=\"alert(1)",
     "company": "Acme %_ \\\\ \"quoted\" & <b>bold</b>", "job_title": "]]><!-- &amp; &lt; ${7*7} {{7*7}}",
     "phone": "'+1'--"},
    {"first_name": "Zoë 👩🏽‍💻 🚀", "last_name": "مرحبا עולם \u202ereversed",
     "company": "Ünïcödé GmbH 株式会社 🏢", "job_title": "Ŝ̷̢é̵͎ñ̶̗ior Dev — ﷽", "phone": "٠١٢٣٤٥٦٧٨٩"},
    {"first_name": _fit("Ñ", 40), "last_name": _fit("Łukasz-", 80), "company": _fit("Grüße & Söhne ", 255),
     "job_title": _fit("Direktör ", 128), "phone": _fit("+44 20 7946 0000 ", 40)},
    {"first_name": _fit("é👍", 40), "last_name": _fit("ꙮ", 80), "company": _fit("日本語の会社", 255),
     "job_title": _fit("Ω≈ç√∫", 128), "phone": _fit("12345", 40)},
]  # fmt: skip


def injection_round_trip(ctx: Context) -> Outcome:
    """Contacts whose values are SQL/SOQL/XML/HTML injection strings, emoji, RTL text, combining
    marks and every field at its maximum length (email 80, first name 40, last name 80, phone 40,
    company 255, job title 128) are created, then updated to another such value; after
    convergence each value reads back identical from SyncRoot and from both sandboxes (emails
    compared lower-cased: HubSpot lower-cases them)."""
    stack, outcome, prefix = ctx.stack, Outcome("injection_unicode_max_length"), new_prefix("inj")
    answers, expected = Answers(), Expected()

    def body(email: str, index: int) -> dict[str, str]:
        local, domain = email.split("@")
        values = dict(NASTY[index % len(NASTY)])
        if index % 3 == 0:  # an 80-character email with quote and plus in the local part
            local = _fit(f"{local}.o'neil+x", 80 - len(domain) - 1)
        return {"email": f"{local}@{domain}", **values}

    began = time.monotonic()
    count = max(len(NASTY) * 4, ctx.contacts // 5)
    accepted = create_contacts(stack, answers, expected, prefix=prefix, count=count, clients=4, body=body)
    outcome.check(accepted == count, f"the API accepted {accepted} of {count} nasty contacts")
    mismatched = []
    for index in range(count):
        sent = body(f"{prefix}-{index}@faults.example.com", index)
        email = sent["email"].lower()
        if expected.state.get(email) != (email, *(sent[f] for f in FIELDS[1:])):
            mismatched.append(email)
    outcome.check(not mismatched, f"the API stored {len(mismatched)} values other than sent")
    outcome.check(wait_idle(stack, time.monotonic() + 120), "nasty creates never synced")
    patch_contacts(
        stack, answers, expected, ids=expected.live(),
        change=lambda i: {k: v for k, v in NASTY[(i + 2) % len(NASTY)].items() if k != "phone"},
    )  # fmt: skip
    return finish(outcome, stack, expected, answers, since=began, prefix=prefix)
