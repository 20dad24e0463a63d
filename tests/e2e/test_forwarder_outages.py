"""A slow CRM and a credential outage, end to end with a real worker: API writes never wait on a
CRM, and a revoked or rotated credential pauses that CRM instead of parking its changes."""

import time

import pytest
import requests

from contacts.models import Contact
from providers import crm_state
from providers.models import Connection, ConnectionStatus, DeadLetter, LinkStatus, ProviderLink
from tests.e2e.conftest import SECRET

pytestmark = pytest.mark.django_db(transaction=True)


def _create(stack, email: str, first_name: str = "Ada") -> str:
    response = stack.api.post("/contacts", {"email": email, "first_name": first_name}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_a_patch_of_a_contact_in_flight_to_a_3_s_crm_answers_at_once_and_still_arrives(stack):
    stack.hubspot_ctl.config(latency_ms=3000)
    contact_id = _create(stack, "slow@example.com")
    stack.wait_until(
        lambda: ProviderLink.objects.filter(contact_id=contact_id, provider="hubspot", claimed_until__isnull=False)
    )  # the forwarder is in the CRM call

    began = time.monotonic()
    response = stack.api.patch(f"/contacts/{contact_id}", {"first_name": "Grace"}, format="json")
    took = time.monotonic() - began

    assert response.status_code == 200
    assert took < 0.5
    stack.wait_until(
        lambda: [r for r in stack.hubspot_records() if r["properties"].get("firstname") == "Grace"], timeout=30
    )
    stack.wait_until(lambda: ProviderLink.objects.get(contact_id=contact_id, provider="hubspot").synced_version == 2)
    assert len(stack.hubspot_records()) == 1


def _revoke_hubspot(stack) -> None:
    stack.hubspot_ctl.config(token="revoked")  # the private-app token SyncRoot holds is refused


def _restore_hubspot(stack) -> None:
    stack.hubspot_ctl.config(token="sandbox-token")


def _rotate_salesforce(stack) -> None:
    stack.salesforce_ctl.config(client_secret="rotated-secret")
    requests.post(f"{stack.salesforce.url}/_sandbox/tokens/expire", timeout=5).raise_for_status()


def _restore_salesforce(stack) -> None:
    stack.salesforce_ctl.config(client_secret=SECRET)


def _hubspot_emails(stack) -> list[str]:
    return [record["properties"]["email"] for record in stack.hubspot_records()]


def _salesforce_emails(stack) -> list[str]:
    return [record["Email"] for record in stack.salesforce_contacts()]


OUTAGES = {
    "hubspot": (_revoke_hubspot, _restore_hubspot, _hubspot_emails),
    "salesforce": (_rotate_salesforce, _restore_salesforce, _salesforce_emails),
}


@pytest.mark.parametrize("provider", sorted(OUTAGES))
def test_a_credential_outage_pauses_the_crm_and_everything_lands_once_it_works_again(stack, provider):
    revoke, restore, crm_emails = OUTAGES[provider]
    revoke(stack)
    ids = [_create(stack, f"outage-{n}@example.com") for n in range(5)]
    assert stack.api.patch(f"/contacts/{ids[0]}", {"first_name": "Changed"}, format="json").status_code == 200

    stack.wait_until(lambda: Connection.objects.filter(key=provider, status=ConnectionStatus.AUTH_FAILED).exists())
    other = "salesforce" if provider == "hubspot" else "hubspot"
    stack.wait_until(
        lambda: (
            ProviderLink.objects.filter(provider=other, status=LinkStatus.SYNCED, synced_version__gte=1).count() == 5
            and not ProviderLink.objects.filter(provider=other, contact_id=ids[0], synced_version__lt=2).exists()
        )
    )
    waiting = ProviderLink.objects.filter(provider=provider)
    assert sorted(waiting.values_list("status", flat=True)) == [LinkStatus.PENDING] * 5
    assert not waiting.filter(attempts__gt=0).exists()
    assert DeadLetter.objects.count() == 0
    for contact_id in ids:
        entry = stack.api.get(f"/contacts/{contact_id}").json()["sync"][provider]
        assert (entry["status"], entry["reason"]) == ("paused", "auth_failed")
    metrics = stack.api.get("/metrics").content.decode()
    assert f'syncroot_crm_status{{provider="{provider}",status="auth_failed"}} 1.0' in metrics
    assert f'syncroot_crm_status{{provider="{other}",status="active"}} 1.0' in metrics

    restore(stack)
    assert crm_state.crm_probe_paused() == {provider: True}  # what beat does every minute

    stack.wait_until(
        lambda: ProviderLink.objects.filter(provider=provider, status=LinkStatus.SYNCED).count() == 5, timeout=30
    )
    assert sorted(crm_emails(stack)) == sorted(Contact.objects.values_list("email", flat=True))  # 0 lost, 0 twice
    assert DeadLetter.objects.count() == 0
    entry = stack.api.get(f"/contacts/{ids[0]}").json()["sync"][provider]
    assert (entry["status"], entry["synced_version"]) == ("synced", 2)
