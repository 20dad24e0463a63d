"""Apply a change reported by a CRM: field by field, latest source time wins, echoes change nothing.

Used by the webhook handlers and by the reconciler, so a dropped webhook and a delivered one go
through exactly the same path.
"""

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from contacts.models import SYNCED_FIELDS, Contact, is_blank, time_key
from contacts.selectors import contact_by_email
from crm.base import InboundChange, field_hash
from crm.registry import get_provider
from providers.bounce import bounces_record, paused_fields
from providers.field_values import canonical, from_crm
from providers.issues import (
    DUPLICATE_RECORD,
    NO_EMAIL,
    counterparts_clear,
    email_clash_record,
    issue_raise,
    issues_clear,
    record_issue_clear,
    record_issue_raise,
    split_values,
)
from providers.ledger import changed_values, prior_hashes
from providers.mappings import NOT_APPLIED, MappingSet, mapping_set
from providers.models import LinkStatus, MappingRule, ProviderLink
from providers.provenance import changes_record
from providers.services import enqueue_forward, links_mark_pending

logger = logging.getLogger(__name__)

# Outcomes, recorded on inbox events and counted by the reconciler.
APPLIED, CREATED, DELETED, ECHO, UNCHANGED, STALE, CONFLICT = (
    "applied", "created", "deleted", "echo", "unchanged", "stale", "conflict",
)  # fmt: skip
# A record SyncRoot cannot take in (see providers.issues.RecordIssue).
REFUSED, NO_EMAIL_OUTCOME = "refused", "no email"


def _same(a: Any, b: Any, field: str) -> bool:
    if field == "email":
        return a.strip().lower() == b.strip().lower()
    return a == b or (is_blank(a) and is_blank(b))


@dataclass
class Reported:
    """A CRM's change in SyncRoot's terms: the values it can hold (built-ins by name, mapped custom
    fields by key, canonical), those it refuses, and what the CRM holds for each (for the ledger)."""

    values: dict[str, Any]
    refused: dict[str, tuple[str, str]]
    raw: dict[str, Any]
    times: dict[str, datetime]
    mapped: MappingSet


def reported(provider: str, change: InboundChange, *, source: str, mapped: MappingSet | None = None) -> Reported:
    """`mapped`: the CRM's mappings when the caller holds them (each read is a cache round trip)."""
    mapped = mapped or mapping_set(provider=provider)
    values, refused = split_values(change.values, source=source)
    raw: dict[str, Any] = dict(change.values)
    times = dict(change.field_times)
    for remote_name, remote_value in change.remote.items():
        key = mapped.by_remote.get(remote_name)
        if key is None or mapped.custom[key].rule == MappingRule.OFF:
            continue
        value, refusal = from_crm(mapped.custom[key], remote_value, source=source)
        raw[key] = remote_value
        if refusal is not None:
            refused[key] = refusal
        else:
            values[key] = value
        if remote_name in change.remote_times:
            times[key] = change.remote_times[remote_name]
    return Reported(values=values, refused=refused, raw=raw, times=times, mapped=mapped)


def current_value(contact: Contact, field: str, mapped: MappingSet) -> Any:
    """SyncRoot's value of a field as the engine compares it (a custom one in canonical form)."""
    mapping = mapped.custom.get(field)
    return canonical(mapping.type, contact.custom.get(field)) if mapping else getattr(contact, field)


