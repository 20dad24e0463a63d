"""One queue of every case that needs a person, and what resolving each one does.

The engine keeps its truth where it acts on it: issues on links (values refused, email clashes,
paused bouncing fields: providers/issues.py, providers/bounce.py) and records SyncRoot cannot take in
(`RecordIssue`). `conflicts_refresh` mirrors them into `Conflict` rows with stable ids and a status:
a new case opens a row, a case that cleared by itself (the CRM now holds a value that fits, the
record was linked) is resolved as `cleared`. `conflict_resolve` applies a person's choice everywhere
and closes the row; `ignore` closes it without touching the data, and it stays closed.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from contacts.models import SYNCED_FIELDS, Contact, time_key
from crm.base import ProviderError
from crm.registry import get_provider
from providers.bounce import bounces_forget
from providers.issues import (
    BOUNCING,
    DUPLICATE_RECORD,
    EMAIL_CONFLICT,
    NO_EMAIL,
    RESTORE_REFUSED,
    link_issues_resolve,
)
from providers.lifecycle import contacts_merge
from providers.models import Conflict, ConflictKind, ConflictStatus, LinkStatus, ProviderLink, RecordIssue
from providers.services import enqueue_forward, links_mark_pending
from syncroot.errors import ApplicationError, NotFound
from syncroot.errors import Conflict as ConflictError

logger = logging.getLogger(__name__)

KEEP_SYNCROOT, KEEP_CRM, MERGE, IGNORE, CLEARED = "keep_syncroot", "keep_crm", "merge", "ignore", "cleared"
ACTIONS = (KEEP_SYNCROOT, KEEP_CRM, MERGE, IGNORE)
ALLOWED: dict[str, tuple[str, ...]] = {
    ConflictKind.EMAIL_CLASH: (KEEP_SYNCROOT, KEEP_CRM, MERGE, IGNORE),
    ConflictKind.MERGE_CANDIDATE: (MERGE, IGNORE),
    ConflictKind.VALUE_NOT_FIT: (KEEP_SYNCROOT, IGNORE),
    ConflictKind.BOUNCING_FIELD: (KEEP_SYNCROOT, KEEP_CRM, IGNORE),
    ConflictKind.NO_EMAIL: (IGNORE,),
}
# A record SyncRoot could not take in (no contact of its own) has no SyncRoot value to keep and no
# contact to merge: only the CRM's records can be merged (a merge candidate), else it is ignored.
RECORD_ALLOWED: dict[str, tuple[str, ...]] = {ConflictKind.MERGE_CANDIDATE: (MERGE, IGNORE)}


def allowed_actions(row: Conflict) -> tuple[str, ...]:
    """The actions that apply to this case."""
    if row.link_id is None and row.contact_id is None:
        return RECORD_ALLOWED.get(row.kind, (IGNORE,))
    return ALLOWED[row.kind]


class ActionNotAllowed(ApplicationError):
    code = "action_not_allowed"


# --- the queue --------------------------------------------------------------------------------------


def _link_kind(issue: dict[str, Any]) -> str:
    if issue["code"] == EMAIL_CONFLICT:
        return ConflictKind.EMAIL_CLASH
    if issue["code"] == BOUNCING:
        return ConflictKind.BOUNCING_FIELD
    return ConflictKind.VALUE_NOT_FIT


def _record_kind(code: str) -> str:
    if code == NO_EMAIL:
        return ConflictKind.NO_EMAIL
    if code == DUPLICATE_RECORD:
        return ConflictKind.MERGE_CANDIDATE
    if code == RESTORE_REFUSED:  # a record back in the CRM with an email another contact holds by now
        return ConflictKind.MERGE_CANDIDATE
    return ConflictKind.VALUE_NOT_FIT


def _cases() -> dict[str, dict[str, Any]]:
    """Every case open in the engine now, by key."""
    cases: dict[str, dict[str, Any]] = {}
    for link in ProviderLink.objects.exclude(issues=[]).only("pk", "provider", "contact_id", "external_id", "issues"):
        for issue in link.issues:
            if issue.get("blocks", True) is False:
                continue  # the other side of a clash: the case is the side whose record changed
            details = {k: issue[k] for k in ("contact_id", "remote_field") if issue.get(k)}
            cases[f"link:{link.pk}:{issue['field']}"] = dict(
                kind=_link_kind(issue), provider=link.provider, contact_id=link.contact_id, link_id=link.pk,
                external_id=link.external_id or "", field=issue["field"], code=issue["code"],
                message=issue["message"], details=details,
            )  # fmt: skip
    for record in RecordIssue.objects.all():
        cases[f"record:{record.provider}:{record.external_id}"] = dict(
            kind=_record_kind(record.code), provider=record.provider, contact_id=None, link_id=None,
            external_id=record.external_id, field="", code=record.code, message=record.message, details={},
        )  # fmt: skip
    return cases


@transaction.atomic
def conflicts_refresh() -> None:
    """Open a row for each new case, resolve as `cleared` those that went by themselves."""
    cases = _cases()
    open_rows = {row.key: row for row in Conflict.objects.select_for_update().filter(status=ConflictStatus.OPEN)}
    now = timezone.now()
    for key, row in open_rows.items():
        if key not in cases:
            row.status, row.action, row.resolved_at = ConflictStatus.RESOLVED, CLEARED, now
            row.save(update_fields=["status", "action", "resolved_at"])
        elif (row.message, row.code, row.kind) != (cases[key]["message"], cases[key]["code"], cases[key]["kind"]):
            row.message, row.code, row.details = cases[key]["message"], cases[key]["code"], cases[key]["details"]
            row.kind = cases[key]["kind"]
            row.save(update_fields=["message", "code", "details", "kind"])
    new = [key for key in cases if key not in open_rows]
    ignored = {
        (key, message)
        for key, message in Conflict.objects.filter(key__in=new, action=IGNORE).values_list("key", "message")
    }
    Conflict.objects.bulk_create(
        [Conflict(key=key, **cases[key]) for key in new if (key, cases[key]["message"]) not in ignored],
        ignore_conflicts=True,
    )


def conflict_list(*, kind: str | None = None, provider: str | None = None, status: str | None = None):
    conflicts_refresh()
    rows = Conflict.objects.all()
    if kind:
        rows = rows.filter(kind=kind)
    if provider:
        rows = rows.filter(provider=provider)
    if status:
        rows = rows.filter(status=status)
    return rows


def conflict_get(*, conflict_id: int) -> Conflict:
    conflicts_refresh()
    row = Conflict.objects.filter(pk=conflict_id).first()
    if row is None:
        raise NotFound("Conflict not found.", details={"id": conflict_id})
    return row


def conflict_counts() -> dict[str, int]:
    """Open cases by kind, every kind listed; read from the engine's state as it is now (no write)."""
    cases = _cases()
    ignored = set(Conflict.objects.filter(key__in=list(cases), action=IGNORE).values_list("key", "message"))
    counts = dict.fromkeys(ConflictKind.values, 0)
    for key, case in cases.items():
        if (key, case["message"]) not in ignored:
            counts[case["kind"]] += 1
    return counts


