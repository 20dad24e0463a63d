"""Optimistic concurrency with ETag / If-Match on PUT, PATCH and DELETE."""

import pytest

from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db

WRITES = {
    "put": lambda client, url, **headers: client.put(url, {"email": "new@example.com"}, format="json", headers=headers),
    "patch": lambda client, url, **headers: client.patch(url, {"company": "New Co"}, format="json", headers=headers),
    "delete": lambda client, url, **headers: client.delete(url, headers=headers),
}
SUCCESS = {"put": 200, "patch": 200, "delete": 204}


@pytest.mark.parametrize("method", WRITES)
def test_a_stale_if_match_is_a_412_naming_the_current_version(api_client, method):
    contact = ContactFactory(version=3)

    response = WRITES[method](api_client, f"/contacts/{contact.pk}", **{"If-Match": '"2"'})

    body = assert_error(response, 412, "precondition_failed")
    assert body["details"]["current_version"] == 3
    contact.refresh_from_db()
    assert contact.version == 3
    assert contact.deleted_at is None
    assert contact.company != "New Co"


@pytest.mark.parametrize("method", WRITES)
@pytest.mark.parametrize("if_match", ['"3"', "3", 'W/"3"', "*"])
def test_a_matching_or_wildcard_if_match_succeeds(api_client, method, if_match):
    contact = ContactFactory(version=3)

    response = WRITES[method](api_client, f"/contacts/{contact.pk}", **{"If-Match": if_match})

    assert response.status_code == SUCCESS[method], response.content
    contact.refresh_from_db()
    assert contact.version == 4


@pytest.mark.parametrize("method", WRITES)
@pytest.mark.parametrize("if_match", ['"abc"', "garbage", '"-1"', '"3", "4"', '"3.0"'])
def test_a_garbage_if_match_is_a_412(api_client, method, if_match):
    contact = ContactFactory(version=3)

    response = WRITES[method](api_client, f"/contacts/{contact.pk}", **{"If-Match": if_match})

    assert_error(response, 412, "precondition_failed")
    contact.refresh_from_db()
    assert contact.version == 3


def test_the_etag_of_a_read_is_a_valid_if_match_for_the_next_write(api_client):
    contact = ContactFactory()
    etag = api_client.get(f"/contacts/{contact.pk}")["ETag"]

    first = api_client.patch(f"/contacts/{contact.pk}", {"company": "A"}, format="json", headers={"If-Match": etag})
    second = api_client.patch(f"/contacts/{contact.pk}", {"company": "B"}, format="json", headers={"If-Match": etag})

    assert first.status_code == 200
    assert first["ETag"] == '"2"'
    assert assert_error(second, 412, "precondition_failed")["details"]["current_version"] == 2
    assert Contact.objects.get(pk=contact.pk).company == "A"


def test_if_match_on_a_missing_contact_is_a_404(api_client):
    contact = ContactFactory(deleted=True)

    response = api_client.patch(f"/contacts/{contact.pk}", {"company": "X"}, format="json", headers={"If-Match": '"1"'})

    assert_error(response, 404, "not_found")
