"""Field mappings: which CRM field each SyncRoot field travels to, and which side wins.

Scope: the six built-in fields. Each CRM has one mapping per built-in field (the migration creates
HubSpot's and Salesforce's; any other connected CRM gets them on demand, as `two_way`). A field
without a row is `two_way`, so the engine never depends on the rows existing.

The engine reads the rules on every apply and every send, so they are cached per process, keyed by a
version token kept in the shared cache: a change writes a new token, and every process reads the
rows again on its next use (one cache read per use, no wait for an expiry).
"""

import logging
import uuid

from django.core.cache import cache
from django.db import transaction
from redis.exceptions import RedisError

from contacts.models import SYNCED_FIELDS
from crm.registry import connected_providers
from providers.models import FieldMapping, MappingRule
from syncroot.errors import ApplicationError, Conflict, NotFound

logger = logging.getLogger(__name__)

# The CRMs' own names for the built-in fields (Salesforce's company is its Account's name).
BUILTIN_REMOTE_FIELDS: dict[str, dict[str, str]] = {
    "hubspot": {
        "email": "email", "first_name": "firstname", "last_name": "lastname",
        "phone": "phone", "company": "company", "job_title": "jobtitle",
    },
    "salesforce": {
        "email": "Email", "first_name": "FirstName", "last_name": "LastName",
        "phone": "Phone", "company": "Account.Name", "job_title": "Title",
    },
}  # fmt: skip
IDENTITY_FIELD = "email"  # how SyncRoot and every CRM recognise a person: always two_way

# Rules under which SyncRoot never writes the field to the CRM, and never takes the CRM's value.
NOT_SENT = frozenset({MappingRule.OFF, MappingRule.CRM_WINS})
NOT_APPLIED = frozenset({MappingRule.OFF, MappingRule.SYNCROOT_WINS})

_VERSION_KEY = "field-mappings:version"
_memo: dict[str, tuple[str, dict[str, str]]] = {}  # provider -> (version token, {field: rule})


class MappingNotFound(NotFound):
    code = "mapping_not_found"


class BuiltinMapping(Conflict):
    """A built-in field's mapping cannot be deleted: its rule can be turned `off` instead."""

    code = "builtin_mapping"


class IdentityMapping(ApplicationError):
    code = "identity_mapping"


def _version() -> str:
    token = cache.get(_VERSION_KEY)
    if token is None:
        cache.add(_VERSION_KEY, uuid.uuid4().hex, timeout=None)
        token = cache.get(_VERSION_KEY)
    return token


def mappings_changed() -> None:
    """Every process reads the rules again on its next use."""
    cache.set(_VERSION_KEY, uuid.uuid4().hex, timeout=None)
    _memo.clear()


def mapping_rules(*, provider: str) -> dict[str, str]:
    """{field: rule} for one CRM, every built-in field present (`two_way` when it has no row)."""
    try:
        token: str | None = _version()
    except RedisError as exc:  # without the version no memo can be trusted: read the rows
        logger.warning("field mapping version unreadable", extra={"provider": provider, "error": str(exc)})
        token = None
    memo = _memo.get(provider)
    if token is not None and memo is not None and memo[0] == token:
        return memo[1]
    rules = dict.fromkeys(SYNCED_FIELDS, MappingRule.TWO_WAY.value)
    rules.update(FieldMapping.objects.filter(provider=provider).values_list("field", "rule"))
    rules[IDENTITY_FIELD] = MappingRule.TWO_WAY.value
    if token is not None:
        _memo[provider] = (token, rules)
    return rules


def mappings_ensure(*, providers: list[str] | None = None) -> None:
    """The built-in mappings of every connected CRM (or of `providers`) exist, as `two_way`."""
    names = connected_providers() if providers is None else providers
    rows = [
        FieldMapping(provider=name, field=field, remote_field=BUILTIN_REMOTE_FIELDS.get(name, {}).get(field, field))
        for name in names
        for field in SYNCED_FIELDS
    ]
    FieldMapping.objects.bulk_create(rows, ignore_conflicts=True)


def mapping_list(*, provider: str | None = None) -> list[FieldMapping]:
    mappings_ensure()
    mappings = FieldMapping.objects.all()
    if provider:
        mappings = mappings.filter(provider=provider)
    return list(mappings)


def mapping_get(*, mapping_id: int) -> FieldMapping:
    mappings_ensure()
    mapping = FieldMapping.objects.filter(pk=mapping_id).first()
    if mapping is None:
        raise MappingNotFound(f"No mapping {mapping_id}.", details={"id": mapping_id})
    return mapping


@transaction.atomic
def mapping_update(*, mapping_id: int, rule: str) -> FieldMapping:
    """Change a mapping's rule; it applies at once to every change sent or received after it."""
    mapping = FieldMapping.objects.select_for_update().filter(pk=mapping_id).first()
    if mapping is None:
        raise MappingNotFound(f"No mapping {mapping_id}.", details={"id": mapping_id})
    if mapping.field == IDENTITY_FIELD and rule != MappingRule.TWO_WAY:
        raise IdentityMapping(
            "The email mapping is how SyncRoot and the CRM recognise a person: its rule is always two_way.",
            details={"rule": [f"Only {MappingRule.TWO_WAY.value!r} for the {IDENTITY_FIELD} mapping."]},
        )
    if mapping.rule != rule:
        mapping.rule = rule
        mapping.save(update_fields=["rule", "updated_at"])
        mappings_changed()
        # Again once committed: a process that read the old row meanwhile must not keep it.
        transaction.on_commit(mappings_changed, robust=True)
    return mapping


def mapping_delete(*, mapping_id: int) -> None:
    """Only the built-in fields are mapped so far, and their mappings stay: `off` stops one."""
    mapping = mapping_get(mapping_id=mapping_id)
    raise BuiltinMapping(
        f"The mapping of the built-in field {mapping.field} cannot be deleted: set its rule to 'off' instead.",
        details={"id": mapping.pk, "field": mapping.field},
    )
