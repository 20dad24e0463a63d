"""The forwarder: drain each CRM's pending links in batches, record what happened, retry or park.

No transaction is open while the CRM is called (it may take seconds, 30 s waiting for the rate
limiter), so an API write to a contact in flight never waits on a CRM:

1. claim: a short transaction takes a batch with `SELECT … FOR UPDATE SKIP LOCKED` and marks it
   claimed (`claimed_until`, `claimed_by` = our PostgreSQL backend), so no other drain takes it;
   a claim whose backend is gone (a killed worker) or whose lease ran out is void;
2. call the CRM with what the claim read;
3. record: another short transaction writes the results with a compare-and-set on the link's
   `pending_since`. A change made while the call ran (the API marks the link pending again) is not
   erased: the ledger of what was sent is recorded, the link stays pending and the newer version
   goes out next.

Every write is safe to repeat: a linked contact is updated by its stored external id, an unlinked
one is matched by email in the CRM before anything is created. A CRM that refuses our credentials
is paused (providers/crm_state.py): nothing more is sent to it, and its changes wait as they are.
"""

import json
import logging
import time
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone
from psycopg2.extras import execute_values

from contacts.models import Contact, is_blank
from crm.base import AuthExpired, Provider, ProviderError, PushItem, PushResult, RateLimited, Transient, field_hash
from crm.budget import Priority, backfill_wait, call_priority
from crm.registry import get_provider
from providers.backoff import retry_delay
from providers.crm_state import crm_is_paused, crm_mark_auth_failed
from providers.field_values import to_crm
from providers.inbound_fill import matched_records_fill
from providers.issues import counterparts_clear, issue_raise, issues_clear
from providers.ledger import PRIOR_HASHES_KEPT, changed_values, contact_values, prior_hashes
from providers.lifecycle import lifecycle_calls, merge_target
from providers.mappings import MappingSet, mapping_set, mappings_pinned
from providers.models import DeadLetter, DeadLetterStatus, LinkStatus, MappingRule, ProviderLink, SyncAttempt
from syncroot.counters import sync_writes_record

logger = logging.getLogger(__name__)

ACTIVE = (LinkStatus.PENDING, LinkStatus.FAILED)


@dataclass
class DrainReport:
    claimed: int = 0
    synced: int = 0
    failed: int = 0
    parked: int = 0
    paused: bool = False  # the CRM refuses our credentials: nothing was (or will be) sent to it
    # Backfill links wait for this many seconds: the backfills' part of the API budget is spent.
    budget_wait: float | None = None


def due_links(*, provider: str):
    now = timezone.now()
    live_backends = RawSQL("SELECT pid FROM pg_stat_activity", [])
    return (
        ProviderLink.objects.filter(provider=provider, status__in=ACTIVE)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now) | ~Q(claimed_by__in=live_backends))
        # Written lately: held until SYNC_WRITE_SPACING_MS after that write (outbox.schedule_held).
        .filter(Q(synced_at__isnull=True) | Q(synced_at__lte=now - write_spacing()))
    )


def write_spacing() -> timedelta:
    return timedelta(milliseconds=settings.SYNC_WRITE_SPACING_MS)


# A lone change waits one short look for company. Once changes are seen arriving (more than one
# waits, or one is seen coming in), gaps up to SYNC_BATCH_QUIET_MS are part of the stream: a busy
# machine's API writes unevenly. SYNC_BATCH_LINGER_MS bounds the wait in all.
_FIRST_LOOK_S = 0.03


def _due_state(provider: str) -> tuple[int, Any]:
    """How many links are due, and the latest time one of them was marked pending.

    The time tells a stream of edits to the same contacts (the count stays, the time moves).
    """
    state = due_links(provider=provider).aggregate(count=Count("pk"), latest=Max("pending_since"))
    return state["count"], state["latest"]


