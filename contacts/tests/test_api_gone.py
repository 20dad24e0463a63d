"""Every operation on one contact, asked of a merged-away id and of an erased one: a clear JSON
error (410 naming where a merged contact lives on; 404 for an erased one), and the tombstone as it was."""

import pytest

from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from providers.lifecycle import contact_erase
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db

NEW = {"email": "new@example.com", "first_name": "New"}


def requests_for(api_client, contact_id, live_id) -> dict:
    """Each operation on `contact_id`, as a call (`live_id`: another live contact, for merges)."""
    path = f"/contacts/{contact_id}"
    return {
        "GET": lambda: api_client.get(path),
        "PUT": lambda: api_client.put(path, NEW, format="json"),
        "PATCH": lambda: api_client.patch(path, {"first_name": "Edited"}, format="json"),
        "PATCH If-Match": lambda: api_client.patch(path, {"first_name": "Edited"}, format="json", HTTP_IF_MATCH='"2"'),
        "DELETE": lambda: api_client.delete(path),
        "sync": lambda: api_client.post(f"{path}/sync"),
        "history": lambda: api_client.get(f"{path}/history"),
        "restore": lambda: api_client.post(f"{path}/restore"),
        "merge into it": lambda: api_client.post(f"{path}/merge", {"other_id": str(live_id)}, format="json"),
        "merge it": lambda: api_client.post(f"/contacts/{live_id}/merge", {"other_id": str(contact_id)}, format="json"),
    }


OPERATIONS = list(requests_for(None, None, None))


def state(contact_id) -> tuple:
    contact = Contact.objects.get(pk=contact_id)
    return contact.version, contact.synced_values(), contact.deleted_at, contact.merged_into_id, contact.custom


@pytest.fixture
def merged(api_client, connected, enqueued):
    """Contact `gone` merged into `survivor`; `bystander`: a third, live contact."""
    survivor, gone, bystander = ContactFactory(), ContactFactory(), ContactFactory()
    response = api_client.post(f"/contacts/{survivor.pk}/merge", {"other_id": str(gone.pk)}, format="json")
    assert response.status_code == 200, response.content
    return survivor, gone, bystander


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_merged_away_id_answers_410_with_where_it_went_and_changes_nothing(api_client, merged, operation):
    survivor, gone, bystander = merged
    before = state(gone.pk), state(survivor.pk), state(bystander.pk)

    response = requests_for(api_client, gone.pk, bystander.pk)[operation]()

    body = assert_error(response, 410, "gone")
    assert body["details"] == {"id": str(gone.pk), "merged_into": str(survivor.pk)}
    assert (state(gone.pk), state(survivor.pk), state(bystander.pk)) == before


def test_a_contact_merged_twice_answers_with_the_live_one(api_client, merged):
    survivor, gone, bystander = merged
    merge = api_client.post(f"/contacts/{bystander.pk}/merge", {"other_id": str(survivor.pk)}, format="json")
    assert merge.status_code == 200

    body = assert_error(api_client.get(f"/contacts/{gone.pk}"), 410, "gone")

    assert body["details"]["merged_into"] == str(bystander.pk)


def test_repeating_a_merge_that_happened_answers_the_survivor(api_client, merged):
    survivor, gone, _ = merged

    response = api_client.post(f"/contacts/{survivor.pk}/merge", {"other_id": str(gone.pk)}, format="json")

    assert response.status_code == 200
    assert response.json()["id"] == str(survivor.pk)
    assert response.json()["version"] == state(survivor.pk)[0]


def test_lists_never_show_a_merged_away_contact(api_client, merged):
    survivor, gone, bystander = merged

    listed = {c["id"] for c in api_client.get("/contacts").json()["results"]}

    assert listed == {str(survivor.pk), str(bystander.pk)}
    assert api_client.get("/contacts", {"email": gone.email}).json()["results"] == []


@pytest.mark.parametrize("operation", OPERATIONS)
def test_an_erased_id_answers_404_and_changes_nothing(api_client, connected, enqueued, operation):
    erased, bystander = ContactFactory(), ContactFactory()
    contact_erase(contact_id=erased.pk)
    before = state(erased.pk), state(bystander.pk)

    response = requests_for(api_client, erased.pk, bystander.pk)[operation]()

    body = assert_error(response, 404, "not_found")
    assert body["details"] == {"id": str(erased.pk)}
    assert (state(erased.pk), state(bystander.pk)) == before
    assert Contact.objects.get(pk=erased.pk).erased_email_hash


def test_merging_a_contact_into_itself_is_a_conflict(api_client, connected, enqueued):
    contact = ContactFactory()

    response = api_client.post(f"/contacts/{contact.pk}/merge", {"other_id": str(contact.pk)}, format="json")

    assert_error(response, 409, "conflict")
