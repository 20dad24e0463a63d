"""HubSpotClient against the in-process HubSpot sandbox: wire calls, auth, and error classes."""

import socket

import pytest

from crm.base import AuthExpired, Permanent, RateLimited, Transient
from crm.hubspot.client import CALLS, HubSpotClient, classify, with_headroom
from crm.hubspot.tests.conftest import load_payload


def test_single_record_round_trip(client):
    created = client.create({"email": "Ada@Example.com", "firstname": "Ada"})

    updated = client.update(created["id"], {"jobtitle": "Analyst", "firstname": ""})
    by_email = client.get_by_email("ada@example.com", properties=["firstname", "jobtitle"])
    client.archive(created["id"])

    assert created["id"].isdigit()
    assert updated["properties"]["jobtitle"] == "Analyst"
    assert by_email["id"] == created["id"]
    assert by_email["properties"] == {"firstname": None, "jobtitle": "Analyst"}  # "" cleared it
    with pytest.raises(Permanent) as gone:
        client.get(created["id"])
    assert (gone.value.status, gone.value.code) == (404, "OBJECT_NOT_FOUND")


def test_duplicate_email_is_a_conflict_naming_the_existing_id(client):
    first = client.create({"email": "dup@example.com"})

    with pytest.raises(Permanent) as conflict:
        client.create({"email": "DUP@example.com"})

    assert (conflict.value.status, conflict.value.code) == (409, "CONFLICT")
    assert f"Existing ID: {first['id']}" in conflict.value.message


def test_validation_error_carries_hubspots_inner_code_and_message(client):
    with pytest.raises(Permanent) as invalid:
        client.create({"email": "example.lcom"})

    assert invalid.value.code == "INVALID_EMAIL"
    assert invalid.value.message == "Email address example.lcom is invalid"
    assert invalid.value.retryable is False


def test_batches_are_chunked_by_one_hundred(client, control):
    inputs = [(f"p{i}@example.com", {"email": f"p{i}@example.com", "lastname": str(i)}) for i in range(250)]

    outcome = client.batch_upsert(inputs)
    read = client.batch_read([obj["id"] for obj in outcome.results] + ["999999"], properties=["lastname"])
    client.batch_archive([obj["id"] for obj in outcome.results[:120]])

    assert len(outcome.results) == 250
    assert all(obj["new"] for obj in outcome.results)
    assert len(read.results) == 250
    assert read.errors[0]["context"]["ids"] == ["999999"]
    requests = control.stats()["requests"]
    assert requests["POST /crm/v3/objects/contacts/batch/upsert"] == {"200": 3}
    assert requests["POST /crm/v3/objects/contacts/batch/read"] == {"200": 2, "207": 1}
    assert requests["POST /crm/v3/objects/contacts/batch/archive"] == {"204": 2}
    assert control.stats()["records"] == 130


def test_batch_create_maps_partial_failures_by_trace_id(client):
    outcome = client.batch_create([{"email": "ok@example.com"}, {"email": "bad@"}, {"email": "ok2@example.com"}])

    assert sorted(obj["objectWriteTraceId"] for obj in outcome.results) == ["0", "2"]
    assert outcome.errors[0]["context"]["objectWriteTraceId"] == ["1"]


# --- rate limits --------------------------------------------------------------------------------
def test_hubspot_429_becomes_rate_limited_with_its_retry_after(client, control, monkeypatch):
    # The limiter would follow the portal's 2 calls per 10 s and hold the third back: HubSpot's own
    # answer is what this test looks at.
    monkeypatch.setattr(client.limiter, "fit", lambda rate: None)
    control.config(rate_limit={"max": 2, "interval_ms": 10_000})
    client.create({"email": "r1@example.com"})
    client.create({"email": "r2@example.com"})

    with pytest.raises(RateLimited) as limited:
        client.create({"email": "r3@example.com"})

    assert limited.value.status == 429
    assert 1 <= limited.value.retry_after <= 10
    assert "TEN_SECONDLY_ROLLING" in limited.value.message


def test_search_429_is_rate_limited_for_about_a_second(client, control):
    control.config(search_rate_limit={"max": 1, "interval_ms": 1_000})
    client.search({"limit": 1})

    with pytest.raises(RateLimited) as limited:
        client.search({"limit": 1})

    assert limited.value.retry_after == 1.0
    assert "SECONDLY" in limited.value.message


def test_rate_limit_storm_is_rate_limited(client, control):
    control.config(rate_limit_storm=1.0)

    with pytest.raises(RateLimited) as limited:
        client.get("1001")

    assert limited.value.retry_after == 1.0


def test_the_shared_limiter_stops_us_before_hubspot_would(hubspot_config, control):
    control.config(rate_limit={"max": 3, "interval_ms": 10_000})
    client = HubSpotClient({**hubspot_config, "rate_limit": "3/10 seconds"})
    client.limiter.max_wait = 0.2
    for n in range(2):  # one request of headroom below HubSpot's 3
        client.create({"email": f"l{n}@example.com"})

    with pytest.raises(RateLimited) as limited:
        client.create({"email": "l2@example.com"})

    assert "budget" in limited.value.message
    assert control.stats()["requests_total"] == 2  # the third call never left this process
    assert control.stats()["rate_limited"] == 0


