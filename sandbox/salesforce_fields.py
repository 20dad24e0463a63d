"""Field values as the Salesforce REST API checks them, per field type, and its record error.

Kept apart from :mod:`sandbox.salesforce_store` so that the store stays about
records and transactions; the store re-exports :class:`RecordError`.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Any

from sandbox.salesforce_schema import FieldSpec, parse_datetime

__all__ = ["RecordError", "coerce_value"]

# The CRM's own check is lenient on the local part and strict on the domain.
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class RecordError(Exception):
    """One record refused: the CRM's error code, message and fields (status for single calls)."""

    def __init__(
        self,
        code: str,
        message: str,
        fields: list[str] | None = None,
        status: int = 400,
        *,
        detail: dict[str, Any] | None = None,
        collection_message: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.fields = fields or []
        self.status = status
        self.detail = detail  # extra keys of the single-record error (duplicate rule results)
        self.collection_message = collection_message or message

    def as_rest(self) -> dict[str, Any]:
        if self.detail is not None:
            return {**self.detail, "errorCode": self.code, "message": self.message}
        return {"message": self.message, "errorCode": self.code, "fields": self.fields}

    def as_collection(self) -> dict[str, Any]:
        return {"statusCode": self.code, "message": self.collection_message, "fields": self.fields}


def _not_deserializable(spec: FieldSpec, kind: str, raw: Any) -> RecordError:
    token = "VALUE_STRING" if isinstance(raw, str) else "VALUE_NUMBER_INT" if isinstance(raw, int) else "VALUE_TRUE"
    return RecordError(
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {kind} from {token} value {raw} or request may be missing a required field",
        [spec.name],
    )


def coerce_value(spec: FieldSpec, raw: Any) -> Any:
    """The stored value of ``raw`` for a non-reference field, or the CRM's refusal."""
    if isinstance(raw, (dict, list)):
        token = "START_OBJECT" if isinstance(raw, dict) else "START_ARRAY"
        raise RecordError(
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {'reference' if spec.type == 'reference' else 'string'} "
            f"from {token} value for field {spec.name}",
            [spec.name],
        )
    if spec.type == "boolean":
        return _boolean(spec, raw)
    if raw is None or raw == "":
        return None  # the CRM stores empty text as null
    if spec.type == "double":
        return _double(spec, raw)
    if spec.type == "date":
        if not isinstance(raw, str) or not _DATE_RE.match(raw) or not _valid_date(raw):
            raise _not_deserializable(spec, "date", raw)
        return raw
    if spec.type == "datetime":
        parsed = parse_datetime(raw) if isinstance(raw, str) else None
        if parsed is None:
            raise _not_deserializable(spec, "datetime", raw)
        return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)
    value = raw if isinstance(raw, str) else str(raw).lower() if isinstance(raw, bool) else str(raw)
    if spec.length and len(value) > spec.length:
        raise RecordError(
            "STRING_TOO_LONG",
            f"{spec.label}: data value too large: {value} (max length={spec.length})",
            [spec.name],
        )
    if spec.type == "email" and not _EMAIL_RE.match(value):
        raise RecordError("INVALID_EMAIL_ADDRESS", f"{spec.label}: invalid email address: {value}", [spec.name])
    if spec.type == "picklist" and spec.restricted and value not in spec.picklist:
        raise RecordError(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"{spec.label}: bad value for restricted picklist field: {value}",
            [spec.name],
        )
    return value


def _valid_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _boolean(spec: FieldSpec, raw: Any) -> bool:
    if raw is None:
        return False  # a checkbox is never null: clearing it unchecks it
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise _not_deserializable(spec, "boolean", raw)


def _double(spec: FieldSpec, raw: Any) -> float:
    if isinstance(raw, bool):
        raise _not_deserializable(spec, "double", raw)
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise _not_deserializable(spec, "double", raw) from None
    if not math.isfinite(number):
        raise _not_deserializable(spec, "double", raw)
    # Extra decimals are rounded to the field's scale; too many integer digits are refused.
    number = round(number, spec.scale)
    if spec.precision and abs(number) >= 10 ** (spec.precision - spec.scale):
        raise RecordError(
            "NUMBER_OUTSIDE_VALID_RANGE",
            f"{spec.label}: value outside of valid range on numeric field: {raw}",
            [spec.name],
        )
    return number