def _linger(*, provider: str, batch_size: int) -> None:
    """Wait while a stream of changes fills the batch; a lone change goes after one short look."""
    began = time.monotonic()
    deadline = began + settings.SYNC_BATCH_LINGER_MS / 1000
    count, latest = _due_state(provider)
    last_arrival, quiet = began, (settings.SYNC_BATCH_QUIET_MS / 1000 if count > 1 else _FIRST_LOOK_S)
    while 0 < count < batch_size and time.monotonic() < deadline:
        time.sleep(_FIRST_LOOK_S)
        newer, newest = _due_state(provider)
        if newer > count or (newest is not None and latest is not None and newest > latest):
            count, latest = newer, newest
            last_arrival, quiet = time.monotonic(), settings.SYNC_BATCH_QUIET_MS / 1000
            continue
        count = newer
        if time.monotonic() - last_arrival >= quiet:  # the stream stopped: send what we have
            return


def _batch_size(provider: Provider) -> int:
    """The CRM's batch, or its bulk batch when more than its bulk threshold is waiting (a backfill
    or an initial sync): one bulk job then carries thousands of records in a handful of calls."""
    if not (provider.bulk_batch_size and provider.bulk_threshold):
        return provider.batch_size
    waiting = due_links(provider=provider.name)[: provider.bulk_threshold + 1].count()
    return provider.bulk_batch_size if waiting > provider.bulk_threshold else provider.batch_size


@dataclass(frozen=True)
class Claim:
    """A claimed link as the claim read it: the contact's state sent, and the CAS token."""

    link: ProviderLink
    pending_since: datetime | None
    version: int


def _claim(*, provider_name: str, batch_size: int, live_only: bool = False) -> list[Claim]:
    """Short transaction: take up to `batch_size` due links and mark them claimed, live changes
    before backfills (`live_only`: no backfill link), each oldest first."""
    lease = timezone.now() + timedelta(seconds=settings.SYNC_CLAIM_LEASE_SECONDS)
    due = due_links(provider=provider_name)
    if live_only:
        due = due.filter(backfill=False)
    with transaction.atomic():
        links = list(
            due.select_for_update(skip_locked=True, of=("self",))
            .select_related("contact")
            .order_by("backfill", "pending_since")[:batch_size]
        )
        if links:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backend = cursor.fetchone()[0]
            ProviderLink.objects.filter(pk__in=[link.pk for link in links]).update(
                claimed_until=lease, claimed_by=backend
            )
    return [Claim(link=link, pending_since=link.pending_since, version=link.contact.version) for link in links]


def drain(*, provider_name: str, linger: bool = True) -> DrainReport:
    """Push one batch of the provider's due links. Returns what happened to it."""
    provider = get_provider(provider_name)
    if crm_is_paused(provider=provider_name):
        return DrainReport(paused=True)
    batch_size = _batch_size(provider)
    if linger and batch_size == provider.batch_size:
        _linger(provider=provider_name, batch_size=batch_size)
    budget_wait = backfill_wait(provider.config)
    claims = _claim(provider_name=provider_name, batch_size=batch_size, live_only=budget_wait is not None)
    report = DrainReport(claimed=len(claims), budget_wait=budget_wait)
    if not claims:
        return report
    # The batch's calls are a backfill's unless a live change is in it (crm.budget).
    live = any(not claim.link.backfill for claim in claims)
    with call_priority(Priority.LIVE if live else Priority.BACKFILL), mappings_pinned():
        _send(provider_name, provider, claims, report)
    return report


