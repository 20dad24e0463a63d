"""POST /contacts/batch: many contacts in one request, all or none."""

import pytest

from contacts.models import SYNCED_FIELDS, Contact, IdempotencyKey
from contacts.serializers import BATCH_MAX_CONTACTS
from contacts.tests.factories import ContactFactory
from providers.models import LinkStatus, ProviderLink
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db

URL = "/contacts/batch"


def person(index: int, **extra: str) -> dict[str, str]:
    return {"email": f"p{index}@example.com", "first_name": f"First{index}", "last_name": "Ünïcødé", **extra}


def test_creates_every_contact_in_the_order_given(api_client):
    items = [person(i, phone=f"+1 555 {i:04d}") for i in range(5)]

    response = api_client.post(URL, {"contacts": items}, format="json")

    assert response.status_code == 201, response.content
    created = response.json()["contacts"]
    assert [{f: c[f] for f in ("email", "first_name", "last_name", "phone")} for c in created] == items
    assert all(c["version"] == 1 and c["company"] == "" for c in created)
    stored = {str(c.pk): c for c in Contact.objects.all()}
    assert set(stored) == {c["id"] for c in created}
    for body in created:
        contact = stored[body["id"]]
        assert contact.synced_values() == {f: body[f] for f in SYNCED_FIELDS}
        assert set(contact.field_times) == set(SYNCED_FIELDS)
        assert contact.created_at is not None


def test_marks_every_contact_pending_in_each_crm_and_enqueues_once_after_commit(
    api_client, connected, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api_client.post(URL, {"contacts": [person(i) for i in range(3)]}, format="json")
    assert enqueued == []
    for callback in callbacks:
        callback()

    assert response.status_code == 201
    assert enqueued == [["salesforce", "hubspot"]] or enqueued == [["hubspot", "salesforce"]]
    ids = [c["id"] for c in response.json()["contacts"]]
    links = ProviderLink.objects.filter(contact_id__in=ids)
    assert sorted(links.values_list("provider", flat=True)) == ["hubspot"] * 3 + ["salesforce"] * 3
    assert set(links.values_list("status", flat=True)) == {LinkStatus.PENDING}
    assert all(link.pending_since is not None for link in links)
    for body in response.json()["contacts"]:
        assert {name: entry["status"] for name, entry in body["sync"].items()} == {
            "hubspot": "pending",
            "salesforce": "pending",
        }


def test_an_email_already_held_refuses_the_whole_batch_naming_each_one(api_client):
    held = ContactFactory(email="p1@example.com")
    other = ContactFactory(email="P3@Example.com")

    response = api_client.post(URL, {"contacts": [person(i) for i in range(4)]}, format="json")

    body = assert_error(response, 409, "conflict")
    assert body["details"] == {
        "field": "email",
        "conflicts": [
            {"index": 1, "email": "p1@example.com", "existing_id": str(held.pk)},
            {"index": 3, "email": "p3@example.com", "existing_id": str(other.pk)},
        ],
    }
    assert Contact.objects.count() == 2
    assert not ProviderLink.objects.exists()


def test_a_deleted_contacts_email_can_be_used_again(api_client):
    gone = ContactFactory(email="p0@example.com")
    Contact.objects.filter(pk=gone.pk).update(deleted_at="2026-01-01T00:00:00Z")

    response = api_client.post(URL, {"contacts": [person(0)]}, format="json")

    assert response.status_code == 201, response.content
    assert Contact.objects.filter(email="p0@example.com", deleted_at__isnull=True).count() == 1


def test_the_same_email_twice_in_a_batch_is_a_validation_error(api_client):
    items = [person(0), person(1), {**person(2), "email": "P0@example.com "}]

    response = api_client.post(URL, {"contacts": items}, format="json")

    body = assert_error(response, 400, "validation_error")
    assert body["details"]["contacts"] == {"2": {"email": ["Same email as contacts[0]."]}}
    assert not Contact.objects.exists()


def test_an_invalid_item_is_reported_at_its_position_and_nothing_is_created(api_client):
    items = [person(0), {"email": "not-an-email"}, person(2), {**person(3), "nickname": "x"}]

    response = api_client.post(URL, {"contacts": items}, format="json")

    body = assert_error(response, 400, "validation_error")
    assert body["details"]["contacts"] == {
        "1": {"email": ["Enter a valid email address."]},
        "3": {"nickname": ["Unknown field."]},
    }
    assert not Contact.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"contacts": []}, "contacts"),
        ({}, "contacts"),
        ({"contacts": "ada@example.com"}, "contacts"),
        ({"contacts": [person(0)], "extra": 1}, "extra"),
        ([person(0)], "non_field_errors"),
    ],
)
def test_malformed_batches_are_refused(api_client, payload, field):
    response = api_client.post(URL, payload, format="json")

    body = assert_error(response, 400, "validation_error")
    assert field in body["details"]
    assert not Contact.objects.exists()


def test_more_than_the_maximum_is_refused(api_client):
    items = [person(i) for i in range(BATCH_MAX_CONTACTS + 1)]

    response = api_client.post(URL, {"contacts": items}, format="json")

    body = assert_error(response, 400, "validation_error")
    assert "contacts" in body["details"]
    assert not Contact.objects.exists()


def test_the_maximum_is_accepted(api_client, connected, enqueued):
    response = api_client.post(URL, {"contacts": [person(i) for i in range(BATCH_MAX_CONTACTS)]}, format="json")

    assert response.status_code == 201, response.content[:500]
    assert Contact.objects.count() == BATCH_MAX_CONTACTS
    assert ProviderLink.objects.count() == 2 * BATCH_MAX_CONTACTS


def test_an_idempotency_key_replays_the_first_response(api_client):
    payload = {"contacts": [person(0), person(1)]}
    headers = {"Idempotency-Key": "batch-1"}

    first = api_client.post(URL, payload, format="json", headers=headers)
    second = api_client.post(URL, payload, format="json", headers=headers)
    other = api_client.post(URL, {"contacts": [person(2)]}, format="json", headers=headers)

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert Contact.objects.count() == 2
    assert IdempotencyKey.objects.get(key="batch-1").response_status == 201
    assert_error(other, 422, "unprocessable_entity")


def test_requires_a_token(client):
    response = client.post(URL, {"contacts": [person(0)]}, content_type="application/json")

    assert_error(response, 401, "unauthenticated")
    assert not Contact.objects.exists()
