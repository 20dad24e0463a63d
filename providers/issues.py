"""Values that do not fit: refused for their target and shown, never cut, coerced or dropped.

A value a CRM reports that SyncRoot cannot hold (longer than the field, an email that is not one,
an email another contact holds) is not applied. It becomes an issue on that CRM's link, stored as
`ProviderLink.issues`: `{"field", "code", "message", "held", "crm", "since"}` plus, for a clash, the
other `contact_id`. `held` is the hash of SyncRoot's value when the issue was raised: while SyncRoot
still holds that value, the forwarder does not write it over the CRM's (which would silently undo
the person's edit there). The issue clears itself when the CRM reports a value that fits, or when
SyncRoot's value changes and reaches the CRM; an operator can also send SyncRoot's value on
purpose (`link_issues_resolve`).

A CRM record SyncRoot cannot take in at all (no email, or an email it cannot hold) has no contact
to carry an issue: it is a `RecordIssue`, cleared when the record is linked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import transaction
from django.utils import timezone

from contacts.models import MAX_LENGTHS, SYNCED_FIELDS, Contact
from crm.base import field_hash
from providers.models import LinkStatus, ProviderLink, RecordIssue
from providers.services import enqueue_forward

logger = logging.getLogger(__name__)

TOO_LONG, INVALID_EMAIL, NOT_TEXT, EMAIL_CONFLICT, NO_EMAIL, DUPLICATE_RECORD = (
    "too_long", "invalid_email", "not_text", "email_conflict", "no_email", "duplicate_record",
)  # fmt: skip
BOUNCING = "bouncing"  # a field a CRM keeps changing back, paused (providers/bounce.py)
RESTORE_REFUSED = "restore_refused"  # a record restored in a CRM whose email another contact holds now
CONFLICT_CODES = frozenset({EMAIL_CONFLICT, BOUNCING})
_email_valid = EmailValidator()


def refusal(field: str, value: Any, *, source: str) -> tuple[str, str] | None:
    """Why SyncRoot cannot hold `value` in `field` as `source` reports it: (code, message), or None."""
    if not isinstance(value, str):
        return NOT_TEXT, f"{source} holds a {type(value).__name__} in {field}; SyncRoot holds text"
    limit = MAX_LENGTHS[field]
    if len(value) > limit:
        return TOO_LONG, f"{source} holds {len(value)} characters in {field}; SyncRoot holds at most {limit}"
    if field == "email" and value.strip():
        try:
            _email_valid(value.strip())
        except ValidationError:
            return INVALID_EMAIL, f"{source} holds {value!r} as the email, which is not a valid email address"
    return None


def split_values(values: Mapping[str, Any], *, source: str) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """A CRM's reported values as (those SyncRoot can hold, {field: (code, message)} for the rest)."""
    fitting: dict[str, str] = {}
    refused: dict[str, tuple[str, str]] = {}
    for field, value in values.items():
        if field not in SYNCED_FIELDS or value is None:
            continue
        if reason := refusal(field, value, source=source):
            refused[field] = reason
        else:
            fitting[field] = value
    return fitting, refused


# --- issues on a link ---------------------------------------------------------------------------
def issue_raise(link: ProviderLink, *, field: str, code: str, message: str, held: str, **extra: Any) -> None:
    """Record (or refresh) the link's issue for `field`, in memory; the caller saves the link.

    `held`: the hash of SyncRoot's value then; `crm` (in `extra`): the hash of the CRM's value that
    raised it."""
    since = next((i["since"] for i in link.issues if i["field"] == field and i["code"] == code), None)
    link.issues = [i for i in link.issues if i["field"] != field]
    since = since or timezone.now().isoformat()
    link.issues.append({"field": field, "code": code, "message": message, "held": held, "since": since, **extra})


def issues_clear(link: ProviderLink, fields: Iterable[str], *, reported: Mapping[str, str] | None = None) -> list[dict]:
    """Drop the link's issues about `fields`, in memory; returns those dropped (see `counterparts_clear`).

    With `reported` (what the CRM reports now), an issue stays while the CRM still holds the very
    value that raised it: a whole-record event repeats every field, changed or not.
    """
    wanted = set(fields)

    def goes(issue: dict) -> bool:
        field = issue["field"]
        if field not in wanted:
            return False
        return reported is None or issue.get("crm") != field_hash(field, reported.get(field))

    dropped = [i for i in link.issues if goes(i)]
    if dropped:
        link.issues = [i for i in link.issues if not goes(i)]
    return dropped


