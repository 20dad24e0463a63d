"""Writes of contacts. Each write and its sync bookkeeping commit in ONE transaction."""

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from contacts.fields import InvalidValues, custom_changed, custom_errors, custom_merge, keys_of
from contacts.models import SYNCED_FIELDS, ApiToken, Contact, IdempotencyKey
from contacts.selectors import contact_by_email, contact_missing, custom_fields_locked, normalise_email
from providers.models import ChangeSource
from providers.provenance import changes_record, changes_record_many
from providers.services import links_mark_pending, links_mark_pending_many
from syncroot.db import retry_on_conflict
from syncroot.errors import Conflict, PreconditionFailed, UnprocessableEntity


def _duplicate(email: str) -> Conflict | None:
    existing = contact_by_email(email=email)
    if existing is None:
        return None
    return Conflict(
        "A contact with this email already exists.",
        details={"field": "email", "existing_id": str(existing.pk)},
    )


def _custom_checked(data: Mapping[str, Any]) -> dict[str, Any]:
    """The custom values given, checked against their fields (locked until the transaction ends)."""
    given = data.get("custom") or {}
    if errors := custom_errors(given, custom_fields_locked(keys=given)):
        raise InvalidValues(errors)
    return custom_merge({}, given, partial=False)


def _check_version(contact: Contact, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != contact.version:
        raise PreconditionFailed(
            "The contact changed since you read it; fetch it again and retry.",
            details={"current_version": contact.version, "expected_version": expected_version},
        )


@retry_on_conflict
def contact_create(*, data: Mapping[str, Any], source: str = ChangeSource.API) -> Contact:
    """Create a contact and mark it pending in every connected CRM. `source`: who made the change
    (the API, or an operator in the admin), for each value's provenance."""
    values = {field: data.get(field, "") for field in SYNCED_FIELDS}
    now = timezone.now().isoformat()
    try:
        with transaction.atomic():
            custom = _custom_checked(data)
            times = {f: now for f in SYNCED_FIELDS} | {f"custom.{key}": now for key in custom}
            contact = Contact.objects.create(**values, custom=custom, field_times=times)
            changes_record(contact=contact, fields=None, source=source)
            links_mark_pending(contact=contact)
    except IntegrityError:
        # The unique index on the lower-cased email is the check (no SELECT before every insert,
        # and no race between a check and the insert); the 409 names the contact holding it.
        if conflict := _duplicate(values["email"]):
            raise conflict from None
        raise
    return contact


def _duplicates_of(emails: Sequence[str]) -> Conflict | None:
    """A 409 naming every email of a batch that a live contact already holds (by position)."""
    wanted = [normalise_email(email) for email in emails]
    held = dict(
        Contact.objects.annotate(email_ci=Lower("email"))
        .filter(email_ci__in=set(wanted), deleted_at__isnull=True)
        .values_list("email_ci", "pk")
    )
    conflicts = [
        {"index": index, "email": emails[index], "existing_id": str(held[email])}
        for index, email in enumerate(wanted)
        if email in held
    ]
    if not conflicts:
        return None
    return Conflict(
        f"{len(conflicts)} of these emails already belong to contacts; nothing was created.",
        details={"field": "email", "conflicts": conflicts},
    )


@retry_on_conflict
def contact_create_many(*, items: Sequence[Mapping[str, Any]]) -> list[Contact]:
    """Create many contacts at once, all or none: one INSERT for the contacts, one for their links.

    The emails must be distinct (the caller validates that); one already held by a live contact
    refuses the whole batch with a 409 naming each such email.
    """
    now = timezone.now().isoformat()
    try:
        with transaction.atomic():
            fields = custom_fields_locked(keys=keys_of(items))
            if errors := {
                i: e for i, item in enumerate(items) if (e := custom_errors(item.get("custom") or {}, fields))
            }:
                raise InvalidValues({"contacts": errors})  # by position, like the serializer's own errors
            contacts = [_new(item, now) for item in items]
            Contact.objects.bulk_create(contacts)
            changes_record_many(contacts=contacts, fields=None, source=ChangeSource.API)
            links_mark_pending_many(contacts=contacts)
    except IntegrityError:
        if conflict := _duplicates_of([item["email"] for item in items]):
            raise conflict from None
        raise
    return contacts


def _new(item: Mapping[str, Any], now: str) -> Contact:
    custom = custom_merge({}, item.get("custom"), partial=False)
    times = dict.fromkeys(SYNCED_FIELDS, now) | {f"custom.{key}": now for key in custom}
    return Contact(**{field: item.get(field, "") for field in SYNCED_FIELDS}, custom=custom, field_times=times)


@retry_on_conflict
@transaction.atomic
def contact_update(
    *,
    contact_id: UUID,
    data: Mapping[str, Any],
    partial: bool,
    expected_version: int | None = None,
    source: str = ChangeSource.API,
) -> Contact:
    """Replace (PUT) or patch (PATCH) a contact; a change bumps its version and syncs it.

    Custom values: PATCH merges the keys given (null removes one), PUT replaces them all.
    """
    # The fields' locks before the contact's: a field's purge takes them in the same order.
    if "custom" in data:
        _custom_checked(data)
    contact = Contact.objects.select_for_update(no_key=True).filter(pk=contact_id, deleted_at__isnull=True).first()
    if contact is None:
        raise contact_missing(contact_id=contact_id)  # 410 for a merged-away id: never edits a tombstone
    _check_version(contact, expected_version)
    values = (
        {f: data[f] for f in SYNCED_FIELDS if f in data} if partial else {f: data.get(f, "") for f in SYNCED_FIELDS}
    )
    changed = [field for field, value in values.items() if getattr(contact, field) != value]
    if "email" in changed and values["email"].strip().lower() != contact.email.strip().lower():
        if conflict := _duplicate(values["email"]):
            raise conflict
    custom = custom_merge(contact.custom, data.get("custom"), partial=partial)
    custom_keys = custom_changed(contact.custom, custom)
    if not changed and not custom_keys:
        return contact
    now = timezone.now().isoformat()
    for field in changed:
        setattr(contact, field, values[field])
        contact.field_times[field] = now
    for key in custom_keys:
        contact.field_times[f"custom.{key}"] = now
    contact.custom = custom
    contact.version += 1
    try:
        with transaction.atomic():
            contact.save()
    except IntegrityError:
        if conflict := _duplicate(values["email"]):
            raise conflict from None
        raise
    changes_record(contact=contact, fields=[*changed, *custom_keys], source=source)
    links_mark_pending(contact=contact)
    return contact


@retry_on_conflict
@transaction.atomic
def contact_delete(*, contact_id: UUID, expected_version: int | None = None) -> None:
    """Soft-delete: the tombstone stays until every CRM has deleted its copy."""
    contact = Contact.objects.select_for_update(no_key=True).filter(pk=contact_id, deleted_at__isnull=True).first()
    if contact is None:
        raise contact_missing(contact_id=contact_id)
    _check_version(contact, expected_version)
    contact.deleted_at = timezone.now()
    contact.version += 1
    contact.save(update_fields=["deleted_at", "version", "updated_at"])
    links_mark_pending(contact=contact)


def _request_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@retry_on_conflict
def contact_create_idempotent(
    *,
    token: ApiToken,
    key: str,
    payload: Any,
    create: Callable[[], tuple[int, dict, Contact]],
) -> tuple[int, dict, Contact | None]:
    """Run `create` at most once per (token, key): replay its first response for the same body.

    The key row is inserted first inside the transaction, so a concurrent request with the same
    key blocks on the unique index until the first one commits, then replays its response.
    """
    request_hash = _request_hash(payload)
    try:
        with transaction.atomic():
            record = IdempotencyKey.objects.create(token=token, key=key, request_hash=request_hash)
            status, body, contact = create()
            record.response_status, record.response_body, record.contact = status, body, contact
            record.save(update_fields=["response_status", "response_body", "contact"])
            return status, body, contact
    except IntegrityError:
        record = IdempotencyKey.objects.filter(token=token, key=key).first()
        if record is None:
            raise
    if record.request_hash != request_hash:
        raise UnprocessableEntity(
            "This Idempotency-Key was already used with a different request body.",
            details={"idempotency_key": key},
        )
    return record.response_status, record.response_body, record.contact


def idempotency_keys_expire() -> int:
    """Forget Idempotency-Keys older than IDEMPOTENCY_KEY_TTL_HOURS (beat, hourly). Returns how many."""
    cutoff = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
