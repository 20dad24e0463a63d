"""Salesforce answers → SyncRoot error classes (documentation payloads)."""

import json
from pathlib import Path

import pytest

from crm.base import AuthExpired, Permanent, RateLimited, Transient
from crm.salesforce.errors import (
    duplicate_match_id,
    error_from_response,
    record_error,
    retry_after_seconds,
)

PAYLOADS = Path(__file__).parent / "payloads"


def load(name):
    return json.loads((PAYLOADS / name).read_text())


def test_validation_error_is_permanent_with_the_crm_code_and_message():
    error = error_from_response(400, load("error_required_field.json"), {})
    assert isinstance(error, Permanent)
    assert (error.code, error.message, error.status) == (
        "REQUIRED_FIELD_MISSING",
        "Required fields are missing: [LastName]",
        400,
    )
    assert not error.retryable


def test_quota_is_rate_limited_with_a_default_wait():
    error = error_from_response(403, load("error_request_limit.json"), {})
    assert isinstance(error, RateLimited)
    assert error.code == "REQUEST_LIMIT_EXCEEDED"
    assert error.retry_after == 60.0


def test_quota_honours_retry_after():
    error = error_from_response(403, load("error_request_limit.json"), {"Retry-After": "7"})
    assert error.retry_after == 7.0


def test_concurrency_limit_waits_briefly():
    body = [{"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    assert error_from_response(403, body, {}).retry_after == 5.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_transient(status):
    error = error_from_response(status, load("error_unknown_exception.json"), {"Retry-After": "3"})
    assert isinstance(error, Transient)
    assert not isinstance(error, RateLimited)
    assert error.retry_after == 3.0


def test_non_json_edge_page_keeps_its_text():
    error = error_from_response(503, "<html>Maintenance</html>", {})
    assert isinstance(error, Transient)
    assert error.code == "HTTP_503"
    assert "Maintenance" in error.message


def test_session_expired_is_auth_expired():
    error = error_from_response(401, load("error_session_expired.json"), {})
    assert isinstance(error, AuthExpired)
    assert error.code == "INVALID_SESSION_ID"


def test_row_lock_is_transient_even_as_a_400():
    body = [{"message": "unable to obtain exclusive access to this record", "errorCode": "UNABLE_TO_LOCK_ROW"}]
    assert isinstance(error_from_response(400, body, {}), Transient)


def test_collection_record_errors_are_classified_per_record():
    results = load("collections_create_partial.json")
    missing = record_error(results[1]["errors"])
    locked = record_error(results[2]["errors"])
    assert isinstance(missing, Permanent)
    assert missing.code == "REQUIRED_FIELD_MISSING"
    assert "LastName" in missing.message
    assert isinstance(locked, Transient)
    assert locked.code == "UNABLE_TO_LOCK_ROW"


def test_duplicate_rule_answer_names_the_existing_record_either_spelling():
    body = load("error_duplicates_detected.json")
    error = error_from_response(400, body, {})
    assert error.code == "DUPLICATES_DETECTED"
    assert duplicate_match_id(error.details) == "0035g00000XXXXXAAA"
    fixed = {**body[0], "duplicateResult": body[0].pop("duplicateResut")}
    assert duplicate_match_id(fixed) == "0035g00000XXXXXAAA"
    assert duplicate_match_id({"errorCode": "DUPLICATES_DETECTED"}) is None


def test_retry_after_reads_seconds_and_dates():
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
