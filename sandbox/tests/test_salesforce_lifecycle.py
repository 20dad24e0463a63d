"""Salesforce sandbox merge and undelete: the partner SOAP calls (sent over the simple-salesforce
SDK's session, which has no method for them), the UI's, and what the SDK then reads: queryAll,
``sobjects/Contact/deleted``, change events."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from defusedxml import ElementTree

from sandbox.salesforce_schema import AUTOMATION_USER_ID
from sandbox.salesforce_testing import running_salesforce
from sandbox.server import serve
from sandbox.tests.test_salesforce_outbound import Receiver, parse_message

PARTNER = "{urn:partner.soap.sforce.com}"


def soap(harness, operation: str, inner: str):
    envelope = (
        '<?xml version="1.0" encoding="utf-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/'
        'envelope/" xmlns:urn="urn:partner.soap.sforce.com" xmlns:urn1="urn:sobject.partner.soap.sforce.com">'
        f"<soapenv:Header><urn:SessionHeader><urn:sessionId>{harness.sf.session_id}</urn:sessionId>"
        f"</urn:SessionHeader></soapenv:Header><soapenv:Body><urn:{operation}>{inner}</urn:{operation}>"
        "</soapenv:Body></soapenv:Envelope>"
    )
    response = harness.session.post(
        f"https://{harness.sf.sf_instance}/services/Soap/u/59.0",
        data=envelope.encode(),
        headers={"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": operation},
        timeout=5,
    )
    return response, ElementTree.fromstring(response.content)


def results(root) -> list[dict]:
    return [
        {child.tag.removeprefix(PARTNER): child.text for child in result} for result in root.iter(f"{PARTNER}result")
    ]


def change_events(receiver, count: int, timeout_s: float = 5.0) -> list[dict]:
    """The change events delivered so far, waiting until there are ``count`` (they may share a POST)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = [e for d in receiver.wait("json", 1, 0.05) for e in json.loads(d["body"])["events"]]
        if len(events) >= count or time.monotonic() > deadline:
            return events


def merge_call(master_id: str, loser_ids: list[str], **fields: str) -> str:
    values = "".join(f"<urn1:{name}>{value}</urn1:{name}>" for name, value in fields.items())
    losers = "".join(f"<urn:recordToMergeIds>{i}</urn:recordToMergeIds>" for i in loser_ids)
    return (
        f"<urn:request><urn:masterRecord><urn1:type>Contact</urn1:type><urn1:Id>{master_id}</urn1:Id>{values}"
        f"</urn:masterRecord>{losers}</urn:request>"
    )


@pytest.fixture
def receiver():
    receiver = Receiver()
    running = serve(receiver)
    receiver.url = f"{running.url}/salesforce"
    yield receiver
    running.stop()


@pytest.fixture
def harness(receiver):
    with running_salesforce(seed=21, webhook_url=receiver.url, webhook_retry_base_ms=40) as harness:
        yield harness


def test_soap_merge_deletes_the_loser_with_master_record_id_and_updates_the_master(harness, receiver):
    master = harness.sf.Contact.create({"LastName": "Lovelace", "Email": "ada@example.com"})["id"]
    loser = harness.sf.Contact.create({"LastName": "Lovelace", "Email": "ada.l@example.com", "Phone": "+44 1"})["id"]
    receiver.wait("soap", 2)

    response, root = soap(harness, "merge", merge_call(master, [loser], Phone="+44 1"))

    assert response.status_code == 200
    [result] = results(root)
    assert result == {"id": master, "mergedRecordIds": loser, "success": "true"}
    rows = harness.sf.query_all(
        f"SELECT Id, IsDeleted, MasterRecordId, Phone FROM Contact WHERE Id IN ('{master}', '{loser}')",
        include_deleted=True,
    )["records"]
    by_id = {row["Id"]: row for row in rows}
    assert (by_id[loser]["IsDeleted"], by_id[loser]["MasterRecordId"]) == (True, master)
    assert (by_id[master]["IsDeleted"], by_id[master]["Phone"]) == (False, "+44 1")
    now = datetime.now(UTC)
    deleted = harness.sf.Contact.deleted(now - timedelta(minutes=5), now + timedelta(minutes=5))
    assert [item["id"] for item in deleted["deletedRecords"]] == [loser]
    # The CRM's triggers see a delete (a change event) and the master's update (an Outbound Message).
    events = change_events(receiver, 1)
    assert [(e["ChangeEventHeader"]["changeType"], e["ChangeEventHeader"]["recordIds"]) for e in events] == [
        ("DELETE", [loser])
    ]
    _, items = parse_message(receiver.wait("soap", 3)[-1]["body"])
    assert [fields["Id"] for _, fields in items] == [master]


