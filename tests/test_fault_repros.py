"""Minimal reproductions of what the fault suite (`make faults`, bench/faults*.py) found.

Each test pins one behaviour at the level of the service that owns it, without the whole stack.
"""

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.exceptions import Throttled

from contacts.models import SYNCED_FIELDS
from contacts.tests.factories import ContactFactory
from crm.base import InboundChange, PushResult, Transient, value_hash
from crm.ratelimit import RateLimiter
from crm.salesforce.client import SalesforceClient
from crm.salesforce.errors import error_from_response
from providers.inbound import change_apply
from providers.ledger import prior_hashes
from providers.models import LinkStatus, ProviderLink
from providers.sync import DrainReport, _mark_failed
from sandbox.testing import running_sandbox
from syncroot.errors import exception_handler

pytestmark = pytest.mark.django_db

OVERLOADED = [{"errorCode": "SERVER_UNAVAILABLE", "message": "Server temporarily unavailable, please retry."}]


def _failed_once_more(error, attempts: int) -> ProviderLink:
    link = ProviderLink.objects.create(
        contact=ContactFactory(), provider="salesforce", status=LinkStatus.FAILED, attempts=attempts
    )
    _mark_failed(link, PushResult(key=link.pk, error=error), link.contact.version, DrainReport())
    link.refresh_from_db()
    return link


def test_an_overloaded_crm_asking_to_come_back_later_does_not_use_up_attempts():
    """Salesforce has no 429: its throttling answer is 503 SERVER_UNAVAILABLE with Retry-After.
    Under a storm of them (faults scenario crm_429_storm, 30 %) changes were parked as dead
    letters after SYNC_MAX_ATTEMPTS, while HubSpot's 429s never count: a busy CRM is not the
    record's fault."""
    busy = error_from_response(503, OVERLOADED, {"Retry-After": "1"})

    link = _failed_once_more(busy, attempts=settings.SYNC_MAX_ATTEMPTS - 1)

    assert link.status == LinkStatus.FAILED
    assert link.attempts == settings.SYNC_MAX_ATTEMPTS - 1
    assert link.next_attempt_at is not None


def test_a_server_error_without_retry_after_still_counts():
    broken = error_from_response(503, OVERLOADED, {})

    link = _failed_once_more(broken, attempts=settings.SYNC_MAX_ATTEMPTS - 1)

    assert link.status == LinkStatus.PARKED


def _linked(contact, provider: str, external_id: str, synced_at) -> ProviderLink:
    return ProviderLink.objects.create(
        contact=contact, provider=provider, external_id=external_id, status=LinkStatus.SYNCED,
        synced_version=contact.version, synced_at=synced_at,
        field_hashes={f: value_hash(getattr(contact, f)) for f in SYNCED_FIELDS},
    )  # fmt: skip


