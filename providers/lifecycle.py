"""A contact's lifecycle across the CRMs: merges, restores and erasures (GDPR), from the API or a CRM.

- A merge keeps the survivor and turns the other contact into a tombstone with `merged_into`. The
  survivor takes the other's values where it has none (a merge never loses a value). In each CRM
  where both have a record, the forwarder merges the records with the CRM's own merge
  (`PushItem.merge_into`), so no duplicate stays and no record holding data is simply deleted; a
  CRM where only the other contact has a record keeps that record, now the survivor's.
- A restore brings a tombstone back (same id, `version` bumped) and on to every CRM: one that can
  undelete gets its record back (`ProviderLink.restore_pending`), another one a new record.
- An erasure blanks a contact's values and deletes it everywhere, keeping only a hash of its email
  so the person is never imported again.

`record_change_apply` is the inbound path for every CRM change: a change that is a merge, a restore
or an erasure is handled here, then the values go through `providers.inbound.change_apply`.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from contacts.models import SYNCED_FIELDS, Contact, email_hash, is_blank, time_key
from contacts.selectors import contact_by_email, contact_missing
from crm.base import InboundChange, Provider, ProviderError, PushItem, PushResult, Transient
from crm.registry import get_provider
from providers.inbound import CONFLICT, DELETED, UNCHANGED, change_apply, source_label
from providers.issues import RESTORE_REFUSED, record_issue_raise
from providers.models import LinkStatus, ProviderLink
from providers.services import enqueue_forward, links_mark_pending
from syncroot.errors import Conflict, NotFound

logger = logging.getLogger(__name__)

MERGED, RESTORED, ERASED = "merged", "restored", "erased"
ERASED_RECORD = "erased_person"  # a RecordIssue code: a CRM record of a person erased on request


# --- merge ---------------------------------------------------------------------------------------


def _locked(*contact_ids: Any) -> dict[Any, Contact]:
    """The contacts, locked in id order (every path locks pairs the same way: no deadlock)."""
    rows = Contact.objects.select_for_update(no_key=True).filter(pk__in=contact_ids).order_by("pk")
    return {row.pk: row for row in rows}


@transaction.atomic
def contacts_merge(*, survivor_id: UUID, other_id: UUID, origin: str | None = None) -> Contact:
    """Merge contact `other_id` into `survivor_id` (`origin`: the CRM where the merge happened,
    whose records are merged already). Repeating a merge that happened answers the survivor."""
    if str(survivor_id) == str(other_id):
        raise Conflict("A contact cannot be merged into itself.", details={"other_id": str(other_id)})
    locked = _locked(survivor_id, other_id)
    survivor, other = locked.get(_uuid(survivor_id)), locked.get(_uuid(other_id))
    if survivor is None or survivor.is_deleted:
        raise contact_missing(contact_id=survivor_id)
    if other is not None and other.is_deleted and other.merged_into_id == survivor.pk:
        return survivor
    if other is None or other.is_deleted:
        raise contact_missing(contact_id=other_id, what="Contact to merge")
    now = timezone.now()
    for field in (*SYNCED_FIELDS, *other.custom):
        if is_blank(survivor.value_of(field)) and not is_blank(other.value_of(field)):
            survivor.set_value(field, other.value_of(field))
            survivor.field_times[time_key(field)] = now.isoformat()
    survivor.version += 1
    survivor.save()
    other.deleted_at, other.merged_into, other.version = now, survivor, other.version + 1
    other.save(update_fields=["deleted_at", "merged_into", "version", "updated_at"])
    moved = _links_merge(survivor=survivor, other=other, origin=origin)
    links_mark_pending(contact=survivor, exclude=[origin] if origin else [])
    links_mark_pending(contact=other, exclude=[p for p in (origin, *moved) if p])
    logger.info("contacts merged", extra={"contact_id": str(survivor.pk), "merged_id": str(other.pk),
                                          "provider": origin})  # fmt: skip
    return survivor


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _links_merge(*, survivor: Contact, other: Contact, origin: str | None) -> list[str]:
    """Where only the other contact was ever linked to a CRM, its record becomes the survivor's; the
    origin CRM's record of the other contact is gone with the merge. Returns the CRMs whose link moved."""
    links = {link.provider: link for link in ProviderLink.objects.select_for_update().filter(contact=other)}
    kept = {link.provider: link for link in ProviderLink.objects.select_for_update().filter(contact=survivor)}
    moved = []
    for link in kept.values():  # a clash between the two is over: they are one contact now
        if any(issue.get("contact_id") == str(other.pk) for issue in link.issues):
            link.issues = [issue for issue in link.issues if issue.get("contact_id") != str(other.pk)]
            link.save(update_fields=["issues", "updated_at"])
    for provider, link in links.items():
        link.issues = []  # the merged-away contact's cases are over (the survivor keeps its own)
        if provider == origin:
            link.status, link.synced_version, link.synced_at = LinkStatus.DELETED, other.version, timezone.now()
            link.save()
        elif link.external_id and provider not in kept:
            # Only where the survivor never had a link there: one without a record yet may have its
            # create in flight; the forwarder then merges into that record, or deletes this one
            # (the survivor holds its values by now and carries them to its own record).
            link.contact, link.status, link.pending_since = survivor, LinkStatus.PENDING, timezone.now()
            link.save()
            moved.append(provider)
        else:
            link.save(update_fields=["issues", "updated_at"])
    return moved


