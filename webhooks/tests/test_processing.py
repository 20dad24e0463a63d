"""Processing inbox events against the HubSpot sandbox: a failing event is retried with backoff up
to a cap and then failed, never for ever; two copies of one event apply it once."""

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

import providers.inbound
import webhooks.services
from contacts.models import Contact
from crm import registry
from providers.crm_state import crm_paused
from providers.models import ProviderLink
from sandbox.testing import SandboxControl, running_sandbox
from webhooks.models import EventStatus, WebhookEvent
from webhooks.services import events_process, inbox_sweep
from webhooks.tests.factories import SALESFORCE_SETTINGS, WebhookEventFactory


@pytest.fixture
def hubspot(settings) -> Iterator[SandboxControl]:
    """SyncRoot connected to a HubSpot sandbox (no webhooks of its own) and to a closed Salesforce."""
    with running_sandbox("hubspot") as sandbox:
        settings.HUBSPOT = {
            **settings.HUBSPOT, "base_url": sandbox.url, "access_token": "sandbox-token", "client_secret": "s",
            "app_id": "1234567", "rate_limit": "1000/10 seconds", "limiter_key": f"hubspot-inbox-{uuid.uuid4().hex}",
        }  # fmt: skip
        settings.SALESFORCE = {**settings.SALESFORCE, **SALESFORCE_SETTINGS}
        registry.reset()
        control = SandboxControl(sandbox.url)
        control.config(webhooks_enabled=False)
        yield control
        registry.reset()


def creation_event(object_id: str, kind: str = "contact.creation") -> WebhookEvent:
    """HubSpot's contact.creation (or .restore) carries no values: processing it reads the record first."""
    return WebhookEventFactory(
        payload={
            "eventId": int(time.time() * 1000), "subscriptionId": 2100101, "subscriptionType": kind,
            "objectId": int(object_id), "occurredAt": int(time.time() * 1000), "changeSource": "CRM_UI",
        }
    )  # fmt: skip


def sweep_when_due(event: WebhookEvent, timeout_s: float = 5.0) -> None:
    """What beat does, period after period, until the sweeper hands the event over again (or it
    has given up on it)."""
    deadline = time.monotonic() + timeout_s
    while inbox_sweep() == 0 and WebhookEvent.objects.filter(pk=event.pk, status=EventStatus.RECEIVED).exists():
        assert time.monotonic() < deadline, "the event never became due"
        time.sleep(0.01)


@pytest.mark.django_db
def test_an_event_that_keeps_failing_is_failed_after_the_attempt_cap_not_enqueued_every_sweep(
    hubspot, settings, enqueued
):
    """Today it stays `received` and every sweep enqueues it again: 20 sweeps, 20 attempts."""
    settings.OUTBOX_SWEEP_AFTER_SECONDS = 0
    settings.WEBHOOK_EVENT_MAX_ATTEMPTS = 5
    settings.SYNC_BACKOFF_BASE_SECONDS, settings.SYNC_BACKOFF_CAP_SECONDS = 0.01, 0.05
    record = hubspot.edit(fields={"email": "ada@example.com", "firstname": "Ada"})
    event = creation_event(record["id"])
    hubspot.config(error_rate=1.0)  # every read now answers 5xx

    for _ in range(20):
        sweep_when_due(event)
        for _provider, ids in enqueued[-1:]:
            try:
                events_process(event_ids=ids)
            except Exception:
                pass
        enqueued_before = len(enqueued)
        if not WebhookEvent.objects.filter(pk=event.pk, status=EventStatus.RECEIVED).exists():
            break

    event.refresh_from_db()
    assert event.status == EventStatus.FAILED
    assert event.attempts == 5
    assert "Transient" in event.error
    assert len(enqueued) == enqueued_before == 5
    inbox_sweep()
    assert len(enqueued) == 5  # a failed event waits for an operator


