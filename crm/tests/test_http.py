"""The shared call path against the HubSpot sandbox, configured here as a client would configure it."""

import socket
import threading
import uuid
from typing import Any

import pytest
import requests

from crm.base import AuthExpired, Permanent, ProviderError, RateLimited, Transient
from crm.budget import BudgetSpent, DayBudget, Priority, call_priority
from crm.http import CallPath, CallRecord, Token, TokenCache, new_session
from crm.ratelimit import RateLimiter
from sandbox.testing import SandboxControl, running_sandbox

CONTACTS = "/crm/v3/objects/contacts"
TOKEN = "POST /oauth/v1/token"


def classify(response: requests.Response, body: Any) -> ProviderError | None:
    status = response.status_code
    if status < 300:
        return None
    if status == 401:
        return AuthExpired("refused", status=status)
    return Transient("busy", status=status) if status >= 500 else Permanent("no", status=status)


class Client:
    """The smallest client: a CallPath, a token fetched with the sandbox's refresh token, a record list."""

    def __init__(
        self, url: str, *, token: str, can_refresh: bool = True, session=None, budget=None, limiter=None
    ) -> None:
        self.url = url
        self.records: list[CallRecord] = []
        self.limiter = limiter or RateLimiter(f"http-test-{uuid.uuid4().hex}", "10000/second")
        self.tokens = TokenCache(self.fetch, can_refresh=can_refresh, token=token)
        self.path = CallPath(
            name="test",
            session=session or new_session(pool_connections=1, pool_maxsize=16),
            timeout=(1.0, 5.0),
            classify=classify,
            limiter=self.limiter,
            tokens=self.tokens,
            on_call=self.records.append,
            budget=budget,
        )

    def fetch(self) -> Token:
        form = {
            "grant_type": "refresh_token",
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
            "refresh_token": "sandbox-refresh-token",
        }
        body = self.path.request(
            "POST",
            self.url + "/oauth/v1/token",
            operation="token",
            route="/oauth/v1/token",
            authorized=False,
            data=form,
        )
        return Token(body["access_token"], body["expires_in"])

    def list_contacts(self) -> Any:
        return self.path.request("GET", self.url + CONTACTS, operation="list", route=CONTACTS, params={"limit": "1"})

    def outcomes(self) -> list[tuple[str, str]]:
        return [(record.operation, record.outcome) for record in self.records]


@pytest.fixture
def hubspot():
    with running_sandbox("hubspot") as running:
        yield running


@pytest.fixture
def control(hubspot) -> SandboxControl:
    return SandboxControl(hubspot.url)


class GatedSession(requests.Session):
    """Holds every call carrying `stale` until `gate` opens: all of them are sent with it."""

    def __init__(self, gate: threading.Barrier, stale: str) -> None:
        super().__init__()
        self.gate, self.stale = gate, stale

    def request(self, method, url, *args, headers=None, **kwargs):
        if (headers or {}).get("Authorization") == f"Bearer {self.stale}":
            self.gate.wait(timeout=10)
        return super().request(method, url, *args, headers=headers, **kwargs)