def test_soap_merge_refuses_a_deleted_record_or_the_master_itself(harness):
    master = harness.sf.Contact.create({"LastName": "A", "Email": "a@example.com"})["id"]
    gone = harness.sf.Contact.create({"LastName": "B", "Email": "b@example.com"})["id"]
    harness.sf.Contact.delete(gone)

    _, deleted = soap(harness, "merge", merge_call(master, [gone]))
    _, itself = soap(harness, "merge", merge_call(master, [master]))

    assert results(deleted)[0]["success"] == "false"
    assert deleted.find(f".//{PARTNER}statusCode").text == "ENTITY_IS_DELETED"
    assert itself.find(f".//{PARTNER}statusCode").text == "INVALID_OPERATION"
    assert harness.sf.Contact.get(master)["IsDeleted"] is False


def test_soap_undelete_brings_the_record_back_with_its_id_and_a_new_modstamp(harness, receiver):
    record_id = harness.sf.Contact.create({"LastName": "Back", "Email": "back@example.com"})["id"]
    before = harness.sf.Contact.get(record_id)["SystemModstamp"]
    harness.sf.Contact.delete(record_id)

    _, root = soap(harness, "undelete", f"<urn:ids>{record_id}</urn:ids>")
    record = harness.sf.Contact.get(record_id)

    assert results(root) == [{"id": record_id, "success": "true"}]
    assert record["IsDeleted"] is False
    assert record["SystemModstamp"] > before
    events = change_events(receiver, 2)
    assert [e["ChangeEventHeader"]["changeType"] for e in events] == ["DELETE", "UNDELETE"]
    _, again = soap(harness, "undelete", f"<urn:ids>{record_id}</urn:ids>")
    assert again.find(f".//{PARTNER}statusCode").text == "UNDELETE_FAILED"


def test_a_bad_session_is_a_soap_fault(harness):
    harness.sf.session_id = "nope"
    response, root = soap(harness, "undelete", "<urn:ids>003000000000001AAA</urn:ids>")
    assert response.status_code == 500
    assert "INVALID_SESSION_ID" in root.find(".//faultcode").text


def test_ui_merge_fills_the_masters_blanks_and_ui_undelete_restores(harness):
    master = harness.sf.Contact.create({"LastName": "Master", "Email": "m@example.com"})["id"]
    loser = harness.sf.Contact.create({"LastName": "Loser", "Email": "l@example.com", "Title": "CTO"})["id"]

    merged = harness.control.edit(loser, merge_into=master)
    restored = harness.control.edit(loser, undelete=True)

    assert (merged["Id"], merged["LastName"], merged["Title"]) == (master, "Master", "CTO")
    assert restored["IsDeleted"] is False
    assert restored["MasterRecordId"] is None
    assert harness.sf.Contact.get(loser)["Email"] == "l@example.com"


def test_a_flow_rule_rewrites_the_field_after_each_update_as_the_automated_user(harness):
    harness.control.config(workflow_rules=[{"field": "Title", "value": "Flow"}])
    record_id = harness.sf.Contact.create({"LastName": "Wf", "Email": "wf@example.com"})["id"]
    harness.sf.Contact.update(record_id, {"Title": "Engineer"})

    deadline = time.monotonic() + 5
    while (record := harness.sf.Contact.get(record_id))["Title"] != "Flow" and time.monotonic() < deadline:
        time.sleep(0.02)

    assert record["Title"] == "Flow"
    assert record["LastModifiedById"] == AUTOMATION_USER_ID
