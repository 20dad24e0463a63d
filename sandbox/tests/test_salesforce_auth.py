"""OAuth 2.0 token flows, SOAP login, token expiry and Bearer checks, via the SDK."""

import base64
import hashlib
import hmac

import pytest
from simple_salesforce import Salesforce, SalesforceLogin
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceExpiredSession

from sandbox.salesforce_schema import INTEGRATION_USER_ID
from sandbox.salesforce_testing import running_salesforce
from sandbox.testing import ManualClock

CREDENTIALS = {"consumer_key": "sandbox-client", "consumer_secret": "sandbox-secret"}


@pytest.fixture
def harness():
    with running_salesforce(seed=14) as harness:
        yield harness


def token_request(harness, **form):
    return harness.session.post(f"{harness.url}/services/oauth2/token", data=form)


def test_password_login_through_the_sdk(harness):
    sf = Salesforce(username="integration@example.com", password="pw", session=harness.session, **CREDENTIALS)
    assert sf.session_id.startswith("00D000000000001!")
    assert sf.sf_instance == harness.url.removeprefix("http://")
    assert sf.Contact.create({"LastName": "ViaOAuth"})["success"] is True
    session_id, instance = SalesforceLogin(
        username="u@example.com", password="pw", session=harness.session, **CREDENTIALS
    )
    assert session_id != sf.session_id
    assert instance == sf.sf_instance


def test_token_response_shape_signature_and_refresh(harness):
    response = token_request(
        harness,
        grant_type="password",
        client_id="sandbox-client",
        client_secret="sandbox-secret",
        username="u@example.com",
        password="pw",
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token",
        "refresh_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    }
    assert body["instance_url"] == harness.url
    assert body["token_type"] == "Bearer"
    assert body["id"] == f"{harness.url}/id/00D000000000001EAA/{INTEGRATION_USER_ID}"
    assert body["issued_at"].isdigit()
    expected = hmac.new(b"sandbox-secret", (body["id"] + body["issued_at"]).encode(), hashlib.sha256).digest()
    assert base64.b64decode(body["signature"]) == expected

    refreshed = token_request(
        harness,
        grant_type="refresh_token",
        client_id="sandbox-client",
        client_secret="sandbox-secret",
        refresh_token=body["refresh_token"],
    )
    assert refreshed.status_code == 200
    assert "refresh_token" not in refreshed.json()
    sf = Salesforce(instance_url=harness.url, session_id=refreshed.json()["access_token"], session=harness.session)
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 0

    identity = harness.session.get(body["id"], headers={"Authorization": f"Bearer {body['access_token']}"})
    assert identity.json()["user_id"] == INTEGRATION_USER_ID
    userinfo = harness.session.get(
        f"{harness.url}/services/oauth2/userinfo", headers={"Authorization": "Bearer sandbox-token"}
    )
    assert userinfo.json()["user_id"] == INTEGRATION_USER_ID
    assert userinfo.json()["organization_id"] == "00D000000000001EAA"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "refresh_token", "client_id": "sandbox-client", "refresh_token": "bogus"}, "invalid_grant"),
        ({"grant_type": "password", "client_id": "other", "client_secret": "sandbox-secret"}, "invalid_client_id"),
        (
            {"grant_type": "password", "client_id": "sandbox-client", "client_secret": "wrong", "username": "u"},
            "invalid_client",
        ),
        ({"grant_type": "password", "client_id": "sandbox-client", "client_secret": "sandbox-secret"}, "invalid_grant"),
        ({"grant_type": "authorization_code", "client_id": "sandbox-client"}, "invalid_grant"),
        ({"grant_type": "jwt", "client_id": "sandbox-client"}, "unsupported_grant_type"),
    ],
)
def test_token_errors(harness, form, error):
    response = token_request(harness, **form)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.json()["error_description"]


def test_sdk_reports_login_failures(harness):
    with pytest.raises(SalesforceAuthenticationFailed) as excinfo:
        Salesforce(
            username="u", password="pw", consumer_key="sandbox-client", consumer_secret="x", session=harness.session
        )
    assert excinfo.value.code == "invalid_client"


def test_client_credentials_with_basic_auth_through_the_sdk(harness):
    sf = Salesforce(domain="acme.my", session=harness.session, **CREDENTIALS)
    assert sf.Contact.create({"LastName": "Machine"})["success"] is True


def test_soap_login_and_its_fault(harness):
    sf = Salesforce(username="u@example.com", password="p&w", security_token="TOKEN", session=harness.session)
    assert sf.sf_instance == harness.url.removeprefix("http://")
    assert sf.query("SELECT COUNT() FROM Contact")["done"] is True
    fault = harness.session.post(
        f"{harness.url}/services/Soap/u/59.0",
        data=b"<env:Envelope xmlns:env='http://schemas.xmlsoap.org/soap/envelope/'><env:Body/></env:Envelope>",
        headers={"Content-Type": "text/xml", "SOAPAction": "login"},
    )
    assert fault.status_code == 500
    assert b"<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>" in fault.content


def test_unknown_and_expired_tokens_are_invalid_sessions(harness):
    stranger = Salesforce(instance_url=harness.url, session_id="nope", session=harness.session)
    with pytest.raises(SalesforceExpiredSession) as excinfo:
        stranger.query("SELECT COUNT() FROM Contact")
    assert excinfo.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]

    clock = harness.app.sessions.clock = ManualClock()
    harness.control.config(token_ttl_s=0.2)
    access, _ = SalesforceLogin(username="u", password="pw", session=harness.session, **CREDENTIALS)
    short = Salesforce(instance_url=harness.url, session_id=access, session=harness.session)
    clock.advance(0.19)
    assert short.query("SELECT COUNT() FROM Contact")["totalSize"] == 0
    clock.advance(0.01)
    with pytest.raises(SalesforceExpiredSession):
        short.query("SELECT COUNT() FROM Contact")
    # The static token never expires.
    assert harness.sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 0


def test_sdk_logs_in_again_when_its_session_expires(harness):
    sf = Salesforce(username="u", password="pw", session=harness.session, **CREDENTIALS)
    first = sf.session_id
    assert harness.control._call("POST", "tokens/expire")["expired"] >= 1
    assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 0  # 401 INVALID_SESSION_ID → re-login → retry
    assert sf.session_id != first


def test_revoked_tokens_stop_working(harness):
    access, _ = SalesforceLogin(username="u", password="pw", session=harness.session, **CREDENTIALS)
    assert harness.session.post(f"{harness.url}/services/oauth2/revoke", data={"token": access}).status_code == 200
    with pytest.raises(SalesforceExpiredSession):
        Salesforce(instance_url=harness.url, session_id=access, session=harness.session).limits()


def test_a_rotated_client_secret_refuses_the_old_one_until_it_is_restored(harness):
    """The fault suite's credential outage: the connected app's secret rotated, sessions ended."""
    sf = Salesforce(username="u", password="pw", session=harness.session, **CREDENTIALS)
    harness.control.config(client_secret="rotated")
    harness.control._call("POST", "tokens/expire")

    with pytest.raises(SalesforceAuthenticationFailed) as excinfo:
        sf.query("SELECT COUNT() FROM Contact")  # 401 INVALID_SESSION_ID → login again → refused
    assert excinfo.value.code == "invalid_client"

    harness.control.config(client_secret="sandbox-secret")
    again = Salesforce(username="u", password="pw", session=harness.session, **CREDENTIALS)
    assert again.query("SELECT COUNT() FROM Contact")["totalSize"] == 0