# --- resolving ---------------------------------------------------------------------------------------


def conflict_resolve(*, conflict_id: int, action: str) -> Conflict:
    """Apply a person's choice everywhere and close the case."""
    row = conflict_get(conflict_id=conflict_id)
    if row.status != ConflictStatus.OPEN:
        raise ConflictError("This conflict is resolved already.", details={"action": row.action})
    allowed = allowed_actions(row)
    if action not in allowed:
        raise ActionNotAllowed(
            f"{action} does not apply to a {row.kind} conflict.", details={"action": action, "allowed": list(allowed)}
        )
    if action == MERGE and row.kind == ConflictKind.MERGE_CANDIDATE:
        _merge_records(row)  # a CRM call: outside any transaction
    with transaction.atomic():
        if action == KEEP_SYNCROOT:
            _keep_syncroot(row)
        elif action == KEEP_CRM:
            _keep_crm(row)
        elif action == MERGE and row.kind == ConflictKind.EMAIL_CLASH:
            _merge_contacts(row, prefer_crm=False)
        elif action == IGNORE:
            _ignore(row)
        Conflict.objects.filter(pk=row.pk).update(
            status=ConflictStatus.RESOLVED, action=action, resolved_at=timezone.now()
        )
    logger.info("conflict resolved", extra={"conflict_id": row.pk, "kind": row.kind, "action": action})
    row.refresh_from_db()
    return row


def _link(row: Conflict) -> ProviderLink:
    link = ProviderLink.objects.select_for_update().filter(pk=row.link_id).first()
    if link is None:
        raise ConflictError("The contact's link to this CRM is gone: nothing to resolve.")
    return link


