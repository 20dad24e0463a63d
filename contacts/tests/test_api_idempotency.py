"""Idempotency-Key on POST /contacts: a retried create never makes a second contact."""

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from contacts.models import Contact, IdempotencyKey
from contacts.tests.factories import ApiTokenFactory
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db


def client_for(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.raw}")
    return client


def post(client, payload, key: str | None = "key-1"):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/contacts", payload, format="json", headers=headers)


def test_a_replay_answers_the_first_response_and_creates_nothing(api_client):
    first = post(api_client, {"email": "ada@example.com", "first_name": "Ada"})
    second = post(api_client, {"first_name": "Ada", "email": "ada@example.com"})  # same body, other key order

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Location"] == first["Location"]
    assert second["ETag"] == first["ETag"]
    assert Contact.objects.count() == 1
    assert IdempotencyKey.objects.get().contact_id == Contact.objects.get().pk


def test_a_replay_after_the_contact_changed_still_answers_the_first_response(api_client):
    first = post(api_client, {"email": "ada@example.com"}).json()
    api_client.patch(f"/contacts/{first['id']}", {"company": "Later"}, format="json")

    replay = post(api_client, {"email": "ada@example.com"})

    assert replay.status_code == 201
    assert replay.json() == first
    # The ETag matches the replayed body, so an If-Match built from it cannot skip the later change.
    assert replay["ETag"] == '"1"'
    assert Contact.objects.count() == 1


def test_the_same_key_with_another_body_is_a_422(api_client):
    post(api_client, {"email": "ada@example.com"})

    response = post(api_client, {"email": "grace@example.com"})

    body = assert_error(response, 422, "unprocessable_entity")
    assert body["details"] == {"idempotency_key": "key-1"}
    assert list(Contact.objects.values_list("email", flat=True)) == ["ada@example.com"]


def test_different_keys_create_different_contacts(api_client):
    assert post(api_client, {"email": "a@example.com"}, key="k-a").status_code == 201
    assert post(api_client, {"email": "b@example.com"}, key="k-b").status_code == 201

    assert Contact.objects.count() == 2


def test_without_a_key_a_repeated_create_is_a_duplicate(api_client):
    assert post(api_client, {"email": "a@example.com"}, key=None).status_code == 201

    assert_error(post(api_client, {"email": "a@example.com"}, key=None), 409, "conflict")
    assert not IdempotencyKey.objects.exists()


def test_each_token_has_its_own_keys(api_client):
    other = client_for(ApiTokenFactory())

    mine = post(api_client, {"email": "a@example.com"}, key="shared")
    theirs = post(other, {"email": "b@example.com"}, key="shared")

    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert IdempotencyKey.objects.filter(key="shared").count() == 2


def test_a_failed_create_does_not_burn_the_key(api_client):
    assert_error(post(api_client, {"email": "not-an-email"}), 400, "validation_error")
    assert not IdempotencyKey.objects.exists()

    response = post(api_client, {"email": "fixed@example.com"})

    assert response.status_code == 201


def test_a_conflicting_create_does_not_burn_the_key(api_client):
    post(api_client, {"email": "taken@example.com"}, key=None)

    assert_error(post(api_client, {"email": "taken@example.com"}), 409, "conflict")
    assert_error(post(api_client, {"email": "taken@example.com"}), 409, "conflict")
    assert Contact.objects.count() == 1


def test_an_over_long_key_is_a_400(api_client):
    assert_error(post(api_client, {"email": "a@example.com"}, key="k" * 256), 400, "bad_request")
    assert post(api_client, {"email": "a@example.com"}, key="k" * 255).status_code == 201


def race(token, payload: dict, key: str | None) -> list:
    """Send the same POST from two threads at once; their responses."""
    barrier = threading.Barrier(2)
    responses = []

    def send() -> None:
        try:
            client = client_for(token)
            barrier.wait(timeout=5)
            responses.append(post(client, payload, key=key))
        finally:
            connection.close()  # each thread has its own database connection

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(responses) == 2
    return responses


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_the_same_key_create_one_contact():
    responses = race(ApiTokenFactory(), {"email": "race@example.com"}, key="race")

    assert [r.status_code for r in responses] == [201, 201]
    assert responses[0].json() == responses[1].json()
    assert Contact.objects.count() == 1
    assert IdempotencyKey.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_of_one_email_without_a_key_make_one_contact_and_a_409():
    responses = race(ApiTokenFactory(), {"email": "race@example.com"}, key=None)

    assert sorted(r.status_code for r in responses) == [201, 409]
    conflict = next(r for r in responses if r.status_code == 409)
    assert conflict.json()["code"] == "conflict"
    assert conflict.json()["details"]["existing_id"] == str(Contact.objects.get().pk)


def test_old_idempotency_keys_are_forgotten(api_client, settings):
    from datetime import timedelta

    from django.utils import timezone

    from contacts.models import IdempotencyKey
    from contacts.services import idempotency_keys_expire

    settings.IDEMPOTENCY_KEY_TTL_HOURS = 24
    for key in ("old", "new"):
        response = api_client.post(
            "/contacts", {"email": f"{key}@example.com"}, format="json", HTTP_IDEMPOTENCY_KEY=key
        )
        assert response.status_code == 201
    IdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=25))

    assert idempotency_keys_expire() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
