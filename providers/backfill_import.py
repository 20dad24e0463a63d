"""Backfill CRM → SyncRoot: read every contact of a CRM, oldest change first, and apply it.

Every record goes through `change_apply`, the one apply path of webhooks and the reconciler, so
matching by email, the echo ledger and forwarding to the other CRMs behave exactly as for live
changes. Records are handled in chunks: one lookup per chunk finds what SyncRoot already holds,
so a re-run or a resumed overlap skips provable no-ops without a transaction each, and dry runs
classify from those lookups without writing anything.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.db.models.functions import Lower
from django.utils import timezone

from contacts.models import Contact
from contacts.selectors import normalise_email
from crm.base import InboundChange, Provider, ProviderError, Transient, field_hash
from crm.budget import BudgetSpent, Priority, call_priority
from crm.registry import connected_providers, get_provider
from providers.backfill import (
    SYNCROOT,
    BackfillReport,
    Progress,
    Silent,
    checkpoint_clear,
    checkpoint_get,
    checkpoint_key,
    checkpoint_save,
    drain_all,
)
from providers.backoff import retry_delay
from providers.import_create import records_create_many
from providers.inbound import (
    APPLIED,
    CONFLICT,
    CREATED,
    NO_EMAIL_OUTCOME,
    REFUSED,
    UNCHANGED,
    is_linked,
    value_taken,
)
from providers.issues import DUPLICATE_RECORD, split_values
from providers.ledger import changed_values
from providers.lifecycle import record_change_apply
from providers.mappings import mapping_rules
from providers.models import ChangeSource, LinkStatus, ProviderLink, RecordIssue
from providers.prefetch import prefetched

logger = logging.getLogger(__name__)

READ_RETRIES = 5  # consecutive failed reads before the run stops (its checkpoint is kept)
READ_RETRY_CAP = 60.0  # seconds


def backfill_from_crm(
    *,
    provider_name: str,
    dry_run: bool = False,
    restart: bool = False,
    limit: int | None = None,
    push_now: bool = False,
    chunk_size: int = 1000,
    progress: Progress | None = None,
) -> BackfillReport:
    """Read every contact of the CRM (oldest change first) and apply it to SyncRoot.

    Dry runs classify each record with read-only lookups instead of applying it.
    """
    progress = progress or Silent()
    provider = get_provider(provider_name)
    key = checkpoint_key(source=provider_name)
    report = BackfillReport(source=provider_name, targets=[SYNCROOT], dry_run=dry_run)
    cursor = None if restart else checkpoint_get(key=key)
    run = _Run(
        provider_name=provider_name, key=key, report=report, progress=progress, dry_run=dry_run,
        chunk_size=chunk_size, modstamp=cursor.modstamp if cursor else None, last_id=cursor.last_id if cursor else "",
    )  # fmt: skip
    if cursor:
        report.resumed_from = f"{run.modstamp.isoformat() if run.modstamp else '-'} / {run.last_id or '-'}"
    started = time.monotonic()
    progress.start(label=f"{provider_name} → syncroot", total=_crm_total(provider_name, run.modstamp))
    try:
        with call_priority(Priority.BACKFILL):  # after live changes, within the backfills' budget
            finished = _read_all(provider, run=run, limit=limit)
        run.flush()
        if finished:
            report.finished = True
        else:
            report.stop(reason="limit", text=f"stopped at --limit {limit}")
    except BudgetSpent as exc:
        run.flush()
        report.stop(reason="budget", text=f"paused: {exc}; run it again after {_resume_time(exc)} to go on")
    except ProviderError as exc:
        run.flush()  # what was read is handled, so the checkpoint can move past it
        report.stop(reason="error", text=f"{provider_name} failed while reading: {exc}")
    except KeyboardInterrupt:
        report.stop(reason="interrupted", text="interrupted")
    finally:
        progress.close()
        if not dry_run:
            if report.finished:
                checkpoint_clear(key=key)
            elif run.unsaved:
                checkpoint_save(key=key, modstamp=run.modstamp, last_id=run.last_id)
    if not dry_run:
        row = report.row(SYNCROOT)
        if push_now:
            report.forwarded = drain_all(connected_providers(), progress=progress)
        elif row.created + row.matched + row.updated:
            report.waiting_for_workers = [name for name in connected_providers() if name != provider_name]
    report.elapsed = time.monotonic() - started
    logger.info(
        "backfill from crm",
        extra={"provider": provider_name, "dry_run": dry_run, "counts": asdict(report.row(SYNCROOT)),
               "finished": report.finished},
    )  # fmt: skip
    return report


def _resume_time(exc: BudgetSpent) -> str:
    """When the budget frees up, in the server's time zone to the minute."""
    at = timezone.localtime(timezone.now() + timedelta(seconds=exc.retry_after or 0))
    return at.strftime("%Y-%m-%d %H:%M %Z")


