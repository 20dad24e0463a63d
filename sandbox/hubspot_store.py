"""HubSpot contacts in memory: property values, validation, email index.

Records are replaced, never mutated in place (``Contact.properties`` is a fresh
dict after every change), so readers may serialise a record without the lock.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.core import ApiError, Store
from sandbox.hubspot_properties import InvalidValue, PropertySchema, hs_error, iso_ms

__all__ = [
    "DEFAULT_PROPERTIES",
    "Source",
    "Contact",
    "ContactStore",
    "hs_error",
    "iso_ms",
]

# Returned when a read names no properties (HubSpot's documented default set).
DEFAULT_PROPERTIES = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")
# Properties a merge never moves from the merged-away record to the primary.
_OWN_PROPERTIES = frozenset(
    {
        "hs_object_id",
        "createdate",
        "lastmodifieddate",
        "hs_merged_object_ids",
        "hs_all_contact_vids",
        "hs_object_source",
        "hs_object_source_id",
        "email",
        "hs_email_domain",
    }
)
DATE_PROPERTIES = frozenset({"createdate", "lastmodifieddate"})
_compact = json.JSONEncoder(separators=(",", ":")).encode


def not_found(contact_id: str) -> ApiError:
    return hs_error(
        404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.", context={"id": [contact_id]}
    )


@dataclass(slots=True)
class Contact:
    """One contact. ``properties`` holds string values only (unset = absent)."""

    id: str
    properties: dict[str, str]
    created_ms: int
    updated_ms: int
    archived_ms: int | None = None
    merged_into: str | None = None  # merged away: reads of this id answer with that survivor

    def to_json(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """SimplePublicObject: every set property, or ``names`` (unset ones as null)."""
        props = self.properties
        if names is None:
            shown: dict[str, Any] = dict(props)
        else:
            shown = {name: props.get(name) for name in names}
        body: dict[str, Any] = {
            "id": self.id,
            "properties": shown,
            "createdAt": iso_ms(self.created_ms),
            "updatedAt": iso_ms(self.updated_ms),
            "archived": self.archived_ms is not None,
        }
        if self.archived_ms is not None:
            body["archivedAt"] = iso_ms(self.archived_ms)
        return body


@dataclass(frozen=True, slots=True)
class Source:
    """Who made a change: ``INTEGRATION`` + app id (API) or ``CRM_UI`` + ``userId:N``."""

    change_source: str
    source_id: str


def _as_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class ContactStore:
    """Thread-safe contacts keyed by numeric-string id, with a case-insensitive email index."""

    FIRST_ID = 1001

    def __init__(self, first_id: int = FIRST_ID) -> None:
        self._store = Store(first_seq=first_id)
        self.lock = self._store.lock
        self.records: dict[str, Contact] = {}
        self._order: list[int] = []  # every id ever issued, ascending (paging cursor)
        self._by_email: dict[str, str] = {}  # lower-cased email → id of the live contact
        self._live = 0
        self.schema = PropertySchema()  # the portal's contact properties
        self.blocklist: set[str] = set()  # emails of GDPR-deleted people: never created again

    # -- validation -----------------------------------------------------------

    def validate(self, properties: Any, *, creating: bool) -> dict[str, str]:
        """Normalise writable properties to strings; 400 VALIDATION_ERROR listing every bad one."""
        if not isinstance(properties, Mapping):
            raise hs_error(400, "VALIDATION_ERROR", "Invalid input JSON: properties must be an object")
        clean: dict[str, str] = {}
        problems: list[dict[str, Any]] = []
        for name, raw in properties.items():
            try:
                clean[name] = self.schema.clean(name, _as_string(raw).strip())
            except InvalidValue as invalid:
                problems.append(self._problem(name, invalid.code, invalid.message))
        if problems:
            errors = [
                {"message": p["message"], "code": p["error"], "context": {"propertyName": [p["name"]]}}
                for p in problems
            ]
            raise hs_error(
                400, "VALIDATION_ERROR", "Property values were not valid: " + _compact(problems), errors=errors
            )
        if creating:
            clean = {name: value for name, value in clean.items() if value}
        return clean

    @staticmethod
    def _problem(name: str, code: str, message: str) -> dict[str, Any]:
        return {"isValid": False, "message": message, "error": code, "name": name, "localizedErrorMessage": message}

    # -- reads ----------------------------------------------------------------

    def get(self, contact_id: str, *, archived: bool = False) -> Contact:
        """The contact with this id (``archived``: only an archived one); 404 otherwise."""
        contact = self.records.get(contact_id)
        while contact is not None and contact.merged_into is not None and not archived:
            contact = self.records.get(contact.merged_into)  # as HubSpot: the survivor answers
        if contact is None or (contact.archived_ms is not None) != archived or contact.merged_into is not None:
            raise not_found(contact_id)
        return contact

    def email_owner(self, email: str) -> str | None:
        """Id of the live contact holding ``email`` (any case), if any."""
        return self._by_email.get(email.strip().lower())

    def get_by_email(self, email: str) -> Contact:
        contact_id = self._by_email.get(email.strip().lower())
        if contact_id is None:
            raise not_found(email)
        return self.records[contact_id]

    def resolve(self, key: str, id_property: str | None, *, archived: bool = False) -> Contact:
        """Look up by ``id_property`` (``email``, ``hs_object_id`` or none = id)."""
        if id_property == "email":
            if archived:
                raise not_found(key)
            return self.get_by_email(key)
        if id_property not in (None, "", "hs_object_id"):
            raise hs_error(400, "VALIDATION_ERROR", f"Property {id_property} is not a unique identifier property")
        return self.get(key, archived=archived)

    def page(self, after: str | None, limit: int, *, archived: bool = False) -> tuple[list[Contact], str | None]:
        """Contacts with id > ``after`` in id order, and the next cursor (None on the last page)."""
        try:
            start = bisect.bisect_right(self._order, int(after)) if after else 0
        except ValueError:
            raise hs_error(400, "VALIDATION_ERROR", f"Invalid paging cursor: {after}") from None
        found: list[Contact] = []
        order, records = self._order, self.records
        for index in range(start, len(order)):
            contact = records.get(str(order[index]))
            if contact is not None and (contact.archived_ms is not None) == archived and contact.merged_into is None:
                if len(found) == limit:
                    return found, found[-1].id
                found.append(contact)
        return found, None

    def live(self) -> Iterator[Contact]:
        """Every live contact (a snapshot, safe against concurrent writes)."""
        return (contact for contact in list(self.records.values()) if contact.archived_ms is None)

    def count_live(self) -> int:
        return self._live

    # -- writes ---------------------------------------------------------------

    def create(self, properties: dict[str, str], *, source: Source, now_ms: int | None = None) -> Contact:
        """Insert validated ``properties``; 409 CONFLICT when the email is taken."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        with self.lock:
            email = properties.get("email")
            if email and email in self.blocklist:
                raise hs_error(400, "VALIDATION_ERROR", f"Email {email} is blocklisted (GDPR deletion)")
            if email and email in self._by_email:
                existing = self._by_email[email]
                raise hs_error(409, "CONFLICT", f"Contact already exists. Existing ID: {existing}")
            seq = self._store.next_seq()
            contact_id = str(seq)
            stamp = iso_ms(now)
            props = {
                "lifecyclestage": "lead",
                **properties,
                "createdate": stamp,
                "lastmodifieddate": stamp,
                "hs_object_id": contact_id,
                "hs_is_contact": "true",
                "hs_pipeline": "contacts-lifecycle-pipeline",
                "hs_object_source": source.change_source,
                "hs_object_source_id": source.source_id,
            }
            if email:
                props["hs_email_domain"] = email.rsplit("@", 1)[1]
                self._by_email[email] = contact_id
            contact = Contact(contact_id, props, now, now)
            self.records[contact_id] = contact
            self._order.append(seq)
            self._live += 1
            return contact

    def update(self, contact: Contact, properties: dict[str, str], *, now_ms: int | None = None) -> dict[str, str]:
        """Apply validated ``properties`` to a live contact; returns what actually changed."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        with self.lock:
            current = self.records.get(contact.id)
            if current is None or current.archived_ms is not None:
                raise not_found(contact.id)
            old = current.properties
            changed = {name: value for name, value in properties.items() if old.get(name, "") != value}
            if not changed:
                return {}
            new_email = changed.get("email")
            if new_email:
                owner = self._by_email.get(new_email)
                if owner is not None and owner != current.id:
                    raise hs_error(
                        400,
                        "VALIDATION_ERROR",
                        f"Cannot set PropertyValueCoordinates{{portalId=0, objectTypeId=0-1, propertyName=email, "
                        f"value={new_email}}} on {current.id}. {owner} already has that value.",
                    )
            props = dict(old)
            for name, value in changed.items():
                if value:
                    props[name] = value
                else:
                    props.pop(name, None)
            if "email" in changed:
                self._by_email.pop(old.get("email", ""), None)
                props.pop("hs_email_domain", None)
                if new_email:
                    self._by_email[new_email] = current.id
                    props["hs_email_domain"] = new_email.rsplit("@", 1)[1]
            props["lastmodifieddate"] = iso_ms(now)
            current.properties = props
            current.updated_ms = now
            return changed

    def archive(self, contact_id: str, *, now_ms: int | None = None) -> Contact | None:
        """Archive a live contact (its email becomes free); None when there is none."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        with self.lock:
            contact = self.records.get(contact_id)
            if contact is None or contact.archived_ms is not None:
                return None
            self._by_email.pop(contact.properties.get("email", ""), None)
            contact.archived_ms = now
            contact.updated_ms = now
            self._live -= 1
            return contact

    def merge(self, primary_id: str, merged_id: str, *, now_ms: int | None = None) -> tuple[Contact, int]:
        """Merge ``merged_id`` into ``primary_id`` as HubSpot does: the primary keeps its values and
        takes the other's where it has none; the merged-away id then answers with the primary.
        Returns the survivor and how many properties moved."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        with self.lock:
            primary, other = self.get(primary_id), self.get(merged_id)
            if primary.id == other.id:
                raise hs_error(400, "VALIDATION_ERROR", "Cannot merge an object with itself")
            props = dict(primary.properties)
            moved = 0
            for name, value in other.properties.items():
                if name in _OWN_PROPERTIES or not value or props.get(name):
                    continue
                props[name] = value
                moved += 1
            absorbed = [i for i in props.get("hs_merged_object_ids", "").split(";") if i]
            absorbed += [other.id, *(i for i in other.properties.get("hs_merged_object_ids", "").split(";") if i)]
            props["hs_merged_object_ids"] = ";".join(absorbed)
            props["hs_all_contact_vids"] = ";".join([primary.id, *absorbed])
            self._by_email.pop(other.properties.get("email", ""), None)
            if props.get("email"):
                self._by_email[props["email"]] = primary.id
            props["lastmodifieddate"] = iso_ms(now)
            primary.properties, primary.updated_ms = props, now
            other.archived_ms, other.updated_ms, other.merged_into = now, now, primary.id
            for contact in self.records.values():  # earlier merges into the merged-away record
                if contact.merged_into == other.id:
                    contact.merged_into = primary.id
            self._live -= 1
            return primary, moved

    def restore(self, contact_id: str, *, now_ms: int | None = None) -> Contact:
        """Bring an archived contact back from the recycle bin (same id); 409 if its email is taken."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        with self.lock:
            contact = self.get(contact_id, archived=True)
            email = contact.properties.get("email", "")
            if email and email in self._by_email:
                raise hs_error(409, "CONFLICT", f"Contact already exists. Existing ID: {self._by_email[email]}")
            if email:
                self._by_email[email] = contact.id
            contact.archived_ms, contact.updated_ms = None, now
            contact.properties = {**contact.properties, "lastmodifieddate": iso_ms(now)}
            self._live += 1
            return contact

    def purge(self, key: str, id_property: str | None) -> str | None:
        """GDPR delete: the record is gone for good and its email blocklisted. The id deleted, or None
        when no record had that key (an email is then blocklisted all the same, as HubSpot does)."""
        with self.lock:
            try:
                contact = self.resolve(key, id_property)
            except ApiError:
                if id_property == "email":
                    self.blocklist.add(key.strip().lower())
                    return None
                raise
            email = contact.properties.get("email", "")
            if email:
                self.blocklist.add(email)
                self._by_email.pop(email, None)
            if contact.archived_ms is None:
                self._live -= 1
            del self.records[contact.id]  # neither live nor in the recycle bin: gone
            return contact.id

    def clear(self) -> None:
        with self.lock:
            self.blocklist.clear()
            self._store.clear()
            self.records.clear()
            self._order.clear()
            self._by_email.clear()
            self._live = 0
        self.schema.clear()
