"""Sync bookkeeping: which contacts each CRM still has to receive."""

import logging
from collections.abc import Iterable
from functools import cache

from django.db import connection, transaction
from django.utils import timezone

from contacts.models import Contact
from crm.registry import connected_providers
from providers import dispatch
from providers.models import LinkStatus, ProviderLink

logger = logging.getLogger(__name__)


def links_mark_pending(*, contact: Contact, exclude: Iterable[str] = ()) -> list[str]:
    """Mark the contact pending in every connected CRM (but `exclude`), inside the caller's transaction.

    Returns the providers marked. The forwarder is enqueued once the transaction commits.
    """
    return links_mark_pending_many(contacts=[contact], exclude=exclude)


def links_mark_pending_many(
    *, contacts: list[Contact], exclude: Iterable[str] = (), backfill: bool = False
) -> list[str]:
    """`links_mark_pending` for many contacts: one INSERT … ON CONFLICT, one enqueue after commit.
    `backfill`: an import's, sent after the live changes (crm.budget); otherwise a live change."""
    excluded = set(exclude)
    providers = [name for name in connected_providers() if name not in excluded]
    if not providers or not contacts:
        return []
    now = timezone.now()
    given = [(contact.pk, name, LinkStatus.PENDING, now, backfill, now) for contact in contacts for name in providers]
    with connection.cursor() as cursor:
        cursor.execute(_pending_links_sql(len(given)), [value for row in given for value in row])
    transaction.on_commit(lambda: enqueue_forward(providers=providers), robust=True)
    return providers


# The columns a pending link is given; every other column takes its field's default.
_GIVEN = ("contact_id", "provider", "status", "pending_since", "backfill", "updated_at")


def _pending_links_sql(rows: int) -> str:
    """`links_mark_pending_many`'s upsert written out: the ORM's bulk_create prepared each of a link's
    21 columns per row, as much CPU as a write's other statements together."""
    head, row, tail = _pending_links_parts()
    return f"{head} {', '.join([row] * rows)} {tail}"


@cache
def _pending_links_parts() -> tuple[str, str, str]:
    """The upsert's start, one row's values and its end. The other columns' values are the model's
    own defaults, rendered once, so a new column needs nothing here."""
    table = ProviderLink._meta
    rest = [field for field in table.concrete_fields if not field.primary_key and field.column not in _GIVEN]
    with connection.cursor() as cursor:
        defaults = [
            cursor.mogrify("%s", [field.get_db_prep_save(field.get_default(), connection)]).decode().replace("%", "%%")
            for field in rest
        ]
    columns = ", ".join([*_GIVEN, *(field.column for field in rest)])
    return (
        f"INSERT INTO {table.db_table} ({columns}) VALUES",
        f"({', '.join(['%s'] * len(_GIVEN) + defaults)})",
        "ON CONFLICT (contact_id, provider) DO UPDATE "
        "SET status = EXCLUDED.status, pending_since = EXCLUDED.pending_since, backfill = EXCLUDED.backfill",
    )


def enqueue_forward(*, providers: list[str]) -> None:
    """After commit: hand the providers to the forwarder (see dispatch.enqueue_drain)."""
    dispatch.enqueue_drain(providers=providers)


def contact_resync(*, contact: Contact) -> list[str]:
    """Queue the contact's current state for every connected CRM again (API `POST …/sync`)."""
    with transaction.atomic():
        return links_mark_pending(contact=contact)
