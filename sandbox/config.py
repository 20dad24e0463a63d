"""Config validation for the sandboxes: each coercer normalises a value or raises ValueError."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ConfigError",
    "coerce_bool",
    "coerce_fraction",
    "coerce_non_negative",
    "coerce_optional_int",
    "coerce_optional_str",
    "coerce_quota",
    "coerce_rate_limit",
    "coerce_str",
]


class ConfigError(ValueError):
    """A control-plane config change was refused (unknown key or bad value)."""


def coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError("expected a boolean")


def coerce_fraction(value: Any) -> float:
    number = coerce_non_negative(value)
    if number > 1:
        raise ValueError("expected a fraction between 0 and 1")
    return number


def coerce_non_negative(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("expected a non-negative number")
    return float(value)


def coerce_optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("expected a non-negative integer or null")
    return value


def coerce_quota(value: Any) -> int | None:
    """A daily request quota; ``null`` or 0 means unlimited."""
    return coerce_optional_int(value) or None


def coerce_str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def coerce_optional_str(value: Any) -> str | None:
    return None if value in (None, "") else coerce_str(value)


def coerce_rate_limit(value: Any) -> dict[str, int] | None:
    """``{"max": N, "interval_ms": M}``; ``null`` or ``max`` 0 disables the limit."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - {"max", "interval_ms"}:
        raise ValueError('expected {"max": N, "interval_ms": M} or null')
    maximum = coerce_optional_int(value.get("max"))
    interval = coerce_optional_int(value.get("interval_ms", 10_000))
    if not maximum:
        return None
    if not interval:
        raise ValueError("interval_ms must be positive")
    return {"max": maximum, "interval_ms": interval}
