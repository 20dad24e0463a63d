"""API budgets in the engine: live changes before backfills, a backfill pausing at its part of the
daily budget with its checkpoint and going on in the next window (HubSpot sandbox, real Redis)."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction

from contacts.services import contact_update
from contacts.tests.factories import ContactFactory
from crm import budget, registry
from crm.budget import Priority
from providers import dispatch, outbox
from providers.backfill import backfill_connection, backfill_from_syncroot, checkpoint_get, connection_backfill_start
from providers.budgets import connection_budget
from providers.crm_state import crm_states
from providers.models import LinkStatus, ProviderLink
from providers.sync import drain

pytestmark = pytest.mark.django_db

HOUR = 3600
LIMIT = 40  # the portal's daily limit here: live changes may make 40 calls, backfills 30


@pytest.fixture
def clock(monkeypatch):
    now = [1_800_000_000.0]
    monkeypatch.setattr(budget, "clock", lambda: now[0])
    return now


@pytest.fixture
def portal(hubspot, settings, clock):
    settings.API_BUDGET_SHARE = 1.0
    settings.CRM_DAILY_CALL_CAPS = {"hubspot": LIMIT}
    registry.reset()
    return hubspot


def spend(calls: int, *, priority: Priority = Priority.BACKFILL) -> None:
    """Calls made earlier today (one hour ago) by SyncRoot."""
    day = budget.DayBudget.from_config(registry.get_provider("hubspot").config)
    moved, budget.clock = budget.clock, lambda: moved() - HOUR
    try:
        for _ in range(calls):
            day.take(priority)
    finally:
        budget.clock = moved


def hubspot_emails(portal) -> set[str]:
    return {record["properties"]["email"] for record in portal.records() if not record.get("archived")}


def test_backfill_waits_at_its_cap_live_changes_go_and_it_resumes_in_the_next_window(portal, clock, api_client):
    contacts = [ContactFactory() for _ in range(5)]
    backfill_from_syncroot(targets=["hubspot"])  # marks them pending for the forwarder
    assert ProviderLink.objects.filter(provider="hubspot", backfill=True, status=LinkStatus.PENDING).count() == 5
    spend(30)  # the backfills' 75 % of 40

    held = drain(provider_name="hubspot", linger=False)

    assert held.claimed == 0
    assert 22 * HOUR < held.budget_wait <= 23 * HOUR  # when the hour of those calls leaves the window
    assert hubspot_emails(portal) == set()
    state = connection_budget(connection=crm_states()[0])
    assert state["used"] == 30
    assert state["allowed"] == {"live": 40, "reconcile": 36, "backfill": 30}
    assert state["backfill_paused_until"] is not None
    shown = api_client.get(f"/contacts/{contacts[1].pk}").json()["sync"]["hubspot"]
    assert (shown["status"], shown["reason"]) == ("paused", "api_budget")  # visibly waiting, with a time
    assert shown["next_attempt_at"] is not None

    edited = contact_update(contact_id=contacts[0].pk, data={"job_title": "Pilot"}, partial=True)
    live = drain(provider_name="hubspot", linger=False)  # a live change has the rest of the share

    assert live.claimed == 1
    assert live.synced == 1
    assert hubspot_emails(portal) == {edited.email}
    link = ProviderLink.objects.get(contact=edited, provider="hubspot")
    assert (link.status, link.backfill) == (LinkStatus.SYNCED, False)

    clock[0] += 23 * HOUR  # the backfill's calls are more than 24 hours old
    while drain(provider_name="hubspot", linger=False).claimed:
        pass

    assert hubspot_emails(portal) == {contact.email for contact in contacts}
    assert set(ProviderLink.objects.filter(provider="hubspot").values_list("status", flat=True)) == {"synced"}
    assert connection_budget(connection=crm_states()[0])["backfill_paused_until"] is None
    assert api_client.get(f"/contacts/{contacts[1].pk}").json()["sync"]["hubspot"]["status"] == "synced"


def test_a_live_change_waiting_keeps_its_place_ahead_of_a_backfill(portal):
    first, second = ContactFactory(), ContactFactory()
    contact_update(contact_id=second.pk, data={"job_title": "Pilot"}, partial=True)  # live: pending first
    backfill_from_syncroot(targets=["hubspot"])

    links = dict(ProviderLink.objects.filter(provider="hubspot").values_list("contact_id", "backfill"))
    assert links == {first.pk: True, second.pk: False}


def test_the_forwarder_does_not_spin_on_held_backfills_and_wakes_when_the_budget_frees(portal, monkeypatch):
    sent: list[tuple[str, list, dict]] = []
    monkeypatch.setattr(dispatch, "task_send", lambda name, *, args, **options: sent.append((name, args, options)))
    ContactFactory()
    backfill_from_syncroot(targets=["hubspot"])
    spend(30)

    assert outbox.drain_until_idle(provider_name="hubspot") == 0

    wakes = [options["countdown"] for name, args, options in sent if name == dispatch.DRAIN and args == ["hubspot"]]
    assert len(wakes) == 1
    assert 0 < wakes[0] <= 1800


def test_a_new_connection_s_backfill_pauses_with_its_checkpoint(portal, clock, monkeypatch):
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(dispatch, "send_connection_backfill", lambda **kwargs: sent.append(kwargs))
    for _ in range(3):
        ContactFactory()
    connection_backfill_start(key="hubspot")
    spend(30)

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(transaction, "on_commit", lambda fn, robust=False: fn())
        paused = backfill_connection(key="hubspot")

        assert paused.stop_reason == "budget"
        assert not ProviderLink.objects.filter(provider="hubspot").exists()  # nothing marked past the cap
        assert checkpoint_get(key="backfill:syncroot:hubspot") is not None
        assert sent
        assert 0 < sent[-1]["countdown"] <= 900

        clock[0] += 23 * HOUR
        resumed = backfill_connection(key="hubspot")

    assert resumed.finished
    assert ProviderLink.objects.filter(provider="hubspot", backfill=True).count() == 3


def test_an_import_pauses_at_the_budget_and_resumes_from_its_checkpoint(portal, clock):
    for n in range(3):
        portal.edit(None, {"email": f"imported{n}@example.com", "firstname": "Ada", "lastname": f"N{n}"})
    spend(30)

    out = StringIO()
    call_command("sync_backfill", "--from", "hubspot", "--no-progress", stdout=out, stderr=StringIO())

    assert "paused: " in out.getvalue()
    assert "backfill share of the daily API limit is spent" in out.getvalue()
    clock[0] += 23 * HOUR
    out = StringIO()
    call_command("sync_backfill", "--from", "hubspot", "--no-progress", stdout=out, stderr=StringIO())
    assert "created" in out.getvalue()
    assert ProviderLink.objects.filter(provider="hubspot", external_id__isnull=False).count() == 3
