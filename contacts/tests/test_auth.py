"""Bearer API tokens and per-token throttling."""

import uuid

import pytest
from rest_framework.test import APIClient

from contacts import auth
from contacts.auth import TokenRateThrottle
from contacts.models import ApiToken, Contact, hash_token
from contacts.tests.factories import ApiTokenFactory, ContactFactory
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db


def client_with(authorization: str | None) -> APIClient:
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


def assert_unauthenticated(response) -> None:
    assert_error(response, 401, "unauthenticated")
    assert response["WWW-Authenticate"] == "Bearer"


REQUESTS = {
    "list": lambda c: c.get("/contacts"),
    "create": lambda c: c.post("/contacts", {"email": "x@example.com"}, format="json"),
    "read": lambda c: c.get(f"/contacts/{uuid.uuid4()}"),
    "patch": lambda c: c.patch(f"/contacts/{uuid.uuid4()}", {"company": "X"}, format="json"),
    "delete": lambda c: c.delete(f"/contacts/{uuid.uuid4()}"),
}


@pytest.mark.parametrize("request_name", REQUESTS)
def test_no_token_is_a_401_with_a_bearer_challenge(request_name):
    assert_unauthenticated(REQUESTS[request_name](client_with(None)))
    assert not Contact.objects.exists()


def test_an_unknown_token_is_a_401():
    assert_unauthenticated(client_with("Bearer sr_" + "x" * 43).get("/contacts"))


def test_a_revoked_token_is_a_401():
    token = ApiTokenFactory(is_active=False)

    assert_unauthenticated(client_with(f"Bearer {token.raw}").get("/contacts"))


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Token {raw}", "Basic dXNlcjpwYXNz", "Bearer {raw} extra", "{raw}", "Bearer\t{raw}"],
)
def test_a_malformed_authorization_header_is_a_401(header):
    token = ApiTokenFactory()

    assert_unauthenticated(client_with(header.format(raw=token.raw)).get("/contacts"))


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_scheme_is_case_insensitive(scheme):
    token = ApiTokenFactory()

    assert client_with(f"{scheme} {token.raw}").get("/contacts").status_code == 200


def test_a_valid_token_is_accepted_and_its_use_recorded(api_client, api_token):
    assert api_token.last_used_at is None

    assert api_client.get("/contacts").status_code == 200

    api_token.refresh_from_db()
    assert api_token.last_used_at is not None


def test_tokens_are_stored_hashed_only():
    token = ApiTokenFactory()
    stored = ApiToken.objects.get(pk=token.pk)

    assert stored.key_hash == hash_token(token.raw)
    assert token.raw not in {stored.key_hash, stored.prefix, stored.name}
    assert token.raw.startswith(stored.prefix)


@pytest.fixture
def clock(monkeypatch):
    """The token cache's clock, moved forward by the test instead of waiting."""
    now = [1_000.0]
    monkeypatch.setattr(auth, "_clock", lambda: now[0])
    return now


def test_a_verified_token_is_not_read_again_until_its_cache_entry_runs_out(clock, settings, django_assert_num_queries):
    settings.API_TOKEN_CACHE_SECONDS = 5
    token = ApiTokenFactory()
    client = client_with(f"Bearer {token.raw}")
    assert client.get("/contacts/00000000-0000-0000-0000-000000000000").status_code == 404  # verified, cached

    with django_assert_num_queries(2):  # the contact's lookup alone (live, then merged away?)
        assert client.get("/contacts/00000000-0000-0000-0000-000000000000").status_code == 404
    clock[0] += 6
    with django_assert_num_queries(3):  # the token again, then the contact
        assert client.get("/contacts/00000000-0000-0000-0000-000000000000").status_code == 404


def test_revoking_a_token_takes_effect_within_the_cache_time(clock, settings):
    settings.API_TOKEN_CACHE_SECONDS = 5
    token = ApiTokenFactory()
    client = client_with(f"Bearer {token.raw}")
    assert client.get("/contacts").status_code == 200

    ApiToken.objects.filter(pk=token.pk).update(is_active=False)
    clock[0] += 4.9
    still = client.get("/contacts").status_code
    clock[0] += 0.2

    assert still == 200
    assert_unauthenticated(client.get("/contacts"))


def test_revoking_takes_effect_at_once_without_the_cache(settings):
    settings.API_TOKEN_CACHE_SECONDS = 0
    token = ApiTokenFactory()
    client = client_with(f"Bearer {token.raw}")
    assert client.get("/contacts").status_code == 200

    ApiToken.objects.filter(pk=token.pk).update(is_active=False)

    assert_unauthenticated(client.get("/contacts"))


def test_a_revoked_token_is_not_kept_so_reactivating_it_works_at_once(clock):
    token = ApiTokenFactory(is_active=False)
    client = client_with(f"Bearer {token.raw}")
    assert_unauthenticated(client.get("/contacts"))

    ApiToken.objects.filter(pk=token.pk).update(is_active=True)

    assert client.get("/contacts").status_code == 200


# --- Throttling -------------------------------------------------------------------------------------
@pytest.fixture
def three_per_minute(monkeypatch, settings):
    """3 requests a minute per token, counted under a key prefix of this test alone (keys expire)."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"syncroot-test-{uuid.uuid4().hex}"}}
    # DRF reads the rates into the class when it is imported, so the settings alone would not change them.
    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "3/min"})
    return None


def test_the_fourth_request_in_a_minute_is_a_429_with_retry_after(three_per_minute):
    token = ApiTokenFactory()
    client = client_with(f"Bearer {token.raw}")

    statuses = [client.get("/contacts").status_code for _ in range(3)]
    throttled = client.post("/contacts", {"email": "late@example.com"}, format="json")

    assert statuses == [200, 200, 200]
    assert_error(throttled, 429, "throttled")
    assert 1 <= int(throttled["Retry-After"]) <= 61
    assert not Contact.objects.exists()


def test_one_tokens_throttle_does_not_affect_another(three_per_minute):
    busy, quiet = ApiTokenFactory(), ApiTokenFactory()
    busy_client, quiet_client = client_with(f"Bearer {busy.raw}"), client_with(f"Bearer {quiet.raw}")
    for _ in range(3):
        busy_client.get("/contacts")
    assert busy_client.get("/contacts").status_code == 429

    assert [quiet_client.get("/contacts").status_code for _ in range(3)] == [200, 200, 200]


def test_every_method_counts_against_the_same_budget(three_per_minute):
    token = ApiTokenFactory()
    client = client_with(f"Bearer {token.raw}")
    contact = ContactFactory()

    assert client.get(f"/contacts/{contact.pk}").status_code == 200
    assert client.patch(f"/contacts/{contact.pk}", {"company": "A"}, format="json").status_code == 200
    assert client.post("/contacts", {"email": "n@example.com"}, format="json").status_code == 201
    assert_error(client.delete(f"/contacts/{contact.pk}"), 429, "throttled")
    assert Contact.objects.filter(deleted_at__isnull=True).count() == 2


def test_requests_are_allowed_when_the_throttle_store_is_unreachable(three_per_minute, settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    token = ApiTokenFactory()
    client = client_with(f"Bearer {token.raw}")

    assert [client.get("/contacts").status_code for _ in range(4)] == [200] * 4