def blocked_fields(link: ProviderLink, values: Mapping[str, str]) -> set[str]:
    """Fields whose CRM value SyncRoot refused while it still holds what it held then: sending
    SyncRoot's value would overwrite the CRM's without anyone deciding so."""
    return {
        issue["field"]
        for issue in link.issues
        if issue.get("paused")
        or (issue.get("blocks", True) and field_hash(issue["field"], values.get(issue["field"])) == issue["held"])
    }


def counterparts_clear(dropped: Iterable[dict], *, provider: str, contact_id: Any) -> None:
    """A clash shows on both contacts: when one side's issue goes, so does the other's."""
    others = {i["contact_id"] for i in dropped if i.get("contact_id")}
    for link in ProviderLink.objects.select_for_update().filter(provider=provider, contact_id__in=others):
        before = len(link.issues)
        link.issues = [i for i in link.issues if i.get("contact_id") != str(contact_id)]
        if len(link.issues) != before:
            link.save(update_fields=["issues", "updated_at"])


def email_clash_record(*, link: ProviderLink, contact: Contact, holder: Contact, email: str, source: str) -> None:
    """The CRM gave `contact`'s record an email `holder` holds: a conflict on both, for a person."""
    issue_raise(
        link, field="email", code=EMAIL_CONFLICT, held=field_hash("email", contact.email), contact_id=str(holder.pk),
        crm=field_hash("email", email),
        message=f"{source} record {link.external_id} now has the email {email}, which contact {holder.pk} holds",
    )  # fmt: skip
    other = ProviderLink.objects.select_for_update().filter(contact=holder, provider=link.provider).first()
    if other is not None:
        issue_raise(
            other, field="email", code=EMAIL_CONFLICT, held=field_hash("email", holder.email), blocks=False,
            contact_id=str(contact.pk), external_id=link.external_id,
            message=f"{source} record {link.external_id} of contact {contact.pk} was given this contact's email",
        )  # fmt: skip
        other.save(update_fields=["issues", "updated_at"])
    logger.warning(
        "inbound email clashes",
        extra={"provider": link.provider, "contact_id": str(contact.pk), "holder_id": str(holder.pk)},
    )


def presented_status(link: ProviderLink) -> str:
    """What the API and admin show: never "synced" while the CRM holds a value SyncRoot refused."""
    if link.status == LinkStatus.SYNCED and link.issues:
        return "conflict" if any(i["code"] in CONFLICT_CODES for i in link.issues) else "issue"
    return link.status


def public_issues(link: ProviderLink) -> list[dict[str, str]]:
    """Each issue as the API shows it; `remote_field` names the CRM's field of a mapped custom one."""
    return [
        {"field": i["field"], "code": i["code"], "message": i["message"]}
        | ({"remote_field": i["remote_field"]} if i.get("remote_field") else {})
        for i in link.issues
    ]


@transaction.atomic
def link_issues_resolve(*, link_id: int) -> bool:
    """Operator action: SyncRoot's values win. The link's issues (and, for a clash, the other
    contact's side) are dropped and the CRM records get SyncRoot's values at the next drain."""
    link = ProviderLink.objects.select_for_update().filter(pk=link_id).first()
    if link is None or not link.issues:
        return False
    resolved = [link]
    others = {i["contact_id"] for i in link.issues if i.get("contact_id")}
    resolved += ProviderLink.objects.select_for_update().filter(provider=link.provider, contact_id__in=others)
    now = timezone.now()
    for each in resolved:
        fields = {i["field"] for i in each.issues}
        each.issues = []
        # Forget what the ledger says the CRM holds, so the forwarder sends SyncRoot's value.
        each.field_hashes = {f: h for f, h in each.field_hashes.items() if f not in fields}
        if each.status != LinkStatus.DELETED:
            each.status, each.pending_since, each.next_attempt_at = LinkStatus.PENDING, now, None
        each.save()
    transaction.on_commit(lambda: enqueue_forward(providers=[link.provider]), robust=True)
    return True


# --- records SyncRoot cannot take in --------------------------------------------------------------
def record_issue_raise(*, provider: str, external_id: str, code: str, message: str) -> None:
    RecordIssue.objects.update_or_create(
        provider=provider, external_id=external_id, defaults={"code": code, "message": message}
    )
    logger.warning("crm record refused", extra={"provider": provider, "external_id": external_id, "code": code})


def record_issue_clear(*, provider: str, external_id: str) -> None:
    RecordIssue.objects.filter(provider=provider, external_id=external_id).delete()
