"""Connecting a portal with the app's authorization-code flow: the install URL the official SDK
builds, the code exchanged once for a refresh token, and the portal that token reaches."""

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hubspot.utils.oauth import get_auth_url

from crm.base import AuthExpired
from crm.hubspot.provider import HubSpotProvider
from sandbox.browser import approve

REDIRECT = "https://sync.example.com/admin/providers/connection/connect/hubspot/callback/"
SCOPES = "oauth crm.objects.contacts.read crm.objects.contacts.write"


@pytest.fixture
def app(hubspot, hubspot_config) -> HubSpotProvider:
    """The provider of SyncRoot's app: client id and secret, no portal's credentials."""
    config = {**hubspot_config, "access_token": "", "scopes": SCOPES, "authorize_url": f"{hubspot.url}/oauth/authorize"}
    return HubSpotProvider(config)


def test_the_install_url_is_the_one_the_sdk_builds(app, hubspot_config):
    app.config["authorize_url"] = ""  # HubSpot's own app host

    url = app.authorization(redirect_uri=REDIRECT, state="st 1").url

    assert url == get_auth_url("sandbox-client", REDIRECT, scope=tuple(SCOPES.split()), state="st 1")


def test_a_code_becomes_a_refresh_token_that_reaches_the_portal(app, hubspot, hubspot_config):
    authorization = app.authorization(redirect_uri=REDIRECT, state="s-1")
    redirect = approve(requests.Session(), authorization.url)

    grant = app.authorization_grant(code=redirect["code"], redirect_uri=REDIRECT)
    own = HubSpotProvider.connection_config(
        instance_url=grant.instance_url, account_id="", credentials=grant.credentials
    )
    portal = HubSpotProvider({**hubspot_config, **own, "access_token": ""})

    assert authorization.code_verifier == ""  # HubSpot's v1 flow takes no PKCE
    assert parse_qs(urlsplit(authorization.url).query)["scope"] == [SCOPES]
    assert redirect["state"] == "s-1"
    assert set(grant.credentials) == {"refresh_token", "client_id", "client_secret"}
    assert (grant.credentials["client_id"], grant.instance_url) == ("sandbox-client", "")
    assert portal.account_id() == "62515"


def test_portals_connected_from_the_admin_keep_the_api_base_of_their_exchange(app, hubspot):
    app.config.update(base_url="http://127.0.0.1:9", oauth_base_url=hubspot.url)  # nothing listens on :9
    redirect = approve(requests.Session(), app.authorization(redirect_uri=REDIRECT, state="s").url)

    grant = app.authorization_grant(code=redirect["code"], redirect_uri=REDIRECT)

    assert grant.instance_url == hubspot.url


@pytest.mark.parametrize(
    ("second_redirect", "code"), [(REDIRECT, "BAD_AUTH_CODE"), (REDIRECT + "elsewhere", "BAD_REDIRECT_URI")]
)
def test_a_code_works_once_and_for_its_redirect_url(app, second_redirect, code):
    redirect = approve(requests.Session(), app.authorization(redirect_uri=REDIRECT, state="s").url)
    if code == "BAD_AUTH_CODE":
        app.authorization_grant(code=redirect["code"], redirect_uri=REDIRECT)

    with pytest.raises(AuthExpired) as refused:
        app.authorization_grant(code=redirect["code"], redirect_uri=second_redirect)

    assert refused.value.code == code
    assert refused.value.message.startswith("authorization code refused")