def _send(provider_name: str, provider: Provider, claims: list[Claim], report: DrainReport) -> None:
    """Call the CRM for the claimed links and record what it did."""
    items: list[PushItem] = []
    unsent: list[PushResult] = []  # nothing to send: recorded as synced as they are
    outgoing: dict[int, Outgoing] = {}
    mapped = mapping_set(provider=provider_name)
    for claim in claims:
        link, contact = claim.link, claim.link.contact
        if contact.is_deleted:
            if link.external_id:
                target = merge_target(link)
                items.append(PushItem(key=link.pk, values={}, external_id=link.external_id, delete=True,
                                      merge_into=target))  # fmt: skip
            else:  # never reached this CRM: nothing to delete there
                unsent.append(PushResult(key=link.pk, operation="delete"))
            continue
        out = outgoing[link.pk] = _outgoing(changed_values(contact=contact, link=link), mapped, provider.label)
        if link.external_id and not out.values and not out.remote and not link.restore_pending:
            unsent.append(PushResult(key=link.pk, external_id=link.external_id))
            continue
        items.append(PushItem(key=link.pk, values=out.values, external_id=link.external_id, remote=out.remote,
                              restore=link.restore_pending and bool(link.external_id)))  # fmt: skip
    results: list[PushResult] = []
    try:
        if items:  # outside any transaction: a slow CRM holds no lock
            items, results = lifecycle_calls(provider=provider, items=items)
            try:
                results += provider.push(items) if items else []
            except ProviderError as exc:
                results += [PushResult(key=item.key, external_id=item.external_id, error=exc) for item in items]
        version = provider.config.get("credentials_version")
        synced = _record(provider_name, claims, outgoing, results, unsent, report, credentials_version=version)
    except Exception:
        # Let go of the claim at once (the next drain sends the batch again: every write is safe
        # to repeat) rather than leave it to the lease while this process lives on.
        ProviderLink.objects.filter(pk__in=[claim.link.pk for claim in claims]).update(
            claimed_until=None, claimed_by=None
        )
        raise
    _writes_count(provider_name, claims, synced, sent={item.key for item in items})
    if matched := [link.pk for link in synced if _fills_blanks(link)]:
        matched_records_fill(provider_name=provider_name, link_ids=matched)
    logger.info(
        "drained batch",
        extra={"provider": provider_name, "claimed": report.claimed, "synced": report.synced,
               "failed": report.failed, "parked": report.parked, "paused": report.paused},
    )  # fmt: skip


def _writes_count(provider_name: str, claims: list[Claim], synced: list[ProviderLink], *, sent: set[int]) -> None:
    """For the health page: each write that reached the CRM, with its lag since the change."""
    since = {claim.link.pk: claim.pending_since for claim in claims}
    now = timezone.now()
    lags = [(now - at).total_seconds() for link in synced if link.pk in sent and (at := since.get(link.pk))]
    sync_writes_record(provider=provider_name, lags=lags)


@dataclass
class Outgoing:
    """What a push carries for one contact: built-in values by SyncRoot's names, mapped custom
    fields by the CRM's (translated), and the custom values that do not fit the CRM's field."""

    values: dict[str, Any] = dc_field(default_factory=dict)
    remote: dict[str, Any] = dc_field(default_factory=dict)
    sent: dict[str, Any] = dc_field(default_factory=dict)  # by SyncRoot's names, for the ledger
    refused: dict[str, tuple[str, str, Any]] = dc_field(default_factory=dict)  # field → (code, message, value)


def _outgoing(values: dict[str, Any], mapped: MappingSet, crm: str) -> Outgoing:
    out = Outgoing()
    for name, value in values.items():
        mapping = mapped.custom.get(name)
        if mapping is None:
            out.values[name] = out.sent[name] = value
            continue
        remote_value, refusal = to_crm(mapping, value, crm=crm)
        if refusal is not None:
            out.refused[name] = (*refusal, value)
        else:
            out.remote[mapping.remote_field] = remote_value
            out.sent[name] = value
    return out


def _refused_record(link: ProviderLink, out: Outgoing | None, mapped: MappingSet) -> None:
    """Values that do not fit the CRM's field: an issue on the link each (blocking the value while
    SyncRoot holds it, so it is not tried again and again), never a cut or coerced value."""
    for name, (code, message, value) in (out.refused if out else {}).items():
        issue_raise(link, field=name, code=code, message=message, held=field_hash(name, value),
                    remote_field=mapped.custom[name].remote_field)  # fmt: skip


def _fills_blanks(link: ProviderLink) -> bool:
    """SyncRoot blanks the CRM's record can fill: after a create matched to an existing record (also
    when the contact changed again during the call: the blanks are still blank), and wherever a
    field SyncRoot is preferred for unless blank went blank while the CRM holds a value (the blank
    winner takes the other side's value)."""
    mapped = mapping_set(provider=link.provider)
    values = contact_values(link.contact, mapped)
    if link.matched and link.status in (LinkStatus.SYNCED, LinkStatus.PENDING):
        return any(is_blank(value) for value in values.values())
    return link.status == LinkStatus.SYNCED and any(
        mapped.rules[name] == MappingRule.PREFER_SYNCROOT_UNLESS_BLANK
        and is_blank(value)
        and link.field_hashes.get(name) not in (None, field_hash(name, ""))
        for name, value in values.items()
    )


