"""Prometheus metrics served at GET /metrics.

Three sources end up on one page:

- django-prometheus: the API's own HTTP metrics (`django_http_*`), per process.
- Gauges computed at scrape time from PostgreSQL, the only state that matters: links per provider
  and status, dead letters, the age of the oldest change still waiting, inbox events. One grouped
  query each, so every API process answers the same numbers whichever one Prometheus reaches.
- Counters of what the workers did (CRM calls, rows pruned), written to Redis hashes by
  `syncroot.counters` in whichever process does the work, and read back here.

`/metrics` is on while METRICS_ENABLED; with METRICS_TOKEN set it wants `Authorization: Bearer
<token>`. A scrape while the database is down answers 503 JSON, never a half page.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import prometheus_client
import redis
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from syncroot.counters import api_budgets, counter_key, counters_redis
from syncroot.errors import error_body

logger = logging.getLogger(__name__)

LINK_STATUSES = ("pending", "synced", "failed", "parked", "deleted")
DEAD_LETTER_STATUSES = ("parked", "retried", "discarded")
EVENT_STATUSES = ("received", "processed", "ignored", "failed")
RECORD_ISSUE_CODES = ("no_email", "too_long", "invalid_email", "duplicate_record")
_ISSUES_QUERY = """
    SELECT link.provider, issue->>'field', issue->>'code', count(*)
    FROM providers_providerlink AS link, jsonb_array_elements(link.issues) AS issue
    WHERE link.issues <> '[]'::jsonb
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
SCRAPE_STATEMENT_TIMEOUT_MS = 5000


# --- the collector (runs in the API process at scrape time) ----------------------------------


def _families() -> dict[str, Metric]:
    return {
        "links": GaugeMetricFamily(
            "syncroot_links", "Contacts' sync state per CRM, by status.", labels=["provider", "status"]
        ),
        "dead_letters": GaugeMetricFamily(
            "syncroot_dead_letters", "Dead letters per CRM, by status.", labels=["provider", "status"]
        ),
        "lag": GaugeMetricFamily(
            "syncroot_sync_lag_seconds",
            "Age of the oldest change still waiting for a CRM (pending or failed); 0 when none.",
            labels=["provider"],
        ),
        "crm_status": GaugeMetricFamily(
            "syncroot_crm_status",
            "Each CRM connection's status: 1 for the current one (paused, auth_failed: nothing sent).",
            labels=["provider", "status"],
        ),
        "connection_up": GaugeMetricFamily(
            "syncroot_connection_up",
            "1 while a CRM connection is active, 0 while it is paused or its credentials are refused.",
            labels=["connection", "provider"],
        ),
        "events": GaugeMetricFamily(
            "syncroot_webhook_events", "Inbox events per CRM, by status.", labels=["provider", "status"]
        ),
        "requests": CounterMetricFamily(
            "syncroot_crm_requests",
            "HTTP calls made to each CRM by every process, by operation and outcome.",
            labels=["provider", "operation", "outcome"],
        ),
        "seconds": CounterMetricFamily(
            "syncroot_crm_request_seconds",
            "Seconds spent in CRM calls, by operation (divide by the request count for the mean).",
            labels=["provider", "operation"],
        ),
        "rate_limited": CounterMetricFamily(
            "syncroot_crm_rate_limited", "CRM answers that said slow down (429 or equivalent).", labels=["provider"]
        ),
        "issues": GaugeMetricFamily(
            "syncroot_sync_issues",
            "Values a CRM holds that SyncRoot refused (too long, not an email, an email another contact holds), "
            "per CRM, field and reason: shown on the contacts' sync status until they fit or a person decides.",
            labels=["provider", "field", "code"],
        ),
        "record_issues": GaugeMetricFamily(
            "syncroot_record_issues",
            "CRM records SyncRoot cannot take in (no email, an email it cannot hold, a duplicate email), by reason.",
            labels=["provider", "code"],
        ),
        "conflicts": GaugeMetricFamily(
            "syncroot_conflicts_open",
            "Cases waiting for a person in the conflict queue (GET /conflicts), by kind.",
            labels=["kind"],
        ),
        "pruned": CounterMetricFamily(
            "syncroot_retention_pruned", "Rows deleted by retention (RETENTION_DAYS), by kind.", labels=["kind"]
        ),
        "oldest": GaugeMetricFamily(
            "syncroot_retention_oldest_seconds",
            "Age of the oldest row of each kind retention prunes (about RETENTION_DAYS when it keeps up); 0 when none.",
            labels=["kind"],
        ),
        "budget_used": GaugeMetricFamily(
            "syncroot_api_budget_used",
            "API calls used in each window as the CRM last reported it (HubSpot X-HubSpot-RateLimit-* headers, "
            "Salesforce Sforce-Limit-Info); window short (HubSpot's 10 s) or day.",
            labels=["connection", "window"],
        ),
        "budget_limit": GaugeMetricFamily(
            "syncroot_api_budget_limit",
            "API calls allowed in each window as the CRM last reported it.",
            labels=["connection", "window"],
        ),
        "budget_spent": GaugeMetricFamily(
            "syncroot_api_budget_syncroot_used",
            "SyncRoot's own API calls to each connection in the last 24 hours (crm/budget.py).",
            labels=["connection"],
        ),
        "budget_allowed": GaugeMetricFamily(
            "syncroot_api_budget_allowed",
            "API calls SyncRoot may make to each connection in 24 hours, by priority (live, reconcile, backfill): "
            "its share of the daily limit; absent while the limit is unknown.",
            labels=["connection", "priority"],
        ),
        "backfill_paused": GaugeMetricFamily(
            "syncroot_api_budget_backfill_paused",
            "1 while backfills and imports to the connection wait for its API budget to free up.",
            labels=["connection"],
        ),
        "redis_up": GaugeMetricFamily(
            "syncroot_metrics_redis_up", "1 when the CRM call counters could be read from Redis."
        ),
    }


