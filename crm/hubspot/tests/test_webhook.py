"""Webhook v3 verification and event parsing; signatures produced with HubSpot's own SDK helper."""

import json
import time
from datetime import UTC, datetime

import pytest
from hubspot.utils.signature import Signature

from crm.base import WebhookRejected
from crm.hubspot import webhook
from crm.hubspot.provider import HubSpotProvider
from crm.hubspot.tests.conftest import SECRET, load_payload

URL = "https://sync.example.com/webhooks/hubspot"


def signed(body: bytes, *, url: str = URL, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = str(int((time.time() if at is None else at) * 1000))
    try:
        signature = Signature.get_signature(secret, body.decode(), "v3", url, "POST", timestamp)
    except UnicodeDecodeError:  # the SDK signs text only; HubSpot signs the raw bytes
        signature = webhook.sign(secret=secret, method="POST", url=url, body=body, timestamp=timestamp)
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": signature,
        "X-HubSpot-Request-Timestamp": timestamp,
        "X-HubSpot-Signature-Version": "v1",
    }


def body_of(name: str) -> bytes:
    return json.dumps(load_payload(name), separators=(",", ":")).encode()


@pytest.fixture
def hubspot_provider() -> HubSpotProvider:
    return HubSpotProvider({"access_token": "x", "client_secret": SECRET, "app_id": "9393361"})


def test_good_signature_yields_events_keyed_by_subscription_and_event_id(hubspot_provider):
    body = body_of("webhook_property_changes.json")

    events = hubspot_provider.parse_webhook(body=body, headers=signed(body), url=URL, query={})

    assert [e.event_id for e in events] == [
        "3329280:3400564481",
        "3329281:3400564482",
        "3329282:3400564483",
        "3329283:3400564484",
    ]
    assert events[0].payload["propertyValue"] == "x@hubspot.com"


def test_our_signature_matches_the_sdk_and_the_sdk_accepts_ours():
    body = body_of("webhook_creation.json")
    timestamp = str(int(time.time() * 1000))

    ours = webhook.sign(secret=SECRET, method="POST", url=URL, body=body, timestamp=timestamp)

    assert Signature.is_valid(ours, SECRET, body.decode(), URL, "POST", "v3", timestamp)


def test_header_names_are_case_insensitive():
    body = body_of("webhook_creation.json")
    headers = {name.lower(): value for name, value in signed(body).items()}

    assert len(webhook.parse_webhook(body=body, headers=headers, url=URL, secret=SECRET)) == 1


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda body, headers: (body.replace(b"CREATED", b"DELETED"), headers), id="body-changed"),
        pytest.param(lambda body, headers: (body, signed(body, secret="someone-else")), id="other-secret"),
        pytest.param(lambda body, headers: (body, signed(body, url=URL + "?x=1")), id="other-url"),
        pytest.param(lambda body, headers: (body, {**headers, "X-HubSpot-Signature-v3": ""}), id="no-signature"),
        pytest.param(
            lambda body, headers: (body, {k: v for k, v in headers.items() if "Timestamp" not in k}), id="no-timestamp"
        ),
        pytest.param(
            lambda body, headers: (body, {**headers, "X-HubSpot-Request-Timestamp": str(int(time.time() * 1000) + 1)}),
            id="timestamp-changed",
        ),
    ],
)
def test_forged_or_altered_deliveries_are_refused_with_401(tamper):
    original = body_of("webhook_creation.json")
    body, headers = tamper(original, signed(original))

    with pytest.raises(WebhookRejected) as rejected:
        webhook.parse_webhook(body=body, headers=headers, url=URL, secret=SECRET)

    assert (rejected.value.status, rejected.value.code) == (401, "bad_signature")


@pytest.mark.parametrize("offset", [-301, 301], ids=["stale", "future"])
def test_timestamps_outside_five_minutes_are_refused_even_when_correctly_signed(offset):
    body = body_of("webhook_creation.json")

    with pytest.raises(WebhookRejected) as rejected:
        webhook.parse_webhook(body=body, headers=signed(body, at=time.time() + offset), url=URL, secret=SECRET)

    assert rejected.value.status == 401
    assert "5-minute" in rejected.value.message


def test_a_four_minute_old_delivery_is_still_accepted():
    body = body_of("webhook_creation.json")

    assert webhook.parse_webhook(body=body, headers=signed(body, at=time.time() - 240), url=URL, secret=SECRET)


def test_signature_over_the_decoded_url_form_is_accepted():
    # HubSpot's docs have receivers decode a few escapes in the URL before signing.
    body = body_of("webhook_creation.json")
    escaped = URL + "?token=a%3Ab"

    headers = signed(body, url=URL + "?token=a:b")

    assert webhook.parse_webhook(body=body, headers=headers, url=escaped, secret=SECRET)


