"""Connecting an org with the web-server flow and PKCE: the "Allow Access?" URL, the code
exchanged once (with its verifier) for a refresh token and the org's My Domain, and the org that
refresh token reaches."""

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from crm.base import AuthExpired
from crm.salesforce.provider import SalesforceProvider
from crm.salesforce.tests.conftest import ORG_ID
from sandbox.browser import approve

CALLBACK = "https://sync.example.com/admin/providers/connection/connect/salesforce/callback/"


@pytest.fixture
def app(sf_config, limiter, org):
    """The connected app's provider: client id and secret, no org's credentials."""
    org.control.config(callback_urls=[CALLBACK])
    return SalesforceProvider({**sf_config, "scopes": "api refresh_token"}, limiter=limiter)


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def test_the_web_server_flow_with_pkce_gives_a_refresh_token_that_reaches_the_org(app, sf_config, limiter, org):
    authorization = app.authorization(redirect_uri=CALLBACK, state="s-1")
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorization.url).query).items()}
    redirect = approve(requests.Session(), authorization.url)

    grant = app.authorization_grant(
        code=redirect["code"], redirect_uri=CALLBACK, code_verifier=authorization.code_verifier
    )
    connected = SalesforceProvider(
        {**sf_config, **SalesforceProvider.connection_config(
            instance_url=grant.instance_url, account_id="", credentials=grant.credentials
        )},
        limiter=limiter,
    )  # fmt: skip

    assert authorization.url.startswith(f"{org.url}/services/oauth2/authorize?")
    assert (query["response_type"], query["code_challenge_method"], query["scope"]) == (
        "code",
        "S256",
        "api refresh_token",
    )
    assert query["code_challenge"] == _challenge(authorization.code_verifier)
    assert 43 <= len(authorization.code_verifier) <= 128
    assert redirect["state"] == "s-1"
    assert grant.instance_url == org.url
    assert set(grant.credentials) == {"refresh_token", "client_id", "client_secret"}
    assert connected.account_id() == ORG_ID


def test_the_consent_page_is_on_the_oauth_login_host_when_one_is_set(app, org):
    app.config.update(login_url="https://login.salesforce.com", oauth_login_url=org.url)

    authorization = app.authorization(redirect_uri=CALLBACK, state="s")
    redirect = approve(requests.Session(), authorization.url)
    grant = app.authorization_grant(
        code=redirect["code"], redirect_uri=CALLBACK, code_verifier=authorization.code_verifier
    )

    assert grant.instance_url == org.url


@pytest.mark.parametrize("change", ["verifier", "redirect", "again"])
def test_a_code_needs_its_verifier_and_redirect_and_works_once(app, change):
    authorization = app.authorization(redirect_uri=CALLBACK, state="s")
    code = approve(requests.Session(), authorization.url)["code"]
    given = {"code": code, "redirect_uri": CALLBACK, "code_verifier": authorization.code_verifier}
    if change == "again":
        app.authorization_grant(**given)
    else:
        given |= {"verifier": {"code_verifier": "x" * 64}, "redirect": {"redirect_uri": CALLBACK + "x"}}[change]

    with pytest.raises(AuthExpired) as refused:
        app.authorization_grant(**given)

    assert refused.value.code == {"verifier": "invalid_grant", "redirect": "redirect_uri_mismatch"}.get(
        change, "invalid_grant"
    )


def test_an_authorization_without_a_refresh_token_is_refused(app):
    app.config["scopes"] = "api"
    authorization = app.authorization(redirect_uri=CALLBACK, state="s")
    code = approve(requests.Session(), authorization.url)["code"]

    with pytest.raises(AuthExpired) as refused:
        app.authorization_grant(code=code, redirect_uri=CALLBACK, code_verifier=authorization.code_verifier)

    assert refused.value.code == "NO_REFRESH_TOKEN"


@pytest.mark.parametrize(
    ("settings_given", "connected"),
    [
        # The connected app's credentials, there for Connect Salesforce: client credentials need
        # a My Domain (Salesforce refuses them on login.salesforce.com), so they connect no org.
        ({"login_url": "https://login.salesforce.com"}, False),
        ({"login_url": "https://test.salesforce.com/"}, False),
        ({"login_url": "https://acme.my.salesforce.com"}, True),
        ({"login_url": "https://login.salesforce.com", "refresh_token": "5Aep…"}, True),
        ({"login_url": "https://login.salesforce.com", "username": "u", "password": "p"}, True),
        ({"login_url": "https://login.salesforce.com", "client_secret": "", "access_token": "00D…"}, True),
    ],
)
def test_the_environment_connects_an_org_only_with_credentials_that_reach_one(settings_given, connected):
    config = {"client_id": "3MVG…", "client_secret": "secret", **settings_given}

    assert SalesforceProvider.is_configured(config) is connected
