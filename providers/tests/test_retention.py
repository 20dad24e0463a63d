"""Retention: old rows of each kind pruned in bounded batches, the rest kept, the figures in /metrics."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from providers import retention
from providers.models import DeadLetter, DeadLetterStatus, FieldChange, LinkStatus, ProviderLink, SyncAttempt
from providers.tasks import prune_retention
from webhooks.models import EventStatus, WebhookEvent
from webhooks.tests.factories import WebhookEventFactory

pytestmark = pytest.mark.django_db

DAYS = 30


@pytest.fixture(autouse=True)
def retention_days(settings):
    settings.RETENTION_DAYS = DAYS


def older(minutes: float = 1):
    """Just older than the cutoff (by `minutes`); negative: just younger."""
    return timezone.now() - timedelta(days=DAYS, minutes=minutes)


def event(status: str, at) -> WebhookEvent:
    row = WebhookEventFactory(status=status)
    WebhookEvent.objects.filter(pk=row.pk).update(received_at=at)
    return row


def linked(contact: Contact, provider: str, status: str) -> ProviderLink:
    return ProviderLink.objects.create(
        contact=contact, provider=provider, status=status, external_id=f"{provider}-{contact.pk}"
    )


def attempt(link: ProviderLink, at) -> SyncAttempt:
    row = SyncAttempt.objects.create(
        link=link, provider=link.provider, contact=link.contact, contact_version=1, operation="update", outcome="ok"
    )
    SyncAttempt.objects.filter(pk=row.pk).update(created_at=at)
    return row


def dead_letter(link: ProviderLink, status: str, resolved_at=None) -> DeadLetter:
    return DeadLetter.objects.create(
        link=link, provider=link.provider, contact=link.contact, contact_version=1, error_code="INVALID_EMAIL_ADDRESS",
        error_message="bad", attempts=1, status=status, resolved_at=resolved_at,
    )  # fmt: skip


def left(model, rows) -> set:
    return set(model.objects.filter(pk__in=[r.pk for r in rows]).values_list("pk", flat=True))


def test_processed_and_ignored_events_older_than_the_retention_are_pruned_the_rest_kept():
    pruned = [event(EventStatus.PROCESSED, older()), event(EventStatus.IGNORED, older(60 * 24 * 300))]
    kept = [
        event(EventStatus.PROCESSED, older(-1)),  # just younger than the cutoff
        event(EventStatus.RECEIVED, older(60)),  # still waiting for the sweeper
        event(EventStatus.FAILED, older(60)),  # waiting for an operator
    ]

    assert retention.retention_prune()["webhook_events"] == 2

    assert left(WebhookEvent, pruned) == set()
    assert left(WebhookEvent, kept) == {r.pk for r in kept}


def test_sync_attempts_older_than_the_retention_are_pruned():
    link = linked(ContactFactory(), "hubspot", LinkStatus.SYNCED)
    old, young = attempt(link, older()), attempt(link, older(-1))

    assert retention.retention_prune()["sync_attempts"] == 1

    assert left(SyncAttempt, [old, young]) == {young.pk}
    assert ProviderLink.objects.filter(pk=link.pk).exists()


def test_dead_letters_resolved_longer_ago_than_the_retention_are_pruned_parked_ones_kept():
    link = linked(ContactFactory(), "salesforce", LinkStatus.PARKED)
    retried = dead_letter(link, DeadLetterStatus.RETRIED, older())
    discarded = dead_letter(link, DeadLetterStatus.DISCARDED, older())
    resolved_lately = dead_letter(link, DeadLetterStatus.DISCARDED, older(-1))
    parked = dead_letter(link, DeadLetterStatus.PARKED)
    DeadLetter.objects.filter(pk=parked.pk).update(created_at=older(60 * 24 * 300))

    assert retention.retention_prune()["dead_letters"] == 2

    assert left(DeadLetter, [retried, discarded, resolved_lately, parked]) == {resolved_lately.pk, parked.pk}


def test_tombstones_go_once_every_crm_has_the_delete_and_the_retention_is_over():
    delivered = ContactFactory(deleted_at=older())
    for provider in ("hubspot", "salesforce"):
        link = linked(delivered, provider, LinkStatus.DELETED)
    history = [attempt(link, timezone.now()), dead_letter(link, DeadLetterStatus.RETRIED, timezone.now())]
    never_linked = ContactFactory(deleted_at=older())
    pending_delete = ContactFactory(deleted_at=older(60 * 24 * 300))
    linked(pending_delete, "hubspot", LinkStatus.DELETED)
    linked(pending_delete, "salesforce", LinkStatus.PENDING)  # the delete has not reached Salesforce yet
    parked_delete = ContactFactory(deleted_at=older())
    linked(parked_delete, "hubspot", LinkStatus.PARKED)
    deleted_lately = ContactFactory(deleted_at=older(-1))
    linked(deleted_lately, "hubspot", LinkStatus.DELETED)
    live = ContactFactory()
    Contact.objects.filter(pk=live.pk).update(created_at=older(60 * 24 * 300))

    assert retention.retention_prune()["tombstones"] == 2

    everyone = [delivered, never_linked, pending_delete, parked_delete, deleted_lately, live]
    assert left(Contact, everyone) == {pending_delete.pk, parked_delete.pk, deleted_lately.pk, live.pk}
    assert not ProviderLink.objects.filter(contact_id=delivered.pk).exists()  # its history went with it
    assert left(SyncAttempt, history[:1]) == set()
    assert left(DeadLetter, history[1:]) == set()


def test_pruning_goes_in_bounded_batches(monkeypatch):
    monkeypatch.setattr(retention, "BATCH_SIZE", 2)
    rows = [event(EventStatus.PROCESSED, older(n)) for n in range(1, 6)]

    with CaptureQueriesContext(connection) as queries:
        assert retention.retention_prune()["webhook_events"] == 5

    deletes = [q["sql"] for q in queries if q["sql"].startswith('DELETE FROM "webhooks_webhookevent"')]
    assert len(deletes) == 3  # 2 + 2 + 1, each in its own short transaction
    assert left(WebhookEvent, rows) == set()


def test_a_retention_of_zero_days_keeps_everything(settings):
    settings.RETENTION_DAYS = 0
    row = event(EventStatus.PROCESSED, older(60 * 24 * 3650))

    assert set(retention.retention_prune().values()) == {0}
    assert left(WebhookEvent, [row]) == {row.pk}


def test_beat_runs_the_task_hourly(settings):
    schedule = settings.CELERY_BEAT_SCHEDULE["prune-retention"]
    row = event(EventStatus.IGNORED, older())

    prune_retention.apply().get()

    assert (schedule["task"], schedule["schedule"]) == ("providers.tasks.prune_retention", 3600)
    assert left(WebhookEvent, [row]) == set()


@pytest.mark.parametrize(
    ("table", "column", "where", "index"),
    [
        ("webhooks_webhookevent", "received_at", "status IN ('processed', 'ignored')", "received_at"),
        ("providers_syncattempt", "created_at", "true", "created_at"),
        ("providers_deadletter", "resolved_at", "status IN ('retried', 'discarded')", "dead_letter_resolved_idx"),
        ("contacts_contact", "deleted_at", "deleted_at IS NOT NULL", "deleted_at"),
    ],
)
def test_the_oldest_row_of_each_kind_is_read_through_an_index(table, column, where, index):
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN SELECT MIN({column}) FROM {table} WHERE {where}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index" in plan
    assert index in plan


def scrape(client) -> dict[tuple[str, str], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, sample.labels.get("kind", "")): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if sample.name.startswith("syncroot_retention")
    }


def test_metrics_count_the_rows_pruned_and_show_the_age_of_the_oldest_row_kept(client):
    before = scrape(client)
    for _ in range(3):
        event(EventStatus.PROCESSED, older())
    kept = event(EventStatus.PROCESSED, older(-60))
    link = linked(ContactFactory(), "hubspot", LinkStatus.SYNCED)
    attempt(link, older())

    retention.retention_prune()
    page = scrape(client)

    pruned = "syncroot_retention_pruned_total"
    assert page[(pruned, "webhook_events")] - before.get((pruned, "webhook_events"), 0) == 3
    assert page[(pruned, "sync_attempts")] - before.get((pruned, "sync_attempts"), 0) == 1
    oldest = "syncroot_retention_oldest_seconds"
    age = (timezone.now() - WebhookEvent.objects.get(pk=kept.pk).received_at).total_seconds()
    assert page[(oldest, "webhook_events")] == pytest.approx(age, abs=30)
    assert page[(oldest, "sync_attempts")] == 0  # none left
    assert page[(oldest, "dead_letters")] == 0
    assert page[(oldest, "tombstones")] == 0


def test_old_field_changes_go_but_each_fields_latest_change_stays_however_old():
    contact = ContactFactory()

    def change(field: str, value: str, at) -> FieldChange:
        return FieldChange.objects.create(contact=contact, field=field, value=value, source="api", changed_at=at)

    replaced = change("first_name", "Ada", older(10))
    latest_old = change("first_name", "Augusta", older(5))  # older than the cutoff, but still the value
    only = change("company", "Engines", older(10))
    recent = change("phone", "1", older(-5))

    pruned = retention.retention_prune()

    assert pruned["field_changes"] == 1
    assert set(FieldChange.objects.values_list("pk", flat=True)) == {latest_old.pk, only.pk, recent.pk}
    assert not FieldChange.objects.filter(pk=replaced.pk).exists()