def _record(
    provider_name: str,
    claims: list[Claim],
    outgoing: dict[int, Outgoing],
    results: list[PushResult],
    unsent: list[PushResult],
    report: DrainReport,
    *,
    credentials_version: str | None = None,
) -> list[ProviderLink]:
    """Short transaction: write the results on the links as they are now, and let go of the claim.
    Returns the links written as synced."""
    by_pk = {claim.link.pk: claim for claim in claims}
    mapped = mapping_set(provider=provider_name)
    refused: AuthExpired | None = None
    with transaction.atomic():
        current = ProviderLink.objects.select_for_update().filter(pk__in=list(by_pk)).order_by("pk")
        fresh = {link.pk: link for link in current}
        versions = {pk: claim.version for pk, claim in by_pk.items()}
        # A CRM's change applied during the call moves the contact on without marking that CRM
        # pending (it held the value then), but the write just made may have overwritten it there.
        now_at = dict(Contact.objects.filter(pk__in=[c.link.contact_id for c in claims]).values_list("pk", "version"))
        synced: list[ProviderLink] = []
        for result in [*unsent, *results]:
            link = fresh.get(result.key)
            if link is None:  # the contact was erased meanwhile
                continue
            claim = by_pk[result.key]
            link.contact = claim.link.contact  # the state that was sent
            superseded = link.pending_since != claim.pending_since
            if result.ok:
                out = outgoing.get(result.key)
                newer_since = link.pending_since
                synced.append(_mark_synced(link, result, dict(out.sent) if out else {}, claim.version))
                _refused_record(link, out, mapped)
                if superseded:  # changed again during the call: stays pending, the newer version goes next
                    link.status, link.pending_since = LinkStatus.PENDING, newer_since
                elif now_at.get(link.contact_id, claim.version) > claim.version and link.status == LinkStatus.SYNCED:
                    link.status, link.pending_since = LinkStatus.PENDING, timezone.now()  # checked again next
            elif isinstance(result.error, AuthExpired):
                refused = result.error  # a connection outage, not this record's fault: left as it is
                report.paused = True
            else:
                _mark_failed(link, result, claim.version, report, superseded=superseded)
        logged = [result for result in results if result.key in fresh]
        if logged:
            _log_attempts(provider_name, by_pk, logged, batch_size=len(results))
        _save_synced(synced, versions, report)
        ProviderLink.objects.filter(pk__in=list(by_pk)).update(claimed_until=None, claimed_by=None)
    if refused is not None:
        crm_mark_auth_failed(provider=provider_name, error=str(refused), credentials_version=credentials_version)
    return synced


def _log_attempts(provider_name: str, by_pk: dict, results: list[PushResult], *, batch_size: int) -> None:
    SyncAttempt.objects.bulk_create(
        SyncAttempt(
            link_id=result.key,
            provider=provider_name,
            contact_id=by_pk[result.key].link.contact_id,
            contact_version=by_pk[result.key].version,
            operation=result.operation,
            outcome=_outcome(result.error),
            error_code=result.error.code[:64] if result.error else "",
            message=result.error.message[:2000] if result.error else "",
            batch_size=batch_size,
        )  # fmt: skip
        for result in results
    )


def _outcome(error: ProviderError | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, AuthExpired):
        return "auth"
    return "transient" if error.retryable else "permanent"


SYNCED_FIELDS_SAVED = (
    "status", "external_id", "field_hashes", "field_prior_hashes", "field_written_at", "issues", "synced_version",
    "synced_at",
    "attempts",
    "last_error", "last_error_code", "next_attempt_at", "pending_since", "updated_at",
)  # fmt: skip


