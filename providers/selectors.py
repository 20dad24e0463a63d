"""Reads of sync state."""

from collections.abc import Iterable
from typing import Any

from contacts.models import Contact
from providers.issues import presented_status, public_issues
from providers.models import LinkStatus, ProviderLink
from providers.registry import connected_providers


def contact_sync_status(*, contact: Contact, links: Iterable[ProviderLink] | None = None) -> dict[str, dict[str, Any]]:
    """One entry per connected CRM; a CRM without a link yet is simply pending.

    `links`: the contact's links when the caller already knows them (none read back); by default
    they are read (prefetched by the API's querysets).
    """
    known = contact.links.all() if links is None else links
    by_provider = {link.provider: link for link in known}
    status: dict[str, dict[str, Any]] = {}
    for provider in connected_providers():
        link = by_provider.get(provider)
        if link is None:
            status[provider] = {
                "status": LinkStatus.PENDING, "external_id": None, "synced_version": 0, "synced_at": None,
                "attempts": 0, "next_attempt_at": None, "last_error": None, "last_error_code": None,
                "issues": [],
            }  # fmt: skip
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
        }
    return status