@pytest.mark.parametrize(
    ("rate", "kept"),
    [("100/10 seconds", "95 per 10 second"), ("10/second", "9 per 1 second"), ("5/second", "4 per 1 second"),
     ("1/second", "1 per 1 second")],
)  # fmt: skip
def test_limiter_keeps_headroom_below_hubspots_limit(rate, kept):
    assert with_headroom(rate) == kept


# --- transient failures -------------------------------------------------------------------------
def test_server_errors_are_transient(client, control):
    control.config(error_rate=1.0)

    with pytest.raises(Transient) as failed:
        client.create({"email": "e@example.com"})

    assert failed.value.status in (500, 503)
    assert failed.value.retryable is True
    assert not isinstance(failed.value, RateLimited)


def test_timeouts_are_transient(hubspot_config, control):
    control.config(latency_ms=500)
    client = HubSpotClient({**hubspot_config, "read_timeout": 0.1})

    with pytest.raises(Transient) as failed:
        client.get("1001")

    assert failed.value.code == "TIMEOUT"


def test_connection_refused_is_transient(hubspot_config):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the call: nothing listens there
    client = HubSpotClient({**hubspot_config, "base_url": f"http://127.0.0.1:{port}"})

    with pytest.raises(Transient) as failed:
        client.get("1001")

    assert failed.value.code == "CONNECTION_ERROR"


# --- auth ---------------------------------------------------------------------------------------
def test_bad_private_app_token_is_auth_expired_at_once(hubspot_config):
    client = HubSpotClient({**hubspot_config, "access_token": "pat-na1-revoked", "refresh_token": ""})

    with pytest.raises(AuthExpired) as refused:
        client.get("1001")

    assert (refused.value.status, refused.value.code) == (401, "INVALID_AUTHENTICATION")


def test_oauth_401_refreshes_once_and_retries(hubspot_config, control):
    seen = []
    config = {**hubspot_config, "access_token": "expired-token", "refresh_token": "sandbox-refresh-token"}
    client = HubSpotClient(config, on_response=seen.append)

    created = client.create({"email": "oauth@example.com"})
    client.get(created["id"])

    assert created["id"].isdigit()
    assert [(record.operation, record.outcome) for record in seen] == [
        ("create", "auth_refresh"),
        ("token", "ok"),
        ("create", "ok"),
        ("get", "ok"),  # the new token is reused
    ]


def test_oauth_only_config_fetches_a_token_first(hubspot_config):
    client = HubSpotClient({**hubspot_config, "access_token": "", "refresh_token": "sandbox-refresh-token"})

    assert client.create({"email": "first@example.com"})["id"].isdigit()


def test_refused_refresh_token_is_auth_expired(hubspot_config):
    client = HubSpotClient({**hubspot_config, "access_token": "expired", "refresh_token": "revoked"})

    with pytest.raises(AuthExpired) as refused:
        client.get("1001")

    assert refused.value.code == "BAD_REFRESH_TOKEN"


def test_token_refused_right_after_a_refresh_is_auth_expired(hubspot_config, control):
    control.config(token_ttl_s=0)  # every new token is already expired
    client = HubSpotClient({**hubspot_config, "access_token": "expired", "refresh_token": "sandbox-refresh-token"})
    before = CALLS[("token", "ok")]

    with pytest.raises(AuthExpired) as refused:
        client.get("1001")

    assert refused.value.code == "EXPIRED_AUTHENTICATION"
    assert CALLS[("token", "ok")] == before + 1  # refreshed once, not in a loop


# --- classification of HubSpot's documented error bodies (no I/O) --------------------------------
@pytest.mark.parametrize(
    ("status", "payload", "headers", "error_class", "code"),
    [
        (400, "error_invalid_email.json", {}, Permanent, "INVALID_EMAIL"),
        (409, "error_conflict.json", {}, Permanent, "CONFLICT"),
        (404, "error_not_found.json", {}, Permanent, "OBJECT_NOT_FOUND"),
        (403, "error_missing_scopes.json", {}, Permanent, "MISSING_SCOPES"),
        (401, "error_expired_token.json", {}, AuthExpired, "EXPIRED_AUTHENTICATION"),
        (429, "error_rate_limit_ten_secondly.json", {}, RateLimited, "RATE_LIMITED"),
        (502, None, {}, Transient, "HTTP_502"),
    ],
)
def test_documented_error_bodies_classify(status, payload, headers, error_class, code):
    error = classify(status, load_payload(payload) if payload else None, headers)

    assert type(error) is error_class
    assert (error.code, error.status) == (code, status)


@pytest.mark.parametrize(
    ("payload", "headers", "retry_after"),
    [
        ("error_rate_limit_ten_secondly.json", {}, 10.0),
        ("error_rate_limit_secondly.json", {}, 1.0),
        ("error_rate_limit_ten_secondly.json", {"Retry-After": "3"}, 3.0),
    ],
)
def test_retry_after_comes_from_the_header_else_the_policy(payload, headers, retry_after):
    assert classify(429, load_payload(payload), headers).retry_after == retry_after


def test_the_limiter_follows_the_portal_s_short_window_where_it_is_tighter(client, control):
    assert client.limiter.item.amount == 950  # the configured 1,000 per 10 s, with headroom
    control.config(rate_limit={"max": 50, "interval_ms": 10_000})  # this app's limit in this portal

    client.probe()

    assert (client.limiter.item.amount, client.limiter.window) == (48, 10)  # 50 less 5 %
    control.config(rate_limit={"max": 5000, "interval_ms": 10_000})
    client.probe()
    assert client.limiter.item.amount == 950  # a looser limit: back to the configured one, never above
