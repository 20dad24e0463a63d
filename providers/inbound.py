"""Apply a change reported by a CRM: field by field, latest source time wins, echoes change nothing.

Used by the webhook handlers and by the reconciler, so a dropped webhook and a delivered one go
through exactly the same path.
"""

import logging
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from contacts.models import MAX_LENGTHS, SYNCED_FIELDS, Contact
from contacts.selectors import contact_by_email
from providers.base import InboundChange, value_hash
from providers.models import LinkStatus, ProviderLink
from providers.services import enqueue_forward, links_mark_pending
from providers.sync import changed_values, prior_hashes

logger = logging.getLogger(__name__)

# Outcomes, recorded on inbox events and counted by the reconciler.
APPLIED, CREATED, DELETED, ECHO, UNCHANGED, STALE, CONFLICT = (
    "applied", "created", "deleted", "echo", "unchanged", "stale", "conflict",
)  # fmt: skip


def _same(a: str, b: str, field: str) -> bool:
    if field == "email":
        return a.strip().lower() == b.strip().lower()
    return a == b


def _lock_record(provider: str, external_id: str) -> None:
    """Serialise concurrent events about one CRM record (several arrive in one delivery)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{provider}:{external_id}"])


def _field_time(contact: Contact, field: str) -> datetime | None:
    raw = contact.field_times.get(field)
    return parse_datetime(raw) if raw else None


def _parse(raw: str | None) -> datetime | None:
    return parse_datetime(raw) if raw else None


def _apply_fields(
    contact: Contact, link: ProviderLink, values: dict[str, str], field_times: dict[str, datetime], when: datetime
) -> list[str]:
    """Field by field: keep the echo ledger true to what the CRM holds, apply what is newer.

    The ledger (per field: the value hash the CRM holds, the hashes it held before our recent writes,
    when we wrote it, and the source time of the last value we saw from it) tells three cases
    apart that a change carrying the whole record (an Outbound Message) cannot:
    - a value from before our last write that equals what the CRM held then or holds now: a
      snapshot of an older state, not a change (it must not revert what we wrote);
    - a value older than what the ledger already knows: it must not rewrite the ledger;
    - anything else is a change a person made; it wins if it happened after the value SyncRoot
      holds, and goes back to this CRM too when the CRM holds something else by now.
    """
    applied: list[str] = []
    for field, value in values.items():
        digest, source_time = value_hash(value), field_times.get(field, when)
        held = link.field_hashes.get(field)
        written = _parse(link.field_written_at.get(field))
        before_our_write = written is not None and source_time <= written
        if before_our_write and (digest == held or digest in prior_hashes(link, field)):
            continue  # a snapshot of what the CRM held before our write, or of our write itself
        seen = _parse(link.field_seen_at.get(field))
        if not before_our_write and (seen is None or source_time > seen):
            link.field_hashes[field], link.field_seen_at[field] = digest, source_time.isoformat()
        if digest == held or _same(getattr(contact, field), value, field):
            continue  # nothing new for SyncRoot
        known = _field_time(contact, field)
        if known is not None and source_time <= known:
            continue  # an older change never overwrites a newer value
        setattr(contact, field, value)
        contact.field_times[field] = source_time.isoformat()
        applied.append(field)
    return applied


def _record(link: ProviderLink, values: dict[str, str], field_times: dict[str, datetime], when: datetime) -> None:
    """A contact created from this CRM's record: the CRM holds exactly these values."""
    for field, value in values.items():
        link.field_hashes[field] = value_hash(value)
        link.field_seen_at[field] = field_times.get(field, when).isoformat()


def is_linked(*, provider: str, external_id: str) -> bool:
    return ProviderLink.objects.filter(provider=provider, external_id=external_id).exists()