@pytest.mark.django_db
def test_a_failing_event_stays_received_with_its_error_and_a_next_attempt_in_the_future(hubspot, settings, enqueued):
    record = hubspot.edit(fields={"email": "ada@example.com", "firstname": "Ada"})
    event = creation_event(record["id"])
    hubspot.config(error_rate=1.0)  # HubSpot answers 5xx: it cannot be read just now

    events_process(event_ids=[event.pk])

    event.refresh_from_db()
    assert (event.status, event.attempts) == (EventStatus.RECEIVED, 1)
    assert event.error.startswith("Transient")
    assert event.next_attempt_at is not None
    assert event.next_attempt_at > event.received_at
    assert inbox_sweep() == 0  # not due yet
    hubspot.config(error_rate=0.0)
    WebhookEvent.objects.filter(pk=event.pk).update(next_attempt_at=event.received_at)  # the backoff is over
    settings.OUTBOX_SWEEP_AFTER_SECONDS = 0
    assert inbox_sweep() == 1
    events_process(event_ids=enqueued[-1][1])
    event.refresh_from_db()
    assert (event.status, event.outcome, event.error, event.next_attempt_at) == (
        EventStatus.PROCESSED, "created", "", None,
    )  # fmt: skip


@pytest.mark.django_db
def test_one_failing_event_does_not_stop_the_others_of_its_delivery(hubspot, enqueued):
    good = hubspot.edit(fields={"email": "ada@example.com", "firstname": "Ada"})
    broken = WebhookEventFactory(payload={**WebhookEventFactory.build().payload, "occurredAt": 10**20})  # a bug
    event = creation_event(good["id"])

    events_process(event_ids=[broken.pk, event.pk])

    broken.refresh_from_db()
    event.refresh_from_db()
    assert (broken.status, broken.attempts) == (EventStatus.RECEIVED, 1)
    assert broken.error
    assert broken.next_attempt_at is not None
    assert (event.status, event.outcome) == (EventStatus.PROCESSED, "created")


@pytest.mark.django_db(transaction=True)
def test_two_copies_of_one_event_processed_at_once_apply_it_once(hubspot, monkeypatch, enqueued):
    """The second copy starts while the first reads the record from HubSpot, and both have read it
    before either applies it."""
    record = hubspot.edit(fields={"email": "ada@example.com", "firstname": "Ada", "lastname": "Lovelace"})
    contact = Contact.objects.create(email="ada@example.com", first_name="Augusta", last_name="Lovelace")
    ProviderLink.objects.create(contact=contact, provider="hubspot", external_id=str(record["id"]), status="synced")
    event = creation_event(record["id"], "contact.restore")
    reading, both_read = threading.Event(), threading.Barrier(2, timeout=10)
    complete, apply, mark = (
        webhooks.services._complete,
        webhooks.services.record_change_apply,
        providers.inbound.links_mark_pending,
    )
    applied, marked = [], []

    def read_then_meet(*args, **kwargs):
        reading.set()
        change = complete(*args, **kwargs)
        both_read.wait()
        return change

    monkeypatch.setattr(webhooks.services, "_complete", read_then_meet)
    monkeypatch.setattr(webhooks.services, "record_change_apply", lambda **kw: applied.append(1) or apply(**kw))
    monkeypatch.setattr(providers.inbound, "links_mark_pending", lambda **kw: marked.append(1) or mark(**kw))
    errors: list[BaseException] = []

    def copy() -> None:
        try:
            events_process(event_ids=[event.pk])
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=copy) for _ in range(2)]
    threads[0].start()
    assert reading.wait(timeout=10)
    threads[1].start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    contact.refresh_from_db()
    event.refresh_from_db()
    assert contact.first_name == "Ada"
    assert contact.version == 2  # bumped once
    assert len(applied) == 1
    assert len(marked) == 1
    assert (event.status, event.outcome, event.attempts) == (EventStatus.PROCESSED, "applied", 1)


def _ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.mark.django_db
def test_the_sweeper_enqueues_only_events_due_and_not_queued_recently_and_records_when(settings, enqueued):
    settings.OUTBOX_SWEEP_AFTER_SECONDS = 30
    lost = WebhookEventFactory()  # its message was lost an hour ago
    queued = WebhookEventFactory()  # re-enqueued 5 s ago, still waiting behind a backlog
    backing_off = WebhookEventFactory()  # failed a minute ago, next attempt in 10 minutes
    due = WebhookEventFactory()  # failed, its backoff is over
    never_enqueued = WebhookEventFactory()
    WebhookEventFactory(status=EventStatus.FAILED)
    WebhookEventFactory(status=EventStatus.PROCESSED)
    WebhookEvent.objects.update(received_at=_ago(3600))
    WebhookEvent.objects.filter(pk=lost.pk).update(enqueued_at=_ago(3600))
    WebhookEvent.objects.filter(pk=queued.pk).update(enqueued_at=_ago(5))
    WebhookEvent.objects.filter(pk=backing_off.pk).update(next_attempt_at=_ago(-600))
    WebhookEvent.objects.filter(pk=due.pk).update(next_attempt_at=_ago(1))

    assert inbox_sweep() == 3

    assert sorted(pk for _, ids in enqueued for pk in ids) == sorted([lost.pk, due.pk, never_enqueued.pk])
    just_now = _ago(5)
    assert all(at > just_now for at in WebhookEvent.objects.filter(
        pk__in=[lost.pk, due.pk, never_enqueued.pk]).values_list("enqueued_at", flat=True))  # fmt: skip
    assert inbox_sweep() == 0  # queued now: the next sweep leaves them alone
    assert len(enqueued) == 1


