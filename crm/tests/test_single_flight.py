"""50 concurrent calls with an expired OAuth token: exactly one token request, every call served.

The clients are built as the registry builds them from the environment (refresh token plus client
id and secret), against sandboxes that expire every access token at once, as a CRM does when its
tokens' lifetime ends while work is in flight.
"""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from crm.hubspot.client import HubSpotClient
from crm.ratelimit import RateLimiter
from crm.salesforce.client import SalesforceClient
from sandbox.testing import SandboxControl, running_sandbox

CALLS = 50


def token_requests(control: SandboxControl, key: str) -> int:
    return sum(control.stats()["requests"].get(key, {}).values())


def all_at_once(call) -> list:
    gate = threading.Barrier(CALLS)

    def one(_: int):
        gate.wait(timeout=10)
        return call()

    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        return list(pool.map(one, range(CALLS)))


@pytest.mark.django_db
def test_hubspot_refreshes_an_expired_token_once_for_fifty_calls():
    with running_sandbox("hubspot", seed=3, rate_limit=None) as sandbox:
        control = SandboxControl(sandbox.url)
        client = HubSpotClient(
            {"base_url": sandbox.url, "client_id": "sandbox-client", "client_secret": "sandbox-secret",
             "refresh_token": "sandbox-refresh-token", "rate_limit": "100000/10 seconds",
             "limiter_key": f"single-flight-{uuid.uuid4().hex}"},
        )  # fmt: skip
        client.session.adapters["http://"].init_poolmanager(CALLS, CALLS)
        client.probe()  # the first token
        control_expired = control.session.post(f"{sandbox.url}/_sandbox/tokens/expire", timeout=5).json()
        before = token_requests(control, "POST /oauth/v1/token")

        results = all_at_once(client.probe)

        assert control_expired["expired"] == 1
        assert results == [None] * CALLS  # every call was served
        assert token_requests(control, "POST /oauth/v1/token") - before == 1


@pytest.mark.django_db
def test_salesforce_refreshes_an_expired_session_once_for_fifty_calls():
    with running_sandbox("salesforce", seed=3) as sandbox:
        control = SandboxControl(sandbox.url)
        login = control.session.post(
            f"{sandbox.url}/services/oauth2/token",
            data={"grant_type": "password", "client_id": "sandbox-client", "client_secret": "sandbox-secret",
                  "username": "integration@example.com", "password": "pw"},
            timeout=5,
        ).json()  # fmt: skip
        client = SalesforceClient(
            {"login_url": sandbox.url, "client_id": "sandbox-client", "client_secret": "sandbox-secret",
             "refresh_token": login["refresh_token"]},
            limiter=RateLimiter(f"single-flight-{uuid.uuid4().hex}", "100000/second"),
        )  # fmt: skip
        client.session.adapters["http://"].init_poolmanager(CALLS, CALLS)
        client.request("GET", "limits")
        control.session.post(f"{sandbox.url}/_sandbox/tokens/expire", timeout=5)
        before = token_requests(control, "POST /services/oauth2/token")

        results = all_at_once(lambda: client.request("GET", "limits"))

        assert all("DailyApiRequests" in result for result in results)
        assert token_requests(control, "POST /services/oauth2/token") - before == 1


@pytest.mark.django_db
def test_hubspot_refreshes_a_token_before_it_expires(monkeypatch):
    """A token a minute from its end is replaced before a call is sent with it: no call is refused."""
    import crm.http

    with running_sandbox("hubspot", seed=3, rate_limit=None, token_ttl_s=1800) as sandbox:
        control = SandboxControl(sandbox.url)
        answered: list = []
        client = HubSpotClient(
            {"base_url": sandbox.url, "client_id": "sandbox-client", "client_secret": "sandbox-secret",
             "refresh_token": "sandbox-refresh-token", "rate_limit": "100000/10 seconds",
             "limiter_key": f"early-{uuid.uuid4().hex}", "on_response": answered.append},
        )  # fmt: skip
        client.probe()
        first = client.tokens.value
        now = crm.http.time.time()
        monkeypatch.setattr(crm.http.time, "time", lambda: now + 1800 - 30)  # 30 s left: inside the margin

        client.probe()

        assert client.tokens.value != first
        assert token_requests(control, "POST /oauth/v1/token") == 2
        assert [r.status for r in answered if r.operation == "probe"] == [200, 200]  # none refused
