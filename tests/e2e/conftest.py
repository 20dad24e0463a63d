"""The real stack for end-to-end tests: PostgreSQL, Redis, a Celery worker consuming every queue,
the API behind a live server, and both CRM sandboxes delivering webhooks to it."""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import requests.adapters
from celery.contrib.testing.worker import start_worker
from rest_framework.test import APIClient

from crm import registry
from sandbox.server import RunningSandbox
from sandbox.testing import SandboxControl, running_sandbox
from syncroot import queues
from syncroot.celery import app as celery_app

SECRET = "sandbox-secret"
WEBHOOK_TOKEN = "e2e-webhook-token"


@dataclass
class Stack:
    api: APIClient
    hubspot: RunningSandbox
    salesforce: RunningSandbox
    hubspot_ctl: SandboxControl
    salesforce_ctl: SandboxControl
    server_url: str

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; state: {self.describe()}")
            time.sleep(interval)

    def describe(self) -> str:
        """Sync state for failure messages."""
        from providers.models import ProviderLink, SyncAttempt
        from webhooks.models import WebhookEvent

        links = list(ProviderLink.objects.values("contact__email", "provider", "status", "external_id", "last_error"))
        attempts = list(SyncAttempt.objects.values("provider", "operation", "outcome", "error_code", "message")[:10])
        inbox = list(WebhookEvent.objects.order_by("-pk").values("provider", "status", "outcome", "attempts")[:10])
        return f"links={links} attempts={attempts} inbox={inbox}"

    def hubspot_records(self, *, archived: bool = False) -> list[dict]:
        return [r for r in self.hubspot_ctl.records() if bool(r.get("archived")) == archived]

    def salesforce_contacts(self, *, deleted: bool = False) -> list[dict]:
        return [
            r
            for r in self.salesforce_ctl.records()
            if r["attributes"]["type"] == "Contact" and bool(r.get("IsDeleted")) == deleted
        ]

    def hubspot_sdk(self):
        from hubspot import HubSpot

        return HubSpot(access_token="sandbox-token", host=self.hubspot.url)

    def salesforce_sdk(self):
        from simple_salesforce import Salesforce

        return Salesforce(
            instance_url=self.salesforce.url, session_id="sandbox-token", session=_http_session(self.salesforce.url)
        )


def _http_session(url: str) -> requests.Session:
    """simple-salesforce always builds https:// URLs; the sandbox speaks plain HTTP on loopback."""
    https = url.replace("http://", "https://", 1)

    class HttpsToHttp(requests.adapters.HTTPAdapter):
        def send(self, request, **kwargs):
            request.url = request.url.replace(https, url, 1)
            return super().send(request, **kwargs)

    session = requests.Session()
    session.mount("https://", HttpsToHttp())
    return session


def _purge_broker() -> None:
    with celery_app.connection_for_write() as connection:
        for name in queues.ALL:
            connection.default_channel.queue_purge(name)
    celery_app.backend  # noqa: B018 - make sure the app is fully configured before the worker starts


@pytest.fixture(scope="session", autouse=True)
def _test_database_released(django_db_setup, django_db_blocker) -> Iterator[None]:
    """The worker's threads keep their database connections between tasks, as production workers
    do (syncroot.celery); at the end of the run they are cut, so the test database can be dropped."""
    yield
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def sandbox_options() -> dict[str, dict[str, Any]]:
    """Override per test to configure the sandboxes (faults, limits)."""
    return {"hubspot": {}, "salesforce": {}}


def worker():
    """A Celery worker consuming every queue, in threads of this process."""
    return start_worker(
        celery_app, pool="threads", concurrency=4, perform_ping_check=False, queues=list(queues.ALL),
        shutdown_timeout=30,
    )  # fmt: skip


@contextmanager
def beat(interval: float = 1.0) -> Iterator[None]:
    """What Celery beat does in production, on a short period: the sweeper of the outbox and of
    the inbox (which also hands over again the events whose backoff is over)."""
    from django.db import connection

    from providers.tasks import sweep_outbox

    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            sweep_outbox()
        connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


@pytest.fixture
def stack(bare_stack: Stack, settings) -> Iterator[Stack]:
    settings.OUTBOX_SWEEP_AFTER_SECONDS = 3
    with worker(), beat():
        yield bare_stack


@pytest.fixture
def bare_stack(live_server, settings, api_client, sandbox_options) -> Iterator[Stack]:
    """Everything but the worker (tests start it with `worker()` when they want)."""
    hs_options = {"client_secret": SECRET, "webhook_url": f"{live_server.url}/webhooks/hubspot"}
    sf_options = {"webhook_url": f"{live_server.url}/webhooks/salesforce?token={WEBHOOK_TOKEN}"}
    with (
        running_sandbox("hubspot", **{**hs_options, **sandbox_options["hubspot"]}) as hubspot,
        running_sandbox("salesforce", **{**sf_options, **sandbox_options["salesforce"]}) as salesforce,
    ):
        settings.PUBLIC_BASE_URL = live_server.url
        settings.HUBSPOT = {
            **settings.HUBSPOT, "base_url": hubspot.url, "access_token": "sandbox-token",
            "client_secret": SECRET, "app_id": "1234567", "rate_limit": "100/10 seconds",
        }  # fmt: skip
        settings.SALESFORCE = {
            **settings.SALESFORCE, "login_url": salesforce.url, "client_id": "sandbox-client",
            "client_secret": SECRET, "organization_id": "00D000000000001EAA",
            "webhook_token": WEBHOOK_TOKEN, "event_secret": SECRET,
        }  # fmt: skip
        registry.reset()
        for name in ("hubspot", "salesforce", "hubspot-search"):
            _reset_limiter(name)
        _purge_broker()
        yield Stack(
            api=api_client, hubspot=hubspot, salesforce=salesforce,
            hubspot_ctl=SandboxControl(hubspot.url), salesforce_ctl=SandboxControl(salesforce.url),
            server_url=live_server.url,
        )  # fmt: skip
        registry.reset()


def _reset_limiter(name: str) -> None:
    from django.core.cache import cache

    from crm.ratelimit import _strategy

    connection = _strategy().storage.get_connection()
    for key in connection.scan_iter(f"*crm/{name}*"):
        connection.delete(key)
    cache.delete(f"outbox:drain-scheduled:{name}")