def test_threads_refused_with_the_same_stale_token_cause_one_token_request(hubspot, control):
    threads_n = 8
    session = GatedSession(threading.Barrier(threads_n), stale="expired-token")
    client = Client(hubspot.url, token="expired-token", session=session)
    answers: list[Any] = []
    threads = [threading.Thread(target=lambda: answers.append(client.list_contacts())) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert len(answers) == threads_n  # every call succeeded after the refresh
    assert sum(control.stats()["requests"][TOKEN].values()) == 1
    assert client.outcomes().count(("list", "auth_refresh")) == threads_n
    assert client.outcomes().count(("token", "ok")) == 1
    assert client.outcomes().count(("list", "ok")) == threads_n


def test_a_token_refused_right_after_its_refresh_is_auth_expired_after_one_refresh(hubspot, control):
    control.config(token_ttl_s=0)  # every new token is already expired
    client = Client(hubspot.url, token="expired-token")

    with pytest.raises(AuthExpired):
        client.list_contacts()

    assert client.outcomes() == [("list", "auth_refresh"), ("token", "ok"), ("list", "authexpired")]
    assert sum(control.stats()["requests"][TOKEN].values()) == 1


def test_a_configured_token_that_cannot_be_refreshed_is_auth_expired_at_once(hubspot, control):
    client = Client(hubspot.url, token="revoked", can_refresh=False)

    with pytest.raises(AuthExpired):
        client.list_contacts()

    assert client.outcomes() == [("list", "authexpired")]
    assert TOKEN not in control.stats()["requests"]


def test_a_transport_error_is_transient_and_reported_once():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the call: nothing listens there
    client = Client(f"http://127.0.0.1:{port}", token="sandbox-token")

    with pytest.raises(Transient) as failed:
        client.list_contacts()

    assert failed.value.code == "CONNECTION_ERROR"
    assert f"127.0.0.1:{port}" not in failed.value.message  # the route, never the URL and its query
    [record] = client.records
    assert (record.operation, record.status, record.outcome, record.error) == ("list", None, "transient", failed.value)


def test_the_hook_gets_one_record_per_call_with_its_answer(hubspot, control):
    client = Client(hubspot.url, token="sandbox-token")

    client.list_contacts()
    with pytest.raises(Permanent) as missing:
        client.path.request("GET", f"{hubspot.url}{CONTACTS}/999999", operation="get", route=CONTACTS + "/{id}")

    assert [(r.operation, r.method, r.route, r.status, r.outcome) for r in client.records] == [
        ("list", "GET", CONTACTS, 200, "ok"),
        ("get", "GET", CONTACTS + "/{id}", 404, "permanent"),
    ]
    assert client.records[1].error is missing.value
    assert all(record.seconds > 0 for record in client.records)
    assert control.stats()["requests_total"] == 2


def test_a_failing_hook_does_not_fail_the_call(hubspot):
    client = Client(hubspot.url, token="sandbox-token")

    def broken(record: CallRecord) -> None:
        raise RuntimeError("metrics are down")

    client.path.on_call = broken

    assert client.list_contacts()["results"] == []


def test_a_call_past_its_priority_s_budget_is_not_sent(hubspot, control):
    budget = DayBudget(connection=f"http-test-{uuid.uuid4().hex}", share=1.0, daily_limit=4)
    client = Client(hubspot.url, token="expired-token", budget=budget)
    sent = sum(control.stats()["requests"].get(f"GET {CONTACTS}", {}).values())

    with call_priority(Priority.BACKFILL):  # 3 of the 4 (75 %)
        client.list_contacts()  # refused (401), a token request (not counted), sent again: 2 calls
        client.list_contacts()
        with pytest.raises(BudgetSpent):
            client.list_contacts()
    client.list_contacts()  # a live change still has the last one

    assert client.outcomes().count(("token", "ok")) == 1
    assert sum(control.stats()["requests"][f"GET {CONTACTS}"].values()) - sent == 4
    assert budget.state().used == 4


def test_a_backfill_alone_uses_the_whole_window_and_beside_live_changes_its_share(hubspot):
    alone = Client(hubspot.url, token="sandbox-token", limiter=RateLimiter(f"w-{uuid.uuid4().hex}", "10/minute"))
    with call_priority(Priority.BACKFILL):
        for _ in range(10):
            alone.list_contacts()

    limiter = RateLimiter(f"w-{uuid.uuid4().hex}", "10/minute", max_wait=0)
    shared = Client(hubspot.url, token="sandbox-token", limiter=limiter)
    shared.list_contacts()  # a live change: for a minute, backfills keep to 7 of the 10
    with call_priority(Priority.BACKFILL):
        for _ in range(7):
            shared.list_contacts()
        with pytest.raises(RateLimited):
            shared.list_contacts()
    shared.list_contacts()
    shared.list_contacts()  # the live changes' room: 1 + 2 of the window's 10
    with pytest.raises(RateLimited):
        shared.list_contacts()
