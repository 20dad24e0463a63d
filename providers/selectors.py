"""Reads of sync state."""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from contacts.models import Contact
from crm.registry import PROVIDER_CLASSES, connected_providers
from providers.budgets import backfills_held
from providers.crm_state import crm_paused
from providers.issues import presented_status, public_issues
from providers.models import LinkStatus, ProviderLink


def contact_sync_status(
    *,
    contact: Contact,
    links: Iterable[ProviderLink] | None = None,
    paused: Mapping[str, str] | None = None,
    held: Mapping[str, datetime] | None = None,
) -> dict[str, dict[str, Any]]:
    """One entry per connected CRM; a CRM without a link yet is simply pending.

    `links`: the contact's links when the caller already knows them (none read back); by default
    they are read (prefetched by the API's querysets). `paused`: `crm_state.crm_paused()` when the
    caller already read it (once for a page of contacts); a change waiting for a paused CRM shows
    as `"status": "paused"` with its `reason`. `held`: `budgets.backfills_held()`; a backfill's
    change waiting for the API budget shows as paused with reason `api_budget` and when it goes on.
    """
    paused = crm_paused() if paused is None else paused
    held = backfills_held() if held is None else held
    known = contact.links.all() if links is None else links
    by_provider = {link.provider: link for link in known}
    status: dict[str, dict[str, Any]] = {}
    for provider in connected_providers():
        link = by_provider.get(provider)
        if link is None:
            status[provider] = {
                "status": LinkStatus.PENDING, "external_id": None, "synced_version": 0, "synced_at": None,
                "attempts": 0, "next_attempt_at": None, "last_error": None, "last_error_code": None, "reason": None,
                "issues": [],
            }  # fmt: skip
            _pause(status[provider], paused.get(provider))
            continue
        status[provider] = {
            "status": presented_status(link),
            "external_id": link.external_id,
            "synced_version": link.synced_version,
            "synced_at": link.synced_at,
            "attempts": link.attempts,
            "next_attempt_at": link.next_attempt_at if link.status == LinkStatus.FAILED else None,
            "last_error": link.last_error or None,
            "last_error_code": link.last_error_code or None,
            "issues": public_issues(link),
            "reason": None,
        }
        _pause(status[provider], paused.get(provider))
        if link.backfill and provider in held:
            _pause(status[provider], API_BUDGET, resumes_at=held[provider])
    return status


API_BUDGET = "api_budget"  # the backfills' part of the connection's API budget is spent (crm.budget)


def _pause(entry: dict[str, Any], reason: str | None, *, resumes_at: datetime | None = None) -> None:
    """A change waiting for a paused CRM (credentials refused, paused by an operator) or for the
    API budget is paused, not pending or failed; `resumes_at`: when it goes on, where known."""
    if reason and entry["status"] in (LinkStatus.PENDING, LinkStatus.FAILED):
        entry["status"], entry["reason"], entry["next_attempt_at"] = "paused", reason, resumes_at


def contact_ids_by_external_id(*, external_id: str) -> list[UUID]:
    """Contacts linked to a CRM record with this id, in any CRM (the admin's search by CRM id).

    Naming every CRM lets the (provider, external_id) unique index serve it, however many links.
    """
    providers = sorted(set(PROVIDER_CLASSES) | set(connected_providers()))
    return list(
        ProviderLink.objects.filter(provider__in=providers, external_id=external_id).values_list(
            "contact_id", flat=True
        )
    )
