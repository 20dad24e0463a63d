"""HubSpot sandbox driven by the unmodified hubspot-api-client SDK: CRUD, errors, auth, paging."""

import json

import pytest
import requests
from hubspot import HubSpot
from hubspot.crm.contacts import SimplePublicObjectInput, SimplePublicObjectInputForCreate
from hubspot.crm.contacts.exceptions import ApiException, NotFoundException, UnauthorizedException

from sandbox.testing import ManualClock, next_millisecond


def create(contacts, **properties):
    return contacts.basic_api.create(SimplePublicObjectInputForCreate(properties=properties))


def error_body(exc: ApiException) -> dict:
    return json.loads(exc.body)


def test_create_returns_201_object_with_hubspot_computed_properties(hubspot):
    contact, status, headers = hubspot.contacts.basic_api.create_with_http_info(
        SimplePublicObjectInputForCreate(properties={"email": "Jane@Example.com", "firstname": "Jane"})
    )

    assert status == 201
    assert contact.id.isdigit()
    props = contact.properties
    assert props["email"] == "jane@example.com"  # HubSpot stores emails lower-cased
    assert props["hs_object_id"] == contact.id
    assert props["createdate"] == props["lastmodifieddate"]
    assert props["hs_object_source_id"] == "1234567"
    assert contact.created_at == contact.updated_at
    assert contact.archived is False
    assert headers["X-HubSpot-RateLimit-Max"] == "100"


def test_get_by_id_and_by_email_with_requested_properties(hubspot):
    created = create(hubspot.contacts, email="ada@example.com", firstname="Ada", lastname="Lovelace")

    by_id = hubspot.contacts.basic_api.get_by_id(created.id, properties=["email", "phone"])
    by_email = hubspot.contacts.basic_api.get_by_id("ADA@example.com", id_property="email")

    assert by_id.properties == {"email": "ada@example.com", "phone": None}
    assert by_email.id == created.id
    # With no properties asked, HubSpot's default set comes back.
    default = {"createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"}
    assert set(by_email.properties) == default


def test_properties_comma_joined_and_archived_flag_any_case(hubspot):
    created = create(hubspot.contacts, email="c@example.com", phone="+1 555")
    url = f"{hubspot.running.url}/crm/v3/objects/contacts/{created.id}"
    headers = {"Authorization": "Bearer sandbox-token"}

    joined = requests.get(url, params={"properties": "email,phone", "archived": "FALSE"}, headers=headers, timeout=5)
    repeated = requests.get(url, params=[("properties", "email"), ("properties", "phone")], headers=headers, timeout=5)

    assert joined.status_code == repeated.status_code == 200
    assert joined.json()["properties"] == repeated.json()["properties"] == {"email": "c@example.com", "phone": "+1 555"}


def test_update_by_id_and_by_email_bumps_lastmodifieddate(hubspot):
    created = create(hubspot.contacts, email="u@example.com", firstname="U")
    next_millisecond()

    updated = hubspot.contacts.basic_api.update(created.id, SimplePublicObjectInput(properties={"jobtitle": "CTO"}))
    by_email = hubspot.contacts.basic_api.update(
        "u@example.com", SimplePublicObjectInput(properties={"firstname": "Una"}), id_property="email"
    )

    assert updated.properties["jobtitle"] == "CTO"
    assert updated.properties["lastmodifieddate"] > created.properties["lastmodifieddate"]
    assert updated.updated_at > created.updated_at
    assert by_email.id == created.id
    assert by_email.properties["firstname"] == "Una"


def test_archive_returns_204_then_only_archived_reads_find_it(hubspot):
    created = create(hubspot.contacts, email="gone@example.com")

    _, status, _ = hubspot.contacts.basic_api.archive_with_http_info(created.id)

    assert status == 204
    with pytest.raises(NotFoundException) as excinfo:
        hubspot.contacts.basic_api.get_by_id(created.id)
    assert error_body(excinfo.value)["category"] == "OBJECT_NOT_FOUND"
    archived = hubspot.contacts.basic_api.get_by_id(created.id, archived=True)
    assert archived.archived is True
    # The email is free again once the contact is archived.
    assert create(hubspot.contacts, email="gone@example.com").id != created.id


def test_invalid_email_is_a_400_validation_error(hubspot):
    with pytest.raises(ApiException) as excinfo:
        create(hubspot.contacts, email="example.lcom")

    assert excinfo.value.status == 400
    body = error_body(excinfo.value)
    assert body["status"] == "error"
    assert body["category"] == "VALIDATION_ERROR"
    assert "Email address example.lcom is invalid" in body["message"]
    assert "INVALID_EMAIL" in body["message"]
    assert body["correlationId"]


def test_unknown_and_read_only_properties_are_refused(hubspot):
    with pytest.raises(ApiException) as excinfo:
        create(hubspot.contacts, email="p@example.com", favourite_colour="blue", hs_object_id="1")

    message = error_body(excinfo.value)["message"]
    assert "PROPERTY_DOESNT_EXIST" in message
    assert "READ_ONLY_VALUE" in message


