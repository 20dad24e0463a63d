"""The backfill of one field, when a mapping is made or its rule changes: never a full resync.

One pass over the CRM's linked contacts, in the order of their link ids, a chunk at a time:
1. read the field of the chunk's records from the CRM (the provider's batch read: HubSpot 100 per
   call, Salesforce 200 per query), so SyncRoot knows what each record holds;
2. decide per contact, by the mapping's rule (`decide`), whether SyncRoot takes the CRM's value,
   the CRM gets SyncRoot's, or neither; a value that does not fit is refused as an issue;
3. apply what SyncRoot takes (carried on to the other CRMs as any change is) and write what the CRM
   gets, batched across chunks (one batch call per 100 or 200 writes), each write holding the
   link's claim so the forwarder does not send the same contact at the same moment.
The checkpoint (the last link id whose reads were applied and writes sent) is saved after every
flush, so a killed worker resumes where it stopped; writes are safe to repeat. It runs on the dlq
worker, so live changes on the forwarder never wait behind it, and it shares their rate limiter.

`field_preview` runs steps 1 and 2 alone and changes nothing.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from contacts.models import SYNCED_FIELDS, Contact, CustomField, is_blank, time_key
from crm.base import InboundChange, ProviderError, PushItem, PushResult, RateLimited, Transient, field_hash
from crm.budget import BudgetSpent, Priority, call_priority
from crm.registry import connected_providers, get_provider
from providers import dispatch
from providers.field_values import canonical, from_crm, to_crm
from providers.inbound import current_value
from providers.issues import blocked_fields, issue_raise, refusal
from providers.ledger import PRIOR_HASHES_KEPT, prior_hashes
from providers.mappings import (
    IDENTITY_FIELD,
    CustomMapping,
    IdentityMapping,
    MappingInvalid,
    builtin_remote_field,
    custom_mapping,
    mapping_check,
    mapping_set,
    mappings_changed,
    remote_field_get,
    remote_spec,
)
from providers.models import BackfillStatus, ChangeSource, FieldMapping, LinkStatus, MappingRule, ProviderLink
from providers.provenance import changes_record_many
from providers.services import links_mark_pending_many

logger = logging.getLogger(__name__)

TAKE, WRITE = "take", "write"  # SyncRoot takes the CRM's value / the CRM gets SyncRoot's
SAMPLES = 20
STALE_AFTER = timedelta(seconds=120)  # a running backfill silent this long lost its worker
READ_TRIES = 5


def decide(rule: str, syncroot: Any, crm: Any) -> str | None:
    """What a backfill does with one contact's field, by the rule (values canonical, None/"" blank).

    `two_way` has no change times to compare for values both sides held before the mapping: blanks
    take the other side's value, and where both differ SyncRoot's is kept and written."""
    if syncroot == crm or (is_blank(syncroot) and is_blank(crm)):
        return None
    if rule == MappingRule.CRM_WINS:
        return TAKE
    if rule == MappingRule.SYNCROOT_WINS:
        return WRITE
    if rule == MappingRule.PREFER_CRM_UNLESS_BLANK:
        return WRITE if is_blank(crm) else TAKE
    if rule in (MappingRule.PREFER_SYNCROOT_UNLESS_BLANK, MappingRule.TWO_WAY):
        return TAKE if is_blank(syncroot) else WRITE
    return None  # off


@dataclass
class Plan:
    """One chunk's decisions, and for the preview the counts and samples."""

    takes: list[tuple[int, Any, Any]] = field(default_factory=list)  # (link id, CRM value, its raw form)
    writes: list[int] = field(default_factory=list)  # link ids
    refused: list[tuple[int, str, str, Any]] = field(default_factory=list)  # (link id, code, message, raw)
    held: list[tuple[int, Any]] = field(default_factory=list)  # (link id, CRM value) of the rest: the ledger's


