"""``POST /crm/v3/objects/contacts/search``: filter groups, sorts, offset paging, the 10k cap."""

from __future__ import annotations

import fnmatch
import heapq
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sandbox.hubspot_store import DATE_PROPERTIES, DEFAULT_PROPERTIES, Contact, hs_error

__all__ = ["MAX_LIMIT", "MAX_TOTAL", "search"]

MAX_LIMIT = 200  # results per page
MAX_TOTAL = 10_000  # paging past this many results is refused
MAX_GROUPS, MAX_FILTERS_PER_GROUP, MAX_FILTERS = 5, 6, 18
QUERY_PROPERTIES = ("email", "firstname", "lastname", "phone", "company")
_TOKEN_SPLIT = re.compile(r"[\s@.,;:/_-]+")

Predicate = Callable[[Contact], bool]


def _bad(message: str) -> Exception:
    return hs_error(400, "VALIDATION_ERROR", message)


def _date_ms(value: Any) -> float:
    """Epoch-ms string/number or ISO-8601 date(-time) → epoch ms."""
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _bad(f"{value} is not a valid date value: use epoch milliseconds or ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp() * 1000


def _comparable(name: str) -> Callable[[Any], Any]:
    """How filter values and stored values of property ``name`` are compared."""
    if name in DATE_PROPERTIES:
        return _date_ms
    return lambda value: str(value).strip().lower()


def _stored(name: str) -> Callable[[Contact], Any]:
    """Read property ``name`` of a contact as a comparable value (None when unset)."""
    if name == "createdate":
        return lambda contact: contact.created_ms
    if name == "lastmodifieddate":
        return lambda contact: contact.updated_ms

    def read(contact: Contact) -> Any:
        value = contact.properties.get(name)
        return None if value is None else value.lower()

    return read


def _ordered(left: Any, right: Any) -> tuple[Any, Any]:
    """Compare numerically when both sides are numbers (e.g. ``hs_object_id``)."""
    if isinstance(left, str) and isinstance(right, str):
        try:
            return float(left), float(right)
        except ValueError:
            return left, right
    return left, right


def _contains_token(value: str, token: str) -> bool:
    if "*" in token:
        return fnmatch.fnmatchcase(value, token)
    return token == value or token in _TOKEN_SPLIT.split(value)


def _predicate(spec: Any) -> Predicate:
    if not isinstance(spec, dict) or not isinstance(spec.get("propertyName"), str):
        raise _bad("Each filter needs a propertyName and an operator")
    name, operator = spec["propertyName"], str(spec.get("operator", "")).upper()
    read, convert = _stored(name), _comparable(name)
    if operator == "HAS_PROPERTY":
        return lambda contact: read(contact) not in (None, "")
    if operator == "NOT_HAS_PROPERTY":
        return lambda contact: read(contact) in (None, "")
    if operator in ("IN", "NOT_IN"):
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise _bad(f"Operator {operator} requires a non-empty values list")
        wanted = {convert(value) for value in values}
        if operator == "IN":
            return lambda contact: read(contact) in wanted
        return lambda contact: read(contact) not in wanted
    if "value" not in spec:
        raise _bad(f"Operator {operator} requires a value")
    target = convert(spec["value"])
    if operator == "EQ":

        def equal(contact: Contact) -> bool:
            value = read(contact)
            if value is None:
                return False
            left, right = _ordered(value, target)
            return left == right

        return equal
    if operator == "NEQ":
        return lambda contact: read(contact) != target
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        token = str(spec["value"]).lower()
        present = operator == "CONTAINS_TOKEN"
        return lambda contact: (read(contact) is not None and _contains_token(read(contact), token)) == present
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "LT": lambda a, b: a < b,
        "LTE": lambda a, b: a <= b,
        "GT": lambda a, b: a > b,
        "GTE": lambda a, b: a >= b,
    }
    if operator == "BETWEEN":
        if "highValue" not in spec:
            raise _bad("Operator BETWEEN requires a highValue")
        high = convert(spec["highValue"])

        def between(contact: Contact) -> bool:
            value = read(contact)
            if value is None:
                return False
            low_pair, high_pair = _ordered(value, target), _ordered(value, high)
            return low_pair[1] <= low_pair[0] and high_pair[0] <= high_pair[1]

        return between
    compare = comparisons.get(operator)
    if compare is None:
        raise _bad(f"Unknown filter operator: {operator}")
    if name in ("createdate", "lastmodifieddate"):
        # Stored as epoch ms, always set: compared as numbers without the general path's look at
        # types (a search of a big portal checks every contact).
        stamp = _stored(name)
        return lambda contact: compare(stamp(contact), target)

    def check(contact: Contact) -> bool:
        value = read(contact)
        return value is not None and compare(*_ordered(value, target))

    return check


