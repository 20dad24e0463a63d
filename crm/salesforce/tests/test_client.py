"""The REST client against the Salesforce sandbox: OAuth grants, re-auth, errors, limits, hooks."""

import pytest
import requests

from crm.base import AuthExpired, Permanent, RateLimited, Transient
from crm.ratelimit import _strategy
from crm.salesforce.client import SalesforceClient, route_of
from sandbox.salesforce import INTEGRATION_USER_ID

from .conftest import ORG_ID


def expire_tokens(org):
    """Make every issued access token stale, as a session timeout in the org would."""
    requests.post(f"{org.url}/_sandbox/tokens/expire", timeout=5).raise_for_status()


@pytest.fixture
def client(sf_config, limiter):
    return SalesforceClient(sf_config, limiter=limiter)


def test_client_credentials_login_gives_instance_url_and_user(client, org):
    assert client.request("GET", "limits")["DailyApiRequests"]["Max"] == 100_000
    assert client.instance_url == org.url
    assert client.integration_user_id == INTEGRATION_USER_ID
    assert org.count("POST /services/oauth2/token") == 1


def test_password_and_refresh_token_grants(sf_config, limiter, org):
    password = SalesforceClient({**sf_config, "username": "u@example.com", "password": "pw"}, limiter=limiter)
    assert password.request("GET", "limits")
    token = requests.post(
        f"{org.url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
            "username": "u",
            "password": "p",
        },
        timeout=5,
    ).json()
    refreshing = SalesforceClient({**sf_config, "refresh_token": token["refresh_token"]}, limiter=limiter)
    assert refreshing.request("GET", "limits")
    assert refreshing.integration_user_id == INTEGRATION_USER_ID


def test_static_token_needs_no_login(sf_config, limiter, org):
    config = {**sf_config, "access_token": "sandbox-token", "instance_url": org.url, "client_id": ""}
    client = SalesforceClient(config, limiter=limiter)
    assert client.request("GET", "limits")
    assert org.count("POST /services/oauth2/token") == 0


def test_static_token_learns_the_integration_user_from_userinfo(sf_config, limiter, org):
    config = {**sf_config, "access_token": "sandbox-token", "instance_url": org.url, "client_id": ""}
    client = SalesforceClient(config, limiter=limiter)
    assert client.integration_user_id == INTEGRATION_USER_ID
    assert client.integration_user_id == INTEGRATION_USER_ID  # asked once
    assert org.count("GET /services/oauth2/userinfo") == 1


def test_configured_integration_user_needs_no_call(sf_config, limiter, org):
    client = SalesforceClient({**sf_config, "integration_user_id": "005000000000042AAA"}, limiter=limiter)
    assert client.integration_user_id == "005000000000042AAA"
    assert org.control.stats()["requests_total"] == 0


def test_static_token_refused_is_auth_expired(sf_config, limiter, org):
    config = {**sf_config, "access_token": "stale", "instance_url": org.url, "client_id": ""}
    with pytest.raises(AuthExpired) as raised:
        SalesforceClient(config, limiter=limiter).request("GET", "limits")
    assert raised.value.code == "INVALID_SESSION_ID"


def test_expired_session_logs_in_again_once_and_retries(client, org):
    client.request("GET", "limits")
    expire_tokens(org)
    assert client.request("GET", "limits")
    assert org.count("POST /services/oauth2/token") == 2
    assert org.calls()["GET /services/data/{version}/limits"] == {"200": 2, "401": 1}


def test_refused_credentials_after_expiry_is_auth_expired(client, org):
    client.request("GET", "limits")
    org.control.config(client_secret="rotated")
    expire_tokens(org)
    with pytest.raises(AuthExpired) as raised:
        client.request("GET", "limits")
    assert raised.value.code == "invalid_client"


def test_bad_client_id_fails_login(sf_config, limiter):
    with pytest.raises(AuthExpired) as raised:
        SalesforceClient({**sf_config, "client_id": "nobody"}, limiter=limiter).request("GET", "limits")
    assert raised.value.code == "invalid_client_id"


def test_validation_error_is_permanent_with_salesforce_code(client):
    with pytest.raises(Permanent) as raised:
        client.request("POST", "sobjects/Contact", json={"Email": "x@example.com"})
    assert raised.value.code == "REQUIRED_FIELD_MISSING"
    assert "LastName" in raised.value.message