def merge_target(link: ProviderLink) -> str | None:
    """The record of the same CRM a merged-away contact's record merges into (None: delete it)."""
    survivor_id = link.contact.merged_into_id
    if survivor_id is None:
        return None
    target = (
        ProviderLink.objects.filter(contact_id=survivor_id, provider=link.provider)
        .values_list("external_id", flat=True)
        .first()
    )
    return target if target and target != link.external_id else None


# --- restore -------------------------------------------------------------------------------------


@transaction.atomic
def contact_restore(*, contact_id: UUID, origin: str | None = None) -> Contact:
    """Bring a deleted contact back (same id, version bumped) and on to every CRM but `origin`
    (where it is back already)."""
    contact = _locked(contact_id).get(_uuid(contact_id))
    if contact is None or contact.erased_email_hash:  # an erased person is not found, as on every read
        raise NotFound("Contact not found.", details={"id": str(contact_id)})
    if not contact.is_deleted:
        return contact
    if contact.merged_into_id is not None:  # it lives on in the contact it was merged into
        raise contact_missing(contact_id=contact.pk)
    holder = contact_by_email(email=contact.email)
    if holder is not None:
        raise Conflict("Another contact holds this email now.",
                       details={"email": contact.email, "contact_id": str(holder.pk)})  # fmt: skip
    contact.deleted_at, contact.version = None, contact.version + 1
    try:
        with transaction.atomic():
            contact.save(update_fields=["deleted_at", "version", "updated_at"])
    except IntegrityError:
        raise Conflict("Another contact holds this email now.", details={"email": contact.email},
                       ) from None  # fmt: skip
    for link in ProviderLink.objects.select_for_update().filter(contact=contact):
        if link.provider == origin:  # the record is back there: in step again, values applied next
            link.status, link.synced_version = LinkStatus.SYNCED, contact.version
            link.save()
        elif link.external_id and link.status == LinkStatus.DELETED:
            if _can_restore(link.provider):
                link.restore_pending = True
            else:  # the CRM cannot bring its record back: a new one is created (or matched by email)
                _forget_record(link)
            link.save()
    links_mark_pending(contact=contact, exclude=[origin] if origin else [])
    logger.info("contact restored", extra={"contact_id": str(contact.pk), "provider": origin})
    return contact


def _can_restore(provider: str) -> bool:
    try:
        return type(get_provider(provider)).restore_record is not Provider.restore_record
    except LookupError:
        return False


def _forget_record(link: ProviderLink) -> None:
    link.external_id, link.restore_pending = None, False
    link.field_hashes, link.field_prior_hashes, link.field_written_at, link.field_seen_at = {}, {}, {}, {}


# --- erase ---------------------------------------------------------------------------------------


@transaction.atomic
def contact_erase(*, contact_id: UUID, origin: str | None = None) -> Contact:
    """Erase a person on request: every value blanked, deleted in every CRM but `origin`; only a
    hash of the email stays, so no CRM that still has the person imports them again."""
    contact = _locked(contact_id).get(_uuid(contact_id))
    if contact is None:
        raise NotFound("Contact not found.", details={"id": str(contact_id)})
    if contact.erased_email_hash:
        return contact
    contact.erased_email_hash = email_hash(contact.email)
    for field in SYNCED_FIELDS:
        contact.set_value(field, "")
    contact.custom, contact.field_times = {}, {}
    contact.deleted_at = contact.deleted_at or timezone.now()
    contact.version += 1
    contact.save()
    if origin:
        ProviderLink.objects.filter(contact=contact, provider=origin).update(status=LinkStatus.DELETED)
    links_mark_pending(contact=contact, exclude=[origin] if origin else [])
    logger.info("contact erased", extra={"contact_id": str(contact.pk), "provider": origin})
    return contact


def is_erased(email: str) -> bool:
    return bool(email) and Contact.objects.filter(erased_email_hash=email_hash(email)).exists()


# --- inbound -------------------------------------------------------------------------------------


def _linked_contact(provider: str, external_id: str) -> Contact | None:
    link = ProviderLink.objects.filter(provider=provider, external_id=external_id).select_related("contact").first()
    return link.contact if link else None


