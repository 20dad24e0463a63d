"""Many CRM records SyncRoot knows nothing of, created in a few statements instead of one
transaction each: the import's fast path (see providers.backfill_import).

A record qualifies when `change_apply` would create a contact for it and do nothing else: no link
holds its id, no live contact has its email, the person was not erased, every value fits, and no
other record of the chunk carries the same email (so no record handled one by one can meet it).
For those, the rows `change_apply` writes are written with multi-row INSERTs: the contacts, their
links to this CRM (the ledger holding what the CRM reported), the pending links to the other CRMs,
the provenance of every value, and one enqueue of the forwarder after commit. The contacts and
links go in as column arrays (syncroot.bulk_insert). Anything else, and a chunk that meets a
concurrent write (a unique email or record id taken meanwhile), goes through `change_apply` one by
one, as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from contacts.models import SYNCED_FIELDS, Contact, email_hash, is_blank, time_key
from contacts.selectors import normalise_email
from crm.base import InboundChange, field_hash
from providers.inbound import Reported, reported, source_label
from providers.ledger import changed_values
from providers.mappings import mapping_set
from providers.models import LinkStatus, MappingRule, ProviderLink, RecordIssue
from providers.provenance import changes_record_many
from providers.services import enqueue_forward, links_mark_pending_many
from syncroot.bulk_insert import rows_insert


def records_create_many(
    *, provider: str, changes: list[InboundChange], known_ids: Iterable[str], source: str
) -> tuple[list[InboundChange], list[InboundChange]]:
    """Create a contact for each record that qualifies (see the module); returns (created, the rest).

    `known_ids`: the external ids of the chunk some link already holds (the caller looked them up).
    Like the import's other records, these are taken as the CRM's values whoever wrote them last
    (a record SyncRoot has no link to cannot be an echo of its own write).
    """
    mapped = mapping_set(provider=provider)
    label = source_label(provider)
    taken = set(known_ids)
    emails = Counter(normalise_email(str(c.values.get("email") or "")) for c in changes)
    ids = Counter(c.external_id for c in changes)
    candidates: list[tuple[InboundChange, Reported, str]] = []
    rest: list[InboundChange] = []
    for change in changes:
        email = normalise_email(str(change.values.get("email") or ""))
        report = None
        if (
            not change.deleted and change.complete and email
            and emails[email] == 1 and ids[change.external_id] == 1 and change.external_id not in taken
        ):  # fmt: skip
            report = reported(provider, change, source=label, mapped=mapped)
        if report is None or report.refused or not str(report.values.get("email") or "").strip():
            rest.append(change)
        else:
            candidates.append((change, report, email))
    held = _held(email for _, _, email in candidates)
    fresh = [(change, report) for change, report, email in candidates if email not in held]
    rest += [change for change, _, email in candidates if email in held]
    if not fresh:
        return [], rest
    try:
        with transaction.atomic():
            _insert(provider, fresh, source=source)
    except IntegrityError:  # a live write took an email or a record id meanwhile: one by one then
        return [], changes
    return [change for change, _ in fresh], rest


def _held(emails: Iterable[str]) -> set[str]:
    """Of these (normalised) emails, those a live contact has or an erased person had."""
    wanted = set(emails)
    if not wanted:
        return set()
    live = Contact.objects.alias(email_ci=Lower("email")).filter(email_ci__in=wanted, deleted_at=None)
    held = {normalise_email(email) for email in live.values_list("email", flat=True)}
    hashes = {email_hash(email): email for email in wanted}
    erased = Contact.objects.filter(erased_email_hash__in=hashes).values_list("erased_email_hash", flat=True)
    return held | {hashes[digest] for digest in erased}


def _insert(provider: str, fresh: list[tuple[InboundChange, Reported]], *, source: str) -> None:
    """The rows `change_apply` writes for each record it creates a contact from."""
    now = timezone.now()
    contacts, links = [], []
    for change, report in fresh:
        when = change.occurred_at or now
        contact = _contact(report, when.isoformat())
        link = ProviderLink(contact=contact, provider=provider, external_id=change.external_id, backfill=True)
        for field, value in report.values.items():
            link.field_hashes[field] = field_hash(field, value)
            link.field_seen_at[field] = report.times.get(field, when).isoformat()
        if changed_values(contact=contact, link=link, mapped=report.mapped):  # the CRM lacks values SyncRoot holds
            link.status, link.pending_since = LinkStatus.PENDING, now
        else:
            link.status, link.synced_version = LinkStatus.SYNCED, contact.version
        contacts.append(contact)
        links.append(link)
    rows_insert(contacts)
    rows_insert(links)
    if any(link.status == LinkStatus.PENDING for link in links):
        transaction.on_commit(lambda: enqueue_forward(providers=[provider]), robust=True)
    changes_record_many(contacts=contacts, fields=None, source=source, at=now)
    links_mark_pending_many(contacts=contacts, exclude=[provider], backfill=True)  # an import's: after live ones
    RecordIssue.objects.filter(provider=provider, external_id__in=[link.external_id for link in links]).delete()


def _contact(report: Reported, when: str) -> Contact:
    """As `providers.inbound._create`: every value of the record but those of fields turned off."""
    rules, values = report.mapped.rules, report.values
    full = {field: values.get(field, "") if rules[field] != MappingRule.OFF else "" for field in SYNCED_FIELDS}
    custom = {key: values[key] for key in report.mapped.custom if not is_blank(values.get(key))}
    times = {f: when for f in SYNCED_FIELDS} | {time_key(key): when for key in custom}
    return Contact(**full, custom=custom, field_times=times)