def test_server_errors_are_transient(client, org):
    client.request("GET", "limits")
    org.control.config(error_rate=1.0)
    statuses = set()
    for _ in range(6):
        with pytest.raises(Transient) as raised:
            client.request("GET", "limits")
        assert not isinstance(raised.value, RateLimited)
        statuses.add(raised.value.status)
    assert statuses <= {500, 503}
    assert statuses  # the sandbox picks 500 or 503 per call


def test_overload_honours_retry_after(client, org):
    client.request("GET", "limits")
    org.control.config(rate_limit_storm=1.0)
    with pytest.raises(Transient) as raised:
        client.request("GET", "limits")
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (503, "SERVER_UNAVAILABLE", 1.0)


def test_daily_quota_is_rate_limited_and_usage_is_tracked(client, org):
    org.control.config(daily_quota=3)
    client.request("GET", "limits")
    assert client.api_usage == (1, 3)
    client.request("GET", "limits")
    client.request("GET", "limits")
    with pytest.raises(RateLimited) as raised:
        client.request("GET", "limits")
    assert (raised.value.code, raised.value.status, raised.value.retry_after) == ("REQUEST_LIMIT_EXCEEDED", 403, 60.0)
    assert client.api_usage == (3, 3)  # the refusal reports the spent quota


def test_timeouts_and_connection_errors_are_transient(sf_config, limiter, org):
    org.control.config(latency_ms=400)
    slow = SalesforceClient(
        {**sf_config, "access_token": "sandbox-token", "instance_url": org.url}, limiter=limiter, timeout=(1, 0.1)
    )
    with pytest.raises(Transient) as raised:
        slow.request("GET", "limits")
    assert raised.value.code == "TIMEOUT"
    closed = SalesforceClient({**sf_config, "login_url": "http://127.0.0.1:9"}, limiter=limiter)
    with pytest.raises(Transient) as raised:
        closed.request("GET", "limits")
    assert raised.value.code == "CONNECTION_ERROR"


def test_on_response_sees_every_call(sf_config, limiter):
    seen = []
    client = SalesforceClient(sf_config, limiter=limiter, on_response=seen.append)
    client.request("GET", "limits")
    with pytest.raises(Permanent):
        client.request("GET", "sobjects/Contact/003000000000000AAA")
    assert [(o.method, o.route, o.status) for o in seen] == [
        ("POST", "/services/oauth2/token", 200),
        ("GET", "limits", 200),
        ("GET", "sobjects/Contact/{id}", 404),
    ]
    assert seen[-1].error.code == "NOT_FOUND"
    assert all(o.seconds >= 0 for o in seen)


def test_routes_reported_to_metrics_have_no_ids():
    assert route_of("sobjects/Contact/0035g00000AbCdEAAV") == "sobjects/Contact/{id}"
    assert route_of("sobjects/Account/0015g00000AbCdE") == "sobjects/Account/{id}"
    assert route_of("/services/data/v59.0/query/01gRO0000016PIAYA2-2000") == "query/{locator}"
    assert route_of("composite/sobjects?ids=a,b") == "composite/sobjects"
    assert route_of("queryAll") == "queryAll"


def test_every_call_takes_a_limiter_slot(client, limiter):
    client.request("GET", "limits")
    client.request("GET", "limits")
    stats = _strategy().get_window_stats(limiter.item, "crm", limiter.name)
    assert limiter.item.amount - stats.remaining == 3  # token request + two calls


def test_query_follows_next_records_url(client, org):
    org.control.config(query_batch_size=2)
    for n in range(5):
        org.control.edit(fields={"LastName": f"Paged{n}", "Email": f"p{n}@example.com"})
    pages = list(client.query_pages("SELECT Id, LastName FROM Contact ORDER BY LastName"))
    assert [len(page["records"]) for page in pages] == [2, 2, 1]
    assert [r["LastName"] for page in pages for r in page["records"]] == [f"Paged{n}" for n in range(5)]


def test_org_id_constant_matches_the_sandbox(org):
    assert org.control.config()["organization_id"] == ORG_ID
