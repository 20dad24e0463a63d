"""Edits in quick succession reach a CRM together: write spacing and batches that wait for a stream."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from contacts.models import Contact
from providers import dispatch, outbox, sync
from providers.models import LinkStatus, ProviderLink
from providers.services import links_mark_pending

pytestmark = pytest.mark.django_db(transaction=True)


def _create(api_client, email: str) -> Contact:
    response = api_client.post("/contacts", {"email": email, "first_name": "Ada"}, format="json")
    assert response.status_code == 201, response.content
    return Contact.objects.get(pk=response.json()["id"])


def _hubspot_writes(hubspot) -> int:
    return hubspot.stats()["requests_total"]


def test_edits_right_after_a_write_wait_out_the_spacing_and_go_out_once_with_the_last_value(
    api_client, hubspot, settings
):
    settings.SYNC_WRITE_SPACING_MS = 60_000  # held for the whole test unless time is moved on
    contact = _create(api_client, "spaced@example.com")
    assert sync.drain(provider_name="hubspot", linger=False).synced == 1
    for name in ("Grace", "Barbara", "Margaret"):
        assert api_client.patch(f"/contacts/{contact.pk}", {"first_name": name}, format="json").status_code == 200
    calls = _hubspot_writes(hubspot)

    held = sync.drain(provider_name="hubspot", linger=False)
    ProviderLink.objects.filter(contact=contact).update(synced_at=timezone.now() - timedelta(minutes=2))  # time passes
    sent = sync.drain(provider_name="hubspot", linger=False)

    assert held.claimed == 0
    assert sent.synced == 1
    assert _hubspot_writes(hubspot) - calls == 1  # one write for the three edits
    record = next(r for r in hubspot.records() if r["properties"].get("email") == "spaced@example.com")
    assert record["properties"]["firstname"] == "Margaret"
    assert ProviderLink.objects.get(contact=contact).status == LinkStatus.SYNCED


def test_a_new_contact_is_not_held(api_client, hubspot, settings):
    settings.SYNC_WRITE_SPACING_MS = 60_000
    _create(api_client, "fresh@example.com")

    assert sync.drain(provider_name="hubspot", linger=False).synced == 1


def test_a_drain_that_leaves_a_held_link_schedules_itself_for_when_it_is_free(api_client, hubspot, settings,
                                                                              monkeypatch):  # fmt: skip
    settings.SYNC_WRITE_SPACING_MS = 5_000
    sent: list[tuple[str, list, float]] = []
    monkeypatch.setattr(dispatch, "task_send", lambda name, *, args, **options: sent.append(
        (name, args, options.get("countdown", 0))))  # fmt: skip
    contact = _create(api_client, "later@example.com")
    outbox.drain_until_idle(provider_name="hubspot")
    api_client.patch(f"/contacts/{contact.pk}", {"first_name": "Grace"}, format="json")

    outbox.drain_until_idle(provider_name="hubspot")

    drains = [(args, countdown) for name, args, countdown in sent if name == dispatch.DRAIN]
    assert len(drains) == 1
    assert drains[0][0] == ["hubspot"]
    assert 3.0 < drains[0][1] <= 5.0
    assert ProviderLink.objects.get(contact=contact).status == LinkStatus.PENDING


def test_a_batch_waits_while_the_same_contacts_keep_changing(api_client, hubspot, settings):
    """It used to go as soon as the count of due links stopped growing: edits of one contact (or
    a busy machine's slower API) ended the wait after 30 ms, one CRM write per edit."""
    settings.SYNC_BATCH_LINGER_MS = 5_000
    settings.SYNC_BATCH_QUIET_MS = 400
    contact = _create(api_client, "stream@example.com")
    _create(api_client, "company@example.com")  # two waiting: a stream has begun
    marks: list[float] = []

    def edits() -> None:
        try:
            for _ in range(8):
                time.sleep(0.08)  # longer than the first look, shorter than the quiet time
                links_mark_pending(contact=Contact.objects.get(pk=contact.pk))
                marks.append(time.monotonic())
        finally:
            connection.close()

    thread = threading.Thread(target=edits)
    thread.start()
    sync._linger(provider="hubspot", batch_size=100)
    done_when_sent = len(marks)
    thread.join(10)

    assert done_when_sent == 8


def test_a_lone_change_does_not_wait_for_the_quiet_time(api_client, hubspot, settings):
    settings.SYNC_BATCH_LINGER_MS = 60_000
    settings.SYNC_BATCH_QUIET_MS = 60_000
    _create(api_client, "lone@example.com")
    began = time.monotonic()

    sync._linger(provider="hubspot", batch_size=100)

    assert time.monotonic() - began < 10  # one short look, not the minute of either setting
