"""The bounce guard: a field a CRM keeps changing back (a workflow that rewrites a value after every
sync, two CRMs' rules fighting) is paused for that contact and CRM instead of looping.

Each time a CRM's change is applied to a field, the value's hash and the time are kept on the link
(`ProviderLink.bounces`, the last hour's). A change back to a value the field held within the hour
is a flip; past BOUNCE_LIMIT_PER_HOUR flips the field is paused: an issue (code `bouncing`) on the
link, in the conflict queue. While it is paused the CRM's values of that field are not applied and
SyncRoot writes nothing to that field there: it costs no more calls. A person resolves it
(providers/conflicts.py): SyncRoot's value, the CRM's, or just resume.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from contacts.models import Contact
from crm.base import field_hash
from providers.issues import BOUNCING, issue_raise
from providers.models import ProviderLink

logger = logging.getLogger(__name__)

WINDOW = timedelta(hours=1)


def paused_fields(link: ProviderLink) -> set[str]:
    return {issue["field"] for issue in link.issues if issue.get("code") == BOUNCING}


def bounces_record(link: ProviderLink, *, contact: Contact, applied: list[str], source: str) -> list[str]:
    """Count the flips among the fields a CRM's change just set; pause those past the limit (in
    memory: the caller saves the link). Returns the fields paused."""
    if not applied:
        return []
    now = timezone.now()
    cutoff, limit = now - WINDOW, settings.BOUNCE_LIMIT_PER_HOUR
    paused = []
    for field in applied:
        value = contact.value_of(field)
        digest = field_hash(field, value)
        seen = [entry for entry in link.bounces.get(field, []) if (t := parse_datetime(entry[0])) and t > cutoff]
        flips = sum(1 for entry in seen if len(entry) > 2 and entry[2])
        flip = any(entry[1] == digest for entry in seen)
        seen.append([now.isoformat(), digest, flip])
        link.bounces[field] = seen[-(2 * limit + 2) :]
        if flip and flips + 1 > limit:
            _pause(link, field=field, value=value, count=flips + 1, source=source)
            paused.append(field)
    return paused


def _pause(link: ProviderLink, *, field: str, value: Any, count: int, source: str) -> None:
    message = (
        f"{source} changed {field} back {count} times within an hour (a workflow or two rules fighting?): "
        "paused for this contact until a person decides"
    )
    issue_raise(link, field=field, code=BOUNCING, message=message, held=field_hash(field, value),
                crm=field_hash(field, value), value=value, paused=True)  # fmt: skip
    logger.warning("bouncing field paused", extra={"provider": link.provider, "contact_id": str(link.contact_id),
                                                   "field": field, "flips": count})  # fmt: skip


def bounces_forget(link: ProviderLink, field: str) -> None:
    link.bounces = {name: times for name, times in link.bounces.items() if name != field}