def _grouped(queryset: Any, *fields: str) -> dict[tuple[str, ...], int]:
    rows = queryset.order_by().values(*fields).annotate(n=Count("pk"))
    return {tuple(row[f] for f in fields): row["n"] for row in rows}


class SyncRootCollector:
    """Yields SyncRoot's gauges and counters; registered once with prometheus_client."""

    def describe(self) -> Iterable[Metric]:
        # Declared so registering does not run the queries (auto_describe would call collect()).
        return list(_families().values())

    def collect(self) -> Iterator[Metric]:
        families = _families()
        self._database(families)
        self._counters(families)
        return iter(families.values())

    def _database(self, families: dict[str, Metric]) -> None:
        from crm.registry import PROVIDER_CLASSES
        from providers.conflicts import conflict_counts
        from providers.models import Connection, ConnectionStatus, DeadLetter, LinkStatus, ProviderLink, RecordIssue
        from providers.retention import retention_oldest
        from webhooks.models import WebhookEvent

        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:  # a scrape must not hold a connection for long
                    cursor.execute(f"SET LOCAL statement_timeout = {SCRAPE_STATEMENT_TIMEOUT_MS}")
            links = _grouped(ProviderLink.objects.all(), "provider", "status")
            dead = _grouped(DeadLetter.objects.all(), "provider", "status")
            events = _grouped(WebhookEvent.objects.all(), "provider", "status")
            record_issues = _grouped(RecordIssue.objects.all(), "provider", "code")
            with connection.cursor() as cursor:  # served by the partial index on links with issues
                cursor.execute(_ISSUES_QUERY)
                issues = cursor.fetchall()
            rows = list(Connection.objects.filter(deleted_at__isnull=True))
            connections = [(row.key, row.provider, row.status) for row in rows]
            crm_status = {key: status for key, _, status in connections}
            oldest = dict(
                ProviderLink.objects.filter(status__in=(LinkStatus.PENDING, LinkStatus.FAILED))
                .order_by()
                .values("provider")
                .annotate(oldest=Min("pending_since"))
                .values_list("provider", "oldest")
            )
            kept = retention_oldest()
            conflicts = conflict_counts()
        # Every known CRM gets every status, zeros included: a series that vanishes cannot alert.
        providers = sorted(
            set(PROVIDER_CLASSES)
            | set(crm_status)
            | {p for p, _ in links}
            | {p for p, _ in dead}
            | {p for p, _ in events}
        )
        for key, crm, status in connections:
            families["connection_up"].add_metric([key, crm], 1 if status == ConnectionStatus.ACTIVE else 0)
        self._budgets(families, rows)
        now = timezone.now()
        for provider in providers:
            for status in LINK_STATUSES:
                families["links"].add_metric([provider, status], links.get((provider, status), 0))
            for status in DEAD_LETTER_STATUSES:
                families["dead_letters"].add_metric([provider, status], dead.get((provider, status), 0))
            for status in EVENT_STATUSES:
                families["events"].add_metric([provider, status], events.get((provider, status), 0))
            for code in RECORD_ISSUE_CODES:
                families["record_issues"].add_metric([provider, code], record_issues.get((provider, code), 0))
            current = crm_status.get(provider, ConnectionStatus.ACTIVE)
            for status in ConnectionStatus.values:
                families["crm_status"].add_metric([provider, status], 1 if status == current else 0)
            since = oldest.get(provider)
            lag = max((now - since) / timedelta(seconds=1), 0.0) if since else 0.0
            families["lag"].add_metric([provider], lag)
        for kind, since in kept.items():
            families["oldest"].add_metric([kind], max((now - since) / timedelta(seconds=1), 0.0) if since else 0.0)

        for provider, field, code, count in issues:
            families["issues"].add_metric([provider, field, code], count)
        for kind, count in conflicts.items():
            families["conflicts"].add_metric([kind], count)

    @staticmethod
    def _budgets(families: dict[str, Metric], rows: list[Any]) -> None:
        from providers.budgets import connection_budget

        for row in rows:
            budget = connection_budget(connection=row)
            if budget is None:  # Redis cannot say: syncroot_metrics_redis_up tells
                continue
            families["budget_spent"].add_metric([row.key], budget["used"])
            for priority, allowed in budget["allowed"].items():
                if allowed is not None:
                    families["budget_allowed"].add_metric([row.key, priority], allowed)
            families["backfill_paused"].add_metric([row.key], 1 if budget["backfill_paused_until"] else 0)

    def _counters(self, families: dict[str, Metric]) -> None:
        try:
            pipe = counters_redis(settings.REDIS_URL).pipeline(transaction=False)
            for name in ("crm_requests", "crm_request_seconds", "crm_rate_limited", "retention_pruned"):
                pipe.hgetall(counter_key(name))
            requests, seconds, rate_limited, pruned = pipe.execute()
            budgets = api_budgets()
        except redis.RedisError as exc:
            logger.warning("CRM call counters unavailable: Redis error", extra={"error": str(exc)})
            families["redis_up"].add_metric([], 0)
            return
        families["redis_up"].add_metric([], 1)
        for field, value in sorted(requests.items()):
            families["requests"].add_metric(field.decode().split("|", 2), float(value))
        for field, value in sorted(seconds.items()):
            families["seconds"].add_metric(field.decode().split("|", 1), float(value))
        for field, value in sorted(rate_limited.items()):
            families["rate_limited"].add_metric([field.decode()], float(value))
        for field, value in sorted(pruned.items()):
            families["pruned"].add_metric([field.decode()], float(value))
        for (name, window), budget in sorted(budgets.items()):
            if "used" in budget and "limit" in budget:
                families["budget_used"].add_metric([name, window], budget["used"])
                families["budget_limit"].add_metric([name, window], budget["limit"])


