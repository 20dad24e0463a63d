"""The parsed form of a SOQL query and its evaluation over in-memory records."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.salesforce_schema import FieldSpec, ObjectSpec

__all__ = ["BoolOp", "Comparison", "FieldPath", "Literal", "OrderItem", "Query", "Record", "Resolver"]

Record = Mapping[str, Any]
Resolver = Callable[[str, str], Record | None]


@dataclass(frozen=True)
class FieldPath:
    """A selected/filtered field: ``via`` is the reference field for ``Account.Name``."""

    spec: FieldSpec
    via: FieldSpec | None = None
    target: ObjectSpec | None = None

    @property
    def name(self) -> str:
        return f"{self.via.relationship_name}.{self.spec.name}" if self.via else self.spec.name


@dataclass(frozen=True)
class Literal:
    kind: str  # string, number, datetime, date, boolean, null, relative
    value: Any
    pos: int
    like: str = ""  # LIKE regex for strings


@dataclass(frozen=True)
class Comparison:
    path: FieldPath
    op: str  # = != < <= > >= IN NOT IN LIKE
    values: tuple[Any, ...]  # normalized literal values; ranges for relative dates
    like: re.Pattern[str] | None = None


@dataclass(frozen=True)
class BoolOp:
    op: str  # AND, OR, NOT
    items: tuple[Any, ...]


@dataclass(frozen=True)
class OrderItem:
    path: FieldPath
    descending: bool
    nulls_last: bool


@dataclass(frozen=True)
class Query:
    """A parsed, type-checked query."""

    text: str
    sobject: ObjectSpec
    fields: tuple[FieldPath, ...]
    count_only: bool
    where: Any
    order: tuple[OrderItem, ...]
    limit: int | None
    offset: int

    def equality_filters(self) -> list[tuple[str, tuple[Any, ...]]]:
        """``(field, values)`` of top-level AND-ed ``=``/``IN`` filters on the object's own
        fields (string values lower-cased): candidates for an index lookup."""
        where = self.where
        nodes = where.items if isinstance(where, BoolOp) and where.op == "AND" else (where,) if where else ()
        return [
            (node.path.spec.name, node.values)
            for node in nodes
            if isinstance(node, Comparison)
            and node.path.via is None
            and node.op in ("=", "IN")
            and all(value is not None and not isinstance(value, tuple) for value in node.values)
        ]

    def matches(self, record: Record, resolve: Resolver) -> bool:
        return self.where is None or bool(_evaluate(self.where, record, resolve))

    def run(self, records: list[Record], resolve: Resolver) -> list[Record]:
        """Filter, sort, then apply OFFSET and LIMIT (records in creation order)."""
        rows = [record for record in records if self.matches(record, resolve)]
        for item in reversed(self.order):
            present = [row for row in rows if _value(item.path, row, resolve) is not None]
            missing = [row for row in rows if _value(item.path, row, resolve) is None]
            present.sort(key=lambda row, p=item.path: _sort_key(_value(p, row, resolve)), reverse=item.descending)
            rows = present + missing if item.nulls_last else missing + present
        end = None if self.limit is None else self.offset + self.limit
        return rows[self.offset : end]

    def project(
        self, record: Record, resolve: Resolver, render: Callable[[ObjectSpec, Record, list[str]], dict]
    ) -> dict:
        """The selected fields of ``record`` in SELECT order; ``render(spec, record, names)``
        formats one (possibly related) record with its ``attributes``."""
        own = [path.spec.name for path in self.fields if path.via is None]
        out = render(self.sobject, record, own)
        related: dict[str, tuple[FieldPath, list[str]]] = {}
        for path in self.fields:
            if path.via is not None:
                related.setdefault(path.via.relationship_name or "", (path, []))[1].append(path.spec.name)
        for relationship, (path, names) in related.items():
            parent_id = record.get(path.via.name) if path.via else None
            parent = resolve(path.target.name, parent_id) if parent_id and path.target else None
            out[relationship] = render(path.target, parent, names) if parent is not None and path.target else None
        return out


# --- evaluation -------------------------------------------------------------------


def _value(path: FieldPath, record: Record, resolve: Resolver) -> Any:
    if path.via is None:
        return record.get(path.spec.name)
    parent_id = record.get(path.via.name)
    if not parent_id or path.target is None:
        return None
    parent = resolve(path.target.name, parent_id)
    return parent.get(path.spec.name) if parent is not None else None


def _sort_key(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if isinstance(expected, tuple):  # a relative date range [start, end)
        start, end = expected
        if actual is None:
            return op == "!="
        inside = start <= actual < end
        return {
            "=": inside,
            "!=": not inside,
            "<": actual < start,
            "<=": actual < end,
            ">": actual >= end,
            ">=": actual >= start,
        }[op]
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    if actual is None or expected is None:
        return False  # ordering operators never match null
    if op == "<":
        return actual < expected
    if op == "<=":
        return actual <= expected
    if op == ">":
        return actual > expected
    return actual >= expected


def _evaluate(node: Any, record: Record, resolve: Resolver) -> bool:
    if isinstance(node, BoolOp):
        if node.op == "AND":
            return all(_evaluate(item, record, resolve) for item in node.items)
        if node.op == "OR":
            return any(_evaluate(item, record, resolve) for item in node.items)
        return not _evaluate(node.items[0], record, resolve)
    actual = _value(node.path, record, resolve)
    if node.path.spec.is_string and isinstance(actual, str):
        actual = actual.lower()
    if node.op == "LIKE":
        return isinstance(actual, str) and node.like.match(actual) is not None
    if node.op == "IN":
        return actual in node.values
    if node.op == "NOT IN":
        return actual not in node.values
    return _compare(node.op, actual, node.values[0])
