"""GET /contacts: cursor pagination and filters."""

import base64
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from contacts.views import ContactPagination
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db


def walk(client, url: str, direction: str = "next") -> list[list[str]]:
    """Follow the cursor links from `url`; the ids of each page, in order."""
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([item["id"] for item in body["results"]])
        url = body[direction]
    return pages


def test_an_empty_list(api_client):
    response = api_client.get("/contacts")

    assert response.status_code == 200
    assert response.json() == {"next": None, "previous": None, "results": []}


def test_the_list_is_newest_first_and_hides_deleted_contacts(api_client):
    older, newer = ContactFactory(), ContactFactory()
    ContactFactory(deleted=True)

    body = api_client.get("/contacts").json()

    assert [item["id"] for item in body["results"]] == [str(newer.pk), str(older.pk)]
    assert body["results"][0]["email"] == newer.email
    assert body["results"][0]["sync"] == {}


def test_cursors_walk_every_contact_exactly_once_both_ways(api_client):
    contacts = ContactFactory.create_batch(11)
    expected = [str(c.pk) for c in sorted(contacts, key=lambda c: c.created_at, reverse=True)]

    forward = walk(api_client, "/contacts?page_size=4")

    assert [len(page) for page in forward] == [4, 4, 3]
    assert [item for page in forward for item in page] == expected

    last_page = api_client.get("/contacts?page_size=4").json()
    while last_page["next"]:
        last_page = api_client.get(last_page["next"]).json()
    backward = walk(api_client, last_page["previous"], direction="previous")
    assert [item for page in reversed(backward) for item in page] == expected[:8]


def test_cursors_do_not_skip_or_repeat_contacts_created_at_the_same_instant(api_client):
    ContactFactory.create_batch(7)
    Contact.objects.update(created_at=timezone.now())  # every row ties on the first ordering key

    ids = [item for page in walk(api_client, "/contacts?page_size=3") for item in page]

    assert sorted(ids) == sorted(str(pk) for pk in Contact.objects.values_list("pk", flat=True))
    assert len(ids) == len(set(ids)) == 7


def test_the_configured_page_size_applies_without_page_size(api_client, monkeypatch):
    monkeypatch.setattr(ContactPagination, "page_size", 2)
    ContactFactory.create_batch(3)

    body = api_client.get("/contacts").json()

    assert len(body["results"]) == 2
    assert body["next"] is not None


@pytest.mark.parametrize("page_size", ["0", "501", "many"])
def test_an_invalid_page_size_is_a_400(api_client, page_size):
    body = assert_error(api_client.get(f"/contacts?page_size={page_size}"), 400, "validation_error")
    assert "page_size" in body["details"]


def test_a_tampered_cursor_is_a_json_error(api_client):
    response = api_client.get("/contacts?" + urlencode({"cursor": base64.b64encode(b"o=abc").decode()}))

    assert_error(response, 404, "not_found")


def test_filter_by_email_ignores_case_and_surrounding_space(api_client):
    wanted = ContactFactory(email="Grace.Hopper@Example.com")
    ContactFactory(email="someone-else@example.com")

    for query in ("grace.hopper@example.com", "GRACE.HOPPER@EXAMPLE.COM", " Grace.Hopper@example.com "):
        body = api_client.get("/contacts?" + urlencode({"email": query})).json()
        assert [item["id"] for item in body["results"]] == [str(wanted.pk)], query


def test_filter_by_email_does_not_find_deleted_contacts(api_client):
    ContactFactory(email="gone@example.com", deleted=True)

    body = api_client.get("/contacts?email=gone@example.com").json()

    assert body["results"] == []


def test_filter_by_updated_since(api_client):
    old, recent = ContactFactory(), ContactFactory()
    now = timezone.now()
    Contact.objects.filter(pk=old.pk).update(updated_at=now - timedelta(days=2))
    Contact.objects.filter(pk=recent.pk).update(updated_at=now - timedelta(hours=1))

    since = (now - timedelta(days=1)).isoformat()
    body = api_client.get("/contacts?" + urlencode({"updated_since": since})).json()

    assert [item["id"] for item in body["results"]] == [str(recent.pk)]


def test_filters_combine_with_pagination(api_client):
    ContactFactory.create_batch(5)
    since = (timezone.now() - timedelta(minutes=5)).isoformat()

    pages = walk(api_client, "/contacts?" + urlencode({"updated_since": since, "page_size": 2}))

    assert [len(page) for page in pages] == [2, 2, 1]


@pytest.mark.parametrize("value", ["yesterday", "2024-13-45T00:00:00Z", "1700000000"])
def test_a_bad_updated_since_is_a_400(api_client, value):
    body = assert_error(api_client.get("/contacts?" + urlencode({"updated_since": value})), 400, "validation_error")
    assert "updated_since" in body["details"]