class _Field:
    """The mapped field as the backfill reads and writes it (built-in or custom)."""

    def __init__(self, mapping: FieldMapping, crm_label: str) -> None:
        self.name, self.rule, self.crm = mapping.field, mapping.rule, crm_label
        self.custom: CustomMapping | None = custom_mapping(mapping) if mapping.field not in SYNCED_FIELDS else None
        self.remote_field = mapping.remote_field

    def crm_value(self, change: InboundChange) -> tuple[Any, tuple[str, str] | None, Any]:
        """(canonical value, refusal, raw) of what the CRM reported for this field."""
        if self.custom is not None:
            raw = change.remote.get(self.remote_field)
            value, why = from_crm(self.custom, raw, source=self.crm)
            return value, why, raw
        raw = change.values.get(self.name, "")
        return (None if (why := refusal(self.name, raw, source=self.crm)) else raw), why, raw

    def syncroot_value(self, contact: Contact) -> Any:
        if self.custom is not None:
            return canonical(self.custom.type, contact.custom.get(self.name))
        return getattr(contact, self.name)

    def push_item(self, link: ProviderLink, value: Any) -> tuple[PushItem | None, tuple[str, str] | None]:
        if self.custom is None:
            return PushItem(key=link.pk, values={self.name: value}, external_id=link.external_id), None
        remote_value, why = to_crm(self.custom, value, crm=self.crm)
        if why is not None:
            return None, why
        return PushItem(
            key=link.pk, values={}, external_id=link.external_id, remote={self.remote_field: remote_value}
        ), None


def _links(provider: str):
    return ProviderLink.objects.filter(
        provider=provider, external_id__isnull=False, contact__deleted_at__isnull=True
    ).exclude(status=LinkStatus.DELETED)


def _plan(target: _Field, links: list[ProviderLink], records: dict[str, InboundChange]) -> Plan:
    plan = Plan()
    for link in links:
        record = records.get(link.external_id)
        if record is None or record.deleted:
            continue  # gone from the CRM: the forwarder and the reconciler deal with it
        crm, why, raw = target.crm_value(record)
        if why is not None:
            plan.refused.append((link.pk, *why, raw))
            continue
        action = decide(target.rule, target.syncroot_value(link.contact), crm)
        if action == TAKE:
            plan.takes.append((link.pk, crm, raw))
            continue
        if action == WRITE:
            plan.writes.append(link.pk)
        plan.held.append((link.pk, crm))
    return plan


def _read(target: "_Field", provider_name: str, links: list[ProviderLink]) -> dict[str, InboundChange]:
    """The chunk's records as the CRM holds them, asking for the one custom field concerned."""
    extra = (target.remote_field,) if target.custom is not None else ()
    records = get_provider(provider_name).fetch([link.external_id for link in links], extra=extra)
    return {record.external_id: record for record in records}


# --- the run -------------------------------------------------------------------------------------
def _read_patiently(target: "_Field", mapping: FieldMapping, links: list[ProviderLink]) -> dict[str, InboundChange]:
    """A rate limit or a passing failure waits (as the CRM asks) and reads again: a backfill is in
    no hurry. What persists stops the run, with its checkpoint, for the sweeper to resume."""
    for attempt in range(READ_TRIES):
        try:
            return _read(target, mapping.provider, links)
        except Transient as error:
            if attempt == READ_TRIES - 1 or isinstance(error, BudgetSpent):  # the budget frees up in hours
                raise
            wait = error.retry_after if isinstance(error, RateLimited) and error.retry_after else 2**attempt
            time.sleep(min(wait, 10.0))
            cache.touch(_lock_key(mapping.pk), int(STALE_AFTER.total_seconds()))
    raise AssertionError("unreachable")


def _lock_key(mapping_id: int) -> str:
    return f"field-backfill:{mapping_id}"


def field_backfill_run(*, mapping_id: int) -> None:
    """Run (or resume) a mapping's backfill to the end. One run per mapping at a time."""
    if not cache.add(_lock_key(mapping_id), 1, timeout=int(STALE_AFTER.total_seconds())):
        return  # another worker runs it
    try:
        with call_priority(Priority.BACKFILL):  # after live changes, within the backfills' budget
            _run(mapping_id)
    finally:
        cache.delete(_lock_key(mapping_id))


