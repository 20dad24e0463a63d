"""HubSpot OAuth: the consent page driven like a browser, the token endpoint through the SDK,
token and refresh-token information, uninstalling, expiry and the account's portal id."""

import json
from urllib.parse import urlencode

import pytest
import requests
from hubspot import HubSpot
from hubspot.crm.contacts.exceptions import UnauthorizedException
from hubspot.oauth.exceptions import ApiException as OAuthApiException
from hubspot.oauth.exceptions import NotFoundException as OAuthNotFound

from sandbox.browser import approve
from sandbox.testing import ManualClock

REDIRECT = "https://syncroot.example.com/admin/connect/hubspot/callback"
SECRET = {"client_id": "sandbox-client", "client_secret": "sandbox-secret"}


def authorize_url(base, **params):
    query = {"client_id": "sandbox-client", "redirect_uri": REDIRECT, "scope": "crm.objects.contacts.read oauth"}
    return f"{base}/oauth/authorize?{urlencode({**query, **params})}"


def connect(hubspot, **params):
    redirect = approve(requests.Session(), authorize_url(hubspot.running.url, state="s-1", **params))
    return hubspot.client.oauth.tokens_api.create(
        grant_type="authorization_code", code=redirect["code"], redirect_uri=REDIRECT, **SECRET
    )


def test_consent_redirects_with_a_code_that_the_sdk_exchanges_once(hubspot):
    redirect = approve(requests.Session(), authorize_url(hubspot.running.url, state="xyz"))
    tokens = hubspot.client.oauth.tokens_api.create(
        grant_type="authorization_code", code=redirect["code"], redirect_uri=REDIRECT, **SECRET
    )

    assert redirect["location"].startswith(REDIRECT + "?")
    assert redirect["state"] == "xyz"
    assert tokens.token_type == "bearer"
    assert tokens.expires_in == 1800
    assert HubSpot(access_token=tokens.access_token, host=hubspot.running.url).crm.contacts.basic_api.get_page()
    with pytest.raises(OAuthApiException) as again:
        hubspot.client.oauth.tokens_api.create(
            grant_type="authorization_code", code=redirect["code"], redirect_uri=REDIRECT, **SECRET
        )
    assert again.value.status == 400
    assert json.loads(again.value.body)["status"] == "BAD_AUTH_CODE"


def test_a_code_is_bound_to_its_redirect_uri(hubspot):
    redirect = approve(requests.Session(), authorize_url(hubspot.running.url))

    with pytest.raises(OAuthApiException) as refused:
        hubspot.client.oauth.tokens_api.create(
            grant_type="authorization_code", code=redirect["code"], redirect_uri=REDIRECT + "/other", **SECRET
        )

    assert json.loads(refused.value.body)["status"] == "BAD_REDIRECT_URI"


def test_denying_consent_redirects_with_access_denied(hubspot):
    redirect = approve(requests.Session(), authorize_url(hubspot.running.url, state="s"), decision="deny")

    assert redirect["error"] == "access_denied"
    assert redirect["state"] == "s"
    assert "code" not in redirect


def test_authorize_refuses_an_unknown_client_or_an_unregistered_redirect(hubspot):
    hubspot.control.config(redirect_uris=[REDIRECT])
    unknown = requests.get(authorize_url(hubspot.running.url, client_id="other"), timeout=5)
    elsewhere = requests.get(authorize_url(hubspot.running.url, redirect_uri="https://evil.example/cb"), timeout=5)
    registered = requests.get(authorize_url(hubspot.running.url), timeout=5)

    assert unknown.status_code == 400
    assert "BAD_CLIENT_ID" in unknown.text
    assert elsewhere.status_code == 400
    assert "BAD_REDIRECT_URI" in elsewhere.text
    assert registered.status_code == 200
    assert '<form id="consent"' in registered.text


def test_access_token_information_names_the_portal_and_granted_scopes(hubspot):
    tokens = connect(hubspot)

    info = hubspot.client.oauth.access_tokens_api.get(token=tokens.access_token)
    refresh = hubspot.client.oauth.refresh_tokens_api.get(token=tokens.refresh_token)

    assert info.hub_id == 62515
    assert info.app_id == 1234567
    assert info.scopes == ["crm.objects.contacts.read", "oauth"]
    assert 0 < info.expires_in <= 1800
    assert refresh.hub_id == 62515
    assert refresh.client_id == "sandbox-client"
    assert refresh.token_type == "refresh"


def test_uninstalling_revokes_the_refresh_token_and_its_access_tokens(hubspot):
    tokens = connect(hubspot)
    api = HubSpot(access_token=tokens.access_token, host=hubspot.running.url).crm.contacts.basic_api

    hubspot.client.oauth.refresh_tokens_api.archive(token=tokens.refresh_token)

    with pytest.raises(UnauthorizedException):
        api.get_page()
    with pytest.raises(OAuthNotFound):
        hubspot.client.oauth.refresh_tokens_api.get(token=tokens.refresh_token)
    with pytest.raises(OAuthApiException) as refused:
        hubspot.client.oauth.tokens_api.create(grant_type="refresh_token", refresh_token=tokens.refresh_token, **SECRET)
    assert json.loads(refused.value.body)["status"] == "BAD_REFRESH_TOKEN"


def test_an_expired_access_token_is_expired_authentication_until_refreshed(hubspot):
    clock = hubspot.running.app.clock = ManualClock()
    tokens = connect(hubspot)
    clock.advance(1800)

    with pytest.raises(UnauthorizedException) as expired:
        HubSpot(access_token=tokens.access_token, host=hubspot.running.url).crm.contacts.basic_api.get_page()
    fresh = hubspot.client.oauth.tokens_api.create(
        grant_type="refresh_token", refresh_token=tokens.refresh_token, **SECRET
    )

    assert json.loads(expired.value.body)["category"] == "EXPIRED_AUTHENTICATION"
    assert HubSpot(access_token=fresh.access_token, host=hubspot.running.url).crm.contacts.basic_api.get_page()
    assert fresh.refresh_token == tokens.refresh_token


def test_account_details_give_the_portal_id_to_private_app_and_oauth_tokens(hubspot):
    tokens = connect(hubspot)
    url = f"{hubspot.running.url}/account-info/v3/details"

    private = requests.get(url, headers={"Authorization": "Bearer sandbox-token"}, timeout=5)
    oauth = requests.get(url, headers={"Authorization": f"Bearer {tokens.access_token}"}, timeout=5)
    anonymous = requests.get(url, timeout=5)

    assert private.json()["portalId"] == 62515
    assert oauth.json()["portalId"] == 62515
    assert private.headers["X-HubSpot-RateLimit-Daily"] == "250000"  # private apps see the daily limit
    assert "X-HubSpot-RateLimit-Daily" not in oauth.headers  # OAuth apps do not
    assert anonymous.status_code == 401
