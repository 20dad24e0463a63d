"""GET /metrics: Prometheus text, gauges that follow the database, CRM call counters from any process."""

import uuid
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from contacts.tests.factories import ContactFactory
from crm import registry
from crm.base import Permanent, RateLimited
from providers.models import DeadLetter, LinkStatus, ProviderLink
from sandbox.testing import SandboxControl, running_sandbox
from syncroot import counters, metrics
from webhooks.tests.factories import WebhookEventFactory

pytestmark = pytest.mark.django_db

GAUGES = ("syncroot_links", "syncroot_dead_letters", "syncroot_sync_lag_seconds", "syncroot_webhook_events")
CLOSED_PORT = "redis://127.0.0.1:1/0"


def scrape(client, **headers) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(page: dict, name: str, **labels: str) -> float:
    return page.get((name, frozenset(labels.items())), 0.0)


def link(provider: str, status: str, *, waiting: timedelta | None = None) -> ProviderLink:
    pending_since = timezone.now() - waiting if waiting is not None else None
    return ProviderLink.objects.create(
        contact=ContactFactory(), provider=provider, status=status, pending_since=pending_since
    )


def test_metrics_is_prometheus_text_with_every_gauge_for_every_provider(client):
    response = client.get("/metrics")

    assert response.status_code == 200
    families = {family.name: family for family in text_string_to_metric_families(response.content.decode())}
    for name in GAUGES:
        assert families[name].type == "gauge"
    assert families["syncroot_crm_requests"].type == "counter"
    # Zeros are exported too: a series that only appears once something is wrong cannot alert.
    links = {(s.labels["provider"], s.labels["status"]) for s in families["syncroot_links"].samples}
    assert links == {(p, s) for p in ("hubspot", "salesforce") for s in metrics.LINK_STATUSES}
    assert {s.labels["provider"] for s in families["syncroot_sync_lag_seconds"].samples} == {"hubspot", "salesforce"}
    assert families["syncroot_metrics_redis_up"].samples[0].value == 1
    assert "django_http_requests_total_by_method" in families  # django-prometheus' own metrics
    assert response["X-Request-ID"]


def test_gauges_move_with_the_outbox_dead_letters_and_inbox(client):
    before = scrape(client)

    link("hubspot", LinkStatus.PENDING, waiting=timedelta(seconds=5))
    link("hubspot", LinkStatus.PENDING, waiting=timedelta(seconds=10))
    link("hubspot", LinkStatus.FAILED, waiting=timedelta(minutes=3))
    parked = link("hubspot", LinkStatus.PARKED)
    link("salesforce", LinkStatus.SYNCED)
    link("salesforce", LinkStatus.DELETED)
    DeadLetter.objects.create(
        link=parked, provider="hubspot", contact=parked.contact, contact_version=1,
        error_code="INVALID_EMAIL", error_message="Email is invalid", attempts=1,
    )  # fmt: skip
    WebhookEventFactory.create_batch(2, provider="hubspot")
    WebhookEventFactory(provider="hubspot", status="failed")

    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("syncroot_links", provider="hubspot", status="pending") == 2
    assert moved("syncroot_links", provider="hubspot", status="failed") == 1
    assert moved("syncroot_links", provider="hubspot", status="parked") == 1
    assert moved("syncroot_links", provider="hubspot", status="synced") == 0
    assert moved("syncroot_links", provider="salesforce", status="synced") == 1
    assert moved("syncroot_links", provider="salesforce", status="deleted") == 1
    assert moved("syncroot_dead_letters", provider="hubspot", status="parked") == 1
    assert moved("syncroot_webhook_events", provider="hubspot", status="received") == 2
    assert moved("syncroot_webhook_events", provider="hubspot", status="failed") == 1
    # The oldest waiting change (the failed one, 3 minutes) sets the lag; nothing waits for Salesforce.
    assert 180 <= value(after, "syncroot_sync_lag_seconds", provider="hubspot") < 240
    assert value(after, "syncroot_sync_lag_seconds", provider="salesforce") == 0

    ProviderLink.objects.filter(provider="hubspot", status=LinkStatus.FAILED).update(status=LinkStatus.SYNCED)
    settled = scrape(client)
    assert 5 <= value(settled, "syncroot_sync_lag_seconds", provider="hubspot") < 60
    assert value(settled, "syncroot_links", provider="hubspot", status="failed") == value(
        before, "syncroot_links", provider="hubspot", status="failed"
    )


