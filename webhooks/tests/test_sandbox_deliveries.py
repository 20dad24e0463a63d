"""Real deliveries from the CRM sandboxes, over HTTP, into a live server: what the emulated CRMs
sign and send is what the endpoints accept, and the sandboxes take our answers as acks."""

import time

import pytest

from crm import registry
from sandbox.testing import SandboxControl, running_sandbox
from webhooks.models import WebhookEvent
from webhooks.tests.factories import (
    HUBSPOT_SECRET,
    SALESFORCE_EVENT_SECRET,
    SALESFORCE_ORG,
    SALESFORCE_SETTINGS,
    SALESFORCE_TOKEN,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("enqueued")]


@pytest.fixture
def public_url(settings, live_server) -> str:
    settings.PUBLIC_BASE_URL = live_server.url
    return live_server.url


def wait_for_rows(provider: str, count: int, timeout_s: float = 10.0) -> list[WebhookEvent]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = list(WebhookEvent.objects.filter(provider=provider).order_by("pk"))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_hubspot_sandbox_deliveries_land_in_the_inbox(settings, public_url, enqueued):
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "t", "client_secret": HUBSPOT_SECRET, "app_id": "1234567"}
    registry.reset()
    with running_sandbox(
        "hubspot", webhook_url=public_url + "/webhooks/hubspot", client_secret=HUBSPOT_SECRET, app_id=1234567
    ) as sandbox:
        control = SandboxControl(sandbox.url)
        contact = control.edit(fields={"email": "ada@example.com", "firstname": "Ada"})
        assert control.flush_webhooks()
        control.edit(contact["id"], {"firstname": "Grace"})
        assert control.flush_webhooks()  # every batch answered 2xx: nothing left to retry
        stats = control.stats()["webhooks"]

    rows = wait_for_rows("hubspot", 4)
    kinds = [(row.payload["subscriptionType"], row.payload.get("propertyValue")) for row in rows]
    assert ("contact.creation", None) in kinds
    assert ("contact.propertyChange", "ada@example.com") in kinds
    assert ("contact.propertyChange", "Grace") in kinds
    assert all(str(row.payload["objectId"]) == str(contact["id"]) for row in rows)
    assert sum(len(ids) for _, ids in enqueued) == len(rows)
    assert stats["failed"] == 0
    assert stats["acked"] == stats["sent"] >= 2


def test_salesforce_sandbox_outbound_messages_and_delete_events_land_in_the_inbox(settings, public_url):
    settings.SALESFORCE = {**settings.SALESFORCE, **SALESFORCE_SETTINGS}
    registry.reset()
    with running_sandbox(
        "salesforce",
        webhook_url=f"{public_url}/webhooks/salesforce?token={SALESFORCE_TOKEN}",
        organization_id=SALESFORCE_ORG,
        change_event_secret=SALESFORCE_EVENT_SECRET,
        change_events="deletes",
    ) as sandbox:
        control = SandboxControl(sandbox.url)
        contact = control.edit(fields={"LastName": "Lovelace", "FirstName": "Ada", "Email": "ada@example.com"})
        # The sandbox only counts an Outbound Message delivered on a SOAP <Ack>true</Ack>.
        assert control.flush_webhooks()
        outbound = wait_for_rows("salesforce", 1)
        control.edit(contact["Id"], delete=True)
        assert control.flush_webhooks()
        stats = control.stats()["webhooks"]

    rows = wait_for_rows("salesforce", 2)
    by_kind = {row.payload["kind"]: row for row in rows}
    assert set(by_kind) == {"outbound_message", "change_event"}
    assert outbound[0].payload["kind"] == "outbound_message"
    assert by_kind["outbound_message"].payload["sobject"]["Email"] == "ada@example.com"
    assert by_kind["outbound_message"].payload["organization_id"] == SALESFORCE_ORG
    header = by_kind["change_event"].payload["ChangeEventHeader"]
    assert header["changeType"] == "DELETE"
    assert header["recordIds"][0][:15] == contact["Id"][:15]
    assert stats["failed"] == 0
    assert stats["channels"]["outbound"]["acked"] >= 1
    assert stats["channels"]["events"]["acked"] >= 1