def test_a_salesforce_message_does_not_revert_a_newer_hubspot_edit_it_merely_carries():
    """Faults scenario webhooks_duplicated_reordered. A person edits first_name in HubSpot (t1),
    another edits last_name of the same contact in Salesforce (t2 > t1). SyncRoot applies the
    HubSpot change and writes it to Salesforce (t3) before it handles the Salesforce Outbound
    Message of t2, which carries the whole record, first_name still the old value. Every field
    of that message is taken as changed at t2, newer than t1, so the old first name wins in all
    three systems: the HubSpot edit was silently lost. The link now records when each field was
    last written to the CRM, and a change older than that write is stale for that field."""
    start = timezone.now() - timedelta(minutes=1)
    contact = ContactFactory(first_name="Ada", last_name="Lovelace", field_times={f: start.isoformat()
                             for f in SYNCED_FIELDS})  # fmt: skip
    _linked(contact, "hubspot", "101", start)
    salesforce = _linked(contact, "salesforce", "003000000000001AAA", start)
    t1, t2 = start + timedelta(seconds=10), start + timedelta(seconds=11)

    change_apply(provider="hubspot", change=InboundChange(
        external_id="101", values={"first_name": "Augusta"}, field_times={"first_name": t1}, occurred_at=t1,
    ))  # fmt: skip
    # The forwarder writes Augusta to Salesforce at t3 (what _mark_synced records).
    salesforce.refresh_from_db()
    salesforce.field_prior_hashes["first_name"] = [salesforce.field_hashes["first_name"]]
    salesforce.field_hashes["first_name"] = value_hash("Augusta")
    salesforce.field_written_at["first_name"] = (start + timedelta(seconds=12)).isoformat()
    salesforce.synced_at = start + timedelta(seconds=12)
    salesforce.status = LinkStatus.SYNCED
    salesforce.save()
    # The Outbound Message of t2: LastName changed; FirstName is what Salesforce held at t2.
    record = {f: getattr(contact, f) for f in SYNCED_FIELDS} | {"first_name": "Ada", "last_name": "King"}
    change_apply(provider="salesforce", change=InboundChange(
        external_id="003000000000001AAA", values=record, field_times=dict.fromkeys(record, t2), occurred_at=t2,
    ))  # fmt: skip

    contact.refresh_from_db()
    assert contact.last_name == "King"
    assert contact.first_name == "Augusta"


@pytest.mark.parametrize("wait", [0.0, 0.4, 7.0])
def test_every_throttled_answer_says_when_to_retry(wait):
    """Faults scenario api_abuse: under a flood some 429s came without Retry-After. The moving
    window may already be resetting when the throttle is asked how long to wait (0 s), and a wait
    of 0 was taken for "no wait known"."""
    response = exception_handler(Throttled(wait=wait), {})

    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1


def _synced_contact(**values):
    start = timezone.now() - timedelta(minutes=1)
    contact = ContactFactory(**values, field_times={f: start.isoformat() for f in SYNCED_FIELDS})
    hubspot = _linked(contact, "hubspot", "101", start)
    salesforce = _linked(contact, "salesforce", "003000000000001AAA", start)
    return contact, hubspot, salesforce, start


def _hubspot_change(field: str, value: str, at) -> str:
    return change_apply(provider="hubspot", change=InboundChange(
        external_id="101", values={field: value}, field_times={field: at}, occurred_at=at,
    ))  # fmt: skip


def _written(link: ProviderLink, field: str, value: str, at) -> None:
    """What the forwarder records after writing `value` to the link's CRM at `at`."""
    link.refresh_from_db()
    link.field_prior_hashes[field] = [link.field_hashes.get(field, ""), *prior_hashes(link, field)][:8]
    link.field_hashes[field] = value_hash(value)
    link.field_written_at[field] = at.isoformat()
    link.synced_at, link.status = at, LinkStatus.SYNCED
    link.save()


def test_an_older_event_delivered_late_does_not_send_the_change_back_to_its_own_crm():
    """Faults scenario webhooks_duplicated_reordered (webhook_reorder): a person sets last_name to
    A then B in HubSpot; the events arrive B, A. A is older than B and is not applied, but the
    link's ledger is rewritten to A's hash, so the HubSpot link turns pending and SyncRoot writes
    B back to HubSpot. With webhooks lagging, that write lands after the person's next edit C and
    overwrites it in HubSpot; C's event, older than that write, is then discarded as stale: C is
    lost in all three systems."""
    contact, hubspot, _, start = _synced_contact(last_name="Lovelace")
    t1 = start + timedelta(seconds=10)

    assert _hubspot_change("last_name", "B", t1 + timedelta(milliseconds=10)) == "applied"
    _hubspot_change("last_name", "A", t1)

    hubspot.refresh_from_db()
    assert hubspot.field_hashes["last_name"] == value_hash("B")  # what HubSpot holds
    assert hubspot.status == LinkStatus.SYNCED  # nothing to send back to where the change came from


