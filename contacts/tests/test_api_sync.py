"""Every write marks each connected CRM pending in the same transaction and enqueues the forwarder on commit."""

import logging
import uuid

import pytest

from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from crm import registry
from providers.models import LinkStatus, ProviderLink
from syncroot.celery import app as celery_app

pytestmark = pytest.mark.django_db

CLOSED_PORT = "redis://127.0.0.1:1/0"
PROVIDER_CREDENTIALS = ("access_token", "refresh_token", "client_id", "client_secret")


@pytest.fixture(autouse=True)
def no_providers(settings):
    """Start every test disconnected, whatever the environment holds."""
    settings.HUBSPOT = {**settings.HUBSPOT, **dict.fromkeys(PROVIDER_CREDENTIALS, "")}
    settings.SALESFORCE = {**settings.SALESFORCE, **dict.fromkeys(PROVIDER_CREDENTIALS, "")}
    # Flags the enqueue path keeps in the cache stay apart from other test runs sharing this Redis.
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"syncroot-test-{uuid.uuid4().hex}"}}
    registry.reset()


def links(contact_id) -> dict[str, str]:
    return dict(ProviderLink.objects.filter(contact_id=contact_id).values_list("provider", "status"))


def test_without_a_connected_crm_sync_is_empty_and_nothing_is_enqueued(
    api_client, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = api_client.post("/contacts", {"email": "solo@example.com"}, format="json")

    assert response.status_code == 201
    assert response.json()["sync"] == {}
    assert callbacks == []
    assert enqueued == []
    assert not ProviderLink.objects.exists()


def test_a_create_marks_the_connected_crm_pending_and_enqueues_after_commit(
    api_client, hubspot, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api_client.post("/contacts", {"email": "ada@example.com"}, format="json")
    assert enqueued == []  # nothing is sent before the transaction commits
    for callback in callbacks:
        callback()

    assert response.status_code == 201
    body = response.json()
    assert body["sync"] == {
        "hubspot": {
            "status": "pending",
            "external_id": None,
            "synced_version": 0,
            "synced_at": None,
            "attempts": 0,
            "next_attempt_at": None,
            "last_error": None,
            "last_error_code": None,
            "issues": [],
            "reason": None,
        }
    }
    assert links(body["id"]) == {"hubspot": LinkStatus.PENDING}
    assert enqueued == [["hubspot"]]


def test_every_connected_crm_gets_an_entry_and_a_link(
    api_client, hubspot, salesforce, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        body = api_client.post("/contacts", {"email": "ada@example.com"}, format="json").json()

    assert set(body["sync"]) == {"hubspot", "salesforce"}
    assert {entry["status"] for entry in body["sync"].values()} == {"pending"}
    assert links(body["id"]) == {"hubspot": "pending", "salesforce": "pending"}
    assert [sorted(call) for call in enqueued] == [["hubspot", "salesforce"]]
    read = api_client.get(f"/contacts/{body['id']}").json()
    assert read["sync"] == body["sync"]
    listed = api_client.get("/contacts").json()["results"][0]
    assert listed["sync"] == body["sync"]


@pytest.mark.parametrize(
    ("method", "payload"),
    [("put", {"email": "new@example.com"}), ("patch", {"company": "New Co"}), ("delete", None)],
)
def test_an_update_or_delete_marks_a_synced_link_pending_again(
    api_client, hubspot, enqueued, django_capture_on_commit_callbacks, method, payload
):
    contact = ContactFactory()
    ProviderLink.objects.create(
        contact=contact, provider="hubspot", external_id="501", status=LinkStatus.SYNCED, synced_version=1
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = getattr(api_client, method)(f"/contacts/{contact.pk}", payload, format="json")

    assert response.status_code in (200, 204)
    link = ProviderLink.objects.get(contact=contact, provider="hubspot")
    assert (link.status, link.external_id, link.synced_version) == (LinkStatus.PENDING, "501", 1)
    assert link.pending_since is not None
    assert enqueued == [["hubspot"]]
    if method != "delete":
        assert response.json()["sync"]["hubspot"]["status"] == "pending"
        assert response.json()["sync"]["hubspot"]["external_id"] == "501"


def test_a_no_op_update_neither_marks_pending_nor_enqueues(
    api_client, hubspot, enqueued, django_capture_on_commit_callbacks
):
    contact = ContactFactory(company="Same")
    ProviderLink.objects.create(contact=contact, provider="hubspot", external_id="7", status=LinkStatus.SYNCED)

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.patch(f"/contacts/{contact.pk}", {"company": "Same"}, format="json")

    assert response.json()["sync"]["hubspot"]["status"] == "synced"
    assert links(contact.pk) == {"hubspot": LinkStatus.SYNCED}
    assert enqueued == []


def test_a_rejected_write_leaves_no_link_and_enqueues_nothing(
    api_client, hubspot, enqueued, django_capture_on_commit_callbacks
):
    ContactFactory(email="taken@example.com")

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post("/contacts", {"email": "taken@example.com"}, format="json")

    assert response.status_code == 409
    assert not ProviderLink.objects.exists()
    assert enqueued == []


def test_a_synced_link_shows_its_external_id_and_version(api_client, hubspot):
    contact = ContactFactory()
    ProviderLink.objects.create(
        contact=contact, provider="hubspot", external_id="123", status=LinkStatus.SYNCED, synced_version=1
    )

    entry = api_client.get(f"/contacts/{contact.pk}").json()["sync"]["hubspot"]

    assert (entry["status"], entry["external_id"], entry["synced_version"]) == ("synced", "123", 1)


def test_a_link_of_a_crm_no_longer_connected_is_not_shown(api_client, hubspot):
    contact = ContactFactory()
    ProviderLink.objects.create(contact=contact, provider="salesforce", external_id="003x", status="synced")

    assert set(api_client.get(f"/contacts/{contact.pk}").json()["sync"]) == {"hubspot"}


def test_resync_queues_the_contact_again(api_client, hubspot, enqueued, django_capture_on_commit_callbacks):
    contact = ContactFactory()
    ProviderLink.objects.create(contact=contact, provider="hubspot", external_id="9", status=LinkStatus.SYNCED)

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(f"/contacts/{contact.pk}/sync")

    assert response.status_code == 202
    assert response.json()["sync"]["hubspot"]["status"] == "pending"
    assert enqueued == [["hubspot"]]
    contact.refresh_from_db()
    assert contact.version == 1


# --- Redis down: the write is in PostgreSQL, the sweeper re-enqueues it later ------------------------
@pytest.fixture
def broker_down(monkeypatch):
    monkeypatch.setattr(celery_app.conf, "broker_url", CLOSED_PORT)
    # Forget pooled connections to the real broker so the next publish connects to the closed port.
    monkeypatch.setattr(celery_app, "_pool", None)
    monkeypatch.setattr(celery_app.amqp, "_producer_pool", None)


@pytest.fixture
def cache_down(settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": CLOSED_PORT}}


def assert_write_kept(response, caplog) -> None:
    assert response.status_code == 201, response.content
    contact = Contact.objects.get(pk=response.json()["id"])
    assert links(contact.pk) == {"hubspot": LinkStatus.PENDING}
    assert response.json()["sync"]["hubspot"]["status"] == "pending"
    assert any("enqueue failed" in record.getMessage() for record in caplog.records)


def test_a_write_succeeds_while_the_broker_is_down(
    api_client, hubspot, broker_down, caplog, django_capture_on_commit_callbacks
):
    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
        response = api_client.post("/contacts", {"email": "down@example.com"}, format="json")

    assert_write_kept(response, caplog)


def test_a_write_succeeds_while_redis_is_down_entirely(
    api_client, hubspot, broker_down, cache_down, caplog, django_capture_on_commit_callbacks
):
    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
        response = api_client.post("/contacts", {"email": "down@example.com"}, format="json")

    assert_write_kept(response, caplog)