def test_metrics_token_is_required_when_configured(client, settings):
    settings.METRICS_TOKEN = "scrape-secret"

    missing = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer not-it"})
    right = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})

    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused["Content-Type"] == "application/json"
        assert refused.json()["code"] == "unauthenticated"
        assert set(refused.json()) == {"code", "message", "details"}
        assert refused["WWW-Authenticate"].startswith("Bearer")
    assert right.status_code == 200
    assert b"syncroot_links" in right.content


def test_metrics_can_be_switched_off(client, settings):
    settings.METRICS_ENABLED = False

    response = client.get("/metrics")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_only_get_is_allowed(client):
    response = client.post("/metrics")

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_database_down_is_a_503_json_not_a_broken_page(client):
    def refuse(execute, sql, params, many, context):
        raise OperationalError("server closed the connection unexpectedly")

    with connection.execute_wrapper(refuse):
        response = client.get("/metrics")

    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert response.json()["details"] == {"service": "database"}
    assert response["Retry-After"] == "5"
    assert client.get("/metrics").status_code == 200  # and it recovers


def test_redis_down_keeps_the_gauges_and_says_the_counters_are_missing(client, settings):
    settings.REDIS_URL = CLOSED_PORT

    page = scrape(client)

    assert value(page, "syncroot_metrics_redis_up") == 0
    assert ("syncroot_links", frozenset({"provider": "hubspot", "status": "pending"}.items())) in page


def test_counting_a_call_never_raises_when_redis_is_down(settings, monkeypatch):
    monkeypatch.setattr(counters, "_redis_down_until", 0.0)
    settings.REDIS_URL = CLOSED_PORT

    counters.crm_call_record(provider="hubspot", operation="create", outcome="ok", status=201, seconds=0.01)

    assert counters._redis_down_until > 0  # and the next calls skip Redis for a while instead of waiting


# --- CRM call counters, driven by real calls against the sandboxes --------------------------------


@pytest.fixture
def hubspot_connected(settings):
    with running_sandbox("hubspot") as sandbox:
        settings.HUBSPOT = {
            **settings.HUBSPOT,
            "base_url": sandbox.url,
            "access_token": "sandbox-token",
            "rate_limit": "1000/10 seconds",
            "limiter_key": f"hubspot-metrics-test-{uuid.uuid4().hex}",
        }
        registry.reset()
        yield SandboxControl(sandbox.url)
        registry.reset()


def test_hubspot_calls_from_the_registry_client_are_counted(client, settings, hubspot_connected):
    hubspot = registry.get_provider("hubspot").client
    before = scrape(client)

    hubspot.create({"email": f"{uuid.uuid4().hex}@example.com", "firstname": "Ada"})
    with pytest.raises(Permanent):
        hubspot.get("999999999")
    hubspot_connected.config(rate_limit_storm=1.0)  # every answer is a 429 now
    with pytest.raises(RateLimited):
        hubspot.get("999999999")

    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("syncroot_crm_requests_total", provider="hubspot", operation="create", outcome="ok") == 1
    assert moved("syncroot_crm_requests_total", provider="hubspot", operation="get", outcome="permanent") == 1
    assert moved("syncroot_crm_requests_total", provider="hubspot", operation="get", outcome="rate_limited") == 1
    assert moved("syncroot_crm_rate_limited_total", provider="hubspot") == 1
    assert moved("syncroot_crm_request_seconds_total", provider="hubspot", operation="create") > 0
    # Kept while calls keep coming, forgotten after a quiet week.
    assert (
        0
        < counters.counters_redis(settings.REDIS_URL).ttl(counters.counter_key("crm_requests"))
        <= counters.COUNTER_TTL_SECONDS
    )