@pytest.mark.django_db
def test_the_sweepers_query_uses_its_partial_index(settings):
    WebhookEventFactory.create_batch(3)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM webhooks_webhookevent WHERE status = 'received'"
            " AND (enqueued_at IS NULL OR enqueued_at <= now())"
            " AND (next_attempt_at IS NULL OR next_attempt_at <= now())"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "webhook_event_sweep_idx" in plan


@pytest.mark.django_db
def test_an_event_failed_after_its_attempts_is_applied_when_reprocessed_from_the_admin(
    hubspot, settings, admin_client, enqueued, django_capture_on_commit_callbacks
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.WEBHOOK_EVENT_MAX_ATTEMPTS = 1
    record = hubspot.edit(fields={"email": "ada@example.com", "firstname": "Ada"})
    event = creation_event(record["id"])
    hubspot.config(error_rate=1.0)
    events_process(event_ids=[event.pk])
    event.refresh_from_db()
    assert (event.status, event.attempts, event.next_attempt_at) == (EventStatus.FAILED, 1, None)
    assert event.error.startswith("Transient")
    hubspot.config(error_rate=0.0)  # HubSpot is back; the operator retries the event

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:webhooks_webhookevent_changelist"),
            {"action": "reprocess", "_selected_action": [event.pk]},
        )
    events_process(event_ids=enqueued[-1][1])

    event.refresh_from_db()
    assert (event.status, event.outcome, event.attempts, event.error) == (EventStatus.PROCESSED, "created", 1, "")
    assert Contact.objects.filter(email="ada@example.com").exists()


@pytest.mark.django_db
def test_a_crm_asking_to_slow_down_does_not_use_up_the_events_attempts(hubspot, settings, enqueued):
    settings.WEBHOOK_EVENT_MAX_ATTEMPTS = 1
    record = hubspot.edit(fields={"email": "ada@example.com", "firstname": "Ada"})
    event = creation_event(record["id"])
    hubspot.config(rate_limit_storm=1.0)  # every call answers 429 with Retry-After: 1
    before = timezone.now()

    events_process(event_ids=[event.pk])

    event.refresh_from_db()
    assert (event.status, event.attempts) == (EventStatus.RECEIVED, 0)
    assert event.error.startswith("RateLimited")
    assert event.next_attempt_at >= before + timedelta(seconds=1)  # Retry-After is honoured


@pytest.mark.django_db
def test_refused_credentials_pause_the_crm_and_do_not_use_up_the_events_attempts(hubspot, settings, enqueued):
    """A credential outage is the connection's, not the event's: it waits for the probe, uncounted."""
    record = hubspot.edit(fields={"email": "ada@example.com", "firstname": "Ada"})
    event = creation_event(record["id"])
    working = settings.HUBSPOT
    settings.HUBSPOT = {**working, "access_token": "revoked"}  # every read now answers 401
    registry.reset()

    for _ in range(3):
        WebhookEvent.objects.filter(pk=event.pk).update(next_attempt_at=None)
        events_process(event_ids=[event.pk])

    event.refresh_from_db()
    assert (event.status, event.attempts) == (EventStatus.RECEIVED, 0)
    assert "AuthExpired" in event.error
    assert event.next_attempt_at > timezone.now() + timedelta(seconds=settings.CRM_PROBE_INTERVAL_SECONDS - 5)
    assert crm_paused() == {"hubspot": "auth_failed"}

    settings.HUBSPOT = working
    registry.reset()
    events_process(event_ids=[event.pk])

    event.refresh_from_db()
    assert event.status == EventStatus.PROCESSED