def record_change_apply(*, provider: str, change: InboundChange, source: str | None = None) -> str:
    """Apply one CRM change: its lifecycle first (merge, restore, erasure), then its values.
    `source`: what the values' provenance names (see `change_apply`)."""
    if change.from_integration:
        return change_apply(provider=provider, change=change, source=source)
    if change.erased:
        contact = _linked_contact(provider, change.external_id)
        if contact is None:
            return UNCHANGED
        contact_erase(contact_id=contact.pk, origin=provider)
        return ERASED
    if change.merged_into and change.deleted:  # this record was merged away (Salesforce)
        return _merged_away(provider, loser_id=change.external_id, survivor_id=change.merged_into)
    if change.absorbed:  # this record absorbed others (HubSpot), even when it was deleted since
        for loser_id in change.absorbed:
            _merged_away(provider, loser_id=loser_id, survivor_id=change.external_id)
    link = ProviderLink.objects.filter(provider=provider, external_id=change.external_id).first()
    if not change.deleted and link is not None and (contact := Contact.objects.get(pk=link.contact_id)).is_deleted:
        if change.restored or _back_after_our_delete(link, contact, change):
            if contact.merged_into_id or contact.erased_email_hash:
                return _gone_again(link, merged=bool(contact.merged_into_id))
            try:
                contact_restore(contact_id=contact.pk, origin=provider)
            except Conflict as exc:
                record_issue_raise(provider=provider, external_id=change.external_id, code=RESTORE_REFUSED,
                                   message=f"{source_label(provider)} restored a record SyncRoot cannot bring "
                                           f"back: {exc.message}")  # fmt: skip
                return CONFLICT
    if not change.deleted and (values_email := change.values.get("email")) and is_erased(values_email):
        if _linked_contact(provider, change.external_id) is None:
            message = "This person was erased on request: SyncRoot does not import them again"
            record_issue_raise(provider=provider, external_id=change.external_id, code=ERASED_RECORD, message=message)
            return CONFLICT
    return change_apply(provider=provider, change=change, source=source)


def _gone_again(link: ProviderLink, *, merged: bool) -> str:
    """A record restored in the CRM for a contact merged into another (or erased): the forwarder
    merges it into the survivor's record there again (or deletes it); the person lives on in one."""
    with transaction.atomic():
        ProviderLink.objects.filter(pk=link.pk).update(status=LinkStatus.PENDING, pending_since=timezone.now(),
                                                       next_attempt_at=None)  # fmt: skip
        transaction.on_commit(lambda: enqueue_forward(providers=[link.provider]), robust=True)
    return MERGED if merged else ERASED


def _back_after_our_delete(link: ProviderLink, contact: Contact, change: InboundChange) -> bool:
    """A record live again, changed after its deletion reached the CRM: restored there (its webhook
    lost; the reconciler sees it)."""
    if link.status != LinkStatus.DELETED:
        return False
    return bool(change.occurred_at and link.synced_at and change.occurred_at > link.synced_at)


def _merged_away(provider: str, *, loser_id: str, survivor_id: str) -> str:
    """Record `loser_id` of this CRM was merged into `survivor_id`: merge their contacts, or let the
    loser's contact keep the survivor's record when the survivor was not linked yet."""
    found = ProviderLink.objects.filter(provider=provider, external_id=loser_id).values_list("pk", "contact_id").first()
    if found is None:
        return UNCHANGED
    with transaction.atomic():  # lock order everywhere: the contacts, then their links
        kept = ProviderLink.objects.filter(provider=provider, external_id=survivor_id).values_list("contact_id").first()
        if kept is not None and kept[0] == found[1]:
            return UNCHANGED
        pair = _locked(found[1], *(kept or ()))
        loser = ProviderLink.objects.select_for_update().filter(pk=found[0], external_id=loser_id).first()
        if loser is None:
            return UNCHANGED
        if kept is None:  # the survivor is the loser's contact's record now: SyncRoot's values go to it
            return _record_taken(provider, link=loser, record_id=survivor_id)
        survivor, other = pair[kept[0]], pair[found[1]]
        if survivor.is_deleted and _merged_into(survivor, other.pk):
            # The CRM merged, the other way round, the records of two contacts SyncRoot merged
            # already: its surviving record is the live contact's now (not a reason to delete it).
            held = ProviderLink.objects.select_for_update().filter(provider=provider, external_id=survivor_id).first()
            if held is not None:
                _record_released(held)
            return _record_taken(provider, link=loser, record_id=survivor_id)
        if other.is_deleted or survivor.is_deleted:
            return _merged_with_a_tombstone(provider, loser=loser, survivor=survivor, other=other)
    contacts_merge(survivor_id=kept[0], other_id=found[1], origin=provider)
    return MERGED


