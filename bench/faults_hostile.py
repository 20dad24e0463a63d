"""Hostile input: forged, replayed and stale webhooks (scenario 10); injection strings, unicode and
maximum-length values round-tripped through both CRMs (scenario 12). Bodies: bench/faults_bodies.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

import requests

from bench.faults_common import (
    FIELDS,
    Answers,
    Context,
    Expected,
    Outcome,
    create_contacts,
    json_error,
    new_prefix,
    patch_contacts,
)
from bench.faults_inbound import external_ids
from bench.faults_state import (
    finish,
    flush_webhooks,
    query,
    wait_idle,
)
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


def _hubspot_event(object_id: str, prop: str, value: str) -> tuple[bytes, str]:
    """A contact.propertyChange delivery as a person's edit in HubSpot; (body, inbox event id)."""
    event_id = random.randrange(10**12, 10**13)
    event = {
        "eventId": event_id, "subscriptionId": 777, "portalId": 62515, "appId": 1234567,
        "occurredAt": int(time.time() * 1000), "subscriptionType": "contact.propertyChange", "attemptNumber": 0,
        "objectId": int(object_id), "changeSource": "CRM_UI", "propertyName": prop, "propertyValue": value,
    }  # fmt: skip
    return json.dumps([event]).encode(), f"777:{event_id}"


