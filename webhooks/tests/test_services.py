"""inbox_store: each event stored once, the ids of the new rows returned and enqueued after commit."""

import threading

import pytest
from django.db import connection, transaction

from crm.base import WebhookEvent as ParsedEvent
from webhooks.models import EventStatus, WebhookEvent
from webhooks.services import inbox_store
from webhooks.tests.factories import hubspot_events


def parsed(events: list[dict]) -> list[ParsedEvent]:
    return [ParsedEvent(event_id=f"{e['subscriptionId']}:{e['eventId']}", payload=e) for e in events]


def ids_of(events: list[ParsedEvent]) -> list[int]:
    by_event_id = dict(WebhookEvent.objects.values_list("event_id", "pk"))
    return [by_event_id[e.event_id] for e in events]


@pytest.mark.django_db
def test_a_delivery_is_stored_whole_and_its_ids_enqueued_in_delivery_order_after_commit(
    enqueued, django_capture_on_commit_callbacks
):
    events = parsed(hubspot_events(100))
    events[3].payload["propertyValue"] = "Zoë 😀 \\ \" ' \n"
    events[4].payload["nested"] = {"list": [1, 2.5, None, True, {"deep": "x"}], "big": 2**62}

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        fresh = inbox_store(provider="hubspot", events=events)
    assert enqueued == []  # nothing reaches the broker before the transaction commits
    for callback in callbacks:
        callback()

    assert fresh == ids_of(events)
    assert enqueued == [("hubspot", fresh)]
    rows = {row.event_id: row for row in WebhookEvent.objects.all()}
    assert len(rows) == 100
    for event in events:
        row = rows[event.event_id]
        assert row.payload == event.payload
        assert (row.provider, row.status, row.outcome, row.error, row.attempts) == (
            "hubspot",
            EventStatus.RECEIVED,
            "",
            "",
            0,
        )
        assert row.received_at is not None
        assert row.enqueued_at == row.received_at  # set by the same INSERT: the sweeper leaves it alone
        assert (row.processed_at, row.next_attempt_at) == (None, None)


@pytest.mark.django_db
def test_a_redelivery_of_a_partly_stored_delivery_stores_and_enqueues_only_the_new_events(
    enqueued, django_capture_on_commit_callbacks
):
    events = parsed(hubspot_events(100))
    with django_capture_on_commit_callbacks(execute=True):
        first = inbox_store(provider="hubspot", events=events[20:60])
    # HubSpot retries with attemptNumber bumped; the events stored already keep their first copy.
    again = [ParsedEvent(event_id=e.event_id, payload={**e.payload, "attemptNumber": 1}) for e in events]

    with django_capture_on_commit_callbacks(execute=True):
        fresh = inbox_store(provider="hubspot", events=again)

    assert len(first) == 40
    assert len(fresh) == 60
    assert fresh == ids_of(events[:20] + events[60:])
    assert enqueued == [("hubspot", first), ("hubspot", fresh)]
    assert WebhookEvent.objects.count() == 100
    attempt_numbers = dict(WebhookEvent.objects.values_list("event_id", "payload__attemptNumber"))
    assert {attempt_numbers[e.event_id] for e in events[20:60]} == {0}
    assert {attempt_numbers[e.event_id] for e in events[:20] + events[60:]} == {1}


@pytest.mark.django_db
def test_a_whole_redelivery_stores_and_enqueues_nothing(enqueued, django_capture_on_commit_callbacks):
    events = parsed(hubspot_events(10))
    with django_capture_on_commit_callbacks(execute=True):
        inbox_store(provider="hubspot", events=events)
    ids_before = set(WebhookEvent.objects.values_list("pk", flat=True))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        fresh = inbox_store(provider="hubspot", events=events)

    assert fresh == []
    assert callbacks == []
    assert len(enqueued) == 1
    assert set(WebhookEvent.objects.values_list("pk", flat=True)) == ids_before