def test_without_a_configured_secret_nothing_is_accepted():
    body = body_of("webhook_creation.json")

    with pytest.raises(WebhookRejected) as rejected:
        webhook.parse_webhook(body=body, headers=signed(body, secret=""), url=URL, secret="")

    assert rejected.value.status == 401


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"[{not json", 400, "malformed_json"),
        (b"\xff\xfe", 400, "malformed_json"),
        (b'{"eventId": 1}', 400, "not_an_array"),
        (b'[{"subscriptionId": 5}]', 400, "bad_event"),
        (b"[1, 2]", 400, "bad_event"),
        (json.dumps([{"eventId": n} for n in range(101)]).encode(), 413, "too_many_events"),
    ],
)
def test_malformed_bodies_are_refused_after_the_signature_check(body, status, code):
    with pytest.raises(WebhookRejected) as rejected:
        webhook.parse_webhook(body=body, headers=signed(body), url=URL, secret=SECRET)

    assert (rejected.value.status, rejected.value.code) == (status, code)


def test_a_forged_malformed_body_gets_401_not_a_parse_error():
    with pytest.raises(WebhookRejected) as rejected:
        webhook.parse_webhook(body=b"[{not json", headers=signed(b"[]"), url=URL, secret=SECRET)

    assert rejected.value.status == 401


def test_wrong_content_type_is_refused_with_415():
    body = body_of("webhook_creation.json")
    headers = {**signed(body), "Content-Type": "application/x-www-form-urlencoded"}

    with pytest.raises(WebhookRejected) as rejected:
        webhook.parse_webhook(body=body, headers=headers, url=URL, secret=SECRET)

    assert rejected.value.status == 415


def test_exactly_one_hundred_events_are_accepted_and_event_without_subscription_keeps_its_id():
    body = json.dumps([{"eventId": n} for n in range(100)]).encode()

    events = webhook.parse_webhook(
        body=body, headers={**signed(body), "Content-Type": "application/json; charset=utf-8"}, url=URL, secret=SECRET
    )

    assert len(events) == 100
    assert events[7].event_id == "7"


# --- webhook_change: one stored event → one InboundChange ------------------------------------
def test_creation_event_asks_for_a_fetch(hubspot_provider):
    [event] = load_payload("webhook_creation.json")

    change = hubspot_provider.webhook_change(event)

    assert change.external_id == "106314056576"
    assert change.complete is False
    assert change.occurred_at == datetime(2025, 3, 15, 22, 17, 53, 905000, tzinfo=UTC)
    assert change.from_integration is True  # written by app 9393361, which is us


def test_property_changes_map_to_internal_fields_with_their_times(hubspot_provider):
    email, job, lead_status, first_by_other_app = load_payload("webhook_property_changes.json")

    change = hubspot_provider.webhook_change(email)
    cleared = hubspot_provider.webhook_change(job)
    other_app = hubspot_provider.webhook_change(first_by_other_app)

    assert change.values == {"email": "x@hubspot.com"}
    assert change.field_times == {"email": datetime(2025, 3, 15, 22, 18, 0, 123000, tzinfo=UTC)}
    assert change.from_integration is False  # a person in the HubSpot UI
    assert (cleared.values, cleared.from_integration) == ({"job_title": ""}, True)
    assert hubspot_provider.webhook_change(lead_status) is None  # not a synced property
    assert (other_app.values, other_app.from_integration) == ({"first_name": "Jo"}, False)


def test_deletion_is_reported_deleted_and_a_merge_names_the_survivor_and_the_absorbed(hubspot_provider):
    [deletion] = load_payload("webhook_deletion.json")
    [merge] = load_payload("webhook_merge.json")

    change = hubspot_provider.webhook_change(deletion)
    merged = hubspot_provider.webhook_change(merge)
    restore = hubspot_provider.webhook_change({**deletion, "subscriptionType": "contact.restore"})
    privacy = hubspot_provider.webhook_change({**deletion, "subscriptionType": "contact.privacyDeletion"})

    assert (change.external_id, change.deleted) == ("106314056576", True)
    # The survivor is read (values as HubSpot merged them); the merged-away id goes with it.
    assert (merged.external_id, merged.absorbed, merged.complete) == ("106314056576", ("106314056577",), False)
    assert (restore.restored, restore.complete, restore.deleted) == (True, False, False)
    assert (privacy.erased, privacy.deleted) == (True, True)
    assert hubspot_provider.webhook_change({"subscriptionType": "company.creation", "objectId": 5}) is None


def test_without_app_id_nothing_counts_as_our_own_write():
    [event] = load_payload("webhook_creation.json")

    assert HubSpotProvider({"access_token": "x"}).webhook_change(event).from_integration is False


def test_generic_object_events_for_contacts_are_understood(hubspot_provider):
    event = {**load_payload("webhook_deletion.json")[0], "subscriptionType": "object.deletion", "objectTypeId": "0-1"}

    assert hubspot_provider.webhook_change(event).deleted is True
    assert hubspot_provider.webhook_change({**event, "objectTypeId": "0-2"}) is None