def _matcher(body: dict[str, Any]) -> Predicate:
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list):
        raise _bad("filterGroups must be a list")
    if len(groups) > MAX_GROUPS:
        raise _bad(f"Too many filter groups: at most {MAX_GROUPS} are allowed")
    compiled: list[list[Predicate]] = []
    total = 0
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list):
            raise _bad("Each filter group needs a filters list")
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise _bad(f"Too many filters in a group: at most {MAX_FILTERS_PER_GROUP} are allowed")
        total += len(filters)
        compiled.append([_predicate(spec) for spec in filters])
    if total > MAX_FILTERS:
        raise _bad(f"Too many filters: at most {MAX_FILTERS} are allowed in all groups")
    query = str(body.get("query") or "").strip().lower()
    # Groups are OR-ed, filters within a group AND-ed; an empty group list matches all.
    if compiled:
        groups_match: Predicate = lambda contact: any(all(p(contact) for p in group) for group in compiled)  # noqa: E731
    else:
        groups_match = lambda contact: True  # noqa: E731
    if not query:
        return groups_match

    def with_query(contact: Contact) -> bool:
        props = contact.properties
        found = any(query in props.get(name, "").lower() for name in QUERY_PROPERTIES)
        return found and groups_match(contact)

    return with_query


def _sort(contacts: list[Contact], sorts: Any) -> None:
    """Stable multi-key sort; unset values last; id ascending as the final tie-break."""
    contacts.sort(key=lambda contact: int(contact.id))
    if not sorts:
        return
    if not isinstance(sorts, list):
        raise _bad("sorts must be a list")
    for spec in reversed(sorts):
        if isinstance(spec, str):
            name, descending = spec.lstrip("-"), spec.startswith("-")
        elif isinstance(spec, dict) and isinstance(spec.get("propertyName"), str):
            name = spec["propertyName"]
            descending = str(spec.get("direction", "ASCENDING")).upper() == "DESCENDING"
        else:
            raise _bad("Each sort needs a propertyName and a direction")
        read = _stored(name)
        present = [contact for contact in contacts if read(contact) is not None]
        missing = [contact for contact in contacts if read(contact) is None]
        present.sort(key=lambda contact: _sort_key(read(contact)), reverse=descending)
        contacts[:] = present + missing


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, str):
        try:
            return 0, float(value)
        except ValueError:
            return 1, value
    return 0, value


def _modified_floor(groups: Any) -> float | None:
    """The least `lastmodifieddate` any group allows (each must bound it from below), or None."""
    floors = []
    for group in groups or ():
        bounds = [
            _date_ms(spec["value"])
            for spec in (group.get("filters") or [] if isinstance(group, dict) else [])
            if isinstance(spec, dict) and spec.get("propertyName") == "lastmodifieddate"
            and str(spec.get("operator", "")).upper() in ("GT", "GTE") and "value" in spec
        ]  # fmt: skip
        if not bounds:
            return None
        floors.append(max(bounds))
    return min(floors) if floors else None


def _first(found: list[Contact], sorts: Any, count: int) -> list[Contact]:
    """The first `count` of `found` in the search's order (`_sort`'s), without sorting them all when
    one ascending sort says it (id ascending between equal values, as `_sort` leaves them)."""
    spec = sorts[0] if isinstance(sorts, list) and len(sorts) == 1 else None
    name = spec.get("propertyName") if isinstance(spec, dict) else None
    if name in ("createdate", "lastmodifieddate") and str(spec.get("direction", "ASCENDING")).upper() == "ASCENDING":
        read = _stored(name)
        return heapq.nsmallest(count, found, key=lambda contact: (read(contact), int(contact.id)))
    _sort(found, sorts)
    return found[:count]


def search(contacts: Iterable[Contact], body: Any) -> dict[str, Any]:
    """Run a search request body against ``contacts``; the response body (or a 400)."""
    if not isinstance(body, dict):
        raise _bad("Invalid input JSON: expected a search request object")
    limit = body.get("limit", 10)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_LIMIT:
        raise _bad(f"limit must be between 1 and {MAX_LIMIT}")
    try:
        offset = int(body.get("after") or 0)
    except (TypeError, ValueError):
        raise _bad(f"Invalid after value: {body.get('after')}") from None
    if offset < 0 or offset >= MAX_TOTAL:
        raise _bad(f"Search results are limited to {MAX_TOTAL} per query: after={offset} pages beyond the limit")
    names = body.get("properties") or list(DEFAULT_PROPERTIES)
    if not isinstance(names, list):
        raise _bad("properties must be a list of property names")
    match = _matcher(body)
    since = _modified_floor(body.get("filterGroups"))
    if since is not None:  # every group asks for contacts modified after a time: skip the others cheaply
        contacts = [contact for contact in contacts if contact.updated_ms >= since]
    found = [contact for contact in contacts if match(contact)]
    page = _first(found, body.get("sorts"), offset + limit)[offset:]
    response: dict[str, Any] = {"total": len(found), "results": [contact.to_json(names) for contact in page]}
    if offset + limit < len(found):
        response["paging"] = {"next": {"after": str(offset + limit)}}
    return response