@transaction.atomic
def change_apply(*, provider: str, change: InboundChange) -> str:
    """Apply one CRM change to SyncRoot and queue it for the OTHER CRMs. Returns the outcome."""
    if change.from_integration:
        return ECHO  # our own write coming back: no version bump, no outbound call
    _lock_record(provider, change.external_id)
    # Lock order everywhere: the contact, then its links (the API and the forwarder agree).
    known = ProviderLink.objects.filter(provider=provider, external_id=change.external_id)
    contact_id = known.values_list("contact_id", flat=True).first()
    contact = _lock_contact(contact_id) if contact_id else None
    link = known.select_for_update().first() if contact else None
    if change.deleted:
        return _apply_delete(provider=provider, link=link, contact=contact, change=change)
    values = {f: v[: MAX_LENGTHS[f]] for f, v in change.values.items() if f in SYNCED_FIELDS and v is not None}
    created = False
    if link is None:
        email = values.get("email", "")
        if not email.strip():
            return UNCHANGED  # nothing to identify the person by
        existing = contact_by_email(email=email)
        if existing is None:
            contact, created = _create(values=values, change=change), True
        else:
            contact = _lock_contact(existing.pk)
        link = _link(provider=provider, contact=contact, external_id=change.external_id)
        if link is None:
            return CONFLICT
    if contact.is_deleted:
        return STALE  # a change older than (or racing with) the deletion
    when = change.occurred_at or timezone.now()
    applied = [] if created else _apply_fields(contact, link, values, change.field_times, when)
    if created:
        _record(link, values, change.field_times, when)
    if applied:
        if "email" in applied and (other := contact_by_email(email=contact.email)) and other.pk != contact.pk:
            logger.warning("inbound email clashes", extra={"provider": provider, "contact_id": str(contact.pk)})
            transaction.set_rollback(True)
            return CONFLICT
        contact.version += 1
        contact.save()
    _settle_link(link=link, contact=contact)
    if applied or created:
        links_mark_pending(contact=contact, exclude=[provider])
    return CREATED if created else (APPLIED if applied else UNCHANGED)


def _lock_contact(contact_id) -> Contact:
    # NO KEY UPDATE: rows inserted elsewhere that reference the contact (sync attempts, dead
    # letters) only need KEY SHARE, so they never wait on us, nor we on them.
    return Contact.objects.select_for_update(no_key=True).get(pk=contact_id)


def _create(*, values: dict[str, str], change: InboundChange) -> Contact:
    when = (change.occurred_at or timezone.now()).isoformat()
    full = {field: values.get(field, "") for field in SYNCED_FIELDS}
    with transaction.atomic():
        return Contact.objects.create(**full, field_times={f: when for f in SYNCED_FIELDS})


def _link(*, provider: str, contact: Contact, external_id: str) -> ProviderLink | None:
    link, _ = ProviderLink.objects.select_for_update().get_or_create(
        contact=contact, provider=provider, defaults={"status": LinkStatus.SYNCED}
    )
    if link.external_id and link.external_id != external_id:
        logger.warning(
            "two CRM records share one email",
            extra={"provider": provider, "contact_id": str(contact.pk), "external_id": external_id},
        )
        return None
    link.external_id = external_id
    try:
        with transaction.atomic():
            link.save(update_fields=["external_id"])
    except IntegrityError:
        return None
    return link


def _settle_link(*, link: ProviderLink, contact: Contact) -> None:
    """The source CRM is in sync unless it lacks fields SyncRoot holds."""
    if changed_values(contact=contact, link=link):
        link.status, link.pending_since = LinkStatus.PENDING, timezone.now()
        transaction.on_commit(lambda: enqueue_forward(providers=[link.provider]), robust=True)
    elif link.status in (LinkStatus.PENDING, LinkStatus.SYNCED):
        # synced_at stays the time of our last write: the ledger rule above compares against it.
        link.status, link.synced_version = LinkStatus.SYNCED, contact.version
    link.save()


def _apply_delete(*, provider: str, link: ProviderLink | None, contact: Contact | None, change: InboundChange) -> str:
    if link is None or contact is None or contact.is_deleted:
        return UNCHANGED
    if settings.SYNC_DELETES != "propagate":
        # Keep the contact; forget the CRM record so the next change creates it there again.
        link.external_id, link.status = None, LinkStatus.DELETED
        link.field_hashes, link.field_prior_hashes, link.field_written_at, link.field_seen_at = {}, {}, {}, {}
        link.save()
        return DELETED
    contact.deleted_at = change.occurred_at or timezone.now()
    contact.version += 1
    contact.save(update_fields=["deleted_at", "version", "updated_at"])
    link.status, link.synced_version, link.synced_at = LinkStatus.DELETED, contact.version, timezone.now()
    link.save()
    links_mark_pending(contact=contact, exclude=[provider])
    return DELETED
