"""The inbox admin: filter and find events, read what the CRM sent, reprocess in bulk."""

import pytest
from django.urls import reverse
from django.utils import timezone

from webhooks.models import EventStatus, WebhookEvent
from webhooks.tests.factories import WebhookEventFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:webhooks_webhookevent_changelist")


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # The admin users these tests log in with need no slow, production-strength hash.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def listed(response) -> set[int]:
    assert response.status_code == 200
    return {event.pk for event in response.context["cl"].result_list}


def test_the_changelist_filters_by_provider_and_status(admin_client):
    failed = WebhookEventFactory(status=EventStatus.FAILED, error="KeyError: 'email'")
    WebhookEventFactory(status=EventStatus.PROCESSED)
    sf = WebhookEventFactory(provider="salesforce", event_id="04l5g00000Gx7QzAAJ", payload={"kind": "outbound_message"})

    assert listed(admin_client.get(CHANGELIST, {"status": "failed"})) == {failed.pk}
    assert listed(admin_client.get(CHANGELIST, {"provider": "salesforce"})) == {sf.pk}
    assert listed(admin_client.get(CHANGELIST, {"provider": "hubspot", "status": "received"})) == set()
    page = admin_client.get(CHANGELIST).content.decode()
    assert "KeyError: &#x27;email&#x27;" in page  # the error is shown in the list


def test_events_are_found_by_event_id_or_a_part_of_it(admin_client):
    wanted = WebhookEventFactory(event_id="3329277:3400564480")
    WebhookEventFactory(event_id="3329277:3400564999")

    assert listed(admin_client.get(CHANGELIST, {"q": "3329277:3400564480"})) == {wanted.pk}
    assert listed(admin_client.get(CHANGELIST, {"q": "3400564480"})) == {wanted.pk}


def test_the_detail_page_shows_the_payload_pretty_printed_and_read_only(admin_client):
    event = WebhookEventFactory(payload={"objectId": 101, "propertyName": "email", "propertyValue": "a<b>@x.com"})

    response = admin_client.get(reverse("admin:webhooks_webhookevent_change", args=[event.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    assert "<pre>{\n  &quot;objectId&quot;: 101,\n  &quot;propertyName&quot;: &quot;email&quot;" in page
    assert "a&lt;b&gt;@x.com" in page  # escaped, never rendered as markup
    assert 'name="payload"' not in page  # nothing editable
    assert 'name="status"' not in page


def test_events_cannot_be_added_by_hand(admin_client):
    assert admin_client.get(reverse("admin:webhooks_webhookevent_add")).status_code == 403


def test_the_changelist_shows_when_a_failing_event_is_tried_next(admin_client):
    WebhookEventFactory(error="Transient: HubSpot answered 503", attempts=2, next_attempt_at=timezone.now())

    page = admin_client.get(CHANGELIST, {"status": "received"}).content.decode()

    assert "Transient: HubSpot answered 503" in page
    assert "column-next_attempt_at" in page


def test_reprocess_resets_the_selected_events_and_enqueues_them_after_commit(
    admin_client, enqueued, django_capture_on_commit_callbacks
):
    failed = WebhookEventFactory(status=EventStatus.FAILED, error="boom", attempts=3, next_attempt_at=timezone.now())
    ignored = WebhookEventFactory(status=EventStatus.IGNORED, outcome="ignored: echo", attempts=1)
    untouched = WebhookEventFactory(status=EventStatus.FAILED, error="left alone", attempts=2)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            CHANGELIST, {"action": "reprocess", "_selected_action": [failed.pk, ignored.pk]}, follow=True
        )

    assert response.status_code == 200
    assert "Queued 2 event(s) for reprocessing." in response.content.decode()
    for event in (failed, ignored):
        event.refresh_from_db()
        assert (event.status, event.error, event.attempts, event.next_attempt_at) == (EventStatus.RECEIVED, "", 0, None)
        assert event.enqueued_at is not None  # handed to the broker: the sweeper does not add a copy
    untouched.refresh_from_db()
    assert (untouched.status, untouched.error) == (EventStatus.FAILED, "left alone")
    assert sorted(enqueued) == sorted([("hubspot", [failed.pk]), ("hubspot", [ignored.pk])])


def test_reprocess_needs_the_change_permission(client, django_user_model, enqueued):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_webhookevent"))
    client.force_login(viewer)
    event = WebhookEventFactory(status=EventStatus.FAILED, error="boom")

    response = client.post(CHANGELIST, {"action": "reprocess", "_selected_action": [event.pk]})

    event.refresh_from_db()
    assert response.status_code in (200, 302)
    assert event.status == EventStatus.FAILED
    assert enqueued == []
    assert WebhookEvent.objects.count() == 1
