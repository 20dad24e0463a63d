"""A CRM that refuses our credentials is paused, not fed dead letters (providers/crm_state.py)."""

import pytest
import requests
from django.contrib.auth import get_user_model

from contacts.models import Contact
from crm import registry
from providers import crm_state, sync
from providers.models import Connection, ConnectionStatus, DeadLetter, LinkStatus, ProviderLink
from sandbox.testing import SandboxControl, running_sandbox

pytestmark = pytest.mark.django_db


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
    state = Connection.objects.get(key="hubspot")
    assert state.status == ConnectionStatus.AUTH_FAILED
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

    assert Connection.objects.get(key="hubspot").status == ConnectionStatus.ACTIVE
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

    listing = client.get("/admin/providers/connection/")
    state = Connection.objects.get(key="hubspot")
    response = client.post(
        "/admin/providers/connection/", {"action": "check_credentials", "_selected_action": [state.pk]}, follow=True
    )

    assert listing.status_code == 200
    assert b"auth_failed" in listing.content
    assert response.status_code == 200
    assert Connection.objects.get(key="hubspot").status == ConnectionStatus.ACTIVE
    assert Contact.objects.count() == 1


@pytest.fixture
def hubspot_oauth(settings, enqueued):
    """HubSpot connected through OAuth (a refresh token), not a private-app token."""
    with running_sandbox("hubspot", rate_limit=None) as running:
        settings.HUBSPOT = {**settings.HUBSPOT, "base_url": running.url, "access_token": "",
                            "client_id": "sandbox-client", "client_secret": "sandbox-secret",
                            "refresh_token": "sandbox-refresh-token", "rate_limit": "1000/1 second"}  # fmt: skip
        settings.SALESFORCE = {**settings.SALESFORCE, "client_id": "", "client_secret": "", "access_token": ""}
        settings.SYNC_BATCH_LINGER_MS = 0
        registry.reset()
        yield running.url
        registry.reset()


@pytest.fixture
def salesforce(settings, enqueued):
    with running_sandbox("salesforce") as running:
        settings.SALESFORCE = {**settings.SALESFORCE, "login_url": running.url, "client_id": "sandbox-client",
                               "client_secret": "sandbox-secret", "access_token": ""}  # fmt: skip
        settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "", "refresh_token": ""}
        settings.SYNC_BATCH_LINGER_MS = 0
        registry.reset()
        yield running.url
        registry.reset()


def _paused_then_resumed(provider: str, api_client, *, revoke, restore, refused: str) -> None:
    contact_id = _create(api_client, f"{provider}-outage@example.com")
    revoke()

    assert sync.drain(provider_name=provider, linger=False).paused

    state = Connection.objects.get(key=provider)
    assert state.status == ConnectionStatus.AUTH_FAILED
    assert refused in state.last_error
    assert ProviderLink.objects.get(contact_id=contact_id).status == LinkStatus.PENDING
    assert not DeadLetter.objects.exists()
    restore()
    assert crm_state.crm_probe(provider=provider)
    sync.drain(provider_name=provider, linger=False)
    assert ProviderLink.objects.get(contact_id=contact_id).status == LinkStatus.SYNCED


def test_a_deleted_hubspot_refresh_token_pauses_until_the_app_is_authorised_again(api_client, hubspot_oauth):
    sandbox = SandboxControl(hubspot_oauth)
    assert crm_state.crm_probe(provider="hubspot")  # an access token from the refresh token is in use

    _paused_then_resumed(
        "hubspot", api_client, refused="BAD_REFRESH_TOKEN",
        revoke=lambda: requests.delete(f"{hubspot_oauth}/oauth/v1/refresh-tokens/sandbox-refresh-token", timeout=5),
        restore=lambda: sandbox.config(refresh_token="sandbox-refresh-token"),
    )  # fmt: skip


def test_a_rotated_salesforce_client_secret_pauses_until_it_is_restored(api_client, salesforce):
    sandbox = SandboxControl(salesforce)

    def rotate() -> None:
        sandbox.config(client_secret="rotated-secret")
        requests.post(f"{salesforce}/_sandbox/tokens/expire", timeout=5).raise_for_status()

    _paused_then_resumed(
        "salesforce", api_client, refused="invalid_client", revoke=rotate,
        restore=lambda: sandbox.config(client_secret="sandbox-secret"),
    )  # fmt: skip


def test_the_reconciler_pauses_a_crm_that_refuses_it_and_leaves_a_paused_crm_alone(hubspot, monkeypatch):
    from providers import tasks

    hubspot.config(token="revoked")
    tasks.reconcile_provider("hubspot")
    assert Connection.objects.get(key="hubspot").status == ConnectionStatus.AUTH_FAILED

    sent: list = []
    monkeypatch.setattr(tasks.reconcile_provider, "apply_async", lambda args, queue: sent.append(args))
    calls = hubspot.stats()["requests_total"]
    tasks.reconcile_all()
    assert sent == []
    assert hubspot.stats()["requests_total"] == calls


@pytest.fixture
def display_clock(monkeypatch, settings):
    """The API's view of paused CRMs, cached for 2 s on a clock the test moves."""
    settings.API_CRM_STATE_CACHE_SECONDS = 2
    now = [500.0]
    monkeypatch.setattr(crm_state, "_clock", lambda: now[0])
    crm_state.forget_paused()
    yield now
    crm_state.forget_paused()


def test_the_api_sees_a_pause_written_elsewhere_within_the_cache_time(display_clock, django_assert_num_queries):
    assert crm_state.crm_paused_for_display() == {}
    Connection.objects.create(
        key="hubspot", provider="hubspot", status=ConnectionStatus.AUTH_FAILED
    )  # as another process would

    with django_assert_num_queries(0):
        still = crm_state.crm_paused_for_display()
    display_clock[0] += 2.1

    assert still == {}
    assert crm_state.crm_paused_for_display() == {"hubspot": "auth_failed"}


def test_a_pause_written_by_this_process_shows_at_once(display_clock):
    assert crm_state.crm_paused_for_display() == {}

    crm_state.crm_mark_auth_failed(provider="hubspot", error="401")
    paused = crm_state.crm_paused_for_display()
    crm_state.crm_mark_active(provider="hubspot")

    assert paused == {"hubspot": "auth_failed"}
    assert crm_state.crm_paused_for_display() == {}