def test_salesforce_calls_are_counted_by_route_without_record_ids(client, settings):
    with running_sandbox("salesforce", seed=3) as sandbox:
        settings.SALESFORCE = {
            **settings.SALESFORCE,
            "login_url": sandbox.url,
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
            "rate_limit": "10000/second",
            "rate_limit_name": f"salesforce-metrics-test-{uuid.uuid4().hex}",
        }
        registry.reset()
        salesforce = registry.get_provider("salesforce").client
        before = scrape(client)

        with pytest.raises(Permanent):
            salesforce.request("GET", "sobjects/Contact/003000000000001AAA")

        after = scrape(client)

    requests = {
        labels: after[(name, labels)] - before.get((name, labels), 0)
        for name, labels in after
        if name == "syncroot_crm_requests_total" and ("provider", "salesforce") in labels
    }
    moved = {dict(labels)["operation"]: dict(labels)["outcome"] for labels, n in requests.items() if n}
    assert moved["GET sobjects/Contact/{id}"] == "permanent"
    assert any(operation.startswith("POST") and "token" in operation for operation in moved)  # the login


PRIORITIES = ("live", "reconcile", "backfill")


def test_api_budgets_follow_the_crms_rate_limit_headers(client, settings, hubspot_connected):
    settings.API_BUDGET_SHARE = 0.5
    hubspot_connected.config(rate_limit={"max": 50, "interval_ms": 10_000}, daily_quota=1000)
    hubspot = registry.get_provider("hubspot").client

    for _ in range(3):
        hubspot.probe()
    page = scrape(client)

    # The sandbox counts every call: three probes used three of the window's 50 and the day's 1,000.
    assert value(page, "syncroot_api_budget_limit", connection="hubspot", window="short") == 50
    assert value(page, "syncroot_api_budget_used", connection="hubspot", window="short") == 3
    assert value(page, "syncroot_api_budget_limit", connection="hubspot", window="day") == 1000
    assert value(page, "syncroot_api_budget_used", connection="hubspot", window="day") == 3
    # SyncRoot's own count, and its share (API_BUDGET_SHARE) of the day's 1,000 by priority.
    assert value(page, "syncroot_api_budget_syncroot_used", connection="hubspot") == 3
    allowed = {p: value(page, "syncroot_api_budget_allowed", connection="hubspot", priority=p) for p in PRIORITIES}
    assert allowed == {"live": 500, "reconcile": 450, "backfill": 375}
    assert value(page, "syncroot_api_budget_backfill_paused", connection="hubspot") == 0


def test_salesforce_reports_its_daily_api_usage(client, settings):
    with running_sandbox("salesforce", seed=4, daily_quota=15_000) as sandbox:
        settings.SALESFORCE = {
            **settings.SALESFORCE,
            "login_url": sandbox.url,
            "client_id": "sandbox-client",
            "client_secret": "sandbox-secret",
            "rate_limit": "10000/second",
            "rate_limit_name": f"salesforce-budget-test-{uuid.uuid4().hex}",
        }
        registry.reset()
        salesforce = registry.get_provider("salesforce").client
        salesforce.request("GET", "limits")
        salesforce.request("GET", "limits")
        page = scrape(client)
        registry.reset()

    assert value(page, "syncroot_api_budget_limit", connection="salesforce", window="day") == 15_000
    assert value(page, "syncroot_api_budget_used", connection="salesforce", window="day") == 2
    assert ("syncroot_api_budget_used", frozenset({"connection": "salesforce", "window": "short"}.items())) not in page