def _mark_synced(link: ProviderLink, result: PushResult, sent: dict, version: int) -> ProviderLink:
    """Record a success on the link in memory; `_save_synced` writes a batch of them at once."""
    link.had_error = bool(link.last_error_code)
    link.matched = result.operation == "match"
    link.status = LinkStatus.DELETED if link.contact.is_deleted else LinkStatus.SYNCED
    if result.external_id:
        link.external_id = result.external_id
    if result.operation in ("create", "match"):
        link.field_hashes, link.field_prior_hashes, link.field_written_at = {}, {}, {}
    if result.operation == "create":
        # A record we created holds nothing but what we sent: a later snapshot of it (a person's
        # edit of another field) showing those fields blank is no change of theirs.
        for field in contact_values(link.contact, mapping_set(provider=link.provider)):
            link.field_hashes.setdefault(field, field_hash(field, ""))
    now = timezone.now()
    # When the CRM applied the write: by its own clock when it says (the CRM's change times are on
    # that clock), else when its answer reached us, which is later: a person's change in between
    # would be taken for a late snapshot of the state before the write.
    written_at = (result.written_at or now).isoformat()
    for field, value in sent.items():
        # What the CRM held before this write and during our recent writes: a late snapshot of any
        # of those states is not a person's change (see providers.inbound._apply_fields).
        held_before = [link.field_hashes.get(field, ""), *prior_hashes(link, field)]
        link.field_prior_hashes[field] = list(dict.fromkeys(held_before))[:PRIOR_HASHES_KEPT]
        link.field_hashes[field] = field_hash(field, value)
        link.field_written_at[field] = written_at
    # The CRM now holds SyncRoot's value: whatever it held that SyncRoot had refused is gone.
    link.dropped_issues = issues_clear(link, sent)
    link.synced_version = version
    link.synced_at = link.updated_at = now
    link.attempts = 0
    link.last_error = link.last_error_code = ""
    link.next_attempt_at = link.pending_since = None
    return link


def _update_synced(links: list[ProviderLink]) -> None:
    """One UPDATE … FROM (VALUES …) for the batch: Django's bulk_update builds a CASE per column
    and row, which cost more CPU than the CRM call (about 1.3 ms per link)."""
    rows = [
        (link.pk, link.status, link.external_id, json.dumps(link.field_hashes), json.dumps(link.field_prior_hashes),
         json.dumps(link.field_written_at), json.dumps(link.issues), link.synced_version, link.synced_at,
         link.pending_since)
        for link in links
    ]  # fmt: skip
    query = f"""
        UPDATE {ProviderLink._meta.db_table} AS link SET
            status = v.status, external_id = v.external_id, field_hashes = v.field_hashes::jsonb,
            field_prior_hashes = v.field_prior_hashes::jsonb, field_written_at = v.field_written_at::jsonb,
            issues = v.issues::jsonb, synced_version = v.synced_version, synced_at = v.synced_at,
            updated_at = v.synced_at, attempts = 0,
            last_error = '', last_error_code = '', next_attempt_at = NULL, backfill = false,
            pending_since = v.pending_since::timestamptz
        FROM (VALUES %s) AS v (id, status, external_id, field_hashes, field_prior_hashes, field_written_at,
                               issues, synced_version, synced_at, pending_since)
        WHERE link.id = v.id
    """  # the table name is ours; every value is a parameter
    with connection.cursor() as cursor, connection.wrap_database_errors:  # IntegrityError as Django's
        execute_values(cursor.cursor, query, rows, page_size=len(rows))


def _save_synced(links: list[ProviderLink], versions: dict[int, int], report: DrainReport) -> None:
    """One UPDATE for the whole batch; row by row only when a CRM record is already linked elsewhere."""
    if not links:
        return
    try:
        with transaction.atomic():
            _update_synced(links)
        saved = links
    except IntegrityError:
        saved = []
        for link in links:
            try:
                with transaction.atomic():
                    link.save(update_fields=SYNCED_FIELDS_SAVED)
                saved.append(link)
            except IntegrityError:
                _linked_elsewhere(link, versions[link.pk], report)
    for link in saved:
        if link.dropped_issues:
            counterparts_clear(link.dropped_issues, provider=link.provider, contact_id=link.contact_id)
    resolved = [link.pk for link in saved if link.had_error]
    if resolved:  # what was parked for these links has now gone through
        DeadLetter.objects.filter(link_id__in=resolved, status=DeadLetterStatus.PARKED).update(
            status=DeadLetterStatus.RETRIED, resolved_at=timezone.now()
        )
    report.synced += len(saved)


