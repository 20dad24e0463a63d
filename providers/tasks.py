"""Celery tasks of the outbound flow: thin, idempotent, names in, services do the work."""

from celery import shared_task

from crm.registry import connected_providers, get_provider
from providers import backfill, crm_state, field_backfill, outbox, reconcile, retention


@shared_task(name="providers.tasks.drain_provider", acks_late=True)
def drain_provider(provider: str) -> None:
    """Forwarder queue: push the provider's pending links, batch after batch."""
    outbox.drain_until_idle(provider_name=provider)


@shared_task(name="providers.tasks.retry_provider", acks_late=True)
def retry_provider(provider: str) -> None:
    """DLQ queue: push the provider's failed links whose backoff is over."""
    outbox.drain_until_idle(provider_name=provider)


@shared_task(name="providers.tasks.retry_dead_letter", acks_late=True)
def retry_dead_letter(dead_letter_id: int) -> None:
    outbox.dead_letter_retry(dead_letter_id=dead_letter_id)


@shared_task(name="providers.tasks.field_backfill", acks_late=True)
def run_field_backfill(mapping_id: int) -> None:
    """DLQ queue: carry one mapping's field across every linked contact, resumably."""
    field_backfill.field_backfill_run(mapping_id=mapping_id)


@shared_task(name="providers.tasks.sweep_outbox")
def sweep_outbox() -> None:
    """Beat: re-enqueue what Redis may have lost; PostgreSQL is the only state."""
    outbox.sweep()
    field_backfill.field_backfills_resume()
    backfill.connection_backfills_resume()
    from webhooks.services import inbox_sweep

    inbox_sweep()


@shared_task(name="providers.tasks.probe_crms")
def probe_crms() -> None:
    """Beat: check the credentials of every CRM paused as auth_failed (a working one resumes), and
    of active ones not checked for a while (their tokens are refreshed ahead of expiry)."""
    crm_state.crm_probe_paused()
    crm_state.crm_probe_idle()


@shared_task(name="providers.tasks.reconcile_provider", acks_late=True)
def reconcile_provider(provider: str) -> None:
    """A CRM that refuses the credentials is paused by the reconciler until a probe succeeds."""
    reconcile.reconcile(provider_name=provider)


@shared_task(name="providers.tasks.reconcile_all")
def reconcile_all() -> None:
    """Beat: one reconcile task per connected CRM (not a paused one), on that CRM's inbound queue."""
    paused = crm_state.crm_paused()
    for name in connected_providers():
        if name not in paused:
            reconcile_provider.apply_async(args=[name], queue=get_provider(name).webhook_queue)


@shared_task(name="providers.tasks.prune_retention")
def prune_retention() -> None:
    """Beat (hourly): delete what is older than RETENTION_DAYS, in bounded batches."""
    retention.retention_prune()


@shared_task(name="providers.tasks.backfill_connection", acks_late=True)
def backfill_connection(key: str) -> None:
    """DLQ queue: a new connection gets every live contact, a bounded share per task, resumably."""
    backfill.backfill_connection(key=key)
