"""A SOQL subset: parse, type-check against the sandbox schema, evaluate, project.

Supported: ``SELECT f1, Rel.f2 | COUNT() FROM Obj [WHERE ...] [ORDER BY f [ASC|DESC]
[NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]``. WHERE takes ``= != <> < <= > >=``,
``[NOT] IN (...)``, ``LIKE``, ``AND``/``OR``/``NOT`` and parentheses (mixing AND
and OR without parentheses is refused, as in the real CRM). Literals: quoted
strings with SOQL escapes, ``true``/``false``/``null``, numbers, unquoted
ISO-8601 datetimes and dates, and ``TODAY``/``YESTERDAY``/``TOMORROW``/
``LAST_N_DAYS:n``/``NEXT_N_DAYS:n``. Text comparisons are case-insensitive.

Errors are :class:`SoqlError` with the CRM's codes (``MALFORMED_QUERY``,
``INVALID_FIELD``, ``INVALID_TYPE``, ``INVALID_QUERY_FILTER_OPERATOR``) and its
caret-under-the-token message layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sandbox.salesforce_schema import ObjectSpec, normalize_id, parse_datetime
from sandbox.soql_ast import BoolOp, Comparison, FieldPath, Literal, OrderItem, Query
from sandbox.soql_lexer import SoqlError, Token, decode_string, malformed, pointer, tokenize

__all__ = ["Query", "SoqlError", "parse"]

_RELATIVE_DATES = {"TODAY", "YESTERDAY", "TOMORROW", "LAST_N_DAYS", "NEXT_N_DAYS"}

# --- parser -----------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, schema: Mapping[str, ObjectSpec], now: datetime) -> None:
        self.text = text
        self.schema = {name.lower(): spec for name, spec in schema.items()}
        self.now = now
        try:
            self.tokens = tokenize(text)
        except ValueError as exc:
            raise SoqlError("MALFORMED_QUERY", str(exc)) from None
        self.index = 0
        self.sobject: ObjectSpec | None = None

    # token helpers
    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect_word(self, word: str) -> Token:
        if not self.token.is_word(word):
            raise self.unexpected()
        return self.advance()

    def expect_punct(self, char: str) -> Token:
        if self.token.kind != "punct" or self.token.text != char:
            raise self.unexpected()
        return self.advance()

    def unexpected(self, token: Token | None = None) -> SoqlError:
        token = token or self.token
        shown = token.text if token.kind != "eof" else "<EOF>"
        return malformed(self.text, token.pos, f"unexpected token: '{shown}'")

    # grammar
    def parse(self) -> Query:
        self.expect_word("SELECT")
        select_tokens, count_only = self.select_list()
        self.expect_word("FROM")
        from_token = self.advance()
        if from_token.kind != "ident":
            raise self.unexpected(from_token)
        self.sobject = self.schema.get(from_token.text.lower())
        if self.sobject is None:
            raise SoqlError(
                "INVALID_TYPE",
                pointer(self.text, from_token.pos)
                + f"sObject type '{from_token.text}' is not supported. If you are attempting to use a custom "
                "object, be sure to append the '__c' after the entity name. Please reference your WSDL or the "
                "describe call for the appropriate names.",
            )
        fields = self.resolve_select(select_tokens)
        where = None
        if self.token.is_word("WHERE"):
            self.advance()
            where = self.condition()
        order: list[OrderItem] = []
        if self.token.is_word("ORDER"):
            self.advance()
            self.expect_word("BY")
            order.append(self.order_item())
            while self.token.kind == "punct" and self.token.text == ",":
                self.advance()
                order.append(self.order_item())
        limit = self.integer_clause("LIMIT")
        offset = self.integer_clause("OFFSET") or 0
        if offset > 2000:
            raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000")
        if self.token.kind != "eof":
            raise self.unexpected()
        return Query(self.text, self.sobject, tuple(fields), count_only, where, tuple(order), limit, offset)

    def select_list(self) -> tuple[list[Token], bool]:
        if self.token.is_word("COUNT") and self.tokens[self.index + 1].text == "(":
            self.advance()
            self.expect_punct("(")
            self.expect_punct(")")
            return [], True
        items = [self.field_token()]
        while self.token.kind == "punct" and self.token.text == ",":
            self.advance()
            items.append(self.field_token())
        return items, False

    def field_token(self) -> Token:
        token = self.advance()
        if token.kind != "ident" or token.text.upper() in ("FROM", "WHERE", "SELECT"):
            raise self.unexpected(token)
        return token

    def resolve_select(self, tokens: list[Token]) -> list[FieldPath]:
        fields: list[FieldPath] = []
        seen: set[str] = set()
        for token in tokens:
            path = self.resolve_field(token)
            if path.name.lower() in seen:
                raise SoqlError("MALFORMED_QUERY", f"duplicate field selected: {path.name}")
            seen.add(path.name.lower())
            fields.append(path)
        return fields

    def resolve_field(self, token: Token) -> FieldPath:
        assert self.sobject is not None
        parts = token.text.split(".")
        if len(parts) > 1 and parts[0].lower() == self.sobject.name.lower():
            parts = parts[1:]
        if len(parts) == 1:
            spec = self.sobject.field(parts[0])
            if spec is not None:
                return FieldPath(spec)
        elif len(parts) == 2:
            via = self.sobject.relationship(parts[0])
            target = self.schema.get((via.reference_to or "").lower()) if via else None
            spec = target.field(parts[1]) if target else None
            if via is not None and target is not None and spec is not None:
                return FieldPath(spec, via, target)
            if via is None:
                raise SoqlError(
                    "INVALID_FIELD",
                    pointer(self.text, token.pos)
                    + f"Didn't understand relationship '{parts[0]}' in field path. If you are attempting to use "
                    "a custom relationship, be sure to append the '__r' after the custom relationship name. "
                    "Please reference your WSDL or the describe call for the appropriate names.",
                )
        entity = self.sobject.name if len(parts) == 1 else parts[0]
        raise SoqlError(
            "INVALID_FIELD",
            pointer(self.text, token.pos)
            + f"No such column '{parts[-1]}' on entity '{entity}'. If you are attempting to use a custom field, "
            "be sure to append the '__c' after the custom field name. Please reference your WSDL or the "
            "describe call for the appropriate names.",
        )

    def order_item(self) -> OrderItem:
        path = self.resolve_field(self.field_token())
        descending = False
        if self.token.is_word("ASC", "DESC"):
            descending = self.advance().text.upper() == "DESC"
        nulls_last = descending  # the CRM's default: ASC NULLS FIRST, DESC NULLS LAST
        if self.token.is_word("NULLS"):
            self.advance()
            if not self.token.is_word("FIRST", "LAST"):
                raise self.unexpected()
            nulls_last = self.advance().text.upper() == "LAST"
        return OrderItem(path, descending, nulls_last)

    def integer_clause(self, word: str) -> int | None:
        if not self.token.is_word(word):
            return None
        self.advance()
        token = self.advance()
        if token.kind != "number" or not token.text.isdigit():
            raise self.unexpected(token)
        return int(token.text)

    def condition(self) -> Any:
        items = [self.unary()]
        connector = None
        while self.token.is_word("AND", "OR"):
            word = self.token.text.upper()
            if connector is not None and word != connector:
                raise self.unexpected()
            connector = word
            self.advance()
            items.append(self.unary())
        return items[0] if connector is None else BoolOp(connector, tuple(items))

    def unary(self) -> Any:
        if self.token.is_word("NOT"):
            self.advance()
            return BoolOp("NOT", (self.unary(),))
        if self.token.kind == "punct" and self.token.text == "(":
            self.advance()
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        field_token = self.field_token()
        path = self.resolve_field(field_token)
        if self.token.kind == "op":
            op = self.advance().text
            op = "!=" if op == "<>" else op
            literal = self.literal()
            return self.typed(path, op, [literal])
        if self.token.is_word("LIKE"):
            self.advance()
            literal = self.literal()
            if literal.kind != "string" or not path.spec.is_string:
                raise SoqlError(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    pointer(self.text, literal.pos) + f"invalid operator on field {path.name}: LIKE",
                )
            return Comparison(path, "LIKE", (), re.compile(f"^{literal.like}$", re.IGNORECASE | re.DOTALL))
        negate = False
        if self.token.is_word("NOT"):
            self.advance()
            negate = True
        if self.token.is_word("IN"):
            self.advance()
            self.expect_punct("(")
            literals = [self.literal()]
            while self.token.kind == "punct" and self.token.text == ",":
                self.advance()
                literals.append(self.literal())
            self.expect_punct(")")
            return self.typed(path, "NOT IN" if negate else "IN", literals)
        raise self.unexpected()

    def literal(self) -> Literal:
        token = self.advance()
        if token.kind == "string":
            try:
                value, like = decode_string(token.text)
            except ValueError as exc:
                raise malformed(self.text, token.pos, str(exc)) from None
            return Literal("string", value, token.pos, like)
        if token.kind == "number":
            return Literal("number", float(token.text), token.pos)
        if token.kind == "datetime":
            parsed = parse_datetime(token.text)
            if parsed is None:
                raise malformed(
                    self.text, token.pos, f"line 1:{token.pos} no viable alternative at character '{token.text}'"
                )
            return Literal("datetime", parsed, token.pos)
        if token.kind == "date":
            try:
                return Literal("date", date.fromisoformat(token.text), token.pos)
            except ValueError:
                raise self.unexpected(token) from None
        if token.is_word("TRUE", "FALSE"):
            return Literal("boolean", token.text.upper() == "TRUE", token.pos)
        if token.is_word("NULL"):
            return Literal("null", None, token.pos)
        if token.kind == "ident" and token.text.upper() in _RELATIVE_DATES:
            return Literal("relative", self.relative_range(token), token.pos)
        raise self.unexpected(token)

    def relative_range(self, token: Token) -> tuple[datetime, datetime]:
        word = token.text.upper()
        today = datetime(self.now.year, self.now.month, self.now.day, tzinfo=UTC)
        day = timedelta(days=1)
        if word in ("TODAY", "YESTERDAY", "TOMORROW"):
            start = today + day * {"TODAY": 0, "YESTERDAY": -1, "TOMORROW": 1}[word]
            return start, start + day
        self.expect_punct(":")
        count_token = self.advance()
        if count_token.kind != "number" or not count_token.text.isdigit():
            raise self.unexpected(count_token)
        count = int(count_token.text)
        if word == "LAST_N_DAYS":
            return today - day * count, today + day
        return today + day, today + day * (count + 1)

    def typed(self, path: FieldPath, op: str, literals: list[Literal]) -> Comparison:
        """Check each literal against the field type; normalise values for comparison."""
        spec = path.spec
        values: list[Any] = []
        for literal in literals:
            if literal.kind == "null":
                values.append(None)
            elif spec.type in ("id", "reference"):
                normalized = normalize_id(literal.value) if literal.kind == "string" else None
                if normalized is None:
                    raise SoqlError(
                        "INVALID_QUERY_FILTER_OPERATOR",
                        pointer(self.text, literal.pos) + f"invalid ID field: {literal.value}",
                    )
                values.append(normalized)
            elif spec.is_string:
                if literal.kind != "string":
                    raise self.type_error(path, literal, "string and should be enclosed in quotes")
                values.append(literal.value.lower())
            elif spec.type == "boolean":
                if literal.kind != "boolean":
                    raise self.type_error(path, literal, "boolean and should not be enclosed in quotes")
                values.append(literal.value)
            elif spec.type == "double":
                if literal.kind != "number":
                    raise self.type_error(path, literal, "double and should not be enclosed in quotes")
                values.append(literal.value)
            elif spec.type == "date":
                if literal.kind != "date":
                    raise self.type_error(path, literal, "date and should not be enclosed in quotes")
                values.append(literal.value.isoformat())  # stored as YYYY-MM-DD, which sorts as text
            elif spec.type == "datetime":
                if literal.kind == "relative":
                    if op not in ("=", "!=", "<", "<=", ">", ">="):
                        raise self.type_error(path, literal, "dateTime and should not be enclosed in quotes")
                    values.append(literal.value)
                elif literal.kind != "datetime":
                    raise self.type_error(path, literal, "dateTime and should not be enclosed in quotes")
                else:
                    values.append(literal.value)
            else:
                raise self.type_error(path, literal, spec.type)
        return Comparison(path, op, tuple(values))

    def type_error(self, path: FieldPath, literal: Literal, expected: str) -> SoqlError:
        return SoqlError(
            "INVALID_FIELD",
            pointer(self.text, literal.pos)
            + f"value of filter criterion for field '{path.spec.name}' must be of type {expected}",
        )


def parse(text: str, schema: Mapping[str, ObjectSpec], *, now: datetime | None = None) -> Query:
    """Parse and type-check ``text`` against ``schema`` (objects by name).

    ``now`` anchors relative date literals (UTC; defaults to the current time).
    """
    if not text or not text.strip():
        raise SoqlError("MALFORMED_QUERY", "A query string has to be specified")
    return _Parser(text, schema, now or datetime.now(UTC)).parse()
