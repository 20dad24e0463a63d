"""Field mappings: which CRM field each SyncRoot field travels to, and which side wins.

Each CRM has one mapping per built-in field (the migration creates HubSpot's and Salesforce's; any
other connected CRM gets them on demand, as `two_way`; a built-in field without a row is `two_way`,
so the engine never depends on the rows existing). A custom field travels to a CRM only through a
mapping made for it (`mapping_create`), onto a CRM field of a type that fits, its enum options
translated by the mapping's `value_map`.

The engine reads the rules on every apply and every send, so they are cached per process, keyed by a
version token kept in the shared cache: a change writes a new token, and every process reads the
rows again on its next use (one cache read per use, no wait for an expiry).
"""

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Q
from redis.exceptions import RedisError

from contacts.models import SYNCED_FIELDS, CustomField, FieldType
from crm.registry import connected_providers, get_provider
from providers import dispatch
from providers.models import BackfillStatus, FieldMapping, MappingRule
from providers.remote_fields import remote_field_list
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


def builtin_remote_field(provider: str, field: str) -> str:
    """The CRM's name of a built-in field, for a connection (named by its key) to that CRM."""
    try:
        kind = get_provider(provider).kind
    except LookupError:
        kind = provider
    return BUILTIN_REMOTE_FIELDS.get(kind, {}).get(field, field)


IDENTITY_FIELD = "email"  # how SyncRoot and every CRM recognise a person: always two_way

# Rules under which SyncRoot never writes the field to the CRM, and never takes the CRM's value.
NOT_SENT = frozenset({MappingRule.OFF, MappingRule.CRM_WINS})
NOT_APPLIED = frozenset({MappingRule.OFF, MappingRule.SYNCROOT_WINS})

_VERSION_KEY = "field-mappings:version"
_memo: dict[str, tuple[str, "MappingSet"]] = {}  # provider -> (version token, its mappings)
# Where a value of each SyncRoot type may go, by the CRM field's type (crm.base.FIELD_TYPES).
TYPES_FIT: dict[str, frozenset[str]] = {
    FieldType.STRING: frozenset({"string", "phone", "enum"}),
    FieldType.ENUM: frozenset({"enum", "string"}),
    FieldType.NUMBER: frozenset({"number"}),
    FieldType.BOOLEAN: frozenset({"boolean"}),
    FieldType.DATE: frozenset({"date"}),
    FieldType.DATETIME: frozenset({"datetime"}),
}
# Rules under which SyncRoot writes the field to the CRM: the CRM's field must be writable.
WRITES = frozenset(MappingRule.values) - NOT_SENT


@dataclass(frozen=True)
class CustomMapping:
    """A custom field's mapping as the engine uses it: the rule, the translation, both fields' specs."""

    field: str
    remote_field: str
    rule: str
    value_map: dict[str, str]  # SyncRoot's option → the CRM's
    reverse_map: dict[str, str]  # the CRM's option → SyncRoot's
    type: str  # SyncRoot's field type
    options: tuple[str, ...]
    max_length: int | None
    remote: dict[str, Any]  # the CRM field's {"type", "length", "options"}


@dataclass(frozen=True)
class MappingSet:
    """One CRM's mappings: a rule for every built-in field and every mapped custom field."""

    rules: dict[str, str]
    custom: dict[str, CustomMapping] = dc_field(default_factory=dict)  # by SyncRoot field key
    by_remote: dict[str, str] = dc_field(default_factory=dict)  # the CRM's field name → custom key
    # Fields whose backfill has not finished: where the ledger knows nothing of such a field on a
    # record yet, the backfill alone decides it (by its rule), once it has read the record.
    backfilling: frozenset[str] = frozenset()

    def extra_fields(self) -> tuple[str, ...]:
        """The CRM fields beyond the built-ins that every read asks for."""
        return tuple(m.remote_field for m in self.custom.values() if m.rule != MappingRule.OFF)


class MappingNotFound(NotFound):
    code = "mapping_not_found"


class BuiltinMapping(Conflict):
    """A built-in field's mapping cannot be deleted: its rule can be turned `off` instead."""

    code = "builtin_mapping"


class IdentityMapping(ApplicationError):
    code = "identity_mapping"