COLLECTOR = SyncRootCollector()
try:
    prometheus_client.REGISTRY.register(COLLECTOR)
except ValueError:  # already registered (the module was imported twice, e.g. under the autoreloader)
    pass


def _registry() -> prometheus_client.CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        # gunicorn with prometheus_client's multiprocess mode: merge every worker's HTTP metrics.
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(SyncRootCollector())
        return registry
    return prometheus_client.REGISTRY


# --- the view ----------------------------------------------------------------------------------


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: Prometheus text format."""
    if not settings.METRICS_ENABLED:
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse(error_body("method_not_allowed", f'Method "{request.method}" not allowed.'), status=405)
        response["Allow"] = "GET, HEAD"
        return response
    token = settings.METRICS_TOKEN
    if token and not _authorized(request, token):
        response = JsonResponse(
            error_body("unauthenticated", "Metrics need Authorization: Bearer <METRICS_TOKEN>."), status=401
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    # Content negotiation as prometheus_client's own exporter does it (OpenMetrics when asked).
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    try:
        page = encoder(_registry())
    except DatabaseError as exc:
        logger.warning("metrics unavailable: database error", extra={"error": str(exc)})
        return _unavailable("The database is unavailable; retry shortly.", "database")
    except Exception:  # a broken collector must not take the endpoint (or the process) down
        logger.exception("metrics collection failed")
        return _unavailable("Metrics could not be collected; see the server log.", "metrics")
    return HttpResponse(page, content_type=content_type)


def _unavailable(message: str, service: str) -> JsonResponse:
    response = JsonResponse(error_body("service_unavailable", message, {"service": service}), status=503)
    response["Retry-After"] = "5"
    return response