def _run(mapping_id: int) -> None:
    mapping = FieldMapping.objects.filter(pk=mapping_id).first()
    if mapping is None or mapping.backfill_status not in (BackfillStatus.PENDING, BackfillStatus.RUNNING):
        return
    provider = get_provider(mapping.provider)
    if mapping.rule == MappingRule.OFF:
        _save(mapping, status=BackfillStatus.DONE)
        return
    if mapping.backfill_status == BackfillStatus.PENDING:
        total = _links(mapping.provider).count()
        _save(mapping, status=BackfillStatus.RUNNING, total=total, done=0, after=0, error="")
    target = _Field(mapping, provider.label or mapping.provider)
    writes: list[int] = []
    after = mapping.backfill_after
    while True:
        links = list(
            _links(mapping.provider)
            .filter(pk__gt=after)
            .select_related("contact")
            .order_by("pk")[: provider.batch_size]
        )
        if not links:
            break
        try:
            plan = _plan(target, links, _read_patiently(target, mapping, links))
        except ProviderError as error:
            _stopped(mapping, error)
            return
        _apply(target, mapping.provider, plan)
        writes += plan.writes
        after = links[-1].pk
        if len(writes) >= provider.batch_size:
            _write(target, mapping.provider, writes)
            writes = []
        if not writes:  # every write up to here is sent: a restart may begin after this chunk
            _save(mapping, after=after, done=mapping.backfill_done + len(links))
        else:
            _save(mapping, done=mapping.backfill_done + len(links))
        cache.touch(_lock_key(mapping_id), int(STALE_AFTER.total_seconds()))
        if _superseded(mapping):
            return
    _write(target, mapping.provider, writes)
    _save(mapping, status=BackfillStatus.DONE, after=after, done=mapping.backfill_total)
    mappings_changed()  # the field is no longer the backfill's alone
    logger.info("field backfill done", extra={"mapping_id": mapping.pk, "provider": mapping.provider,
                                              "field": mapping.field, "total": mapping.backfill_total})  # fmt: skip


def _superseded(mapping: FieldMapping) -> bool:
    """The mapping changed (a new rule restarted its backfill) or went: this run stops."""
    current = FieldMapping.objects.filter(pk=mapping.pk).values_list("rule", "backfill_status").first()
    return current is None or current != (mapping.rule, BackfillStatus.RUNNING)


def _save(mapping: FieldMapping, **changes: Any) -> None:
    names = {"status": "backfill_status", "total": "backfill_total", "done": "backfill_done",
             "after": "backfill_after", "error": "backfill_error"}  # fmt: skip
    for key, value in changes.items():
        setattr(mapping, names[key], value)
    # Only while this run's rule holds: a rule changed meanwhile restarted the backfill.
    FieldMapping.objects.filter(pk=mapping.pk, rule=mapping.rule).update(
        **{names[key]: value for key, value in changes.items()}, updated_at=timezone.now()
    )


def _stopped(mapping: FieldMapping, error: ProviderError) -> None:
    """A CRM error: transient ones leave it running (the sweeper resumes it); others fail it."""
    logger.warning("field backfill stopped", extra={"mapping_id": mapping.pk, "error": str(error)})
    if error.retryable:
        _save(mapping, error=str(error)[:2000])
    else:
        _save(mapping, status=BackfillStatus.FAILED, error=str(error)[:2000])
        mappings_changed()


@transaction.atomic
def _apply(target: _Field, provider: str, plan: Plan) -> None:
    """SyncRoot takes the CRM's values where the rule says so; the ledger learns what the CRM holds
    (from here on inbound changes and the forwarder treat the field as any other, see `MappingSet`)."""
    ids = [pk for pk, *_ in plan.takes] + [pk for pk, *_ in plan.refused] + [pk for pk, _ in plan.held]
    if not ids:
        return
    links = {link.pk: link for link in ProviderLink.objects.filter(pk__in=ids).order_by("contact_id")}
    contacts = {c.pk: c for c in Contact.objects.select_for_update(no_key=True).filter(
        pk__in=[link.contact_id for link in links.values()]).order_by("pk")}  # fmt: skip
    locked = {link.pk: link for link in ProviderLink.objects.select_for_update().filter(pk__in=ids).order_by("pk")}
    changed: list[Contact] = []
    now = timezone.now().isoformat()
    mapped = mapping_set(provider=provider)
    for pk, value, _raw in plan.takes:
        link, contact = locked.get(pk), contacts.get(links[pk].contact_id)
        if link is None or contact is None or contact.is_deleted:
            continue
        link.field_hashes[target.name], link.field_seen_at[target.name] = field_hash(target.name, value), now
        if decide(target.rule, current_value(contact, target.name, mapped), value) == TAKE:
            contact.set_value(target.name, value)
            contact.field_times[time_key(target.name)] = now
            contact.version += 1
            contact.save()
            changed.append(contact)
        link.save(update_fields=["field_hashes", "field_seen_at", "updated_at"])
    changes_record_many(contacts=changed, fields=[target.name], source=ChangeSource.BACKFILL)
    for pk, code, message, raw in plan.refused:
        link, contact = locked.get(pk), contacts.get(links[pk].contact_id)
        if link is None or contact is None:
            continue
        link.field_hashes[target.name] = field_hash(target.name, raw)
        held = field_hash(target.name, current_value(contact, target.name, mapped))
        extra = {"remote_field": target.remote_field} if target.custom else {}
        issue_raise(link, field=target.name, code=code, message=message, held=held, crm=link.field_hashes[target.name],
                    **extra)  # fmt: skip
        link.save(update_fields=["field_hashes", "issues", "updated_at"])
    learned = []
    for pk, value in plan.held:
        link = locked.get(pk)
        if link is not None and target.name not in link.field_hashes:
            link.field_hashes[target.name] = field_hash(target.name, value)
            learned.append(link)
    ProviderLink.objects.bulk_update(learned, ["field_hashes"])
    if changed:
        links_mark_pending_many(contacts=changed, exclude=[provider])