def _keep_syncroot(row: Conflict) -> None:
    link = _link(row)
    if row.kind == ConflictKind.BOUNCING_FIELD:
        bounces_forget(link, row.field)
        link.save(update_fields=["bounces", "updated_at"])
    link_issues_resolve(link_id=link.pk)


def _keep_crm(row: Conflict) -> None:
    if row.kind == ConflictKind.EMAIL_CLASH:
        _merge_contacts(row, prefer_crm=True)
        return
    link = _link(row)  # a bouncing field: the value the CRM last set wins, and syncing resumes
    issue = next((i for i in link.issues if i["field"] == row.field), None)
    contact = Contact.objects.select_for_update(no_key=True).get(pk=link.contact_id)
    if issue is not None and "value" in issue:
        contact.set_value(row.field, issue["value"])
        contact.field_times[time_key(row.field)] = timezone.now().isoformat()
        contact.version += 1
        contact.save()
    _drop_issue(link, row.field)
    links_mark_pending(contact=contact, exclude=[link.provider])


def _merge_contacts(row: Conflict, *, prefer_crm: bool) -> None:
    """An email clash: the record's contact merges into the contact holding the email. With
    `prefer_crm`, the record's values (its contact holds them) win over the holder's."""
    holder_id = row.details.get("contact_id")
    if row.contact_id is None or not holder_id:
        raise ConflictError("This clash names no contact to merge with.")
    other = Contact.objects.filter(pk=row.contact_id).first()
    values = {f: other.value_of(f) for f in SYNCED_FIELDS if f != "email"} if other and prefer_crm else {}
    survivor = contacts_merge(survivor_id=holder_id, other_id=row.contact_id, origin=None)
    changed = [f for f, v in values.items() if v not in ("", None) and survivor.value_of(f) != v]
    if changed:
        now = timezone.now().isoformat()
        for field in changed:
            survivor.set_value(field, values[field])
            survivor.field_times[time_key(field)] = now
        survivor.version += 1
        survivor.save()
        links_mark_pending(contact=survivor)


def _merge_records(row: Conflict) -> None:
    """A merge candidate: the CRM record no contact could take merges, in the CRM, into the record
    of the contact with its email."""
    provider = get_provider(row.provider)
    try:
        [record] = provider.fetch([row.external_id])
    except ProviderError as exc:
        raise ConflictError(f"{provider.label or row.provider} could not be read: {exc}") from exc
    email = record.values.get("email", "")
    survivor = (
        ProviderLink.objects.filter(provider=row.provider, contact__email__iexact=email, contact__deleted_at=None)
        .exclude(external_id=None)
        .first()
    )
    if record.deleted or survivor is None:
        raise ConflictError("No record to merge this one into (it or its duplicate is gone).")
    try:
        merged = provider.merge_records(survivor_id=str(survivor.external_id), loser_id=row.external_id)
    except ProviderError as exc:
        raise ConflictError(f"{provider.label or row.provider} refused the merge: {exc}") from exc
    if merged is None:
        raise ConflictError(f"{provider.label or row.provider} could not merge: the record to merge into is gone.")
    RecordIssue.objects.filter(provider=row.provider, external_id=row.external_id).delete()


def _drop_issue(link: ProviderLink, field: str) -> None:
    link.issues = [i for i in link.issues if i["field"] != field]
    bounces_forget(link, field)
    link.save(update_fields=["issues", "bounces", "updated_at"])


def _ignore(row: Conflict) -> None:
    if row.link_id is not None and (link := ProviderLink.objects.select_for_update().filter(pk=row.link_id).first()):
        if row.kind == ConflictKind.BOUNCING_FIELD:
            # Syncing the field resumes, its flips counted afresh. While paused, what the CRM set was
            # neither applied nor recorded: the ledger forgets the field there and SyncRoot's value
            # goes again (never "synced" while the CRM holds another).
            link.field_hashes.pop(row.field, None)
            link.status, link.pending_since, link.next_attempt_at = LinkStatus.PENDING, timezone.now(), None
            link.issues = [i for i in link.issues if i["field"] != row.field]
            bounces_forget(link, row.field)
            link.save()
            transaction.on_commit(lambda: enqueue_forward(providers=[link.provider]), robust=True)
