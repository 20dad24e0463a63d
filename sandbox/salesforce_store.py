"""The sandbox org's records: validation, audit fields, recycle bin, transactions.

Every write goes through a :class:`Transaction` (the store lock is held for its
whole life), which validates like the real CRM, keeps an undo journal for
``allOrNone`` rollbacks and hands the committed :class:`Change` list to
``on_commit`` (the app turns them into Outbound Messages and change events).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.salesforce_fields import RecordError, coerce_value
from sandbox.salesforce_schema import OBJECTS, FieldSpec, ObjectSpec, make_id, normalize_id

__all__ = ["Change", "OrgStore", "RecordError", "Transaction", "now_ms"]

#: Indexed fields per object: lower-cased value → ids (for WHERE fast paths and upsert).
INDEXED = {"Contact": ("Email", "SyncRoot_Id__c"), "Account": ("Name",)}


def now_ms() -> datetime:
    """Now in UTC, truncated to milliseconds (the CRM's timestamp precision)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Change:
    """A committed change of one record (the unit of webhooks)."""

    kind: str  # CREATE, UPDATE, DELETE
    sobject: str
    record_id: str
    changed: tuple[str, ...]
    nulled: tuple[str, ...]
    user_id: str
    at: datetime
    transaction_key: str
    sequence: int
    origin: str


@dataclass
class Transaction:
    """Writes of one API call; see :meth:`OrgStore.transaction`."""

    store: OrgStore
    user_id: str
    origin: str
    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    undo: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    rolled_back: bool = False
    allow_duplicates: bool = False  # Sforce-Duplicate-Rule-Header: allowSave=true

    # -- writes ------------------------------------------------------------------

    def create(self, spec: ObjectSpec, data: Any, *, in_collection: bool = False) -> str:
        values = self.store.validate(spec, data, creating=True, in_collection=in_collection)
        self._check_duplicates(spec, None, values)
        at = now_ms()
        record_id = self.store.new_id(spec.key_prefix)
        record: dict[str, Any] = {field.name: field.default for field in spec.fields}
        record.update(values)
        record.update(
            Id=record_id,
            IsDeleted=False,
            OwnerId=self.user_id,
            CreatedDate=at,
            CreatedById=self.user_id,
            LastModifiedDate=at,
            LastModifiedById=self.user_id,
            SystemModstamp=at,
        )
        _derive(spec, record)
        self._write(spec, record_id, None, record)
        self._change("CREATE", spec, record_id, (), (), at)
        return record_id

    def update(self, spec: ObjectSpec, record_id: str, data: Any, *, in_collection: bool = False) -> None:
        current = self.store.live(spec, record_id)
        record_id = current["Id"]
        values = self.store.validate(spec, data, creating=False, current=current, in_collection=in_collection)
        if values.get("Email") and (current["Email"] or "").lower() != values["Email"].lower():
            self._check_duplicates(spec, record_id, values)
        at = now_ms()
        record = dict(current)
        changed = [name for name, value in values.items() if current.get(name) != value]
        record.update(values)
        _derive(spec, record)
        if record.get("Name") != current.get("Name") and "Name" not in changed:
            changed.append("Name")
        audit = ["LastModifiedDate"] + (["LastModifiedById"] if current["LastModifiedById"] != self.user_id else [])
        record.update(LastModifiedDate=at, LastModifiedById=self.user_id, SystemModstamp=at)
        self._write(spec, record_id, current, record)
        nulled = tuple(name for name in changed if record.get(name) is None)
        self._change("UPDATE", spec, record_id, tuple(changed + audit), nulled, at)

    def delete(self, spec: ObjectSpec, record_id: str) -> None:
        current = self.store.live(spec, record_id)
        record_id = current["Id"]
        at = now_ms()
        if spec.name == "Account":  # deleting an Account deletes its Contacts, as in the CRM
            for contact_id in list(self.store.tables["Contact"]):
                contact = self.store.tables["Contact"][contact_id]
                if contact["AccountId"] == record_id and not contact["IsDeleted"]:
                    self.delete(self.store.objects["Contact"], contact_id)
        record = dict(current, IsDeleted=True, LastModifiedDate=at, LastModifiedById=self.user_id, SystemModstamp=at)
        self._write(spec, record_id, current, record)
        self.store.deleted_log.append((spec.name, record_id, at))
        self._change("DELETE", spec, record_id, (), (), at)

    def _check_duplicates(self, spec: ObjectSpec, record_id: str | None, values: dict[str, Any]) -> None:
        """The org's Contact duplicate rule (exact Email match), when one is active."""
        rule = self.store.duplicate_rule
        email = values.get("Email")
        if spec.name != "Contact" or not email or rule == "off" or (rule == "alert" and self.allow_duplicates):
            return
        matches = [other for other in self.store.lookup("Contact", "Email", email) if other != record_id]
        if matches:
            raise duplicates_detected(matches)

    # -- journal -------------------------------------------------------------------

    def _write(self, spec: ObjectSpec, record_id: str, before: dict[str, Any] | None, after: dict[str, Any]) -> None:
        self.undo.append((spec.name, record_id, before))
        self.store.put(spec, record_id, before, after)

    def _change(self, kind: str, spec: ObjectSpec, record_id: str, changed: tuple, nulled: tuple, at: datetime) -> None:
        sequence = len(self.changes) + 1
        self.changes.append(
            Change(kind, spec.name, record_id, changed, nulled, self.user_id, at, self.key, sequence, self.origin)
        )

    def rollback(self) -> None:
        """Undo every write of this transaction (``allOrNone`` failures)."""
        store = self.store
        for sobject, record_id, before in reversed(self.undo):
            spec = store.objects[sobject]
            store.put(spec, record_id, store.tables[sobject].get(record_id), before)
            if before is not None and not before["IsDeleted"]:
                store.deleted_log[:] = [entry for entry in store.deleted_log if entry[1] != record_id]
        self.undo.clear()
        self.changes.clear()
        self.rolled_back = True


_DUPLICATE_MESSAGE = "You're creating a duplicate record. We recommend you use an existing record instead."


def duplicates_detected(match_ids: list[str]) -> RecordError:
    """The Standard Contact Duplicate Rule's refusal, with the real captures' ``duplicateResut`` (sic) key."""
    records = [
        {
            "additionalInformation": [],
            "fieldDiffs": [],
            "matchConfidence": 100.0,
            "record": {
                "attributes": {"type": "Contact", "url": f"/services/data/v59.0/sobjects/Contact/{match_id}"},
                "Id": match_id,
            },
        }
        for match_id in match_ids
    ]
    result = {
        "allowSave": False,
        "duplicateRule": "Standard_Contact_Duplicate_Rule",
        "duplicateRuleEntityType": "Contact",
        "errorMessage": _DUPLICATE_MESSAGE,
        "matchResults": [
            {
                "entityType": "Contact",
                "errors": [],
                "matchEngine": "ExactMatchEngine",
                "matchRecords": records,
                "rule": "Standard_Contact_Match_Rule_v1_1",
                "size": len(records),
                "success": True,
            }
        ],
    }
    return RecordError(
        "DUPLICATES_DETECTED",
        _DUPLICATE_MESSAGE,
        detail={"duplicateResut": result},
        collection_message="Use one of these records?",
    )


def _derive(spec: ObjectSpec, record: dict[str, Any]) -> None:
    if spec.name == "Contact":
        record["Name"] = " ".join(part for part in (record.get("FirstName"), record.get("LastName")) if part)


class OrgStore:
    """All records of the org, in creation order, plus indexes and the deletion log."""

    def __init__(self, *, pod: str, on_commit: Callable[[list[Change]], None] | None = None) -> None:
        self.lock = threading.RLock()
        self.pod = pod
        self.on_commit = on_commit
        self.tables: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in OBJECTS}
        # This org's schema: the standard objects plus the custom fields added to it.
        self.objects: dict[str, ObjectSpec] = dict(OBJECTS)
        self.schema_modified: dict[str, datetime] = dict.fromkeys(OBJECTS, now_ms())
        self.tooling: dict[str, dict[str, Any]] = {}  # CustomField id → {"FullName", "Metadata"}
        self.indexes: dict[tuple[str, str], dict[str, set[str]]] = {
            (sobject, name): {} for sobject, names in INDEXED.items() for name in names
        }
        self.deleted_log: list[tuple[str, str, datetime]] = []
        self.duplicate_rule = "off"  # off | block | alert (see the app's duplicate_rule config)
        self._numbers: dict[str, int] = {}

    def new_id(self, prefix: str) -> str:
        with self.lock:
            number = self._numbers.get(prefix, 0) + 1
            self._numbers[prefix] = number
        return make_id(prefix, number, self.pod)

    def clear(self) -> None:
        """Forget all records and custom fields; id counters keep counting so ids are never reused."""
        with self.lock:
            for table in self.tables.values():
                table.clear()
            for index in self.indexes.values():
                index.clear()
            self.deleted_log.clear()
            self.objects = dict(OBJECTS)
            self.schema_modified = dict.fromkeys(OBJECTS, now_ms())
            self.tooling.clear()

    def add_field(self, sobject: str, spec: FieldSpec) -> None:
        """Add a custom field; existing records get its default (null, or false for a checkbox)."""
        with self.lock:
            self.objects[sobject] = self.objects[sobject].with_field(spec)
            for record in self.tables[sobject].values():
                record.setdefault(spec.name, spec.default)
            self.schema_modified[sobject] = now_ms()

    @contextmanager
    def transaction(self, *, user_id: str, origin: str) -> Iterator[Transaction]:
        """Hold the lock for one API call's writes; commit on exit, roll back on an exception."""
        with self.lock:
            tx = Transaction(self, user_id, origin)
            try:
                yield tx
            except BaseException:
                tx.rollback()
                raise
            # Still under the lock: webhook payloads snapshot the committed state.
            if tx.changes and self.on_commit is not None:
                self.on_commit(list(tx.changes))

    # -- reads -----------------------------------------------------------------------

    def get(self, sobject: str, record_id: str | None) -> dict[str, Any] | None:
        """A record by 18-char id (deleted ones included), or None."""
        return self.tables[sobject].get(record_id) if record_id else None

    def live(self, spec: ObjectSpec, raw_id: Any) -> dict[str, Any]:
        """The non-deleted record ``raw_id`` (15/18 chars) or the CRM's error for it."""
        record_id = normalize_id(raw_id)
        if record_id is None or not record_id.startswith(spec.key_prefix):
            raise RecordError("MALFORMED_ID", f"{spec.label} ID: id value of incorrect type: {raw_id}", ["Id"])
        record = self.tables[spec.name].get(record_id)
        if record is None:
            raise RecordError("NOT_FOUND", "The requested resource does not exist", [], 404)
        if record["IsDeleted"]:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [], 404)
        return record

    def lookup(self, sobject: str, field_name: str, value: str) -> list[str]:
        """Ids of live records whose indexed field equals ``value`` (case-insensitive)."""
        ids = self.indexes[(sobject, field_name)].get(value.lower(), set())
        table = self.tables[sobject]
        return sorted((record_id for record_id in ids if not table[record_id]["IsDeleted"]), key=_creation_order(table))

    def put(
        self, spec: ObjectSpec, record_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None
    ) -> None:
        """Replace a record and keep the indexes in step (``after`` None removes it)."""
        table = self.tables[spec.name]
        for name in INDEXED.get(spec.name, ()):
            index = self.indexes[(spec.name, name)]
            old = before.get(name) if before else None
            new = after.get(name) if after else None
            if old is not None and (new is None or old.lower() != new.lower()):
                index.get(old.lower(), set()).discard(record_id)
            if new is not None:
                index.setdefault(new.lower(), set()).add(record_id)
        if after is None:
            table.pop(record_id, None)
        else:
            table[record_id] = after

    # -- validation ------------------------------------------------------------------

    def validate(
        self,
        spec: ObjectSpec,
        data: Any,
        *,
        creating: bool,
        current: Mapping[str, Any] | None = None,
        in_collection: bool = False,
    ) -> dict[str, Any]:
        """Check a create/update body like the CRM; the canonical field values to write."""
        if not isinstance(data, Mapping):
            raise RecordError("JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from non-object value")
        values: dict[str, Any] = {}
        for key, raw in data.items():
            if key == "attributes":
                continue
            field_spec = spec.field(key)
            if field_spec is None:
                raise RecordError("INVALID_FIELD", f"No such column '{key}' on sobject of type {spec.name}", [key])
            if field_spec.name == "Id":
                if in_collection and creating:
                    raise RecordError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
                if in_collection or normalize_id(raw) == (current or {}).get("Id"):
                    continue  # collections and upserts carry the record's own id
                raise RecordError("INVALID_FIELD", "The Id field should not be specified in the sobject data.", ["Id"])
            if not field_spec.writable:
                raise RecordError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {field_spec.name}. Please check the security settings of "
                    "this field and verify that it is read/write for your profile or permission set.",
                    [field_spec.name],
                )
            values[field_spec.name] = self._coerce(field_spec, raw)
        merged = {**(current or {}), **values}
        missing = [
            f.name for f in spec.fields if f.required and merged.get(f.name) is None and (creating or f.name in values)
        ]
        if missing:
            raise RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        return values

    def _coerce(self, spec: FieldSpec, raw: Any) -> Any:
        if spec.type == "reference" and raw not in (None, "") and not isinstance(raw, (dict, list)):
            return self._reference(spec, raw if isinstance(raw, str) else str(raw))
        return coerce_value(spec, raw)

    def _reference(self, spec: FieldSpec, value: str) -> str:
        target = self.objects[spec.reference_to or ""]
        record_id = normalize_id(value)
        if record_id is None or not record_id.startswith(target.key_prefix):
            raise RecordError("MALFORMED_ID", f"{spec.label}: id value of incorrect type: {value}", [spec.name])
        record = self.tables[target.name].get(record_id)
        if record is None or record["IsDeleted"]:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [spec.name])
        return record_id


def _creation_order(table: dict[str, dict[str, Any]]) -> Callable[[str], tuple]:
    return lambda record_id: (table[record_id]["CreatedDate"], record_id)
