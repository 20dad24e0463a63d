"""Outbound Messages (SOAP, Ack/redelivery) and signed JSON change events, received over HTTP."""

import hashlib
import hmac
import json
import re
import threading
import time
import uuid

import pytest
from defusedxml import ElementTree
from werkzeug.wrappers import Request, Response

from sandbox.salesforce_schema import INTEGRATION_USER_ID, UI_USER_ID
from sandbox.salesforce_testing import running_salesforce
from sandbox.server import serve

SOAP = "{http://schemas.xmlsoap.org/soap/envelope/}"
OUT = "{http://soap.sforce.com/2005/09/outbound}"
SF = "{urn:sobject.enterprise.soap.sforce.com}"
XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
CDC_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def ack(value: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/'
        'envelope/"><soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<Ack>{value}</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
    ).encode()


class Receiver:
    """Records deliveries; answers SOAP with ``soap_script`` then Ack true, JSON with ``json_script`` then 200."""

    def __init__(self) -> None:
        self.soap_script: list[tuple[int, bytes]] = []
        self.json_script: list[int] = []
        self.soap: list[dict] = []
        self.json: list[dict] = []
        self.cond = threading.Condition()

    def __call__(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        with self.cond:
            if request.content_type.startswith("text/xml"):
                status, answer = self.soap_script.pop(0) if self.soap_script else (200, ack("true"))
                self.soap.append({"headers": dict(request.headers), "body": body, "at": time.monotonic()})
            else:
                status, answer = (self.json_script.pop(0) if self.json_script else 200), b""
                self.json.append({"headers": dict(request.headers), "body": body, "at": time.monotonic()})
            self.cond.notify_all()
        return Response(answer, status=status, content_type="text/xml")(environ, start_response)

    def wait(self, kind: str, count: int, timeout_s: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while len(getattr(self, kind)) < count and time.monotonic() < deadline:
                self.cond.wait(0.05)
            return list(getattr(self, kind))


def parse_message(body: bytes) -> tuple[dict, list[tuple[str, dict]]]:
    """(header fields, [(notification id, {field: text})]) of a notifications envelope."""
    root = ElementTree.fromstring(body)
    notifications = root.find(f"{SOAP}Body/{OUT}notifications")
    header = {child.tag.removeprefix(OUT): child for child in notifications if child.tag != f"{OUT}Notification"}
    items = []
    for notification in notifications.findall(f"{OUT}Notification"):
        sobject = notification.find(f"{OUT}sObject")
        assert sobject.get(f"{XSI}type") == "sf:Contact"
        fields = {child.tag.removeprefix(SF): child.text for child in sobject}
        items.append((notification.find(f"{OUT}Id").text, fields))
    return header, items


@pytest.fixture
def receiver():
    receiver = Receiver()
    running = serve(receiver)
    receiver.url = f"{running.url}/salesforce"
    yield receiver
    running.stop()


@pytest.fixture
def harness(receiver):
    with running_salesforce(seed=15, webhook_url=receiver.url, webhook_retry_base_ms=40) as harness:
        yield harness


def test_outbound_message_for_an_api_create(harness, receiver):
    record_id = harness.sf.Contact.create({"FirstName": "Ada", "LastName": "Lovelace", "Email": "ada@example.com"})[
        "id"
    ]
    [delivery] = receiver.wait("soap", 1)
    assert delivery["headers"]["Content-Type"] == "text/xml; charset=utf-8"
    assert delivery["headers"]["Soapaction"] == '""'
    header, items = parse_message(delivery["body"])
    assert header["OrganizationId"].text == "00D000000000001EAA"
    assert header["ActionId"].text.startswith("04k")
    assert header["SessionId"].get(f"{XSI}nil") == "true"
    assert header["EnterpriseUrl"].text == f"{harness.url}/services/Soap/c/59.0/00D000000000001"
    assert header["PartnerUrl"].text == f"{harness.url}/services/Soap/u/59.0/00D000000000001"
    [(notification_id, fields)] = items
    assert re.fullmatch(r"04l[0-9A-Za-z]{15}", notification_id)
    assert list(fields) == [
        "Id",
        "Email",
        "FirstName",
        "IsDeleted",
        "LastModifiedById",
        "LastModifiedDate",
        "LastName",
        "SystemModstamp",
    ]
    assert fields["Id"] == record_id
    assert fields["IsDeleted"] == "false"
    assert fields["LastModifiedById"] == INTEGRATION_USER_ID  # the integration user's own writes are sent too
    assert CDC_DATETIME.match(fields["LastModifiedDate"])
    assert receiver.json == []  # creates are not change events by default


def test_redelivered_until_ack_true_then_stops(harness, receiver):
    receiver.soap_script = [(200, ack("false")), (500, b"oops"), (200, b"<not-xml")]
    harness.sf.Contact.create({"LastName": "Retry"})
    deliveries = receiver.wait("soap", 4)
    assert len(deliveries) == 4
    ids = {parse_message(d["body"])[1][0][0] for d in deliveries}
    assert len(ids) == 1  # the same notification each time
    assert deliveries[1]["at"] - deliveries[0]["at"] >= 0.015  # backoff between attempts
    assert harness.control.flush_webhooks()  # nothing pending, scheduled or in flight
    assert len(receiver.soap) == 4  # acknowledged: never sent again
    stats = harness.control.stats()["webhooks"]["channels"]["outbound"]
    assert stats["acked"] == 1
    assert stats["failed"] == 3


def test_payload_is_the_state_at_send_time_and_ui_edits_are_sent(harness, receiver):
    harness.control.config(webhook_retry_base_ms=400)  # time to edit before the redelivery
    receiver.soap_script = [(503, b"")]
    record_id = harness.sf.Contact.create({"LastName": "Before"})["id"]
    receiver.wait("soap", 1)
    edited = harness.control.edit(record_id, {"LastName": "After", "Account.Name": "Acme"})
    assert edited["LastModifiedById"] == UI_USER_ID
    deliveries = receiver.wait("soap", 3)
    notifications = [item for d in deliveries[1:] for item in parse_message(d["body"])[1]]
    assert len(notifications) == 2
    assert {fields["LastName"] for _, fields in notifications} == {"After"}
    assert {fields["LastModifiedById"] for _, fields in notifications} == {UI_USER_ID}
    assert {fields["AccountId"] for _, fields in notifications} == {edited["AccountId"]}


def test_ui_edit_company_convenience_reuses_the_account(harness, receiver):
    first = harness.control.edit(None, {"LastName": "One", "company": "Initech"})
    second = harness.control.edit(None, {"LastName": "Two", "Account.Name": "Initech"})
    assert first["AccountId"] == second["AccountId"]
    assert first["AccountId"].startswith("001")
    accounts = harness.sf.query("SELECT Id, Name FROM Account")["records"]
    assert [(a["Id"], a["Name"]) for a in accounts] == [(first["AccountId"], "Initech")]
    cleared = harness.control.edit(first["Id"], {"company": ""})
    assert cleared["AccountId"] is None


def test_at_most_100_notifications_per_message(harness, receiver):
    records = [{"attributes": {"type": "Contact"}, "LastName": f"n{i}"} for i in range(150)]
    harness.sf.restful("composite/sobjects", method="POST", json={"records": records})
    assert harness.control.flush_webhooks()
    items = [item for d in receiver.soap for item in parse_message(d["body"])[1]]
    sizes = [len(parse_message(d["body"])[1]) for d in receiver.soap]
    assert max(sizes) <= 100
    assert sum(sizes) == 150
    assert len({notification_id for notification_id, _ in items}) == 150


def verify(delivery: dict, secret: bytes = b"sandbox-secret") -> dict:
    headers = delivery["headers"]
    timestamp = headers["X-Signature-Timestamp"]
    expected = hmac.new(secret, f"{timestamp}.".encode() + delivery["body"], hashlib.sha256).hexdigest()
    assert headers["X-Signature"] == f"sha256={expected}"
    assert abs(int(timestamp) - time.time()) < 60
    assert headers["Content-Type"] == "application/json"
    return json.loads(delivery["body"])


def test_delete_is_a_signed_change_event_and_no_outbound_message(harness, receiver):
    record_id = harness.sf.Contact.create({"LastName": "Doomed"})["id"]
    receiver.wait("soap", 1)
    harness.sf.Contact.delete(record_id)
    [delivery] = receiver.wait("json", 1)
    [event] = verify(delivery)["events"]
    uuid.UUID(event["eventId"])
    header = event["ChangeEventHeader"]
    assert header["entityName"] == "Contact"
    assert header["recordIds"] == [record_id]
    assert header["changeType"] == "DELETE"
    assert header["commitUser"] == INTEGRATION_USER_ID
    assert header["sequenceNumber"] == 1
    uuid.UUID(header["transactionKey"])
    assert abs(header["commitTimestamp"] / 1000 - time.time()) < 60
    assert harness.control.flush_webhooks()
    assert len(receiver.soap) == 1  # Outbound Messages never fire on delete


def test_all_change_events_carry_changed_fields_and_are_retried(harness, receiver):
    harness.control.config(change_events="all", outbound_messages=False)
    receiver.json_script = [500]
    record_id = harness.sf.Contact.create({"LastName": "Evented", "Email": "e@example.com"})["id"]
    harness.sf.Contact.update(record_id, {"Title": "CTO"})
    assert harness.control.flush_webhooks()
    deliveries = list(receiver.json)
    events = [event for d in deliveries[1:] for event in verify(d)["events"]]
    by_type = {event["ChangeEventHeader"]["changeType"]: event for event in events}
    created, updated = by_type["CREATE"], by_type["UPDATE"]
    assert created["LastName"] == "Evented"
    assert created["Email"] == "e@example.com"
    assert CDC_DATETIME.match(created["CreatedDate"])
    assert updated["ChangeEventHeader"]["changedFields"] == ["Title", "LastModifiedDate"]
    assert updated["Title"] == "CTO"
    assert verify(deliveries[0])["events"][0]["eventId"] == created["eventId"]  # the failed POST, redelivered
    assert receiver.soap == []


def test_single_change_is_delivered_promptly(harness, receiver):
    started = time.monotonic()
    harness.sf.Contact.create({"LastName": "Quick"})
    [delivery] = receiver.wait("soap", 1)
    # Sent after the 10 ms linger, not held for a fuller batch; the bound leaves room for a busy box.
    assert delivery["at"] - started < 2.0


def test_nothing_is_sent_when_disabled(harness, receiver):
    harness.control.config(outbound_messages=False, change_events="none")
    record_id = harness.sf.Contact.create({"LastName": "Quiet"})["id"]
    harness.sf.Contact.delete(record_id)
    assert harness.control.flush_webhooks()
    assert receiver.soap == []
    assert receiver.json == []
