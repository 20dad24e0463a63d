"""The admin's Sync health page: per-CRM figures, grouped work with its actions, cheap at any size."""

import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from contacts.tests.factories import ContactFactory
from crm import registry
from crm.budget import DayBudget, Priority
from providers import health
from providers.health_admin import budget_text, writes_chart_svg
from providers.models import (
    Connection,
    ConnectionStatus,
    DeadLetter,
    DeadLetterStatus,
    LinkStatus,
    ProviderLink,
    RecordIssue,
)
from syncroot.counters import sync_writes_read, sync_writes_record
from webhooks.models import EventStatus
from webhooks.tests.factories import WebhookEventFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_health_counters")]
PAGE = "/admin/providers/synchealth/"


@pytest.fixture
def connected(settings):
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "x"}
    settings.SALESFORCE = {**settings.SALESFORCE, "access_token": "x"}
    registry.reset()
    yield
    registry.reset()


def parked(provider: str, code: str, message: str = "refused") -> DeadLetter:
    contact = ContactFactory()
    link = ProviderLink.objects.create(contact=contact, provider=provider, status=LinkStatus.PARKED)
    return DeadLetter.objects.create(link=link, provider=provider, contact=contact, contact_version=1,
                                     error_code=code, error_message=message, attempts=1)  # fmt: skip


def test_the_admin_index_links_to_the_page_under_its_title(admin_client):
    index = admin_client.get("/admin/").content.decode()

    assert f'href="{PAGE}"' in index
    assert "Sync health" in index


def test_only_staff_see_the_page(client, django_user_model):
    user = django_user_model.objects.create_user("clerk", password="pw", is_staff=False)
    client.force_login(user)

    assert client.get(PAGE).status_code == 302  # to the admin login


def test_dead_letters_are_grouped_by_crm_and_code_with_a_count_and_the_latest_message(admin_client, connected):
    parked("hubspot", "INVALID_EMAIL", "old message")
    parked("hubspot", "INVALID_EMAIL", "Email is not valid")
    parked("salesforce", "INVALID_EMAIL_ADDRESS", "bad address")
    DeadLetter.objects.filter(pk=parked("hubspot", "INVALID_EMAIL").pk).update(status=DeadLetterStatus.RETRIED)

    groups = {(g.provider, g.code): g for g in health.dead_letter_groups()}

    assert set(groups) == {("hubspot", "INVALID_EMAIL"), ("salesforce", "INVALID_EMAIL_ADDRESS")}
    assert groups[("hubspot", "INVALID_EMAIL")].count == 2
    assert groups[("hubspot", "INVALID_EMAIL")].sample == "Email is not valid"
    page = admin_client.get(PAGE).content.decode()
    assert "Email is not valid" in page
    assert "/admin/providers/deadletter/?provider=hubspot&amp;error_code=INVALID_EMAIL&amp;status__exact=parked" in page


def test_retry_all_sends_every_parked_change_of_the_group_again_and_nothing_else(admin_client, connected):
    group = [parked("hubspot", "INVALID_EMAIL") for _ in range(3)]
    other = parked("salesforce", "INVALID_EMAIL")

    response = admin_client.post(
        PAGE, {"kind": "dead_letters", "action": "retry", "provider": "hubspot", "code": "INVALID_EMAIL"}
    )

    assert response.status_code == 302
    assert set(DeadLetter.objects.filter(pk__in=[d.pk for d in group]).values_list("status", flat=True)) == {"retried"}
    assert set(ProviderLink.objects.filter(dead_letters__in=group).values_list("status", flat=True)) == {"pending"}
    other.refresh_from_db()
    assert other.status == DeadLetterStatus.PARKED
    assert health.dead_letter_groups() == [health.Group("salesforce", "INVALID_EMAIL", 1, "refused")]


