"""Backfill: push every SyncRoot contact to the CRMs, and what both directions share (the report,
checkpoints, in-process draining). CRM → SyncRoot imports live in `providers.backfill_import`.

Pushes only mark links pending and leave the writing to the forwarder (or drain in-process),
so matching by email happens in each provider's push exactly as for live changes.
The position is stored after every chunk in a `SyncCursor` row named `backfill:<source>`, so an
interrupted run resumes where it stopped; a finished run deletes it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from contacts.models import Contact
from crm import registry
from crm.base import ProviderError
from crm.budget import backfill_wait
from crm.registry import connected_providers, get_provider
from providers import dispatch
from providers.dispatch import enqueue_drain
from providers.models import LinkStatus, ProviderLink, SyncAttempt, SyncCursor
from providers.outbox import schedule_retry
from providers.sync import drain, due_links

logger = logging.getLogger(__name__)

SYNCROOT = "syncroot"
COLUMNS = ("created", "matched", "updated", "skipped", "failed")
KEY_LENGTH = SyncCursor._meta.get_field("provider").max_length
MAX_ERRORS_KEPT = 1000
MAX_ERRORS_KEPT_ = None  # enough to act on; a run failing more than this has one systemic cause


class Progress(Protocol):
    """What the service reports while it works (the command renders it as a progress bar)."""

    def start(self, *, label: str, total: int | None) -> None: ...

    def advance(self, count: int) -> None: ...

    def close(self) -> None: ...


class Silent:
    def start(self, *, label: str, total: int | None) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Tally:
    created: int = 0
    matched: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    queued: int = 0  # handed to the forwarder; how it went is known once the workers ran


@dataclass
class RecordError:
    record: str
    target: str
    message: str


@dataclass
class BackfillReport:
    source: str
    targets: list[str]
    dry_run: bool
    rows: dict[str, Tally] = field(default_factory=dict)
    errors: list[RecordError] = field(default_factory=list)
    resumed_from: str = ""  # the checkpoint this run started from
    finished: bool = False  # False: stopped early (limit, error, interrupt); the checkpoint is kept
    stopped: str = ""  # why it stopped early, for people
    stop_reason: str = ""  # limit | interrupted | error
    forwarded: dict[str, dict[str, int]] = field(default_factory=dict)  # in-process drains per CRM
    waiting_for_workers: list[str] = field(default_factory=list)  # CRMs with links left to the forwarder
    elapsed: float = 0.0

    def row(self, target: str) -> Tally:
        return self.rows.setdefault(target, Tally())

    def fail(self, *, record: str, target: str, message: str) -> None:
        self.row(target).failed += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(RecordError(record=record, target=target, message=message))

    def stop(self, *, reason: str, text: str) -> None:
        self.stop_reason, self.stopped = reason, text

    def as_dict(self) -> dict:
        return asdict(self)


# --- checkpoints -------------------------------------------------------------------------------
def checkpoint_key(*, source: str, targets: Iterable[str] = ()) -> str:
    """`backfill:<source>`, plus the targets of a push to only some CRMs (each has its own position)."""
    key = f"backfill:{source}"
    if not targets:
        return key
    named = f"{key}:{'+'.join(sorted(targets))}"
    if len(named) <= KEY_LENGTH:
        return named
    return f"{key}:{hashlib.sha256(named.encode()).hexdigest()[: KEY_LENGTH - len(key) - 1]}"


def checkpoint_get(*, key: str) -> SyncCursor | None:
    return SyncCursor.objects.filter(provider=key).first()


def checkpoint_save(*, key: str, modstamp: datetime | None, last_id: str) -> None:
    SyncCursor.objects.update_or_create(provider=key, defaults={"modstamp": modstamp, "last_id": last_id})


def checkpoint_touch(*, key: str) -> None:
    """The run is alive though its position did not move (it waits for the API budget)."""
    SyncCursor.objects.filter(provider=key).update(updated_at=timezone.now())


def checkpoint_clear(*, key: str) -> None:
    SyncCursor.objects.filter(provider=key).delete()


# --- SyncRoot → CRMs ---------------------------------------------------------------------------
def backfill_from_syncroot(
    *,
    targets: list[str] | None = None,
    dry_run: bool = False,
    restart: bool = False,
    limit: int | None = None,
    push_now: bool = False,
    relink: bool = False,
    chunk_size: int = 500,
    progress: Progress | None = None,
    checkpoint: str = "",
) -> BackfillReport:
    """Queue every live contact for every target CRM whose link is not synced at the contact's version.

    Without `push_now` one forwarder task per CRM is enqueued at the end; with it, each chunk is
    drained here and counted by what the CRM did (create, match by email, update). `relink`: the
    CRM was emptied or replaced (another portal or org, a restarted sandbox), so the record ids
    held for it mean nothing: forget them and send every contact again, matched by email or created.
    """
    progress = progress or Silent()
    connected = connected_providers()
    for name in targets or ():
        get_provider(name)  # LookupError for a CRM that is not connected
    names = [name for name in connected if name in set(targets)] if targets else connected
    # Every connected CRM named one by one is the same run as naming none.
    key = checkpoint or checkpoint_key(source=SYNCROOT, targets=names if set(names) != set(connected) else ())
    report = BackfillReport(source=SYNCROOT, targets=names, dry_run=dry_run)
    for name in names:
        report.row(name)
    cursor = None if restart else checkpoint_get(key=key)
    last_id = cursor.last_id if cursor else ""
    report.resumed_from = last_id
    started, done = time.monotonic(), 0
    # Pushes are counted by the attempts the forwarder records from here on.
    since = (SyncAttempt.objects.aggregate(last=Max("pk"))["last"] or 0) if push_now else None
    contacts = Contact.objects.filter(deleted_at__isnull=True).order_by("pk")
    remaining = contacts.filter(pk__gt=last_id) if last_id else contacts
    total = remaining.count()
    progress.start(label=f"syncroot → {', '.join(names)}", total=min(total, limit) if limit else total)
    try:
        while True:
            size = min(chunk_size, limit - done) if limit else chunk_size
            chunk = list((contacts.filter(pk__gt=last_id) if last_id else contacts)[:size])
            if not chunk:
                report.finished = True
                break
            _push_chunk(chunk, names, report=report, dry_run=dry_run, since=since, relink=relink)
            last_id, done = str(chunk[-1].pk), done + len(chunk)
            if not dry_run:
                checkpoint_save(key=key, modstamp=None, last_id=last_id)
            progress.advance(len(chunk))
            if limit and done >= limit:
                report.stop(reason="limit", text=f"stopped at --limit {limit}")
                break
    except ProviderError as exc:
        report.stop(reason="error", text=f"push failed: {exc}")
    except KeyboardInterrupt:
        report.stop(reason="interrupted", text="interrupted")
    finally:
        progress.close()
    if not dry_run:
        if report.finished:
            checkpoint_clear(key=key)
        queued = [name for name in names if report.rows[name].queued]
        if queued:
            report.waiting_for_workers = queued
            # One forwarder task per CRM, not one per contact: it drains batch after batch.
            transaction.on_commit(lambda: enqueue_drain(providers=queued))
    report.elapsed = time.monotonic() - started
    logger.info(
        "backfill from syncroot",
        extra={"targets": names, "dry_run": dry_run, "finished": report.finished,
               "counts": {name: asdict(tally) for name, tally in report.rows.items()}},
    )  # fmt: skip
    return report


def _in_sync(link: ProviderLink | None, contact: Contact) -> bool:
    return bool(
        link is not None
        and link.external_id
        and link.status == LinkStatus.SYNCED
        and link.synced_version == contact.version
    )


def _live_pending(link: ProviderLink | None) -> bool:
    return link is not None and link.status == LinkStatus.PENDING and not link.backfill


# What a relink resets: the new links' defaults (no record id, nothing written, no attempts).
_RELINK_FIELDS = (
    "external_id", "synced_version", "synced_at", "field_hashes", "field_prior_hashes", "field_written_at",
    "field_seen_at", "attempts", "last_error", "last_error_code",
)  # fmt: skip


def _push_chunk(
    chunk: list[Contact],
    names: list[str],
    *,
    report: BackfillReport,
    dry_run: bool,
    since: int | None,
    relink: bool = False,
) -> None:
    """Mark the chunk's out-of-sync links pending (every link with `relink`); with `since` (push
    now) send and count them."""
    links = {
        (link.contact_id, link.provider): link
        for link in ProviderLink.objects.filter(contact__in=chunk, provider__in=names)
    }
    for name in names:
        row = report.row(name)
        due = list(chunk) if relink else [c for c in chunk if not _in_sync(links.get((c.pk, name)), c)]
        # A live change already on its way keeps its place ahead of the backfill.
        marked = due if relink else [c for c in due if not _live_pending(links.get((c.pk, name)))]
        if not dry_run and marked:
            now = timezone.now()
            ProviderLink.objects.bulk_create(
                [
                    ProviderLink(contact=c, provider=name, status=LinkStatus.PENDING, pending_since=now, backfill=True)
                    for c in marked
                ],
                update_conflicts=True,
                unique_fields=("contact", "provider"),
                # A backfill is an explicit "send it now": a retry waiting out its backoff goes too.
                update_fields=(
                    "status",
                    "pending_since",
                    "next_attempt_at",
                    "backfill",
                    *(_RELINK_FIELDS if relink else ()),
                ),  # fmt: skip
            )
        if since is None or dry_run:
            row.skipped += len(chunk) - len(due)
            row.queued += len(due)
            continue
        marked = ProviderLink.objects.filter(contact__in=chunk, provider=name)
        _drain_until_sent(name, marked.filter(contact__in=due).values_list("pk", flat=True))
        _count_pushed(name, marked, since=since, report=report)


def _drain_until_sent(name: str, link_ids) -> None:
    """Drain batches until none of these links is due any more (a backed-off retry is not due)."""
    ids = list(link_ids)
    while ids and due_links(provider=name).filter(pk__in=ids).exists():
        drained = drain(provider_name=name, linger=False)
        if drained.failed:
            schedule_retry(provider=name)
        if drained.claimed == 0:
            break


def _count_pushed(name: str, links, *, since: int, report: BackfillReport) -> None:
    """Count each link by what its CRM did during this run (a drain sends the oldest pending links
    first, so a contact may have gone out while an earlier chunk was being pushed)."""
    row = report.row(name)
    operations = dict(
        SyncAttempt.objects.filter(pk__gt=since, link__in=links, outcome="ok")
        .order_by("pk")
        .values_list("link_id", "operation")
    )
    for link in links.select_related("contact"):
        if link.status == LinkStatus.PENDING:  # claimed by a worker meanwhile: it is on its way
            row.queued += 1
        elif link.status == LinkStatus.SYNCED:
            operation = operations.get(link.pk)
            if operation == "create":
                row.created += 1
            elif operation == "match":
                row.matched += 1
            elif operation == "update":
                row.updated += 1
            else:  # already in sync, or the CRM already held every value: nothing was sent
                row.skipped += 1
        else:
            message = f"{link.status}: {link.last_error_code} {link.last_error}".strip()
            if link.status == LinkStatus.FAILED:
                message += " (retried by the forwarder workers)"
            report.fail(record=link.contact.email, target=name, message=message)


def drain_all(names: list[str], *, progress: Progress) -> dict[str, dict[str, int]]:
    """Push what the import queued for the CRMs, here and now, batch after batch."""
    forwarded: dict[str, dict[str, int]] = {}
    for name in names:
        totals = {"synced": 0, "failed": 0, "parked": 0}
        progress.start(label=f"pushing to {name}", total=due_links(provider=name).count())
        while True:
            drained = drain(provider_name=name, linger=False)
            if drained.claimed == 0:
                break
            totals["synced"] += drained.synced
            totals["failed"] += drained.failed
            totals["parked"] += drained.parked
            progress.advance(drained.claimed)
            if drained.failed:
                schedule_retry(provider=name)
        progress.close()
        forwarded[name] = totals
    return forwarded


def _connection_checkpoint(key: str) -> str:
    return checkpoint_key(source=SYNCROOT, targets=[key])


def connection_backfill_start(*, key: str) -> None:
    """A connection was added (inside its transaction): every live contact is to go to it. The
    checkpoint is written now, so the sweeper finds the run even if its first message is lost."""
    checkpoint_save(key=_connection_checkpoint(key), modstamp=None, last_id="")
    transaction.on_commit(lambda: dispatch.send_connection_backfill(key=key), robust=True)


def backfill_connection(*, key: str, share: int = 20_000) -> BackfillReport | None:
    """Go on with a new connection's backfill: up to `share` contacts marked pending per call, from
    its checkpoint; the next call is sent here, so no task runs for long."""
    checkpoint = _connection_checkpoint(key)
    if key not in connected_providers():
        registry.refresh()  # added a moment ago by another process
    if key not in connected_providers() or checkpoint_get(key=checkpoint) is None:
        return None  # deleted or paused meanwhile, or done: nothing to send it
    wait = backfill_wait(get_provider(key).config)
    if wait is not None:  # the backfills' part of the API budget is spent: on from the checkpoint later
        checkpoint_touch(key=checkpoint)
        # No longer than a delayed retry waits (below the broker's visibility timeout): then it looks again.
        countdown = min(wait, settings.SYNC_BACKOFF_CAP_SECONDS)
        transaction.on_commit(lambda: dispatch.send_connection_backfill(key=key, countdown=countdown))
        report = BackfillReport(source=SYNCROOT, targets=[key], dry_run=False)
        report.stop(reason="budget", text=f"API budget for backfills spent; going on in {wait:.0f} s")
        return report
    report = backfill_from_syncroot(targets=[key], limit=share, checkpoint=checkpoint)
    if report.stop_reason == "limit":
        transaction.on_commit(lambda: dispatch.send_connection_backfill(key=key))
    elif report.stop_reason == "error":
        transaction.on_commit(lambda: dispatch.send_connection_backfill(key=key, countdown=60))
    return report


def connection_backfills_resume(*, idle_seconds: float = 300) -> list[str]:
    """Sweeper: connection backfills whose checkpoint has not moved for `idle_seconds` (a lost
    message, a killed worker) are sent again."""
    stale = timezone.now() - timedelta(seconds=idle_seconds)
    resumed = [
        key for key in connected_providers()
        if SyncCursor.objects.filter(provider=_connection_checkpoint(key), updated_at__lt=stale).exists()
    ]  # fmt: skip
    for key in resumed:
        dispatch.send_connection_backfill(key=key)
    return resumed
