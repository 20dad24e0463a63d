"""Reading Salesforce back: fetch, changes_since paging and cursors, webhooks sent by the sandbox."""

from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest

from crm import registry
from crm.base import PushItem
from crm.salesforce.provider import SalesforceProvider
from crm.salesforce.transform import parse_datetime
from sandbox.salesforce_schema import make_id
from sandbox.testing import next_millisecond, running_webhook_receiver

from .conftest import contact_values


def test_fetch_reports_current_state_and_deletions(provider, org):
    results = provider.push([PushItem(key=n, values=contact_values(n, company="Acme")) for n in range(3)])
    ids = [r.external_id for r in results]
    org.control.edit(ids[1], fields={"Title": "Boss"})
    org.control.edit(ids[2], delete=True)
    never = make_id("003", 999_999, pod=ids[0][3:5])  # a well-formed id Salesforce never had
    fetched = provider.fetch([ids[0], ids[1][:15], ids[2], never, "not-an-id"])
    assert [c.external_id for c in fetched] == [ids[0], ids[1][:15], ids[2], never]
    assert fetched[0].values == contact_values(0, company="Acme")
    assert fetched[0].from_integration is True
    assert (fetched[1].values["job_title"], fetched[1].from_integration) == ("Boss", False)
    assert fetched[2].deleted is True
    assert (fetched[3].deleted, fetched[3].values) == (True, {})


def test_changes_since_pages_in_order_with_deletions(provider, org):
    org.control.config(query_batch_size=3)
    results = provider.push([PushItem(key=n, values=contact_values(n)) for n in range(4)])
    next_millisecond()  # stamps have millisecond precision: the edit is stamped after the creates
    org.control.edit(results[0].external_id, fields={"Title": "Later"})
    next_millisecond()
    org.control.edit(results[1].external_id, delete=True)
    changes = list(provider.changes_since(modstamp=None, last_id=""))
    assert [c.external_id for c in changes[-2:]] == [results[0].external_id, results[1].external_id]
    assert changes[-1].deleted is True
    assert changes[-2].values["job_title"] == "Later"
    stamps = [(c.occurred_at, c.external_id) for c in changes]
    assert [s for s, _ in stamps] == sorted(s for s, _ in stamps)
    assert len(changes) == 4
    assert org.count("GET /services/data/{version}/queryAll") == 1
    assert org.count("GET /services/data/{version}/query/{locator}") == 1  # second page


def test_changes_since_skips_up_to_the_compound_cursor(provider, org):
    results = provider.push([PushItem(key=n, values=contact_values(n)) for n in range(5)])
    org.share_modstamp()
    everything = list(provider.changes_since(modstamp=None, last_id=""))
    assert len({c.occurred_at for c in everything}) == 1
    cursor = everything[2]
    after = list(provider.changes_since(modstamp=cursor.occurred_at, last_id=cursor.external_id))
    assert [c.external_id for c in after] == [c.external_id for c in everything[3:]]
    # A cursor whose record moved on (changed again since) re-reads the whole tie: nothing is lost.
    org.control.edit(cursor.external_id, fields={"Title": "Moved"})
    again = list(provider.changes_since(modstamp=cursor.occurred_at, last_id=cursor.external_id))
    tied = [c.external_id for c in again if c.occurred_at == cursor.occurred_at]
    assert tied == [c.external_id for c in everything if c.external_id != cursor.external_id]
    assert again[-1].external_id == cursor.external_id
    assert {r.external_id for r in results} == {c.external_id for c in again}


def test_changes_since_a_later_time_returns_nothing_older(provider, org):
    provider.push([PushItem(key=n, values=contact_values(n)) for n in range(2)])
    latest = max(c.occurred_at for c in provider.changes_since(modstamp=None, last_id=""))
    assert list(provider.changes_since(modstamp=latest + timedelta(milliseconds=1), last_id="")) == []


