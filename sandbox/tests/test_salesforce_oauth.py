"""Salesforce web-server flow with PKCE driven like a browser, the identity URL's org id,
introspection and revocation, and the SDK working with the tokens it brings."""

import base64
import hashlib
import secrets
from urllib.parse import urlencode

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession

from sandbox.browser import approve
from sandbox.salesforce_testing import running_salesforce
from sandbox.testing import ManualClock

CALLBACK = "https://syncroot.example.com/admin/connect/salesforce/callback"


@pytest.fixture
def harness():
    with running_salesforce(seed=15) as harness:
        yield harness


def pkce():
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize(harness, challenge, **params):
    query = {
        "response_type": "code",
        "client_id": "sandbox-client",
        "redirect_uri": CALLBACK,
        "state": "st-9",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **params,
    }
    return approve(requests.Session(), f"{harness.url}/services/oauth2/authorize?{urlencode(query)}")


def exchange(harness, code, verifier, **form):
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
        "redirect_uri": CALLBACK,
        "code_verifier": verifier,
        **form,
    }
    return requests.post(f"{harness.url}/services/oauth2/token", data=body, timeout=5)


def connect(harness):
    verifier, challenge = pkce()
    redirect = authorize(harness, challenge)
    return exchange(harness, redirect["code"], verifier).json()


def test_web_server_flow_with_pkce_gives_tokens_the_sdk_uses(harness):
    verifier, challenge = pkce()
    redirect = authorize(harness, challenge)
    answer = exchange(harness, redirect["code"], verifier)
    body = answer.json()
    sf = Salesforce(instance_url=body["instance_url"], session_id=body["access_token"], session=harness.session)

    assert redirect["state"] == "st-9"
    assert answer.status_code == 200
    assert body["refresh_token"].startswith("5Aep")
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "api refresh_token"
    assert sf.Contact.create({"LastName": "Connected"})["success"] is True


def test_the_identity_url_names_the_org(harness):
    body = connect(harness)
    identity = requests.get(body["id"], headers={"Authorization": f"Bearer {body['access_token']}"}, timeout=5)

    assert body["id"].split("/")[-2] == "00D000000000001EAA"
    assert identity.json()["organization_id"] == "00D000000000001EAA"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"code_verifier": "not-the-verifier"}, "invalid_grant"),
        ({"code_verifier": ""}, "invalid_grant"),
        ({"redirect_uri": CALLBACK + "/elsewhere"}, "redirect_uri_mismatch"),
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"code": "aPrxNOPE"}, "invalid_grant"),
    ],
)
def test_a_code_needs_its_verifier_redirect_and_client(harness, change, error):
    verifier, challenge = pkce()
    redirect = authorize(harness, challenge)

    given = {"code": redirect["code"], "verifier": verifier}
    if "code" in change:
        given["code"] = change.pop("code")
    refused = exchange(harness, given["code"], given["verifier"], **change)

    assert refused.status_code in (400, 401)
    assert refused.json()["error"] == error


def test_a_code_works_once_and_pkce_stands_in_for_the_secret(harness):
    verifier, challenge = pkce()
    redirect = authorize(harness, challenge)

    first = exchange(harness, redirect["code"], verifier, client_secret="")
    second = exchange(harness, redirect["code"], verifier)

    assert first.status_code == 200
    assert second.json()["error"] == "invalid_grant"


def test_denied_consent_and_untrusted_requests(harness):
    harness.control.config(callback_urls=[CALLBACK])
    denied = approve(
        requests.Session(),
        f"{harness.url}/services/oauth2/authorize?"
        + urlencode({"response_type": "code", "client_id": "sandbox-client", "redirect_uri": CALLBACK, "state": "s2"}),
        decision="deny",
    )
    elsewhere = requests.get(
        f"{harness.url}/services/oauth2/authorize",
        params={"response_type": "code", "client_id": "sandbox-client", "redirect_uri": "https://evil.example/cb"},
        timeout=5,
    )
    unknown = requests.get(
        f"{harness.url}/services/oauth2/authorize",
        params={"response_type": "code", "client_id": "nope", "redirect_uri": CALLBACK},
        timeout=5,
    )

    assert denied["error"] == "access_denied"
    assert denied["state"] == "s2"
    assert elsewhere.status_code == 400
    assert "redirect_uri_mismatch" in elsewhere.text
    assert unknown.status_code == 400
    assert "invalid_client_id" in unknown.text


def test_introspection_reports_live_and_dead_tokens(harness):
    body = connect(harness)
    url = f"{harness.url}/services/oauth2/introspect"
    client = {"client_id": "sandbox-client", "client_secret": "sandbox-secret"}

    access = requests.post(url, data={"token": body["access_token"], **client}, timeout=5).json()
    refresh = requests.post(url, data={"token": body["refresh_token"], **client}, timeout=5).json()
    unknown = requests.post(url, data={"token": "nope", **client}, timeout=5).json()
    wrong_client = requests.post(url, data={"token": "nope", "client_id": "sandbox-client"}, timeout=5)

    assert access["active"] is True
    assert access["token_type"] == "access_token"
    assert access["exp"] - access["iat"] == 7200
    assert access["sub"].endswith("/id/00D000000000001EAA/" + access["sub"].rsplit("/", 1)[-1])
    assert refresh["token_type"] == "refresh_token"
    assert unknown == {"active": False}
    assert wrong_client.status_code == 401


def test_revoking_the_refresh_token_ends_its_sessions_and_refreshes(harness):
    body = connect(harness)
    sf = Salesforce(instance_url=body["instance_url"], session_id=body["access_token"], session=harness.session)

    revoked = requests.post(f"{harness.url}/services/oauth2/revoke", data={"token": body["refresh_token"]}, timeout=5)
    refresh = requests.post(
        f"{harness.url}/services/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": "sandbox-client"},
        timeout=5,
    )

    assert revoked.status_code == 200
    with pytest.raises(SalesforceExpiredSession):
        sf.Contact.create({"LastName": "After"})
    assert refresh.status_code == 400
    assert refresh.json() == {"error": "invalid_grant", "error_description": "expired access/refresh token"}


def test_expired_access_tokens_are_invalid_sessions_until_refreshed(harness):
    clock = harness.app.sessions.clock = ManualClock()
    body = connect(harness)
    clock.advance(7200)
    expired = requests.get(
        f"{harness.url}/services/data/v59.0/limits",
        headers={"Authorization": f"Bearer {body['access_token']}"},
        timeout=5,
    )
    fresh = requests.post(
        f"{harness.url}/services/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": "sandbox-client"},
        timeout=5,
    ).json()
    again = requests.get(
        f"{harness.url}/services/data/v59.0/limits",
        headers={"Authorization": f"Bearer {fresh['access_token']}"},
        timeout=5,
    )

    assert expired.status_code == 401
    assert expired.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert "refresh_token" not in fresh
    assert again.status_code == 200


def test_client_credentials_flow(harness):
    answer = requests.post(
        f"{harness.url}/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=("sandbox-client", "sandbox-secret"),
        timeout=5,
    ).json()

    assert answer["id"].split("/")[-2] == "00D000000000001EAA"
    assert "refresh_token" not in answer


def test_offline_access_asks_for_a_refresh_token_as_refresh_token_does(harness):
    verifier, challenge = pkce()
    redirect = authorize(harness, challenge, scope="api offline_access")

    body = exchange(harness, redirect["code"], verifier).json()

    assert body["refresh_token"].startswith("5Aep")
    assert body["scope"] == "api offline_access"