def test_duplicate_email_is_a_409_naming_the_existing_id_case_insensitively(hubspot):
    existing = create(hubspot.contacts, email="dup@example.com")

    with pytest.raises(ApiException) as excinfo:
        create(hubspot.contacts, email="DUP@Example.COM")

    assert excinfo.value.status == 409
    body = error_body(excinfo.value)
    assert body["category"] == "CONFLICT"
    assert body["message"] == f"Contact already exists. Existing ID: {existing.id}"


def test_wrong_token_is_401_invalid_authentication(hubspot):
    client = HubSpot(access_token="pat-na1-wrong", host=hubspot.running.url)

    with pytest.raises(UnauthorizedException) as excinfo:
        client.crm.contacts.basic_api.get_page()

    body = error_body(excinfo.value)
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found.")


def test_oauth_refresh_issues_a_token_that_works_until_it_expires(hubspot):
    clock = hubspot.running.app.clock = ManualClock()
    hubspot.control.config(token_ttl_s=0.3)

    token = hubspot.client.oauth.tokens_api.create(
        grant_type="refresh_token",
        client_id="sandbox-client",
        client_secret="sandbox-secret",
        refresh_token="sandbox-refresh-token",
    )
    oauth_client = HubSpot(access_token=token.access_token, host=hubspot.running.url)
    clock.advance(0.29)
    page = oauth_client.crm.contacts.basic_api.get_page()
    clock.advance(0.01)

    assert token.token_type == "bearer"
    assert page.results == []
    with pytest.raises(UnauthorizedException) as excinfo:
        oauth_client.crm.contacts.basic_api.get_page()
    body = error_body(excinfo.value)
    assert body["category"] == "EXPIRED_AUTHENTICATION"
    assert "expired" in body["message"]
    # The refresh token handed back can be used again.
    again = hubspot.client.oauth.tokens_api.create(
        grant_type="refresh_token",
        client_id="sandbox-client",
        client_secret="sandbox-secret",
        refresh_token=token.refresh_token,
    )
    assert again.access_token != token.access_token


def test_oauth_refuses_a_wrong_client_secret(hubspot):
    from hubspot.oauth.exceptions import ApiException as OAuthApiException

    with pytest.raises(OAuthApiException) as excinfo:
        hubspot.client.oauth.tokens_api.create(
            grant_type="refresh_token",
            client_id="sandbox-client",
            client_secret="nope",
            refresh_token="sandbox-refresh-token",
        )

    assert excinfo.value.status == 400
    assert json.loads(excinfo.value.body)["status"] == "BAD_CLIENT_SECRET"


def test_get_all_pages_through_every_live_contact(hubspot):
    ids = hubspot.app.seed_contacts(250)
    hubspot.contacts.basic_api.archive(ids[10])

    everything = hubspot.contacts.get_all(properties=["email"])
    first_page = hubspot.contacts.basic_api.get_page(limit=100)

    live = [i for i in ids if i != ids[10]]
    assert [contact.id for contact in everything] == live
    assert [contact.id for contact in first_page.results] == live[:100]
    assert first_page.paging.next.after == live[99]  # an opaque cursor: here the last id served
    assert len(first_page.results) == 100


def test_list_limit_above_100_is_refused(hubspot):
    with pytest.raises(ApiException) as excinfo:
        hubspot.contacts.basic_api.get_page(limit=101)

    assert excinfo.value.status == 400


def test_a_deleted_refresh_token_and_its_access_tokens_stop_working_until_reauthorised(hubspot):
    from hubspot.oauth.exceptions import ApiException as OAuthApiException

    def refresh():
        return hubspot.client.oauth.tokens_api.create(
            grant_type="refresh_token",
            client_id="sandbox-client",
            client_secret="sandbox-secret",
            refresh_token="sandbox-refresh-token",
        )

    token = refresh()
    oauth_client = HubSpot(access_token=token.access_token, host=hubspot.running.url)
    oauth_client.crm.contacts.basic_api.get_page()

    hubspot.client.oauth.refresh_tokens_api.archive("sandbox-refresh-token")

    with pytest.raises(UnauthorizedException) as excinfo:
        oauth_client.crm.contacts.basic_api.get_page()
    assert error_body(excinfo.value)["category"] == "INVALID_AUTHENTICATION"
    with pytest.raises(OAuthApiException) as refused:
        refresh()
    assert refused.value.status == 400
    assert json.loads(refused.value.body)["status"] == "BAD_REFRESH_TOKEN"
    with pytest.raises(OAuthApiException) as gone:
        hubspot.client.oauth.refresh_tokens_api.archive("sandbox-refresh-token")
    assert gone.value.status == 404

    hubspot.control.config(refresh_token="sandbox-refresh-token")  # the portal authorises the app again
    again = HubSpot(access_token=refresh().access_token, host=hubspot.running.url)
    assert again.crm.contacts.basic_api.get_page().results == []