def test_outbound_message_from_the_sandbox_becomes_a_change(provider, org):
    with running_webhook_receiver() as receiver:
        org.control.config(webhook_url=receiver.url + "?token=hook-secret", webhook_max_retries=0)
        record = org.control.edit(fields={"Email": "ui@example.com", "LastName": "Person", "Account.Name": "Umbrella"})
        (delivery,) = receiver.wait_for(1)
    query = dict(parse_qsl(urlsplit(delivery.url).query))
    events = provider.parse_webhook(body=delivery.body, headers=delivery.headers, url=delivery.url, query=query)
    (event,) = events
    change = provider.webhook_change(event.payload)
    assert change.external_id == record["Id"]
    assert change.values == {
        "email": "ui@example.com",
        "first_name": "",
        "last_name": "Person",
        "phone": "",
        "job_title": "",
        "company": "Umbrella",  # AccountId resolved through the API
    }
    assert change.occurred_at == parse_datetime(record["SystemModstamp"])
    assert change.from_integration is False  # a person in the UI
    content_type, body = provider.webhook_ack(event.payload["kind"])
    assert content_type.startswith("text/xml")
    assert b"<Ack>true</Ack>" in body


def test_our_own_write_is_flagged_from_integration(provider, org):
    with running_webhook_receiver() as receiver:
        org.control.config(webhook_url=receiver.url + "?token=hook-secret", webhook_max_retries=0)
        provider.push([PushItem(key="a", values=contact_values(1))])
        (delivery,) = receiver.wait_for(1)
    headers = {**delivery.headers, "X-SyncRoot-Token": "hook-secret"}
    (event,) = provider.parse_webhook(body=delivery.body, headers=headers, url=delivery.url, query={})
    assert provider.webhook_change(event.payload).from_integration is True


def test_signed_delete_event_from_the_sandbox_becomes_a_deletion(provider, org):
    (created,) = provider.push([PushItem(key="a", values=contact_values(1))])
    with running_webhook_receiver() as receiver:
        org.control.config(webhook_url=receiver.url, outbound_messages=False, webhook_max_retries=0)
        org.control.edit(created.external_id, delete=True)
        (delivery,) = receiver.wait_for(1)
    (event,) = provider.parse_webhook(body=delivery.body, headers=delivery.headers, url=delivery.url, query={})
    change = provider.webhook_change(event.payload)
    assert (change.external_id, change.deleted, change.from_integration) == (created.external_id, True, False)
    assert provider.webhook_ack(event.payload["kind"])[0] == "application/json"


def test_account_change_events_drop_the_cached_name(provider, org):
    provider.push([PushItem(key="a", values=contact_values(1, company="Old Name"))])
    (account,) = org.accounts()
    assert provider.accounts.name_for(account["Id"]) == "Old Name"
    org.edit_account(account["Id"], {"Name": "New Name"})
    assert provider.accounts.name_for(account["Id"]) == "Old Name"  # cached
    payload = {"kind": "change_event", "ChangeEventHeader": {"entityName": "Account", "recordIds": [account["Id"]]}}
    assert provider.webhook_change(payload) is None
    assert provider.accounts.name_for(account["Id"]) == "New Name"


def test_record_url_uses_the_instance_url(provider, org):
    provider.client.request("GET", "limits")
    assert provider.record_url("003xx") == f"{org.url}/lightning/r/Contact/003xx/view"


def test_record_url_falls_back_to_a_my_domain_login_url(sf_config, org):
    assert SalesforceProvider(sf_config).record_url("003xx") == f"{org.url}/lightning/r/Contact/003xx/view"
    generic = {**sf_config, "login_url": "https://login.salesforce.com"}
    assert SalesforceProvider(generic).record_url("003xx") is None
    configured = {**generic, "instance_url": "https://acme.my.salesforce.com/"}
    assert (
        SalesforceProvider(configured).record_url("003xx")
        == "https://acme.my.salesforce.com/lightning/r/Contact/003xx/view"
    )


@pytest.mark.parametrize(
    ("overrides", "connected"),
    [
        ({}, True),
        ({"client_id": "", "client_secret": ""}, False),
        ({"client_id": "", "access_token": "t", "instance_url": "https://acme.my.salesforce.com"}, True),
        ({"client_secret": "", "refresh_token": "5Aep"}, True),
    ],
)
def test_registry_connects_salesforce_from_settings(db, settings, sf_config, overrides, connected):
    settings.SALESFORCE = {**sf_config, **overrides}
    registry.reset()
    assert ("salesforce" in registry.connected_providers()) is connected