def test_a_newer_edit_overwritten_by_our_write_of_an_older_one_still_wins():
    """Faults scenario webhooks_duplicated_reordered: a person sets job_title X in HubSpot (t1),
    another sets Title Y in Salesforce (t2 > t1). SyncRoot writes X to Salesforce (t3 > t2) before
    it handles Salesforce's message of t2, so Salesforce now holds the older X. The message of t2
    is newer than X's change and must win (Y everywhere, written back to Salesforce); it is taken
    as stale because it is older than our write, and Y is lost."""
    contact, _, salesforce, start = _synced_contact(job_title="Engineer")
    t1, t2, t3 = (start + timedelta(seconds=s) for s in (10, 11, 12))

    _hubspot_change("job_title", "X", t1)
    _written(salesforce, "job_title", "X", t3)
    record = {f: getattr(contact, f) for f in SYNCED_FIELDS} | {"job_title": "Y"}
    change_apply(provider="salesforce", change=InboundChange(
        external_id="003000000000001AAA", values=record, field_times=dict.fromkeys(record, t2), occurred_at=t2,
    ))  # fmt: skip

    contact.refresh_from_db()
    salesforce.refresh_from_db()
    assert contact.job_title == "Y"
    assert salesforce.status == LinkStatus.PENDING  # Y goes back to Salesforce


def test_a_snapshot_of_an_earlier_write_of_ours_does_not_revert_a_later_edit():
    """Faults scenario webhooks_duplicated_reordered, with the per-field ledger: a person sets
    last_name B in HubSpot (t1), later C1 then C2 (t2 < t2b). SyncRoot writes B to Salesforce at
    t3, then C1 at t4 and C2 at t5. A snapshot of Salesforce taken between t3 and t4 (the
    reconciler's read, or a late Outbound Message) holds B: our own write. B is neither what
    Salesforce holds (C2) nor what it held before our last write (C1), so it is taken for a
    person's change at t3' > t2b and reverts C2 in all three systems (seen live: the reconciler
    read Salesforce between two of our writes)."""
    contact, _, salesforce, start = _synced_contact(last_name="Lovelace")
    t1, t2, t2b, t3, t3b, t4, t5 = (start + timedelta(seconds=s) for s in (10, 11, 11.01, 12, 12.5, 13, 14))

    _hubspot_change("last_name", "B", t1)
    _written(salesforce, "last_name", "B", t3)
    _hubspot_change("last_name", "C1", t2)
    _hubspot_change("last_name", "C2", t2b)
    _written(salesforce, "last_name", "C1", t4)
    _written(salesforce, "last_name", "C2", t5)
    record = {f: getattr(contact, f) for f in SYNCED_FIELDS} | {"last_name": "B"}
    change_apply(provider="salesforce", change=InboundChange(
        external_id="003000000000001AAA", values=record, field_times=dict.fromkeys(record, t3b), occurred_at=t3b,
    ))  # fmt: skip

    contact.refresh_from_db()
    assert contact.last_name == "C2"


def test_an_overloaded_salesforce_login_keeps_its_retry_after(settings):
    """Faults scenario crm_429_storm: a worker process's first Salesforce call logs in, and the
    token endpoint answered the storm's 503 with Retry-After: 1; the error raised without it, so
    the change was retried within 0.2 s (and the try counted towards parking)."""
    limiter = RateLimiter(f"salesforce-repro-{uuid.uuid4().hex}", "10000/second")
    with running_sandbox("salesforce", seed=3, rate_limit_storm=1.0) as org:
        config = {**settings.SALESFORCE, "login_url": org.url, "instance_url": "", "access_token": "",
                  "client_id": "sandbox-client", "client_secret": "sandbox-secret", "username": "", "password": "",
                  "refresh_token": ""}  # fmt: skip
        try:
            with pytest.raises(Transient) as raised:
                SalesforceClient(config, limiter=limiter).login()
        finally:
            limiter.reset()

    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (503, "SERVER_UNAVAILABLE", 1.0)