def _lock_record(provider: str, external_id: str) -> None:
    """Serialise concurrent events about one CRM record (several arrive in one delivery)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{provider}:{external_id}"])


def _field_time(contact: Contact, field: str) -> datetime | None:
    raw = contact.field_times.get(time_key(field))
    return parse_datetime(raw) if raw else None


def _parse(raw: str | None) -> datetime | None:
    return parse_datetime(raw) if raw else None


def _apply_fields(
    contact: Contact,
    link: ProviderLink,
    values: dict[str, Any],
    field_times: dict[str, datetime],
    when: datetime,
    mapped: MappingSet,
) -> list[str]:
    """Field by field: keep the echo ledger true to what the CRM holds, apply what is newer.

    The ledger (per field: the value hash the CRM holds, the hashes it held before our recent writes,
    when we wrote it, and the source time of the last value we saw from it) tells three cases
    apart that a change carrying the whole record (an Outbound Message) cannot:
    - a value from before our last write that equals what the CRM held then or holds now: a
      snapshot of an older state, not a change (it must not revert what we wrote);
    - a value older than what the ledger already knows: it must not rewrite the ledger;
    - anything else is a change a person made; whether SyncRoot takes it is the field mapping's
      rule (`value_taken`). Under `two_way` it wins if it happened after the value SyncRoot holds. A
      value not taken stays in the ledger, so the forwarder writes SyncRoot's back where the rule
      says so (`syncroot_wins`); it goes back to this CRM too when the CRM holds something else by now.
    """
    rules = mapped.rules
    applied: list[str] = []
    for field, value in values.items():
        digest, source_time = field_hash(field, value), field_times.get(field, when)
        held = link.field_hashes.get(field)
        if held is None and field in mapped.backfilling:
            continue  # a newly mapped field the backfill has not read here yet: its rule decides it
        written = _parse(link.field_written_at.get(field))
        before_our_write = written is not None and source_time <= written
        if before_our_write and (digest == held or digest in prior_hashes(link, field)):
            continue  # a snapshot of what the CRM held before our write, or of our write itself
        seen = _parse(link.field_seen_at.get(field))
        if not before_our_write and (seen is None or source_time > seen):
            link.field_hashes[field], link.field_seen_at[field] = digest, source_time.isoformat()
        current = current_value(contact, field, mapped)
        if digest == held or _same(current, value, field):
            continue  # nothing new for SyncRoot
        if not value_taken(rules[field], value, current, source_time, _field_time(contact, field)):
            continue
        contact.set_value(field, value)
        contact.field_times[time_key(field)] = source_time.isoformat()
        applied.append(field)
    return applied


def value_taken(rule: str, value: Any, current: Any, source_time: datetime, known: datetime | None) -> bool:
    """Whether SyncRoot takes a CRM's changed value (`value`) over its own (`current`, set at `known`)."""
    if rule in NOT_APPLIED:
        return False
    if rule == MappingRule.CRM_WINS:
        return True
    if rule == MappingRule.PREFER_CRM_UNLESS_BLANK:
        return not is_blank(value)
    if rule == MappingRule.PREFER_SYNCROOT_UNLESS_BLANK:
        return is_blank(current)
    return known is None or source_time > known  # two_way: an older change never overwrites a newer value


def _record(link: ProviderLink, values: dict[str, Any], field_times: dict[str, datetime], when: datetime) -> None:
    """A contact created from this CRM's record: the CRM holds exactly these values."""
    for field, value in values.items():
        link.field_hashes[field] = field_hash(field, value)
        link.field_seen_at[field] = field_times.get(field, when).isoformat()


def is_linked(*, provider: str, external_id: str) -> bool:
    return ProviderLink.objects.filter(provider=provider, external_id=external_id).exists()


def source_label(provider: str) -> str:
    try:
        return get_provider(provider).label or provider
    except LookupError:
        return provider


class _Unlinkable(Exception):
    """The record cannot be linked to the contact (another link holds it): undo the contact's creation."""


@transaction.atomic
def change_apply(*, provider: str, change: InboundChange, source: str | None = None) -> str:
    """Apply one CRM change to SyncRoot and queue it for the OTHER CRMs. Returns the outcome.
    `source`: what the values' provenance names (the CRM itself unless an import says `backfill`)."""
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
    label = source_label(provider)
    report = reported(provider, change, source=label)
    if link is not None and (paused := paused_fields(link)):  # a bouncing field waits for a person
        report.values = {f: v for f, v in report.values.items() if f not in paused}
    values = report.values
    created = False
    if link is None:
        contact, link, outcome = _link_record(provider=provider, change=change, report=report)
        if link is None:
            return outcome
        created = outcome == CREATED
    if contact.is_deleted:
        return STALE  # a change older than (or racing with) the deletion
    when = change.occurred_at or timezone.now()
    email_before = (contact.email, contact.field_times.get("email"))
    applied = [] if created else _apply_fields(contact, link, values, report.times, when, report.mapped)
    if created:
        _record(link, values, report.times, when)
    dropped = issues_clear(link, values, reported=values)  # the CRM now holds values SyncRoot can hold
    if "email" in applied and (holder := contact_by_email(email=contact.email)) and holder.pk != contact.pk:
        # Another contact holds this email: keep SyncRoot's, show the clash on both for a person.
        email = contact.email
        contact.email, contact.field_times["email"] = email_before
        applied.remove("email")
        email_clash_record(link=link, contact=contact, holder=holder, email=email, source=label)
    _refuse(link, contact, report, when)
    bounces_record(link, contact=contact, applied=applied, source=label)
    if applied:
        contact.version += 1
        contact.save()
    if applied or created:
        changes_record(contact=contact, fields=None if created else applied, source=source or provider)
    _settle_link(link=link, contact=contact)
    reraised = {i.get("contact_id") for i in link.issues}
    counterparts_clear([i for i in dropped if i.get("contact_id") not in reraised], provider=provider,
                       contact_id=contact.pk)  # fmt: skip
    if applied or created:
        links_mark_pending(contact=contact, exclude=[provider])
    return CREATED if created else (APPLIED if applied else UNCHANGED)