def _record_taken(provider: str, *, link: ProviderLink, record_id: str) -> str:
    """The CRM's record `record_id` is the link's contact's now: SyncRoot's values go to it."""
    link.external_id, link.status, link.pending_since = record_id, LinkStatus.PENDING, timezone.now()
    link.next_attempt_at, link.field_hashes, link.field_written_at = None, {}, {}
    link.save()
    transaction.on_commit(lambda: enqueue_forward(providers=[provider]), robust=True)
    return MERGED


def _record_released(link: ProviderLink) -> None:
    """A merged-away contact's link lets go of its record (another contact's now)."""
    _forget_record(link)
    link.status = LinkStatus.DELETED
    link.save()


def _merged_into(contact: Contact, target_id: Any) -> bool:
    """Whether `contact` was merged into `target_id`, directly or through later merges."""
    seen, current = set(), contact.merged_into_id
    while current is not None and current not in seen:
        if current == target_id:
            return True
        seen.add(current)
        current = Contact.objects.filter(pk=current).values_list("merged_into", flat=True).first()
    return False


def _merged_with_a_tombstone(provider: str, *, loser: ProviderLink, survivor: Contact, other: Contact) -> str:
    """The CRM merged records of which one's contact is deleted already (a deletion crossing the
    merge): the merged-away record is gone there; a live contact merged into a deleted one goes too."""
    if other.is_deleted:
        loser.status, loser.synced_at = LinkStatus.DELETED, timezone.now()
        loser.save(update_fields=["status", "synced_at", "updated_at"])
        return UNCHANGED
    other.deleted_at, other.merged_into, other.version = timezone.now(), survivor, other.version + 1
    other.save(update_fields=["deleted_at", "merged_into", "version", "updated_at"])
    loser.status, loser.synced_version, loser.synced_at = LinkStatus.DELETED, other.version, timezone.now()
    loser.save()
    links_mark_pending(contact=other, exclude=[provider])
    return MERGED


# --- the forwarder's lifecycle calls ----------------------------------------------------------------


def lifecycle_calls(*, provider: Provider, items: list[PushItem]) -> tuple[list[PushItem], list[PushResult]]:
    """Make the merges and restores among `items` (one call each); the items left to push, and the
    results of those done. Where no merge could be made (a CRM without merge, or the survivor's
    record deleted there meanwhile) the record is deleted instead (the survivor holds every value
    already), never left behind as a duplicate; a CRM that cannot restore a record creates it again."""
    rest: list[PushItem] = []
    done: list[PushResult] = []
    passed_on: set[int | None] = set()  # survivors' links given another record: they go next drain
    for item in items:
        if not (item.merge_into or item.restore):
            rest.append(item)
            continue
        try:
            if item.merge_into:
                merged = provider.merge_records(survivor_id=item.merge_into, loser_id=str(item.external_id))
                if merged is None:
                    rest.append(PushItem(key=item.key, values={}, external_id=item.external_id, delete=True))
                elif merged == str(item.external_id):  # merged the other way round by a person
                    passed_on.add(_record_passed_on(link_id=item.key, record_id=merged))
                    done.append(PushResult(key=item.key, operation="delete"))
                else:
                    done.append(PushResult(key=item.key, external_id=item.external_id, operation="delete"))
                continue
            if provider.restore_record(str(item.external_id)):
                ProviderLink.objects.filter(pk=item.key).update(restore_pending=False)
                rest.append(PushItem(key=item.key, values=item.values, external_id=item.external_id,
                                     remote=item.remote))  # fmt: skip
            else:  # purged from the recycle bin: the next attempt creates the record again
                link = ProviderLink.objects.get(pk=item.key)
                _forget_record(link)
                link.save()
                error = Transient("the CRM's record is gone for good: it is created again", code="RECORD_PURGED")
                done.append(PushResult(key=item.key, error=error, operation="update"))
        except ProviderError as exc:
            done.append(PushResult(key=item.key, external_id=item.external_id, error=exc,
                                   operation="delete" if item.merge_into else "update"))  # fmt: skip
    return [item for item in rest if item.key not in passed_on], done


def _record_passed_on(*, link_id: int, record_id: str) -> int | None:
    """A merged-away contact's record into which a person merged, the other way round, the record of
    the contact it was merged into: the one record left is that contact's now. Returns its link."""
    with transaction.atomic():
        contact_id, survivor_id = Contact.objects.filter(links__pk=link_id).values_list("pk", "merged_into").first()
        _locked(contact_id, survivor_id)
        held = ProviderLink.objects.select_for_update().get(pk=link_id)
        kept = ProviderLink.objects.select_for_update().filter(contact_id=survivor_id, provider=held.provider).first()
        _record_released(held)
        if kept is None:
            return None
        _record_taken(held.provider, link=kept, record_id=record_id)
        return kept.pk


def outcome_processed(outcome: str) -> bool:
    return outcome in (MERGED, RESTORED, ERASED, DELETED)