def _read_all(provider: Provider, *, run: _Run, limit: int | None) -> bool:
    """Hand every change after the run's position to it; False when `limit` stopped the read.

    A timeout or 429 while paging (a backfill reads for minutes, sharing the CRM's budget with
    live traffic) restarts the read from the position reached, after a backoff.
    """
    failures = 0
    while True:
        try:
            # The CRM's next pages come in while this chunk is written (at most two chunks ahead).
            changes = provider.changes_since(modstamp=run.modstamp, last_id=run.last_id)
            for change in prefetched(changes, depth=2 * run.chunk_size):
                run.add(change)
                failures = 0
                if limit and run.read >= limit:
                    return False
            return True
        except Transient as exc:
            failures += 1
            if failures > READ_RETRIES or isinstance(exc, BudgetSpent):  # the budget frees up in hours
                raise
            run.flush()
            delay = min(retry_delay(attempt=failures, retry_after=getattr(exc, "retry_after", None)), READ_RETRY_CAP)
            logger.warning(
                "backfill read failed; resuming", extra={"provider": provider.name, "error": str(exc), "delay": delay}
            )
            time.sleep(delay)


@dataclass
class _Run:
    """One backfill's position in the CRM's (modstamp, id) order, and its chunk of records read."""

    provider_name: str
    key: str
    report: BackfillReport
    progress: Progress
    dry_run: bool
    chunk_size: int
    modstamp: datetime | None
    last_id: str
    read: int = 0
    unsaved: int = 0  # records handled since the checkpoint was last stored
    buffer: list[InboundChange] = field(default_factory=list)
    claimed: set[str] = field(default_factory=set)  # dry run: emails an earlier record would take

    def add(self, change: InboundChange) -> None:
        self.buffer.append(change)
        self.read += 1
        if len(self.buffer) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        changes, self.buffer = self.buffer, []
        if not changes:
            return
        known = _Known.load(self.provider_name, changes, emails=self.dry_run)
        created: set[int] = set()
        if not self.dry_run:  # records SyncRoot knows nothing of: a few INSERTs for all of them
            fast, _ = records_create_many(
                provider=self.provider_name, changes=changes, known_ids=known.links, source=ChangeSource.BACKFILL
            )
            created = {id(change) for change in fast}
        for change in changes:
            if self.dry_run:
                _classify(self.provider_name, change, known=known, report=self.report, claimed=self.claimed)
            elif id(change) in created:
                self.report.row(SYNCROOT).created += 1
            else:
                _import_one(self.provider_name, change, known=known, report=self.report)
            if change.occurred_at is not None:  # the position moves only past handled records
                self.modstamp, self.last_id = change.occurred_at, change.external_id
            self.unsaved += 1
            self.progress.advance(1)
        if not self.dry_run:
            checkpoint_save(key=self.key, modstamp=self.modstamp, last_id=self.last_id)
            self.unsaved = 0


def _values(change: InboundChange) -> dict[str, str]:
    """The change's values that `change_apply` would take (those SyncRoot can hold: the others are
    refused and shown, never cut)."""
    return split_values(change.values, source="the CRM")[0]


@dataclass
class _Known:
    """What SyncRoot holds about one chunk of CRM records, read in a few queries."""

    links: dict[str, ProviderLink]  # by external id
    repeated: set[str]  # external ids read more than once in the chunk (changed while we read)
    by_email: dict[str, Contact] = field(default_factory=dict)
    linked: set = field(default_factory=set)  # ids of those contacts already linked to another record

    @classmethod
    def load(cls, provider_name: str, changes: list[InboundChange], *, emails: bool) -> _Known:
        ids = Counter(change.external_id for change in changes)
        links = ProviderLink.objects.select_related("contact").filter(provider=provider_name, external_id__in=ids)
        known = cls(links={link.external_id: link for link in links}, repeated={i for i, n in ids.items() if n > 1})
        if emails:
            wanted = {normalise_email(c.values.get("email") or "") for c in changes} - {""}
            contacts = Contact.objects.alias(email_ci=Lower("email")).filter(email_ci__in=wanted, deleted_at=None)
            known.by_email = {normalise_email(contact.email): contact for contact in contacts}
            known.linked = set(
                ProviderLink.objects.filter(contact__in=contacts, provider=provider_name, external_id__isnull=False)
                .values_list("contact_id", flat=True)
            )  # fmt: skip
        return known

    def link(self, external_id: str) -> ProviderLink | None:
        return self.links.get(external_id)

    def unchanged(self, change: InboundChange) -> bool:
        """Whether `change_apply` would leave every row as it is: the record is linked, SyncRoot and
        the ledger already hold each value, and the link is synced at the contact's version."""
        link = self.links.get(change.external_id)
        if link is None or change.external_id in self.repeated:
            return False
        contact = link.contact
        if contact.is_deleted:
            return True  # change_apply answers "stale" before writing anything
        if link.status != LinkStatus.SYNCED or link.synced_version != contact.version:
            return False
        for name, value in _values(change).items():
            if getattr(contact, name) != value or link.field_hashes.get(name) != field_hash(name, value):
                return False
        return not changed_values(contact=contact, link=link)