def _write(target: _Field, provider_name: str, link_ids: list[int]) -> None:
    """SyncRoot's values to the CRM, in batch calls, each link claimed while its write is in flight."""
    provider = get_provider(provider_name)
    for start in range(0, len(link_ids), provider.batch_size):
        chunk = link_ids[start : start + provider.batch_size]
        items, values = _claim_writes(target, provider_name, chunk)
        if not items:
            continue
        try:
            results = provider.push(items)
        except ProviderError as error:
            results = [PushResult(key=item.key, external_id=item.external_id, error=error) for item in items]
        _record_writes(target, provider_name, results, values)


def _claim_writes(target: _Field, provider: str, link_ids: list[int]) -> tuple[list[PushItem], dict[int, Any]]:
    lease = timezone.now() + timedelta(seconds=settings.SYNC_CLAIM_LEASE_SECONDS)
    items: list[PushItem] = []
    values: dict[int, Any] = {}
    busy: list[int] = []
    mapped = mapping_set(provider=provider)
    with transaction.atomic():
        links = (
            ProviderLink.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("contact")
            .filter(pk__in=link_ids, external_id__isnull=False)
            .order_by("pk")
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        now = timezone.now()
        for link in links:
            if link.contact.is_deleted:
                continue
            if link.claimed_until and link.claimed_until > now:
                busy.append(link.pk)  # a drain is sending this contact: it sends the field after it
                continue
            value = current_value(link.contact, target.name, mapped)
            if link.field_hashes.get(target.name) == field_hash(target.name, value):
                continue  # the CRM holds it already
            if target.name in blocked_fields(link, {target.name: value}):
                continue  # the CRM's value was refused by SyncRoot: a person decides
            item, why = target.push_item(link, value)
            if why is not None:
                extra = {"remote_field": target.remote_field} if target.custom else {}
                issue_raise(link, field=target.name, code=why[0], message=why[1],
                            held=field_hash(target.name, value), **extra)  # fmt: skip
                link.save(update_fields=["issues", "updated_at"])
                continue
            items.append(item)
            values[link.pk] = value
        ProviderLink.objects.filter(pk__in=list(values)).update(claimed_until=lease, claimed_by=backend)
        if busy:
            ProviderLink.objects.filter(pk__in=busy).update(status=LinkStatus.PENDING, pending_since=now, backfill=True)
    return items, values


def _record_writes(target: _Field, provider: str, results: list[PushResult], values: dict[int, Any]) -> None:
    now = timezone.now()
    failed: list[int] = []
    with transaction.atomic():
        for link in ProviderLink.objects.select_for_update().filter(pk__in=[r.key for r in results]).order_by("pk"):
            result = next(r for r in results if r.key == link.pk)
            if not result.ok:
                failed.append(link.pk)
                link.last_error, link.last_error_code = result.error.message[:2000], result.error.code[:64]
                link.status, link.pending_since = LinkStatus.PENDING, now  # the forwarder carries it from here
                link.backfill = True  # after the live changes (crm.budget)
                link.save(update_fields=["last_error", "last_error_code", "status", "pending_since", "backfill",
                                         "updated_at"])  # fmt: skip
                continue
            name = target.name
            held_before = [link.field_hashes.get(name, ""), *prior_hashes(link, name)]
            link.field_prior_hashes[name] = list(dict.fromkeys(held_before))[:PRIOR_HASHES_KEPT]
            link.field_hashes[name] = field_hash(name, values[link.pk])
            link.field_written_at[name] = now.isoformat()
            link.issues = [i for i in link.issues if i["field"] != name]
            link.save(update_fields=["field_hashes", "field_prior_hashes", "field_written_at", "issues", "updated_at"])
        ProviderLink.objects.filter(pk__in=list(values)).update(claimed_until=None, claimed_by=None)
    if failed:
        dispatch.enqueue_drain(providers=[provider])


def field_backfills_resume() -> int:
    """Sweeper: send again the backfills whose message was lost or whose worker died."""
    stale = timezone.now() - STALE_AFTER
    waiting = FieldMapping.objects.filter(backfill_status__in=(BackfillStatus.PENDING, BackfillStatus.RUNNING),
                                          updated_at__lt=stale)  # fmt: skip
    ids = list(waiting.values_list("pk", flat=True))
    for mapping_id in ids:
        dispatch.send_field_backfill(mapping_id=mapping_id)
    return len(ids)


# --- the preview -----------------------------------------------------------------------------------
def mapping_preview(
    *, provider: str, field: str, remote_field: str, rule: str, value_map: dict[str, str] | None = None
) -> dict[str, Any]:
    """What a would-be mapping would change (how many contacts on each side, up to 20 samples),
    checked as `mapping_create` checks it; nothing is saved or written anywhere."""
    if provider not in connected_providers():
        raise MappingInvalid(f"No CRM named {provider!r} is connected.", details={"provider": ["Not connected."]})
    if field in SYNCED_FIELDS:
        builtin = builtin_remote_field(provider, field)
        if remote_field != builtin:
            raise MappingInvalid(f"The built-in field {field} maps onto {builtin} only.",
                                 details={"remote_field": [f"Only {builtin!r}."]})  # fmt: skip
        if field == IDENTITY_FIELD and rule != MappingRule.TWO_WAY:
            raise IdentityMapping("The email mapping's rule is always two_way.", details={"rule": ["Only 'two_way'."]})
        would_be = FieldMapping(provider=provider, field=field, remote_field=remote_field, rule=rule)
        return field_preview(mapping=would_be)
    definition = CustomField.objects.filter(key=field).first()
    if definition is None:
        raise MappingInvalid(
            f"No field {field!r}: create it with POST /fields first.", details={"field": ["Unknown field."]}
        )
    remote = remote_field_get(provider, remote_field)
    mapping_check(definition, remote, rule=rule, value_map=dict(value_map or {}))
    would_be = FieldMapping(provider=provider, field=field, remote_field=remote_field, rule=rule,
                            value_map=dict(value_map or {}), remote_spec=remote_spec(remote))  # fmt: skip
    return field_preview(mapping=would_be)


def field_preview(*, mapping: FieldMapping) -> dict[str, Any]:
    """What a would-be mapping (not saved) would change: counts on each side and up to 20 samples.

    Reads the CRM (batched as the backfill does); writes nothing anywhere."""
    provider = get_provider(mapping.provider)
    target = _Field(mapping, provider.label or mapping.provider)
    counts = {"syncroot": 0, "crm": 0, "refused": 0, "unchanged": 0}
    samples: list[dict[str, Any]] = []
    after = 0
    while True:
        links = list(
            _links(mapping.provider)
            .filter(pk__gt=after)
            .select_related("contact")
            .order_by("pk")[: provider.batch_size]
        )
        if not links:
            break
        records = _read(target, mapping.provider, links)
        plan = _plan(target, links, records)
        by_pk = {link.pk: link for link in links}
        counts["syncroot"] += len(plan.takes)
        counts["crm"] += len(plan.writes)
        counts["refused"] += len(plan.refused)
        counts["unchanged"] += len(links) - len(plan.takes) - len(plan.writes) - len(plan.refused)
        for pk, value, _raw in plan.takes:
            _sample(samples, by_pk[pk], "syncroot", before=target.syncroot_value(by_pk[pk].contact), after=value)
        for pk in plan.writes:
            link = by_pk[pk]
            crm, _why, _raw = target.crm_value(records[link.external_id])
            _sample(samples, link, "crm", before=crm, after=target.syncroot_value(link.contact))
        for pk, code, message, raw in plan.refused:
            _sample(samples, by_pk[pk], "refused", before=raw, after=None, reason={"code": code, "message": message})
        after = links[-1].pk
    return {"changes": counts, "samples": samples}


def _sample(samples: list, link: ProviderLink, side: str, *, before: Any, after: Any, **extra: Any) -> None:
    if len(samples) < SAMPLES:
        samples.append({"contact_id": str(link.contact_id), "external_id": link.external_id, "side": side,
                        "before": before, "after": after, **extra})  # fmt: skip
