"""Outbound sync under CRM faults, a killed worker and lost broker messages."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from contacts.models import Contact
from providers import dispatch, outbox
from providers.models import DeadLetter, LinkStatus, ProviderLink, SyncAttempt
from syncroot.celery import app as celery_app
from tests.e2e.conftest import SECRET, WEBHOOK_TOKEN, worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]


def create_contacts(stack, count: int, prefix: str, pause: float = 0.0) -> list[str]:
    ids = []
    for n in range(count):
        response = stack.api.post(
            "/contacts", {"email": f"{prefix}{n}@example.com", "first_name": f"F{n}", "last_name": "L"}, format="json"
        )
        assert response.status_code == 201, response.content
        ids.append(response.json()["id"])
        if pause:
            time.sleep(pause)
    return ids


def all_synced(count: int) -> bool:
    return ProviderLink.objects.filter(status=LinkStatus.SYNCED).count() == 2 * count


def assert_each_crm_holds_exactly(stack, emails: set[str]) -> None:
    hubspot = Counter(r["properties"]["email"] for r in stack.hubspot_records())
    salesforce = Counter(r["Email"].lower() for r in stack.salesforce_contacts())
    assert set(hubspot) == emails
    assert set(salesforce) == emails
    assert max(hubspot.values()) == 1  # no duplicates
    assert max(salesforce.values()) == 1


@pytest.fixture
def fast_retries(settings):
    settings.SYNC_BACKOFF_BASE_SECONDS = 0.1
    settings.SYNC_BACKOFF_CAP_SECONDS = 2.0


def test_twenty_percent_server_errors_converge_with_bounded_attempts(stack, fast_retries, settings):
    settings.SYNC_BATCH_LINGER_MS = 0  # small batches: many requests for the faults to hit
    stack.hubspot_ctl.config(error_rate=0.2)
    stack.salesforce_ctl.config(error_rate=0.2)
    create_contacts(stack, 40, "err", pause=0.01)

    stack.wait_until(lambda: all_synced(40), timeout=60)

    assert_each_crm_holds_exactly(stack, {f"err{n}@example.com" for n in range(40)})
    assert not DeadLetter.objects.exists()
    outcomes = Counter(SyncAttempt.objects.values_list("outcome", flat=True))
    assert outcomes["transient"] > 0, outcomes  # the faults did happen
    assert stack.hubspot_ctl.stats()["faults"]["errors"] > 0
    worst = max(Counter(SyncAttempt.objects.values_list("link_id", flat=True)).values())
    assert worst <= settings.SYNC_MAX_ATTEMPTS


def test_rate_limit_storm_honours_retry_after(stack, fast_retries, settings):
    settings.SYNC_BATCH_LINGER_MS = 0  # one request per change, so the storm surely hits some
    stack.hubspot_ctl.config(rate_limit_storm=0.3)
    create_contacts(stack, 20, "storm", pause=0.05)

    stack.wait_until(lambda: all_synced(20), timeout=60)

    assert_each_crm_holds_exactly(stack, {f"storm{n}@example.com" for n in range(20)})
    limited = SyncAttempt.objects.filter(provider="hubspot", outcome="rate_limited").order_by("created_at")
    assert limited.exists()
    assert not DeadLetter.objects.exists()
    for attempt in limited:  # the storm says Retry-After: 1; the next try came no sooner
        following = (
            SyncAttempt.objects.filter(link_id=attempt.link_id, created_at__gt=attempt.created_at)
            .order_by("created_at")
            .first()
        )
        assert following is not None
        assert (following.created_at - attempt.created_at).total_seconds() >= 0.9


def test_shared_limiter_keeps_requests_under_the_crm_limit(stack, settings):
    stack.hubspot_ctl.config(rate_limit={"max": 10, "interval_ms": 1000})
    # A 10% margin: our window and the CRM's are measured a network hop apart.
    settings.HUBSPOT = {**settings.HUBSPOT, "rate_limit": "9/second"}
    settings.SYNC_BATCH_LINGER_MS = 0  # one request per change: the limiter must do the pacing
    from crm import registry

    registry.reset()
    started = time.monotonic()
    create_contacts(stack, 30, "paced", pause=0.01)

    stack.wait_until(lambda: all_synced(30), timeout=60)

    stats = stack.hubspot_ctl.stats()
    assert stats["rate_limited"] == 0
    assert stats["requests_total"] <= 10 * (time.monotonic() - started + 1)


def test_lost_broker_messages_are_delivered_by_the_sweeper(bare_stack, settings):
    ids = create_contacts(bare_stack, 10, "lost")
    # Redis loses everything it held for us: queued tasks and the scheduling flags.
    with celery_app.connection_for_write() as conn:
        for name in ("forwarder", "dlq"):
            conn.default_channel.queue_purge(name)
    for provider in ("hubspot", "salesforce"):
        dispatch.drain_flag_clear(provider=provider)

    with celery_app.connection_for_write() as conn:  # nothing left to wake them up
        assert [conn.default_channel.queue_declare(name).message_count for name in ("forwarder", "dlq")] == [0, 0]
    with worker():
        assert ProviderLink.objects.filter(status=LinkStatus.PENDING).count() == 20
        settings.OUTBOX_SWEEP_AFTER_SECONDS = 0
        assert outbox.sweep() == {"hubspot": 10, "salesforce": 10}
        bare_stack.wait_until(lambda: all_synced(len(ids)), timeout=30)
    assert_each_crm_holds_exactly(bare_stack, {f"lost{n}@example.com" for n in range(10)})


def _worker_process(stack, settings) -> subprocess.Popen:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "syncroot.test_settings",
        "DATABASE_URL": f"postgres://127.0.0.1:5432/{connection.settings_dict['NAME']}",
        "HUBSPOT_BASE_URL": stack.hubspot.url, "HUBSPOT_ACCESS_TOKEN": "sandbox-token",
        "HUBSPOT_CLIENT_SECRET": SECRET, "HUBSPOT_APP_ID": "1234567",
        "SALESFORCE_LOGIN_URL": stack.salesforce.url, "SALESFORCE_CLIENT_ID": "sandbox-client",
        "SALESFORCE_CLIENT_SECRET": SECRET, "SALESFORCE_ORGANIZATION_ID": "00D000000000001EAA",
        "SALESFORCE_WEBHOOK_TOKEN": WEBHOOK_TOKEN, "SALESFORCE_EVENT_SECRET": SECRET,
        "SYNC_BATCH_LINGER_MS": "0",
    }  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "syncroot", "worker", "-Q", "forwarder,dlq", "-c", "2",
         "--without-gossip", "--without-mingle", "-l", "warning"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip


def test_worker_killed_mid_batch_loses_and_duplicates_nothing(bare_stack, settings):
    # Slow CRMs, so the kill lands while batches are in flight.
    bare_stack.hubspot_ctl.config(latency_ms=150)
    bare_stack.salesforce_ctl.config(latency_ms=150)
    process = _worker_process(bare_stack, settings)
    try:
        create_contacts(bare_stack, 150, "kill")
        bare_stack.wait_until(lambda: ProviderLink.objects.filter(status=LinkStatus.SYNCED).exists(), timeout=30)
        os.killpg(process.pid, signal.SIGKILL)  # the worker and its children, mid-batch
        process.wait(timeout=10)
        in_flight = ProviderLink.objects.exclude(status=LinkStatus.SYNCED).count()
        assert in_flight > 0  # the kill did interrupt work
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

    process = _worker_process(bare_stack, settings)
    try:
        settings.OUTBOX_SWEEP_AFTER_SECONDS = 0
        outbox.sweep()  # the killed worker's messages wait for Redis' visibility timeout; the sweeper doesn't
        bare_stack.wait_until(lambda: all_synced(150), timeout=90)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    assert_each_crm_holds_exactly(bare_stack, {f"kill{n}@example.com" for n in range(150)})
    assert Contact.objects.count() == 150
