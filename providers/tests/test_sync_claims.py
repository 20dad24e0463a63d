"""The forwarder holds no transaction across a CRM call: claim, call, record (providers/sync.py)."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from contacts.models import Contact
from crm.base import Permanent, PushResult, value_hash
from providers import sync
from providers.models import DeadLetter, LinkStatus, ProviderLink
from providers.services import links_mark_pending

pytestmark = pytest.mark.django_db(transaction=True)


def _create(api_client, email: str) -> Contact:
    response = api_client.post("/contacts", {"email": email, "first_name": "Ada"}, format="json")
    assert response.status_code == 201, response.content
    return Contact.objects.get(pk=response.json()["id"])


def _drain_in_background() -> tuple[threading.Thread, list]:
    reports: list = []

    def run() -> None:
        try:
            reports.append(sync.drain(provider_name="hubspot", linger=False))
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, reports


def _wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_an_api_write_to_a_contact_in_flight_answers_at_once_and_goes_out_next(api_client, hubspot):
    """The drain used to hold its transaction and the link's row lock across the CRM call: a PATCH
    of the contact in flight waited for the CRM (here 2 s). Now it answers at once, and the result
    of the older call does not erase the newer pending change."""
    contact = _create(api_client, "inflight@example.com")
    hubspot.config(latency_ms=2000)
    thread, reports = _drain_in_background()
    _wait_until(lambda: ProviderLink.objects.filter(contact=contact, claimed_until__isnull=False).exists())

    began = time.monotonic()
    response = api_client.patch(f"/contacts/{contact.pk}", {"first_name": "Grace"}, format="json")
    took = time.monotonic() - began
    thread.join(30)

    assert response.status_code == 200
    assert took < 1.0
    assert reports[0].synced == 1
    link = ProviderLink.objects.get(contact=contact)
    assert link.status == LinkStatus.PENDING  # the newer version still has to go out
    assert link.pending_since is not None
    assert link.claimed_until is None
    assert link.external_id  # what the call did is recorded: the record, the ledger of what was sent
    assert link.field_hashes["first_name"] == value_hash("Ada")
    assert link.synced_version == 1

    hubspot.config(latency_ms=0)
    sync.drain(provider_name="hubspot", linger=False)

    link.refresh_from_db()
    assert link.status == LinkStatus.SYNCED
    assert link.synced_version == 2
    [record] = hubspot.records()
    assert record["properties"]["firstname"] == "Grace"


def test_a_refusal_of_an_older_version_does_not_park_the_newer_one(api_client, hubspot):
    contact = _create(api_client, "refused@example.com")
    claims = sync._claim(provider_name="hubspot", batch_size=10)
    links_mark_pending(contact=contact)  # the API changed it while the call ran
    refusal = Permanent("Property values were not valid", code="VALIDATION_ERROR", status=400)

    sync._record("hubspot", claims, [], [PushResult(key=claims[0].link.pk, error=refusal)], [], sync.DrainReport())

    link = ProviderLink.objects.get(contact=contact)
    assert link.status == LinkStatus.PENDING
    assert link.last_error_code == "VALIDATION_ERROR"
    assert link.claimed_until is None
    assert not DeadLetter.objects.exists()


def test_a_claimed_link_is_not_claimed_again_until_its_claim_is_void(api_client, hubspot):
    contact = _create(api_client, "claimed@example.com")

    assert len(sync._claim(provider_name="hubspot", batch_size=10)) == 1
    assert sync._claim(provider_name="hubspot", batch_size=10) == []  # e.g. the DLQ task's drain

    ProviderLink.objects.filter(contact=contact).update(claimed_by=2**31 - 1)  # no such backend: killed worker
    assert len(sync._claim(provider_name="hubspot", batch_size=10)) == 1

    past = timezone.now() - timedelta(seconds=1)  # a hung worker's lease ran out
    ProviderLink.objects.filter(contact=contact).update(claimed_until=past)
    assert len(sync._claim(provider_name="hubspot", batch_size=10)) == 1


def test_partial_updates_of_records_deleted_in_hubspot_send_the_whole_contacts_again(api_client, hubspot):
    """Two partial updates go through batch/update; HubSpot answers that both records are gone (their
    deletion webhooks lost). They used to be parked ("push the full contact"), a change nobody could
    deliver; now the whole contacts are sent again, matched by email or created."""
    contacts = [_create(api_client, f"gone{i}@example.com") for i in range(2)]
    sync.drain(provider_name="hubspot", linger=False)
    links = list(ProviderLink.objects.filter(contact__in=contacts, provider="hubspot"))
    assert all(link.status == LinkStatus.SYNCED for link in links)
    for link in links:
        hubspot.edit(link.external_id, delete=True)  # a person deletes them; no webhook is configured
    for contact in contacts:
        response = api_client.patch(f"/contacts/{contact.pk}", {"first_name": "Grace"}, format="json")
        assert response.status_code == 200

    sync.drain(provider_name="hubspot", linger=False)  # both 404: sent again as whole contacts
    sync.drain(provider_name="hubspot", linger=False)

    again = {link.pk: link for link in ProviderLink.objects.filter(pk__in=[link.pk for link in links])}
    assert {link.status for link in again.values()} == {LinkStatus.SYNCED}
    assert not DeadLetter.objects.exists()
    assert all(again[link.pk].external_id != link.external_id for link in links)  # recreated in HubSpot
    live = {r["properties"]["email"]: r["properties"].get("firstname") for r in hubspot.records() if not r["archived"]}
    assert live == {"gone0@example.com": "Grace", "gone1@example.com": "Grace"}