class MappingInvalid(ApplicationError):
    """The mapping cannot work: the fields do not exist, do not fit, or the CRM's is read-only."""

    code = "validation_error"


class MappingExists(Conflict):
    code = "mapping_exists"


def _version() -> str:
    token = cache.get(_VERSION_KEY)
    if token is None:
        cache.add(_VERSION_KEY, uuid.uuid4().hex, timeout=None)
        token = cache.get(_VERSION_KEY)
    return token


def _version_readable(**context: str) -> str | None:
    """The version, or None (logged) when Redis cannot be read."""
    try:
        return _version()
    except RedisError as exc:
        logger.warning("field mapping version unreadable", extra={**context, "error": str(exc)})
        return None


def mappings_changed(**_: Any) -> None:
    """Every process reads the mappings again on its next use (also a signal receiver)."""
    cache.set(_VERSION_KEY, uuid.uuid4().hex, timeout=None)
    _memo.clear()


# The version a batch read once (`mappings_pinned`); None outside one.
_pinned: ContextVar[str | None] = ContextVar("field_mappings_pinned", default=None)


@contextmanager
def mappings_pinned() -> Iterator[None]:
    """Within the block `mapping_set` reads the mapping version once, not once per call: a batch of
    links sent or of events applied goes with one set of mappings (a change made meanwhile applies
    from the next batch), and the forwarder no longer spends half a drain asking Redis for the
    version again for every link."""
    reset = _pinned.set(_version_readable())  # None (Redis down): each call reads it as it can
    try:
        yield
    finally:
        _pinned.reset(reset)


def mapping_set(*, provider: str) -> MappingSet:
    """One CRM's mappings, read from the database once per change of any mapping or custom field."""
    token = _pinned.get() or _version_readable(provider=provider)  # None: no memo can be trusted
    memo = _memo.get(provider)
    if token is not None and memo is not None and memo[0] == token:
        return memo[1]
    rules = dict.fromkeys(SYNCED_FIELDS, MappingRule.TWO_WAY.value)
    custom: dict[str, CustomMapping] = {}
    rows = list(FieldMapping.objects.filter(provider=provider))
    definitions = {f.key: f for f in CustomField.objects.filter(key__in=[r.field for r in rows])}
    for row in rows:
        if row.field in SYNCED_FIELDS:
            rules[row.field] = row.rule
        elif (definition := definitions.get(row.field)) is not None:
            rules[row.field] = row.rule
            custom[row.field] = custom_mapping(row, definition)
    rules[IDENTITY_FIELD] = MappingRule.TWO_WAY.value
    backfilling = frozenset(
        row.field for row in rows if row.backfill_status in (BackfillStatus.PENDING, BackfillStatus.RUNNING)
    )
    mapped = MappingSet(rules=rules, custom=custom, by_remote={m.remote_field: k for k, m in custom.items()},
                        backfilling=backfilling)  # fmt: skip
    if token is not None:
        _memo[provider] = (token, mapped)
    return mapped


def custom_mapping(row: FieldMapping, definition: CustomField | None = None) -> CustomMapping:
    """A custom field's mapping (saved or would-be) as the engine uses it."""
    definition = definition or CustomField.objects.get(key=row.field)
    return CustomMapping(
        field=row.field, remote_field=row.remote_field, rule=row.rule, value_map=dict(row.value_map),
        reverse_map={remote: local for local, remote in row.value_map.items()}, type=definition.type,
        options=tuple(definition.options or ()), max_length=definition.max_length, remote=dict(row.remote_spec),
    )  # fmt: skip


def mapping_rules(*, provider: str) -> dict[str, str]:
    """{field: rule} for one CRM: every built-in field (`two_way` when it has no row) and every
    mapped custom field."""
    return mapping_set(provider=provider).rules


def extra_fields(provider: str) -> tuple[str, ...]:
    """The CRM's custom fields SyncRoot reads (installed as `crm.base.extra_fields_source`)."""
    return mapping_set(provider=provider).extra_fields()


def mapping_uses(key: str) -> list[str]:
    """How a custom field is used by mappings (a field in use cannot be deleted)."""
    return [f"mapping {m.pk} ({m.provider}: {m.remote_field})" for m in FieldMapping.objects.filter(field=key)]