def _link_record(
    *, provider: str, change: InboundChange, report: Reported
) -> tuple[Contact | None, ProviderLink | None, str]:
    """A record SyncRoot does not know yet: link it to the contact with its email, or create one."""
    values, refused = report.values, report.refused
    if "email" in refused:
        code, message = refused["email"]
        record_issue_raise(provider=provider, external_id=change.external_id, code=code, message=message)
        return None, None, REFUSED
    email = values.get("email", "")
    if not email.strip():
        message = f"{source_label(provider)} record {change.external_id} has no email: SyncRoot identifies people by it"
        record_issue_raise(provider=provider, external_id=change.external_id, code=NO_EMAIL, message=message)
        return None, None, NO_EMAIL_OUTCOME
    existing = contact_by_email(email=email)
    try:
        with transaction.atomic():  # a contact created here goes again if it cannot be linked
            if existing is None:
                contact = _create(provider=provider, report=report, change=change)
            else:
                contact = _lock_contact(existing.pk)
            link = _link(provider=provider, contact=contact, external_id=change.external_id)
            if link is None:
                raise _Unlinkable
    except _Unlinkable:
        holder = ProviderLink.objects.filter(
            contact__email__iexact=email, contact__deleted_at__isnull=True, provider=provider
        ).exclude(external_id=change.external_id)
        other = holder.values_list("external_id", flat=True).first()
        message = (
            f"{source_label(provider)} record {change.external_id} has the email {email}, which record "
            f"{other or '?'} of the same CRM already links to a contact: merge the duplicates there"
        )
        record_issue_raise(provider=provider, external_id=change.external_id, code=DUPLICATE_RECORD, message=message)
        return None, None, CONFLICT
    record_issue_clear(provider=provider, external_id=change.external_id)
    return contact, link, CREATED if existing is None else APPLIED


def _refuse(link: ProviderLink, contact: Contact, report: Reported, when: datetime) -> None:
    """Values SyncRoot cannot hold: not applied; the ledger knows the CRM holds them, the link shows why."""
    for field, (code, message) in report.refused.items():
        link.field_hashes[field] = field_hash(field, report.raw[field])
        link.field_seen_at[field] = report.times.get(field, when).isoformat()
        held = field_hash(field, current_value(contact, field, report.mapped))
        extra = {"remote_field": m.remote_field} if (m := report.mapped.custom.get(field)) else {}
        issue_raise(link, field=field, code=code, message=message, held=held, crm=link.field_hashes[field], **extra)


def _lock_contact(contact_id) -> Contact:
    # NO KEY UPDATE: rows inserted elsewhere that reference the contact (sync attempts, dead
    # letters) only need KEY SHARE, so they never wait on us, nor we on them.
    return Contact.objects.select_for_update(no_key=True).get(pk=contact_id)


def _create(*, provider: str, report: Reported, change: InboundChange) -> Contact:
    """A contact from a CRM record takes all its values, but those of fields the mapping turned off."""
    when = (change.occurred_at or timezone.now()).isoformat()
    rules, values = report.mapped.rules, report.values
    full = {field: values.get(field, "") if rules[field] != MappingRule.OFF else "" for field in SYNCED_FIELDS}
    custom = {key: values[key] for key in report.mapped.custom if not is_blank(values.get(key))}
    times = {f: when for f in SYNCED_FIELDS} | {time_key(key): when for key in custom}
    with transaction.atomic():
        return Contact.objects.create(**full, custom=custom, field_times=times)


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