def _import_one(provider_name: str, change: InboundChange, *, known: _Known, report: BackfillReport) -> None:
    row = report.row(SYNCROOT)
    if change.deleted or known.unchanged(change):
        # Deletions reach SyncRoot through webhooks and the reconciler: an import brings in what exists.
        row.skipped += 1
        return
    # Like the reconciler: trust the echo ledger, not the last writer (the CRM record may be ours
    # from before a database restore, or carry a person's edit next to our write).
    change.from_integration = False
    try:
        if change.external_id in known.repeated:
            linked_before = is_linked(provider=provider_name, external_id=change.external_id)
        else:
            linked_before = change.external_id in known.links
        outcome = record_change_apply(provider=provider_name, change=change, source=ChangeSource.BACKFILL)
    except Exception as exc:  # one bad record must not stop the import: it is reported with its id
        logger.exception("backfill record failed", extra={"provider": provider_name, "external_id": change.external_id})
        report.fail(record=change.external_id, target=SYNCROOT, message=f"{type(exc).__name__}: {exc}")
        return
    if outcome == CREATED:
        row.created += 1
    elif outcome == CONFLICT:
        report.fail(record=change.external_id, target=SYNCROOT, message=_conflict_reason(provider_name, change))
    elif outcome in (REFUSED, NO_EMAIL_OUTCOME):  # shown as a record issue in the admin and /metrics
        report.fail(record=change.external_id, target=SYNCROOT, message=f"{outcome}: see the record issues")
    elif (
        outcome in (APPLIED, UNCHANGED)
        and not linked_before
        and (outcome == APPLIED or is_linked(provider=provider_name, external_id=change.external_id))
    ):
        row.matched += 1
    elif outcome == APPLIED:
        row.updated += 1
    else:
        row.skipped += 1


def _conflict_reason(provider_name: str, change: InboundChange) -> str:
    """What the record issue the apply raised says (an erased person's record is not an email clash)."""
    issue = RecordIssue.objects.filter(provider=provider_name, external_id=change.external_id).first()
    if issue is not None and issue.code != DUPLICATE_RECORD:
        return f"conflict: {issue.message}"
    return _conflict_message(provider_name, change)


def _conflict_message(provider_name: str, change: InboundChange) -> str:
    email = change.values.get("email", "")
    return (
        f"conflict: email {email!r} already belongs to another {provider_name} record or another contact; "
        f"merge the duplicates in {provider_name}, then run the backfill again"
    )


def _classify(
    provider_name: str, change: InboundChange, *, known: _Known, report: BackfillReport, claimed: set[str]
) -> None:
    """What `_import_one` would count, from the chunk's lookups only."""
    row = report.row(SYNCROOT)
    values = _values(change)
    link = known.link(change.external_id)
    if change.deleted or (link is not None and link.contact.is_deleted):
        row.skipped += 1
    elif link is not None:
        if _would_change(link, values, change):
            row.updated += 1
        else:
            row.skipped += 1
    elif not (email := normalise_email(values.get("email", ""))):
        row.skipped += 1
    elif email in claimed or (email in known.by_email and known.by_email[email].pk in known.linked):
        report.fail(record=change.external_id, target=SYNCROOT, message=_conflict_message(provider_name, change))
    else:
        claimed.add(email)  # a second record with this email would be refused as a conflict
        if email in known.by_email:
            row.matched += 1
        else:
            row.created += 1


def _would_change(link: ProviderLink, values: dict[str, str], change: InboundChange) -> bool:
    """Mirrors the field rule of `change_apply`: differs, is not our own write, and the field's
    mapping takes it (under `two_way`: it is newer)."""
    contact = link.contact
    when = change.occurred_at or timezone.now()
    rules = mapping_rules(provider=link.provider)
    for name, value in values.items():
        current = getattr(contact, name)
        same = normalise_email(current) == normalise_email(value) if name == "email" else current == value
        if same or link.field_hashes.get(name) == field_hash(name, value):
            continue
        known = contact.field_times.get(name)
        source_time = change.field_times.get(name, when)
        if value_taken(rules[name], value, current, source_time, datetime.fromisoformat(known) if known else None):
            return True
    return False


def _crm_total(provider_name: str, modstamp: datetime | None) -> int | None:
    """How many records the read will return, when the CRM can tell cheaply (for the progress bar)."""
    try:
        return get_provider(provider_name).count_since(modstamp=modstamp)
    except ProviderError:
        return None