def _outbound_message(record: dict[str, Any], *, org: str = ORGANIZATION_ID, **changes: str) -> tuple[bytes, str]:
    """An Outbound Message about `record` (changed by a person); (body, inbox event id)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    fields = {**{k: record.get(k) for k in ("Id", "AccountId", "Email", "FirstName", "LastName", "Phone", "Title")},
              **changes, "LastModifiedById": UI_USER, "LastModifiedDate": now, "SystemModstamp": now}  # fmt: skip
    body = "".join(f"<sf:{k}>{escape(str(v))}</sf:{k}>" for k, v in fields.items() if v is not None)
    notification = f"04l{uuid.uuid4().hex[:15]}"
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org}</OrganizationId><ActionId>04k000000000001AAA</ActionId>"
        f"<Notification><Id>{notification}</Id>"
        '<sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        f"{body}</sObject></Notification></notifications></soapenv:Body></soapenv:Envelope>"
    ).encode(), notification


def _change_event(record_id: str, *, secret: str = SECRET, at: int | None = None) -> tuple[bytes, dict[str, str], str]:
    """A signed JSON change event DELETING `record_id`; (body, headers, inbox event id)."""
    event_id = uuid.uuid4().hex
    body = json.dumps({"events": [{"eventId": event_id, "ChangeEventHeader": {
        "entityName": "Contact", "recordIds": [record_id], "changeType": "DELETE", "changedFields": [],
        "commitTimestamp": int(time.time() * 1000), "commitUser": UI_USER}}]}).encode()  # fmt: skip
    timestamp = str(at if at is not None else int(time.time()))
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Signature": f"sha256={digest}",
               "X-Signature-Timestamp": timestamp}  # fmt: skip
    return body, headers, event_id


def _stored(stack: Stack, event_ids: list[str]) -> int:
    ((n,),) = query(stack, "SELECT count(*) FROM webhooks_webhookevent WHERE event_id = ANY(%s)", [event_ids])
    return n


def _version(stack: Stack, email: str) -> int:
    ((version,),) = query(stack, "SELECT version FROM contacts_contact WHERE lower(email) = %s", [email])
    return version


def forged_webhooks(ctx: Context) -> Outcome:
    """Deliveries an attacker could send: HubSpot with a wrong signature, a tampered body, a
    timestamp 6 minutes old or ahead, no signature, a signature over another URL; Salesforce from
    another org, without or with a wrong token, change events (a DELETE: the worst if it got
    through) with a bad HMAC or a stale timestamp. Each is refused (401) and stores nothing.
    Then a person really edits one record in each CRM and one genuine delivery per CRM reports it
    (the sandboxes' own webhooks are off meanwhile): applied once; the same bytes replayed store no
    row and change nothing."""
    stack, outcome, prefix = ctx.stack, Outcome("forged_replayed_stale_webhooks"), new_prefix("forge")
    answers, expected = Answers(), Expected()
    create_contacts(stack, answers, expected, prefix=prefix, count=4, clients=2)
    outcome.check(wait_idle(stack, time.monotonic() + 60), "the target contacts never synced")
    flush_webhooks(stack)
    wait_idle(stack, time.monotonic() + 60)
    for crm in (stack.hubspot, stack.salesforce):
        crm.config(webhooks_enabled=False)
    try:
        _forge_and_replay(ctx, outcome, answers, expected, prefix)
    finally:
        for crm in (stack.hubspot, stack.salesforce):
            crm.config(webhooks_enabled=True)
    return finish(outcome, stack, expected, answers, since=time.monotonic(), prefix=prefix)


def _forge_and_replay(ctx: Context, outcome: Outcome, answers: Answers, expected: Expected, prefix: str) -> None:
    stack = ctx.stack
    ids = external_ids(stack, prefix)
    email = sorted(ids)[0]
    hs_id, sf_id = ids[email]["hubspot"], ids[email]["salesforce"]
    sf_record = next(r for r in stack.salesforce.records() if r["Id"] == sf_id)
    hs_path, sf_path = "/webhooks/hubspot", f"/webhooks/salesforce?token={WEBHOOK_TOKEN}"
    hs_url = stack.api_url + hs_path
    probe = Probe(stack, outcome, answers)
    before = _counts(stack)
    forged, key = _hubspot_event(hs_id, "firstname", "Forged")
    keys = [key]
    tampered = forged.replace(b"Forged", b"Forgec")
    now_ms, xml = int(time.time() * 1000), {"Content-Type": "text/xml; charset=utf-8"}
    hubspot_cases = {
        "hubspot wrong secret": (forged, _hubspot_headers(hs_url, forged, secret="not-the-secret")),
        "hubspot tampered body": (tampered, _hubspot_headers(hs_url, forged)),
        "hubspot timestamp 6 min old": (forged, _hubspot_headers(hs_url, forged, at_ms=now_ms - 360_000)),
        "hubspot timestamp 6 min ahead": (forged, _hubspot_headers(hs_url, forged, at_ms=now_ms + 360_000)),
        "hubspot unsigned": (forged, {"Content-Type": "application/json"}),
        "hubspot signed for another URL": (forged, _hubspot_headers("https://evil.example/webhooks/hubspot", forged)),
    }
    for name, (data, headers) in hubspot_cases.items():
        probe.send(name, "POST", hs_path, 401, data=data, headers=headers)
    salesforce_cases = {
        "salesforce other org": (sf_path, _outbound_message(sf_record, org=OTHER_ORG, FirstName="Forged")),
        "salesforce wrong token": ("/webhooks/salesforce?token=guess", _outbound_message(sf_record, Title="Forged")),
        "salesforce no token": ("/webhooks/salesforce", _outbound_message(sf_record, Phone="Forged")),
    }
    for name, (path, (data, key)) in salesforce_cases.items():
        keys.append(key)
        probe.send(name, "POST", path, 401, json_body=False, data=data, headers=xml)
    for name, (data, headers, key) in {
        "salesforce delete event bad hmac": _change_event(sf_id, secret="not-the-secret"),
        "salesforce delete event 6 min old": _change_event(sf_id, at=int(time.time()) - 360),
    }.items():
        keys.append(key)
        probe.send(name, "POST", "/webhooks/salesforce", 401, data=data, headers=headers)
    outcome.check(_stored(stack, keys) == 0 and _counts(stack) == before, "a forged delivery was stored")
    # A person edits each CRM (no webhook from the sandbox), then the genuine deliveries arrive.
    stack.hubspot.edit(hs_id, {"firstname": "Genuine"})
    edited = stack.salesforce.edit(sf_id, {"Title": "Genuine Title"})
    real, hs_key = _hubspot_event(hs_id, "firstname", "Genuine")
    real_headers = _hubspot_headers(hs_url, real)
    message, sf_key = _outbound_message(edited)
    probe.send("hubspot genuine", "POST", hs_path, 200, data=real, headers=real_headers)
    probe.send("salesforce genuine", "POST", sf_path, 200, json_body=False, data=message, headers=xml)
    outcome.check(_stored(stack, [hs_key, sf_key]) == 2, "the genuine deliveries were not stored once each")
    wait_idle(stack, time.monotonic() + 30)
    version, stored = _version(stack, email), _counts(stack)
    probe.send("hubspot replay", "POST", hs_path, 200, data=real, headers=real_headers)
    probe.send("salesforce replay", "POST", sf_path, 200, json_body=False, data=message, headers=xml)
    outcome.check(_stored(stack, [hs_key, sf_key]) == 2 and _counts(stack) == stored, "a replay stored a row")
    wait_idle(stack, time.monotonic() + 30)
    outcome.check(_version(stack, email) == version, "a replay changed the contact again")
    outcome.check(version == expected.versions[expected.ids[email]] + 2, "the genuine changes were not applied")
    current = list(expected.state[email] or ())
    current[1], current[5] = "Genuine", "Genuine Title"
    expected.state[email] = tuple(current)
    outcome.details["answers"] = probe.results


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
