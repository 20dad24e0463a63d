"""Stored webhook payloads and query records → InboundChange (pure: the Account lookup is a stub)."""

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from crm.salesforce.inbound import event_change, outbound_change, record_change
from crm.salesforce.webhook import parse_delivery, sign

PAYLOADS = Path(__file__).parent / "payloads"
CONFIG = {"organization_id": "00D5g000000ABCDEAZ", "webhook_token": "t", "event_secret": "s"}
INTEGRATION_USER = "0055g000001AbcdAAA"
NOON = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def account_name(account_id):
    return {"0015g00000XyZaBAAV": "Analytical Engines"}.get(account_id or "", "")


def outbound_payloads():
    body = (PAYLOADS / "outbound_message.xml").read_bytes()
    headers = {"Content-Type": "text/xml"}
    return [e.payload for e in parse_delivery(body=body, headers=headers, query={"token": "t"}, config=CONFIG)]


def event_payloads(name):
    body = (PAYLOADS / name).read_bytes()
    now = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Signature-Timestamp": str(now),
        "X-Signature": sign("s", now, body),
    }
    return [e.payload for e in parse_delivery(body=body, headers=headers, query={}, config=CONFIG)]


def test_our_own_write_coming_back_is_an_echo_read_no_further():
    looked_up = []
    echo = outbound_change(
        outbound_payloads()[0], integration_user_id=INTEGRATION_USER, account_name=lambda a: looked_up.append(a) or ""
    )
    assert echo.from_integration is True  # LastModifiedById is our integration user
    assert echo.external_id == "0035g00000AbCdEAAV"
    assert echo.values == {}
    assert looked_up == []  # no Account lookup (an API call) for a change that is dropped


def test_outbound_notification_becomes_a_complete_change():
    first, second = (
        outbound_change(p, integration_user_id="0050000000000XYZAAA", account_name=account_name)
        for p in outbound_payloads()
    )
    assert first.external_id == "0035g00000AbCdEAAV"
    assert first.values == {
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": "",  # left out of the message: null in Salesforce
        "job_title": "Analyst & Programmer",
        "company": "Analytical Engines",
    }
    assert first.occurred_at == NOON
    assert set(first.field_times.values()) == {NOON}
    assert set(first.field_times) == set(first.values)
    assert first.from_integration is False
    assert first.deleted is False
    assert first.complete is True
    # A person's edit, placeholder last name and no Account.
    assert second.from_integration is False
    assert second.values["last_name"] == ""
    assert second.values["company"] == ""


def test_outbound_change_with_a_narrower_field_selection():
    payload = outbound_payloads()[1]
    change = outbound_change(
        payload, integration_user_id="", account_name=account_name, selected_fields=("Email", "LastName")
    )
    # Title, FirstName and AccountId are neither selected nor sent: not reported. An explicit
    # xsi:nil (Phone) is reported as empty.
    assert change.values == {"email": "grace@example.com", "last_name": "", "phone": ""}


def test_outbound_message_about_another_object_is_ignored():
    payload = {**outbound_payloads()[0], "sobject_type": "Lead"}
    assert outbound_change(payload, integration_user_id="", account_name=account_name) is None


def test_delete_event_becomes_one_deletion_per_record():
    changes = [
        event_change(p, integration_user_id=INTEGRATION_USER, account_name=account_name)
        for p in event_payloads("change_event_delete.json")
    ]
    assert [(c.external_id, c.deleted, c.occurred_at) for c in changes] == [
        ("0035g00000AbCdEAAV", True, NOON),
        ("0035g00000AbCdFAAV", True, NOON),
    ]
    assert not any(c.from_integration for c in changes)


def test_update_event_carries_changed_and_nulled_fields():
    (payload,) = event_payloads("change_event_update.json")
    change = event_change(payload, integration_user_id=INTEGRATION_USER, account_name=account_name)
    assert change.values == {"email": "new@example.com", "phone": ""}
    assert change.complete is True
    assert change.field_times == {"email": NOON, "phone": NOON}


def test_update_event_without_the_changed_values_must_be_fetched():
    (payload,) = event_payloads("change_event_update.json")
    del payload["Email"]
    change = event_change(payload, integration_user_id=INTEGRATION_USER, account_name=account_name)
    assert change.complete is False
    assert change.external_id == "0035g00000AbCdEAAV"


def test_update_event_of_unsynced_fields_only_is_ignored():
    (payload,) = event_payloads("change_event_update.json")
    payload["ChangeEventHeader"] = {**payload["ChangeEventHeader"], "changedFields": ["Department"], "nulledFields": []}
    assert event_change(payload, integration_user_id="", account_name=account_name) is None


def test_create_event_treats_absent_fields_as_empty():
    (payload,) = event_payloads("change_event_update.json")
    payload["ChangeEventHeader"]["changeType"] = "CREATE"
    payload.update(LastName="Hopper", AccountId="0015g00000XyZaBAAV")
    change = event_change(payload, integration_user_id="", account_name=account_name)
    assert change.complete is True
    assert change.values == {
        "email": "new@example.com",
        "first_name": "",
        "last_name": "Hopper",
        "phone": "",
        "job_title": "",
        "company": "Analytical Engines",
    }


def test_undelete_event_asks_for_a_fetch():
    (payload,) = event_payloads("change_event_update.json")
    payload["ChangeEventHeader"]["changeType"] = "UNDELETE"
    change = event_change(payload, integration_user_id="", account_name=account_name)
    assert (change.complete, change.deleted) == (False, False)


def test_query_record_change_flags_deleted_rows():
    records = json.loads((PAYLOADS / "query_contacts.json").read_text())["records"]
    live, deleted = (record_change(r, integration_user_id=INTEGRATION_USER, account_name=account_name) for r in records)
    assert live.values["company"] == "Acme"
    assert live.from_integration is True
    assert deleted.deleted is True
    assert deleted.occurred_at == datetime(2024, 1, 2, 8, 30, 15, 250000, tzinfo=UTC)
