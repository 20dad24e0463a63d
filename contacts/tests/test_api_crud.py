"""Create, read, replace, patch and delete through the REST API."""

import uuid

import pytest

from contacts.models import SYNCED_FIELDS, Contact
from contacts.tests.factories import ContactFactory
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db

FULL = {
    "email": "ada@example.com",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "phone": "+44 20 7946 0000",
    "company": "Analytical Engines Ltd",
    "job_title": "Programmer",
}


def test_create_answers_201_with_the_contact_location_and_etag(api_client):
    response = api_client.post("/contacts", FULL, format="json")

    assert response.status_code == 201
    body = response.json()
    assert {field: body[field] for field in SYNCED_FIELDS} == FULL
    assert body["version"] == 1
    assert body["sync"] == {}
    assert body["created_at"]
    assert body["updated_at"]
    assert response["Location"] == f"/contacts/{body['id']}"
    assert response["ETag"] == '"1"'
    stored = Contact.objects.get(pk=body["id"])
    assert stored.synced_values() == FULL
    assert stored.deleted_at is None


def test_create_defaults_omitted_optional_fields_to_empty(api_client):
    response = api_client.post("/contacts", {"email": "min@example.com"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["email"] == "min@example.com"
    assert all(body[field] == "" for field in SYNCED_FIELDS if field != "email")


def test_create_records_when_each_field_changed(api_client):
    response = api_client.post("/contacts", FULL, format="json")

    contact = Contact.objects.get(pk=response.json()["id"])
    assert set(contact.field_times) == set(SYNCED_FIELDS)


def test_get_returns_the_contact_with_its_version_as_etag(api_client):
    contact = ContactFactory(version=7)

    response = api_client.get(f"/contacts/{contact.pk}")

    assert response.status_code == 200
    assert response["ETag"] == '"7"'
    body = response.json()
    assert body["id"] == str(contact.pk)
    assert body["email"] == contact.email
    assert body["version"] == 7


def test_created_contact_can_be_read_back_at_its_location(api_client):
    created = api_client.post("/contacts", FULL, format="json")

    read = api_client.get(created["Location"])

    assert read.status_code == 200
    assert read.json() == created.json()


def test_put_replaces_the_contact_and_blanks_omitted_fields(api_client):
    contact = ContactFactory()

    response = api_client.put(
        f"/contacts/{contact.pk}", {"email": "new@example.com", "first_name": "New"}, format="json"
    )

    assert response.status_code == 200
    assert response["ETag"] == '"2"'
    body = response.json()
    assert body["version"] == 2
    assert body["email"] == "new@example.com"
    assert body["first_name"] == "New"
    assert body["last_name"] == body["phone"] == body["company"] == body["job_title"] == ""
    contact.refresh_from_db()
    assert contact.version == 2
    assert contact.last_name == ""
    assert contact.company == ""


def test_put_requires_the_email(api_client):
    contact = ContactFactory()

    response = api_client.put(f"/contacts/{contact.pk}", {"first_name": "No email"}, format="json")

    body = assert_error(response, 400, "validation_error")
    assert "email" in body["details"]
    contact.refresh_from_db()
    assert contact.version == 1


def test_patch_changes_only_the_given_fields(api_client):
    contact = ContactFactory(first_name="Ada", company="Old Co")
    before_times = dict(contact.field_times)

    response = api_client.patch(f"/contacts/{contact.pk}", {"company": "New Co"}, format="json")

    assert response.status_code == 200
    assert response["ETag"] == '"2"'
    body = response.json()
    assert body["company"] == "New Co"
    assert body["first_name"] == "Ada"
    assert body["email"] == contact.email
    contact.refresh_from_db()
    assert contact.version == 2
    assert contact.company == "New Co"
    # Only the changed field gets a new change time (latest change per field wins on sync).
    assert set(contact.field_times) - set(before_times) == {"company"}


def test_successive_updates_keep_bumping_the_version(api_client):
    contact = ContactFactory()

    for expected, company in enumerate(["A", "B", "C"], start=2):
        response = api_client.patch(f"/contacts/{contact.pk}", {"company": company}, format="json")
        assert response.json()["version"] == expected
        assert response["ETag"] == f'"{expected}"'


@pytest.mark.parametrize("method", ["put", "patch"])
def test_an_update_that_changes_nothing_keeps_the_version(api_client, method):
    contact = ContactFactory()
    same = {field: getattr(contact, field) for field in SYNCED_FIELDS}

    response = getattr(api_client, method)(f"/contacts/{contact.pk}", same, format="json")

    assert response.status_code == 200
    assert response.json()["version"] == 1
    assert response["ETag"] == '"1"'
    contact.refresh_from_db()
    assert contact.version == 1


def test_an_empty_patch_keeps_the_version(api_client):
    contact = ContactFactory()

    response = api_client.patch(f"/contacts/{contact.pk}", {}, format="json")

    assert response.status_code == 200
    assert response.json()["version"] == 1


def test_changing_only_the_case_of_the_own_email_is_allowed(api_client):
    contact = ContactFactory(email="case@example.com")

    response = api_client.patch(f"/contacts/{contact.pk}", {"email": "Case@Example.com"}, format="json")

    assert response.status_code == 200
    assert response.json()["email"] == "Case@Example.com"
    assert response.json()["version"] == 2


def test_delete_answers_204_and_keeps_a_tombstone(api_client):
    contact = ContactFactory()

    response = api_client.delete(f"/contacts/{contact.pk}")

    assert response.status_code == 204
    assert response.content == b""
    assert_error(api_client.get(f"/contacts/{contact.pk}"), 404, "not_found")
    tombstone = Contact.objects.get(pk=contact.pk)
    assert tombstone.deleted_at is not None
    assert tombstone.version == 2


def test_a_deleted_contact_is_gone_for_every_method(api_client):
    contact = ContactFactory(deleted=True)
    url = f"/contacts/{contact.pk}"

    assert_error(api_client.get(url), 404, "not_found")
    assert_error(api_client.put(url, {"email": "x@example.com"}, format="json"), 404, "not_found")
    assert_error(api_client.patch(url, {"company": "X"}, format="json"), 404, "not_found")
    assert_error(api_client.delete(url), 404, "not_found")
    assert Contact.objects.get(pk=contact.pk).version == 1


def test_the_email_of_a_deleted_contact_can_be_reused(api_client):
    first = api_client.post("/contacts", {"email": "reuse@example.com"}, format="json").json()
    assert api_client.delete(f"/contacts/{first['id']}").status_code == 204

    second = api_client.post("/contacts", {"email": "REUSE@example.com"}, format="json")

    assert second.status_code == 201
    assert second.json()["id"] != first["id"]
    assert Contact.objects.filter(email__iexact="reuse@example.com").count() == 2


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_a_missing_contact_is_a_json_404(api_client, method):
    missing = uuid.uuid4()

    response = getattr(api_client, method)(f"/contacts/{missing}", {"email": "x@example.com"}, format="json")

    body = assert_error(response, 404, "not_found")
    assert body["details"] == {"id": str(missing)}


@pytest.mark.parametrize("path", ["/contacts/42", "/contacts/not-a-uuid", "/contacts/"])
def test_a_path_that_is_not_a_contact_id_is_a_json_404(api_client, path):
    assert_error(api_client.get(path), 404, "not_found")
