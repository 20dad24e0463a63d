"""The operator's admin for custom fields, and custom values on the contact's page."""

import pytest
from django.contrib.messages import get_messages

from contacts.models import CustomField
from contacts.tests.factories import ContactFactory, CustomFieldFactory

pytestmark = pytest.mark.django_db

FIELDS = "/admin/contacts/customfield/"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_the_change_page_of_a_contact_shows_its_custom_values(admin_client):
    contact = ContactFactory(custom={"tier": "platinum-plus", "seats": 42})

    response = admin_client.get(f"/admin/contacts/contact/{contact.pk}/change/")

    assert response.status_code == 200
    assert b"platinum-plus" in response.content


def test_custom_fields_are_listed(admin_client):
    CustomFieldFactory(key="tier", type="enum", options=["gold"])
    CustomFieldFactory(key="seats", type="number")

    response = admin_client.get(FIELDS)

    assert response.status_code == 200
    assert {field.key for field in response.context["cl"].result_list} == {"tier", "seats"}


def test_a_field_added_in_the_admin_is_validated_like_the_api(admin_client):
    form = {"key": "tier", "label": "Tier", "type": "enum", "options": '["gold", "silver"]', "max_length": ""}

    response = admin_client.post(f"{FIELDS}add/", form, follow=True)

    assert response.status_code == 200
    field = CustomField.objects.get(key="tier")
    assert (field.options, field.max_length) == (["gold", "silver"], None)

    refused = admin_client.post(f"{FIELDS}add/", {**form, "key": "region", "options": "[]"}, follow=True)
    assert any("Not saved" in text for text in messages_of(refused))
    assert not CustomField.objects.filter(key="region").exists()


def test_an_edit_that_stored_values_would_not_fit_is_refused(admin_client):
    field = CustomFieldFactory(key="tier", type="enum", options=["gold", "silver"])
    ContactFactory(custom={"tier": "gold"})
    form = {"label": "Plan", "options": '["silver"]', "max_length": ""}

    response = admin_client.post(f"{FIELDS}{field.pk}/change/", form, follow=True)

    assert any("1 contacts hold options" in text for text in messages_of(response))
    field.refresh_from_db()
    assert (field.label, field.options) == ("tier".capitalize(), ["gold", "silver"])

    admin_client.post(f"{FIELDS}{field.pk}/change/", {**form, "options": '["gold", "silver", "bronze"]'})
    field.refresh_from_db()
    assert (field.label, field.options) == ("Plan", ["gold", "silver", "bronze"])


def test_a_field_contacts_hold_values_of_is_not_deleted_from_the_admin(admin_client):
    held = CustomFieldFactory(key="tier", type="enum")
    ContactFactory(custom={"tier": "gold"})
    free = CustomFieldFactory(key="seats", type="number")

    response = admin_client.post(f"{FIELDS}{held.pk}/delete/", {"post": "yes"}, follow=True)
    admin_client.post(f"{FIELDS}{free.pk}/delete/", {"post": "yes"})

    assert any("Not deleted" in text for text in messages_of(response))
    assert list(CustomField.objects.values_list("key", flat=True)) == ["tier"]
