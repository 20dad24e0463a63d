"""Salesforce answers → SyncRoot's error classes. Every classification happens here, once.

REST errors are a JSON array `[{"message", "errorCode", "fields"}]`; sObject Collections
report per-record failures as `{"statusCode", "message", "fields"}` inside a 200 answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

from crm.base import AuthExpired, Permanent, ProviderError, RateLimited, Transient

# The daily org quota is rolling 24 h; an hour-scale wait would starve live changes, so we
# retry after a minute and let the DLQ's backoff stretch it when the quota stays spent.
QUOTA_RETRY_AFTER = 60.0
# "ConcurrentPerOrgLongTxn Limit exceeded": long requests in flight, they drain in seconds.
CONCURRENCY_RETRY_AFTER = 5.0

# Record-level codes that describe the moment, not the data: retrying the same write can work.
TRANSIENT_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
        "UNKNOWN_EXCEPTION",
        "REQUEST_RUNNING_TOO_LONG",
        "QUERY_TIMEOUT",
        "TXN_SECURITY_METERING_ERROR",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        # The AccountId we cached was deleted meanwhile; the cache entry is dropped and the
        # retry resolves the company again.
        "INVALID_CROSS_REFERENCE_KEY",
    }
)
GONE_CODES = frozenset({"NOT_FOUND", "ENTITY_IS_DELETED"})
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def first_error(body: Any) -> tuple[str, str, dict[str, Any]]:
    """(errorCode, message, the raw error object) of a REST error body; ("", text, {}) otherwise."""
    if isinstance(body, list) and body and isinstance(body[0], Mapping):
        error = dict(body[0])
        code = str(error.get("errorCode") or error.get("statusCode") or "")
        return code, str(error.get("message") or ""), error
    if isinstance(body, Mapping):  # OAuth and some edge answers use an object
        code = str(body.get("errorCode") or body.get("error") or "")
        message = str(body.get("message") or body.get("error_description") or "")
        return code, message, dict(body)
    return "", "", {}


def parse_body(content: bytes) -> Any:
    """The JSON body, or the text when it is not JSON (e.g. an HTML page from the edge)."""
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return content[:500].decode("utf-8", "replace")


def error_from_response(status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
    """The error for a non-2xx REST answer (401 means the session is gone: refresh first).

    The first error object is kept as `error.details` (e.g. a duplicate rule's matches).
    """
    error = _classify(status, body, headers)
    error.details = first_error(body)[2]  # type: ignore[attr-defined]
    return error


def _classify(status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
    code, message, _ = first_error(body)
    if not message:
        message = body if isinstance(body, str) and body else f"HTTP {status}"
    retry_after = retry_after_seconds(headers.get("Retry-After"))
    if code == "REQUEST_LIMIT_EXCEEDED" or status == 429:
        default = CONCURRENCY_RETRY_AFTER if "concurrent" in message.lower() else QUOTA_RETRY_AFTER
        return RateLimited(
            message,
            retry_after=retry_after if retry_after is not None else default,
            code=code or "RATE_LIMITED",
            status=status,
        )
    if status == 401:
        return AuthExpired(message, code=code or "INVALID_SESSION_ID", status=status)
    if status in TRANSIENT_STATUSES or status >= 500 or code in TRANSIENT_CODES:
        return transient(message, code=code or f"HTTP_{status}", status=status, retry_after=retry_after)
    return Permanent(message, code=code or f"HTTP_{status}", status=status)


def transient(message: str, *, code: str, status: int | None = None, retry_after: float | None = None) -> Transient:
    error = Transient(message, code=code, status=status)
    # Transient has no retry_after of its own; the DLQ reads it with getattr like RateLimited's.
    error.retry_after = retry_after  # type: ignore[attr-defined]
    return error


def record_error(errors: Sequence[Mapping[str, Any]] | None) -> ProviderError:
    """The error of one failed record in an sObject Collections answer."""
    first = errors[0] if errors else {}
    code = str(first.get("statusCode") or first.get("errorCode") or "UNKNOWN_ERROR")
    message = str(first.get("message") or "record refused")
    fields = first.get("fields") or []
    if fields:
        message = f"{message} (fields: {', '.join(map(str, fields))})"
    if code in TRANSIENT_CODES:
        return transient(message, code=code, status=200)
    return Permanent(message, code=code, status=200)


def duplicate_match_id(error: Mapping[str, Any]) -> str | None:
    """The existing record a DUPLICATES_DETECTED error points to, if it names one.

    Real captures spell the key `duplicateResut` (sic); other clients read `duplicateResult`.
    """
    result = error.get("duplicateResult") or error.get("duplicateResut")
    if not isinstance(result, Mapping):
        return None
    for match in result.get("matchResults") or ():
        for candidate in match.get("matchRecords") or ():
            record = candidate.get("record") or {}
            if record.get("Id"):
                return str(record["Id"])
    return None


def details(error: ProviderError) -> dict[str, Any]:
    """The raw error object Salesforce sent with `error` ({} when none)."""
    return getattr(error, "details", None) or {}
