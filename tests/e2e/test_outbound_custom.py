"""Custom values are SyncRoot's own until mappings exist: a change to one syncs nothing to the CRMs."""

import json

import pytest

from contacts.tests.factories import CustomFieldFactory
from tests.e2e.test_inbound import writes
from tests.e2e.test_outbound import synced

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def test_custom_values_are_not_sent_and_a_custom_only_change_writes_nothing(stack):
    CustomFieldFactory(key="tier", type="enum", options=["gold", "platinum"])
    created = stack.api.post(
        "/contacts", {"email": "ada@example.com", "first_name": "Ada", "custom": {"tier": "gold"}}, format="json"
    )
    assert created.status_code == 201, created.content
    contact_id = created.json()["id"]
    stack.wait_until(lambda: synced(stack, contact_id))
    records = json.dumps([stack.hubspot_records(), stack.salesforce_contacts()])
    assert "gold" not in records
    before = writes(stack.hubspot_ctl.stats()), writes(stack.salesforce_ctl.stats())

    patched = stack.api.patch(f"/contacts/{contact_id}", {"custom": {"tier": "platinum"}}, format="json")

    assert patched.json()["version"] == 2
    body = stack.wait_until(lambda: synced(stack, contact_id, version=2))
    assert body["custom"] == {"tier": "platinum"}
    assert (writes(stack.hubspot_ctl.stats()), writes(stack.salesforce_ctl.stats())) == before
    assert "platinum" not in json.dumps([stack.hubspot_records(), stack.salesforce_contacts()])
