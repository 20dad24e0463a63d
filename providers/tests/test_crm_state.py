"""A CRM that refuses our credentials is paused, not fed dead letters (providers/crm_state.py)."""

import pytest
from django.contrib.auth import get_user_model

import providers.services
from contacts.models import Contact
from providers import crm_state, registry, sync
from providers.models import CrmState, CrmStatus, DeadLetter, LinkStatus, ProviderLink
from sandbox.testing import SandboxControl, running_sandbox

pytestmark = pytest.mark.django_db


@pytest.fixture
def enqueued(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(providers.services, "enqueue_forward", lambda *, providers: calls.append(list(providers)))
    return calls


@pytest.fixture
def hubspot(settings, enqueued):
    with running_sandbox("hubspot", rate_limit=None) as running:
        settings.HUBSPOT = {**settings.HUBSPOT, "base_url": running.url, "access_token": "sandbox-token",
                            "rate_limit": "1000/1 second"}  # fmt: skip
        settings.SALESFORCE = {**settings.SALESFORCE, "client_id": "", "client_secret": "", "access_token": ""}
        settings.SYNC_BATCH_LINGER_MS = 0
        registry.reset()
        yield SandboxControl(running.url)
        registry.reset()


def _create(api_client, email: str) -> str:
    response = api_client.post("/contacts", {"email": email}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_a_revoked_token_pauses_the_crm_and_a_working_probe_resumes_it(
    api_client, hubspot, enqueued, django_capture_on_commit_callbacks
):
    """Before: the change was parked as a dead letter after one attempt, and nothing resumed."""
    hubspot.config(token="revoked")  # the private-app token SyncRoot holds is refused: 401
    contact_id = _create(api_client, "paused@example.com")

    report = sync.drain(provider_name="hubspot", linger=False)

    assert report.paused
    link = ProviderLink.objects.get(contact_id=contact_id)
    assert link.status == LinkStatus.PENDING
    assert link.attempts == 0
    assert not DeadLetter.objects.exists()
    state = CrmState.objects.get(provider="hubspot")
    assert state.status == CrmStatus.AUTH_FAILED
    assert "INVALID_AUTHENTICATION" in state.last_error

    calls = hubspot.stats()["requests_total"]
    assert sync.drain(provider_name="hubspot", linger=False).claimed == 0
    assert hubspot.stats()["requests_total"] == calls  # no call wasted while paused

    entry = api_client.get(f"/contacts/{contact_id}").json()["sync"]["hubspot"]
    assert (entry["status"], entry["reason"]) == ("paused", "auth_failed")
    metrics = api_client.get("/metrics").content.decode()
    assert 'syncroot_crm_status{provider="hubspot",status="auth_failed"} 1.0' in metrics
    assert 'syncroot_crm_status{provider="hubspot",status="active"} 0.0' in metrics

    assert crm_state.crm_probe_paused() == {"hubspot": False}  # still revoked: stays paused
    hubspot.config(token="sandbox-token")
    with django_capture_on_commit_callbacks(execute=True):
        assert crm_state.crm_probe_paused() == {"hubspot": True}

    assert CrmState.objects.get(provider="hubspot").status == CrmStatus.ACTIVE
    assert enqueued[-1] == ["hubspot"]  # what waited drains at once
    sync.drain(provider_name="hubspot", linger=False)
    assert ProviderLink.objects.get(contact_id=contact_id).status == LinkStatus.SYNCED
    assert [r["properties"]["email"] for r in hubspot.records()] == ["paused@example.com"]
    assert api_client.get(f"/contacts/{contact_id}").json()["sync"]["hubspot"]["reason"] is None


def test_the_admin_checks_credentials_at_once(client, hubspot, api_client):
    hubspot.config(token="revoked")
    _create(api_client, "admin@example.com")
    sync.drain(provider_name="hubspot", linger=False)
    hubspot.config(token="sandbox-token")
    admin = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client.force_login(admin)

    listing = client.get("/admin/providers/crmstate/")
    state = CrmState.objects.get(provider="hubspot")
    response = client.post(
        "/admin/providers/crmstate/", {"action": "check_credentials", "_selected_action": [state.pk]}, follow=True
    )

    assert listing.status_code == 200
    assert b"auth_failed" in listing.content
    assert response.status_code == 200
    assert CrmState.objects.get(provider="hubspot").status == CrmStatus.ACTIVE
    assert Contact.objects.count() == 1