@pytest.mark.django_db
def test_the_same_event_id_for_another_provider_is_another_event(enqueued):
    events = parsed(hubspot_events(3))

    hubspot = inbox_store(provider="hubspot", events=events)
    salesforce = inbox_store(provider="salesforce", events=events)

    assert len(hubspot) == len(salesforce) == 3
    assert not set(hubspot) & set(salesforce)


@pytest.mark.django_db
def test_an_event_sent_twice_in_one_delivery_is_stored_once(enqueued):
    events = parsed(hubspot_events(3))

    fresh = inbox_store(provider="hubspot", events=[*events, events[1]])

    assert fresh == ids_of(events)
    assert WebhookEvent.objects.count() == 3


@pytest.mark.django_db
def test_nul_characters_are_dropped_and_the_rest_stored(enqueued):
    events = parsed(hubspot_events(3))
    events[0].payload["propertyValue"] = "Ada\x00 Lovelace"
    events[1].payload["extra\x00"] = ["a\x00b", {"k": "\x00"}]
    events[2].payload["propertyValue"] = "a literal \\u0000 is text, not a NUL"

    fresh = inbox_store(provider="hubspot", events=events)

    assert len(fresh) == 3
    stored = dict(WebhookEvent.objects.values_list("event_id", "payload"))
    assert stored[events[0].event_id]["propertyValue"] == "Ada Lovelace"
    assert stored[events[1].event_id]["extra"] == ["ab", {"k": ""}]
    assert stored[events[2].event_id]["propertyValue"] == "a literal \\u0000 is text, not a NUL"


@pytest.mark.django_db
def test_a_nul_or_an_overlong_event_id_is_stored_the_way_postgresql_can_hold_it(enqueued):
    payload = hubspot_events(1)[0]
    events = [ParsedEvent(event_id="1:2\x003", payload=payload), ParsedEvent(event_id="9" * 200, payload=payload)]

    fresh = inbox_store(provider="hubspot", events=events)

    assert len(fresh) == 2
    assert set(WebhookEvent.objects.values_list("event_id", flat=True)) == {"1:23", "9" * 128}


@pytest.mark.django_db
def test_an_empty_delivery_stores_nothing(enqueued):
    assert inbox_store(provider="hubspot", events=[]) == []
    assert WebhookEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("first_commits", [True, False], ids=["first-commits", "first-rolls-back"])
def test_two_copies_of_a_delivery_at_once_store_and_enqueue_each_event_once(enqueued, first_commits):
    """The second copy waits on the unique index for the first copy's transaction: it stores
    nothing when that one commits, and everything when it rolls back."""
    events = parsed(hubspot_events(50))
    first_inserted, second_done = threading.Event(), threading.Event()
    results: dict[str, list[int]] = {}

    class RolledBack(Exception):
        pass

    def first_copy() -> None:
        try:
            with transaction.atomic():
                results["first"] = inbox_store(provider="hubspot", events=events)
                first_inserted.set()
                # The second copy cannot finish while this transaction holds the rows.
                results["second_finished_meanwhile"] = second_done.wait(timeout=0.5)
                if not first_commits:
                    raise RolledBack
        except RolledBack:
            pass
        finally:
            first_inserted.set()
            connection.close()

    def second_copy() -> None:
        first_inserted.wait(timeout=10)
        try:
            results["second"] = inbox_store(provider="hubspot", events=events)
        finally:
            second_done.set()
            connection.close()

    threads = [threading.Thread(target=first_copy), threading.Thread(target=second_copy)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert results["second_finished_meanwhile"] is False
    assert len(results["first"]) == 50
    assert len(results["second"]) == (0 if first_commits else 50)
    assert WebhookEvent.objects.count() == 50
    stored = results["first"] if first_commits else results["second"]
    assert sorted(WebhookEvent.objects.values_list("pk", flat=True)) == sorted(stored)
    assert enqueued == [("hubspot", stored)]
