"""The echo ledger's reads: what a CRM holds per field, as SyncRoot last wrote or saw it.

`ProviderLink.field_hashes` (and its companions, see providers.inbound._apply_fields) say what the
CRM holds; these functions compare it with SyncRoot's values. Used by the forwarder, the inbound
apply path and the backfills alike.
"""

from typing import Any

from contacts.models import Contact, is_blank
from crm.base import field_hash
from providers.field_values import canonical
from providers.issues import blocked_fields
from providers.mappings import NOT_SENT, MappingSet, mapping_set
from providers.models import MappingRule, ProviderLink


def contact_values(contact: Contact, mapped: MappingSet) -> dict[str, Any]:
    """Every value the CRM's mappings carry, as the engine compares them: the built-in fields', and
    each mapped custom field's in its canonical form (None: no value)."""
    values: dict[str, Any] = contact.synced_values()
    for key, mapping in mapped.custom.items():
        values[key] = canonical(mapping.type, contact.custom.get(key))
    return values


def changed_values(*, contact: Contact, link: ProviderLink, mapped: MappingSet | None = None) -> dict[str, Any]:
    """What the CRM does not have yet: every value for an unlinked contact, else changed fields.

    Never a blank the CRM may not have: a create matched by email to an existing record must not
    blank what that record holds (its values fill SyncRoot's blanks instead, see
    `providers.inbound.matched_records_fill`). Nor a value the CRM's own was refused in favour of
    (see providers/issues.py). Nor a field its mapping keeps from this CRM (see `_sendable`).
    """
    mapped = mapped or mapping_set(provider=link.provider)  # the caller's, when it holds them
    rules = mapped.rules
    values = {f: v for f, v in contact_values(contact, mapped).items() if rules[f] not in NOT_SENT}
    if not link.external_id:
        return {f: v for f, v in values.items() if not is_blank(v)}
    blocked = blocked_fields(link, values) if link.issues else ()
    return {
        f: v
        for f, v in values.items()
        if link.field_hashes.get(f) != field_hash(f, v)
        and (not is_blank(v) or f in link.field_hashes)
        and f not in blocked
        and (f in link.field_hashes or f not in mapped.backfilling)  # else the backfill writes it
        and _sendable(rules[f], f, v, link.field_hashes.get(f))
    }


def _sendable(rule: str, field: str, value: Any, held: str | None) -> bool:
    """What the rule says of sending SyncRoot's `value` over the CRM's (`held`: its hash, None if
    unknown). A CRM preferred unless blank gets SyncRoot's value only where it holds a blank (or
    nothing known); SyncRoot preferred unless blank sends no blank over a value."""
    crm_blank = held is None or held == field_hash(field, "")
    if rule == MappingRule.PREFER_CRM_UNLESS_BLANK:
        return crm_blank
    if rule == MappingRule.PREFER_SYNCROOT_UNLESS_BLANK:
        return not is_blank(value) or crm_blank
    return True


PRIOR_HASHES_KEPT = 8


def prior_hashes(link: ProviderLink, field: str) -> list[str]:
    """Hashes the CRM held before our recent writes of this field, newest first."""
    kept = link.field_prior_hashes.get(field) or []
    return [kept] if isinstance(kept, str) else list(kept)
