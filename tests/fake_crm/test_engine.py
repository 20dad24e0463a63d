"""A third CRM is one sub-package and one registry line: the real engine runs it end to end."""

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from crm import registry
from providers import crm_state, outbox, reconcile
from providers.models import LinkStatus, ProviderLink
from tests.fake_crm.provider import SIGNATURE_HEADER, STORE
from webhooks.models import WebhookEvent
from webhooks.services import events_process

pytestmark = pytest.mark.django_db
SECRET = "fake-secret"


@pytest.fixture(autouse=True)
def fake_crm(settings, monkeypatch):
    """Registered as every CRM is: a line in the registry, its settings under its name."""
    monkeypatch.setitem(registry.PROVIDER_CLASSES, "fakecrm", "tests.fake_crm.provider.FakeCrm")
    settings.FAKECRM = {"secret": SECRET}
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "", "refresh_token": ""}
    settings.SALESFORCE = {**settings.SALESFORCE, "access_token": "", "client_id": "", "instance_url": ""}
    settings.SYNC_BATCH_LINGER_MS = 0
    STORE.__init__()  # a fresh CRM per test
    registry.reset()
    yield
    registry.reset()


def deliver(client, *events: dict) -> None:
    body = json.dumps(events).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = client.post(
        "/webhooks/fakecrm", body, content_type="application/json", headers={SIGNATURE_HEADER: signature}
    )
    assert response.status_code == 200, response.content
    events_process(event_ids=list(WebhookEvent.objects.filter(status="received").values_list("pk", flat=True)))


def test_a_fake_crm_is_synced_both_ways_by_the_real_engine(api_client, client):
    assert registry.connected_providers() == ["fakecrm"]
    created = api_client.post("/contacts", {"email": "ada@example.com", "first_name": "Ada"}, format="json")
    assert created.json()["sync"]["fakecrm"]["status"] == "pending"

    outbox.drain_until_idle(provider_name="fakecrm")  # the forwarder, as its task runs it

    body = api_client.get(f"/contacts/{created.json()['id']}").json()
    record_id = body["sync"]["fakecrm"]["external_id"]
    assert body["sync"]["fakecrm"]["status"] == "synced"
    assert STORE.records[record_id]["values"] == {"email": "ada@example.com", "first_name": "Ada"}

    # A person's edit in the CRM comes back through its webhook and the shared inbound path.
    now = datetime.now(UTC).isoformat()
    deliver(client, {"event_id": "e1", "id": record_id, "values": {"last_name": "Lovelace"}, "occurred_at": now})
    assert api_client.get(f"/contacts/{created.json()['id']}").json()["last_name"] == "Lovelace"

    # A record made in the CRM while a webhook was lost: the reconciler brings it in.
    STORE.save("77", {"email": "grace@example.com", "first_name": "Grace"})
    counts = reconcile.reconcile(provider_name="fakecrm")
    assert counts["created"] == 1
    assert ProviderLink.objects.get(provider="fakecrm", external_id="77").contact.first_name == "Grace"

    # Its credential outage pauses it like any CRM's, and the probe resumes it.
    STORE.refuse_credentials = True
    api_client.patch(f"/contacts/{created.json()['id']}", {"phone": "+1 555 0100"}, format="json")
    outbox.drain_until_idle(provider_name="fakecrm")
    assert api_client.get(f"/contacts/{created.json()['id']}").json()["sync"]["fakecrm"]["status"] == "paused"
    STORE.refuse_credentials = False
    assert crm_state.crm_probe(provider="fakecrm") is True
    outbox.drain_until_idle(provider_name="fakecrm")
    assert STORE.records[record_id]["values"]["phone"] == "+1 555 0100"
    assert ProviderLink.objects.get(provider="fakecrm", external_id=record_id).status == LinkStatus.SYNCED


def test_a_crm_edit_applied_while_our_write_is_in_flight_is_written_back(api_client, client):
    """A person edits the CRM record just before SyncRoot's write lands over it, and the edit's
    webhook is applied before the write is recorded: the edit is newer, so SyncRoot takes it, and
    the CRM, which our write left holding the older value, gets it back."""
    created = api_client.post("/contacts", {"email": "race@example.com", "last_name": "Before"}, format="json")
    outbox.drain_until_idle(provider_name="fakecrm")
    contact_id = created.json()["id"]
    record_id = api_client.get(f"/contacts/{contact_id}").json()["sync"]["fakecrm"]["external_id"]
    api_client.patch(f"/contacts/{contact_id}", {"last_name": "Ours"}, format="json")
    edited_at = datetime.now(UTC).isoformat()  # after SyncRoot's change, before its write lands

    def webhook_meanwhile() -> None:
        deliver(client, {"event_id": "e-race", "id": record_id, "values": {"last_name": "Theirs"},
                         "occurred_at": edited_at})  # fmt: skip

    STORE.after_write = webhook_meanwhile
    outbox.drain_until_idle(provider_name="fakecrm")

    assert api_client.get(f"/contacts/{contact_id}").json()["last_name"] == "Theirs"
    assert STORE.records[record_id]["values"]["last_name"] == "Theirs"
    assert ProviderLink.objects.get(provider="fakecrm", external_id=record_id).status == LinkStatus.SYNCED