def _linked_elsewhere(link: ProviderLink, version: int, report: DrainReport) -> None:
    """The CRM record matched by email is already linked to another contact."""
    external_id = link.external_id
    holder = (
        ProviderLink.objects.select_related("contact").filter(provider=link.provider, external_id=external_id).first()
    )
    link.refresh_from_db()
    if holder is not None and holder.contact.is_deleted:
        # The record of a deleted contact with the same email, whose deletion has not reached the
        # CRM yet: never take it over. Once it is deleted there, the next attempt creates a fresh
        # record (an attempt that keeps meeting it is counted, and parked in the end).
        error = Transient(
            f"CRM record {external_id} belongs to deleted contact {holder.contact_id}; "
            "waiting for its deletion to reach the CRM before creating a new record",
            code="MATCHED_DELETED_CONTACT",
        )
        _mark_failed(link, PushResult(key=link.pk, error=error, operation="match"), version, report)
        return
    # Another live contact is already linked to this CRM record: the operator decides.
    owner = holder.contact_id if holder else "?"
    message = f"CRM record {external_id} is already linked to contact {owner}"
    _park(link, code="LINKED_TO_OTHER_CONTACT", message=message, version=version)
    report.parked += 1


def _mark_failed(
    link: ProviderLink, result: PushResult, version: int, report: DrainReport, *, superseded: bool = False
) -> None:
    """Record a failure. `superseded`: the contact changed again during the call; the newer
    version is what goes next, so the link stays pending (no backoff, no attempt counted, not parked)."""
    error = result.error
    assert error is not None
    if result.external_id and not link.external_id:
        link.external_id = result.external_id
    if (
        error.status == 404
        and link.external_id
        and not link.contact.is_deleted
        and result.external_id in (None, link.external_id)
    ):
        # The CRM record is gone (deleted there, webhook lost): send the whole contact again,
        # matched by email or created, rather than parking a change nobody can deliver.
        link.external_id, link.field_hashes, link.field_prior_hashes, link.field_written_at = None, {}, {}, {}
        link.attempts += 1
        link.status, link.next_attempt_at = LinkStatus.PENDING, None
        link.last_error, link.last_error_code = error.message[:2000], error.code[:64]
        link.save()
        report.failed += 1
        return
    if superseded:
        link.last_error, link.last_error_code = error.message[:2000], error.code[:64]
        link.save()
        report.failed += 1
        return
    # A busy CRM is not this record's fault: a 429, or a 503 naming when to come back (Salesforce
    # has no 429; its throttling answer is 503 SERVER_UNAVAILABLE with Retry-After).
    overloaded = error.status == 503 and getattr(error, "retry_after", None) is not None
    counts = not (isinstance(error, RateLimited) or overloaded)
    attempts = link.attempts + (1 if counts else 0)
    if not error.retryable or attempts >= settings.SYNC_MAX_ATTEMPTS:
        link.attempts = attempts
        _park(link, code=error.code, message=error.message, version=version)
        report.parked += 1
        return
    delay = retry_delay(attempt=attempts or 1, retry_after=getattr(error, "retry_after", None))
    link.status = LinkStatus.FAILED
    link.attempts = attempts
    link.last_error, link.last_error_code = error.message[:2000], error.code[:64]
    link.next_attempt_at = timezone.now() + timedelta(seconds=delay)
    link.save()
    report.failed += 1


def _park(link: ProviderLink, *, code: str, message: str, version: int) -> None:
    link.status = LinkStatus.PARKED
    link.last_error, link.last_error_code = message[:2000], code[:64]
    link.next_attempt_at = None
    link.save()
    DeadLetter.objects.create(
        link=link, provider=link.provider, contact_id=link.contact_id, contact_version=version,
        error_code=code[:64], error_message=message, attempts=link.attempts,
    )  # fmt: skip
    logger.warning(
        "sync parked",
        extra={
            "provider": link.provider,
            "contact_id": str(link.contact_id),
            "error_code": code,
            "attempts": link.attempts,
        },
    )