def mappings_ensure(*, providers: list[str] | None = None) -> None:
    """The built-in mappings of every connected CRM (or of `providers`) exist, as `two_way`."""
    names = connected_providers() if providers is None else providers
    rows = [
        FieldMapping(provider=name, field=field, remote_field=builtin_remote_field(name, field))
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


def mapping_create(
    *, provider: str, field: str, remote_field: str, rule: str, value_map: dict[str, str] | None = None
) -> FieldMapping:
    """Map a custom field onto a CRM's field; starts the backfill of that one field.

    Checked against both schemas: the CRM field exists, is writable when the rule writes to it, and
    takes SyncRoot's type; a value_map names SyncRoot's options and the CRM's (400 with the reason).
    """
    if provider not in connected_providers():
        raise MappingInvalid(f"No CRM named {provider!r} is connected.", details={"provider": ["Not connected."]})
    if field in SYNCED_FIELDS:
        raise MappingExists(
            f"The built-in field {field} is mapped already: change its mapping's rule instead.",
            details={"field": field, "id": _builtin_id(provider, field)},
        )
    definition = CustomField.objects.filter(key=field).first()
    if definition is None:
        raise MappingInvalid(
            f"No field {field!r}: create it with POST /fields first.", details={"field": ["Unknown field."]}
        )
    remote = remote_field_get(provider, remote_field)
    value_map = dict(value_map or {})
    mapping_check(definition, remote, rule=rule, value_map=value_map)
    try:
        with transaction.atomic():
            mapping = FieldMapping.objects.create(
                provider=provider, field=field, remote_field=remote_field, rule=rule, value_map=value_map,
                remote_spec=remote_spec(remote), backfill_status=BackfillStatus.PENDING,
            )  # fmt: skip
    except IntegrityError:
        taken = FieldMapping.objects.filter(provider=provider).filter(Q(field=field) | Q(remote_field=remote_field))
        other = taken.first()
        raise MappingExists(
            f"{provider} already has a mapping of {field} or onto {remote_field}.",
            details={"field": field, "remote_field": remote_field, "id": other.pk if other else None},
        ) from None
    _changed_now_and_on_commit()
    transaction.on_commit(lambda: dispatch.send_field_backfill(mapping_id=mapping.pk), robust=True)
    return mapping


@transaction.atomic
def mapping_update(
    *, mapping_id: int, rule: str | None = None, value_map: dict[str, str] | None = None
) -> FieldMapping:
    """Change a mapping's rule (or a custom field's value_map); it applies at once to every change
    sent or received after it, and a new rule backfills the field in the direction it gives."""
    mapping = FieldMapping.objects.select_for_update().filter(pk=mapping_id).first()
    if mapping is None:
        raise MappingNotFound(f"No mapping {mapping_id}.", details={"id": mapping_id})
    rule = rule or mapping.rule
    if mapping.field == IDENTITY_FIELD and rule != MappingRule.TWO_WAY:
        raise IdentityMapping(
            "The email mapping is how SyncRoot and the CRM recognise a person: its rule is always two_way.",
            details={"rule": [f"Only {MappingRule.TWO_WAY.value!r} for the {IDENTITY_FIELD} mapping."]},
        )
    builtin = mapping.field in SYNCED_FIELDS
    if value_map is not None and builtin:
        raise MappingInvalid(
            "A built-in field has no options to map.", details={"value_map": ["Only for custom fields."]}
        )
    if not builtin and (rule != mapping.rule or value_map is not None):
        definition = CustomField.objects.get(key=mapping.field)
        mapping_check(definition, mapping.remote_spec | {"name": mapping.remote_field, "writable": _writable(mapping)},
               rule=rule, value_map=mapping.value_map if value_map is None else value_map)  # fmt: skip
    changed = rule != mapping.rule or (value_map is not None and value_map != mapping.value_map)
    if changed:
        backfill = rule != mapping.rule or value_map is not None
        mapping.rule = rule
        if value_map is not None:
            mapping.value_map = value_map
        if backfill and rule != MappingRule.OFF:
            mapping.backfill_status, mapping.backfill_phase, mapping.backfill_after = BackfillStatus.PENDING, "", 0
            mapping.backfill_done = mapping.backfill_total = 0
            mapping.backfill_error = ""
        mapping.save()
        _changed_now_and_on_commit()
        if mapping.backfill_status == BackfillStatus.PENDING:
            transaction.on_commit(lambda: dispatch.send_field_backfill(mapping_id=mapping.pk), robust=True)
    return mapping


@transaction.atomic
def mapping_delete(*, mapping_id: int) -> None:
    """Stop syncing a custom field with a CRM. A built-in field's mapping stays: `off` stops one."""
    mapping = FieldMapping.objects.select_for_update().filter(pk=mapping_id).first()
    if mapping is None:
        raise MappingNotFound(f"No mapping {mapping_id}.", details={"id": mapping_id})
    if mapping.field in SYNCED_FIELDS:
        raise BuiltinMapping(
            f"The mapping of the built-in field {mapping.field} cannot be deleted: set its rule to 'off' instead.",
            details={"id": mapping.pk, "field": mapping.field},
        )
    mapping.delete()
    _changed_now_and_on_commit()


def _changed_now_and_on_commit() -> None:
    mappings_changed()
    # Again once committed: a process that read the old rows meanwhile must not keep them.
    transaction.on_commit(mappings_changed, robust=True)


def _builtin_id(provider: str, field: str) -> int | None:
    mappings_ensure(providers=[provider])
    return FieldMapping.objects.filter(provider=provider, field=field).values_list("pk", flat=True).first()


def remote_field_get(provider: str, name: str) -> dict[str, Any]:
    """The CRM's field called `name`, from its schema (read again once when the cache lacks it:
    an admin may have just added it)."""
    for refresh in (False, True):
        found = next((f for f in remote_field_list(provider=provider, refresh=refresh) if f["name"] == name), None)
        if found is not None:
            return found
    raise MappingInvalid(
        f"{provider} has no contact field {name!r}: GET /providers/{provider}/fields lists them.",
        details={"remote_field": ["No such field in the CRM."]},
    )


def remote_spec(remote: dict[str, Any]) -> dict[str, Any]:
    options = remote.get("options")
    return {"type": remote["type"], "length": remote.get("length"), "writable": remote.get("writable", True),
            "options": [o["value"] for o in options] if options is not None else None}  # fmt: skip


def _writable(mapping: FieldMapping) -> bool:
    return bool(mapping.remote_spec.get("writable", True))


def mapping_check(definition: CustomField, remote: dict[str, Any], *, rule: str, value_map: dict[str, str]) -> None:
    errors: dict[str, list[str]] = {}
    remote_type = remote.get("type")
    if remote_type not in TYPES_FIT[definition.type]:
        errors["remote_field"] = [
            f"{remote['name']} is a {remote_type} field; a {definition.type} field maps onto "
            f"{' or '.join(sorted(TYPES_FIT[definition.type]))} fields only."
        ]
    elif rule in WRITES and not remote.get("writable", True):
        errors["rule"] = [f"{remote['name']} is read-only in the CRM: only 'crm_wins' or 'off' can map it."]
    if value_map:
        errors.update(_value_map_errors(definition, remote, value_map))
    if errors:
        raise MappingInvalid("The mapping cannot work as given.", details=errors)


def _value_map_errors(definition: CustomField, remote: dict[str, Any], value_map: Any) -> dict[str, list[str]]:
    if definition.type != FieldType.ENUM:
        return {"value_map": ["Only an enum field's options are mapped."]}
    if not isinstance(value_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value_map.items()
    ):
        return {"value_map": ["An object of SyncRoot option → CRM option, both text."]}
    if unknown := sorted(set(value_map) - set(definition.options)):
        return {"value_map": [f"Not options of {definition.key}: {', '.join(unknown)}."]}
    options = remote.get("options")
    remote_options = [o["value"] if isinstance(o, dict) else o for o in options] if options is not None else None
    if remote_options is not None and (absent := sorted(set(value_map.values()) - set(remote_options))):
        return {"value_map": [f"Not options of {remote['name']} in the CRM: {', '.join(absent)}."]}
    if len(set(value_map.values())) != len(value_map):
        return {"value_map": ["Two options map onto one CRM option: the CRM's value could not be read back."]}
    return {}