def test_a_staff_member_without_the_right_to_change_dead_letters_cannot_retry_them(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(user)
    letter = parked("hubspot", "INVALID_EMAIL")

    page = client.get(PAGE)
    response = client.post(PAGE, {"kind": "dead_letters", "action": "retry", "provider": "hubspot",
                                  "code": "INVALID_EMAIL"})  # fmt: skip

    assert page.status_code == 200
    assert response.status_code == 403
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.PARKED


def test_discard_all_gives_up_on_the_group(admin_client, connected):
    letter = parked("hubspot", "INVALID_EMAIL")

    admin_client.post(
        PAGE, {"kind": "dead_letters", "action": "discard", "provider": "hubspot", "code": "INVALID_EMAIL"}
    )

    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.DISCARDED
    assert health.dead_letter_groups() == []


def test_an_unknown_group_action_is_refused_with_a_message(admin_client):
    response = admin_client.post(PAGE, {"kind": "dead_letters", "action": "erase", "provider": "x", "code": "y"},
                                 follow=True)  # fmt: skip

    assert "No such action." in response.content.decode()


def test_sync_issues_are_grouped_and_link_to_the_filtered_list(admin_client, connected):
    issue = {"field": "last_name", "code": "too_long", "message": "HubSpot holds 90 characters", "held": "h"}
    for _ in range(2):
        ProviderLink.objects.create(contact=ContactFactory(), provider="hubspot", status="synced", issues=[issue])
    ProviderLink.objects.create(contact=ContactFactory(), provider="hubspot", status="synced",
                                issues=[{**issue, "code": "invalid_email", "field": "email"}])  # fmt: skip
    RecordIssue.objects.create(provider="salesforce", external_id="003X", code="no_email", message="no email")

    groups = {(g.provider, g.code): g.count for g in health.sync_issue_groups()}
    assert groups == {("hubspot", "too_long"): 2, ("hubspot", "invalid_email"): 1}
    assert [(g.provider, g.code, g.count) for g in health.record_issue_groups()] == [("salesforce", "no_email", 1)]
    listed = admin_client.get("/admin/providers/linkissue/?provider=hubspot&code=too_long")
    assert listed.status_code == 200
    assert listed.context["cl"].result_count == 2


def test_open_conflicts_are_grouped_by_crm_and_kind_and_link_to_the_queue(admin_client, connected):
    from providers.models import Conflict

    for n in range(2):
        Conflict.objects.create(key=f"record:hubspot:{n}", kind="no_email", provider="hubspot", message="no email")
    Conflict.objects.create(key="record:hubspot:9", kind="no_email", provider="hubspot", status="resolved")
    Conflict.objects.create(key="link:1:email", kind="email_clash", provider="salesforce", message="clash")

    groups = {(g.provider, g.code): g.count for g in health.conflict_groups()}
    assert groups == {("hubspot", "no_email"): 2, ("salesforce", "email_clash"): 1}
    page = admin_client.get("/admin/providers/synchealth/").content.decode()
    assert "Conflicts (open cases for a person)" in page
    assert "/admin/providers/conflict/?" in page


def test_each_crm_shows_its_state_backlog_inbox_and_lag(admin_client, connected):
    Connection.objects.create(
        key="hubspot", provider="hubspot", status=ConnectionStatus.AUTH_FAILED, last_error="401 revoked"
    )
    since = timezone.now() - timedelta(minutes=5)
    for _ in range(3):
        ProviderLink.objects.create(contact=ContactFactory(), provider="hubspot", pending_since=since)
    WebhookEventFactory(provider="hubspot", status=EventStatus.FAILED)
    WebhookEventFactory(provider="hubspot", status=EventStatus.RECEIVED)
    sync_writes_record(provider="hubspot", lags=[0.2] * 90 + [8.0] * 10)

    rows = {row.provider: row for row in health.crm_health()}

    hubspot = rows["hubspot"]
    assert (hubspot.state, hubspot.state_detail) == ("auth_failed", "401 revoked")
    assert (hubspot.pending.count, hubspot.pending.more) == (3, False)
    assert abs((hubspot.oldest_pending_at - since).total_seconds()) < 1
    assert (str(hubspot.inbox_backlog), str(hubspot.inbox_failed)) == ("1", "1")
    assert hubspot.last_event_at is not None
    assert (hubspot.lag_p50, hubspot.lag_p95, hubspot.writes_last_hour) == (0.5, 10, 100)
    assert rows["salesforce"].state == "ok"
    page = admin_client.get(PAGE).content.decode()
    assert 'data-state="auth_failed"' in page
    assert "Auth failed (paused)" in page
    assert 'http-equiv="refresh"' in page
    assert "<svg" in page


def test_backlogs_are_counted_up_to_a_cap_not_over_the_whole_table(connected, monkeypatch):
    monkeypatch.setattr(health, "COUNT_CAP", 2)
    for _ in range(3):
        ProviderLink.objects.create(contact=ContactFactory(), provider="hubspot", pending_since=timezone.now())

    hubspot = next(row for row in health.crm_health() if row.provider == "hubspot")

    assert str(hubspot.pending) == "2+"


def test_writes_are_counted_per_minute_over_24_hours():
    now = time.time()
    sync_writes_record(provider="fake", lags=[1.0, 1.0], now=now - 3600 * 3)
    sync_writes_record(provider="fake", lags=[1.0], now=now)

    minutes = sync_writes_read(provider="fake", now=now)

    assert len(minutes) == 24 * 60
    assert minutes[-1]["w"] == 1
    assert minutes[-1 - 180]["w"] == 2
    assert sum(m["w"] for m in minutes) == 3


def test_each_connection_shows_its_own_state_not_another_of_the_same_crm(connected):
    Connection.objects.create(key="hubspot-eu", provider="hubspot", source="api", status="auth_failed",
                              last_error="refused")  # fmt: skip

    hubspot = next(row for row in health.crm_health() if row.provider == "hubspot")

    assert (hubspot.state, hubspot.state_detail) == ("ok", "")


def test_the_budget_shows_syncroot_s_calls_against_its_share_and_a_waiting_backfill(connected, settings):
    settings.CRM_DAILY_CALL_CAPS = {"hubspot": 1000}
    settings.API_BUDGET_SHARE = 0.5
    now = timezone.now()
    day = DayBudget.from_config({"connection": "hubspot"})
    for _ in range(3):
        day.take(Priority.LIVE)

    hubspot = next(row for row in health.crm_health() if row.provider == "hubspot")

    assert hubspot.budget["used"] == 3
    assert budget_text(hubspot.budget, now) == "3 of 500 (50% of 1,000)"
    for _ in range(372):  # the backfills' 75 % of the share: 375
        day.take(Priority.BACKFILL)
    paused = next(row for row in health.crm_health() if row.provider == "hubspot").budget
    assert re.fullmatch(r"375 of 500 \(50% of 1,000\); backfills wait 2[34] h more", budget_text(paused, now))
    assert budget_text(None, now) == "unknown"
    settings.CRM_DAILY_CALL_CAPS = {}
    unknown = next(row for row in health.crm_health() if row.provider == "hubspot").budget
    assert budget_text(unknown, now) == "375 (daily limit not known yet)"


def test_the_chart_is_an_svg_with_a_bar_per_ten_minutes():
    svg = str(writes_chart_svg([1] * (24 * 60)))

    assert svg.startswith("<svg")
    assert svg.count("<rect") == 144
    assert "Unknown" in str(writes_chart_svg([]))


def csv_of(response) -> list[list[str]]:
    import csv
    import io

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_dead_letters_export_as_csv_as_filtered(admin_client, connected):
    parked("hubspot", "INVALID_EMAIL", "=HYPERLINK(evil)")
    parked("salesforce", "INVALID_EMAIL", "bad")

    rows = csv_of(admin_client.get("/admin/providers/deadletter/export.csv?provider=hubspot&status__exact=parked"))

    assert rows[0][:3] == ["id", "created_at", "provider"]
    assert [(r[2], r[6], r[7]) for r in rows[1:]] == [("hubspot", "INVALID_EMAIL", "'=HYPERLINK(evil)")]
    listing = admin_client.get("/admin/providers/deadletter/?provider=hubspot").content.decode()
    assert 'href="export.csv?provider=hubspot"' in listing


def test_sync_issues_export_one_row_per_issue_as_filtered(admin_client, connected):
    issues = [{"field": "phone", "code": "too_long", "message": "long"}, {"field": "email", "code": "invalid_email",
                                                                          "message": "bad"}]  # fmt: skip
    ProviderLink.objects.create(contact=ContactFactory(), provider="hubspot", status="synced", issues=issues)
    RecordIssue.objects.create(provider="salesforce", external_id="003X", code="no_email", message="no email")

    rows = csv_of(admin_client.get("/admin/providers/linkissue/export.csv?provider=hubspot"))
    records = csv_of(admin_client.get("/admin/providers/recordissue/export.csv?code=no_email"))

    assert [(r[0], r[5], r[6]) for r in rows[1:]] == [
        ("hubspot", "phone", "too_long"),
        ("hubspot", "email", "invalid_email"),
    ]
    assert [r[:3] for r in records[1:]] == [["salesforce", "003X", "no_email"]]
