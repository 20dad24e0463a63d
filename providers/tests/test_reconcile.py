"""The reconciler against the HubSpot sandbox: one bad record never stalls it, a failed read keeps
what was applied."""

import logging
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from contacts.models import Contact
from crm import registry
from crm.hubspot.transform import parse_time
from providers.models import SyncCursor
from providers.reconcile import reconcile
from sandbox.testing import SandboxControl, running_sandbox

pytestmark = pytest.mark.django_db

T0_MS = 1_780_000_000_000  # records are stamped by this clock, one second apart, not by the wall


@pytest.fixture
def hubspot(settings) -> Iterator[Any]:
    """A HubSpot sandbox and SyncRoot connected to it."""
    settings.RECONCILE_LOOKBACK_SECONDS = 0
    with running_sandbox("hubspot") as sandbox:
        settings.HUBSPOT = {
            **settings.HUBSPOT, "base_url": sandbox.url, "access_token": "sandbox-token",
            "rate_limit": "1000/10 seconds", "search_rate_limit": "50/second",
            "limiter_key": f"hubspot-reconcile-{uuid.uuid4().hex}",
        }  # fmt: skip
        registry.reset()
        SandboxControl(sandbox.url).config(webhooks_enabled=False)
        yield sandbox.app
        registry.reset()


def add(app: Any, email: str, first: str, *, second: int) -> tuple[str, datetime]:
    """A contact as a person typed it into HubSpot, stamped `second` seconds after T0."""
    contact = app.store.create(
        {"email": email, "firstname": first, "lastname": "Lovelace"}, source=app.ui_source, now_ms=T0_MS + second * 1000
    )
    record = contact.to_json()
    return str(record["id"]), parse_time(record["properties"]["lastmodifieddate"])


def test_one_change_that_cannot_be_applied_is_recorded_and_skipped(hubspot, caplog, admin_client):
    add(hubspot, "ada@example.com", "Ada", second=0)
    bad_id, _ = add(hubspot, "nul@example.com", "Bad\x00Name", second=1)  # PostgreSQL refuses NUL in text
    _, third_at = add(hubspot, "grace@example.com", "Grace", second=2)

    with caplog.at_level(logging.ERROR, logger="providers.reconcile"):
        counts = reconcile(provider_name="hubspot")

    assert counts == {"created": 2, "failed": 1}
    assert set(Contact.objects.values_list("email", flat=True)) == {"ada@example.com", "grace@example.com"}
    cursor = SyncCursor.objects.get(provider="hubspot")
    assert cursor.modstamp == third_at
    assert cursor.failed_count == 1
    assert cursor.last_error.startswith(f"{bad_id}: ")
    assert cursor.last_error_at is not None
    [logged] = [r for r in caplog.records if r.name == "providers.reconcile"]
    assert logged.exc_info is not None
    assert logged.external_id == bad_id
    assert bad_id in admin_client.get("/admin/providers/synccursor/").content.decode()  # where an operator looks

    # The next run starts after what was read, not at the bad record again.
    _, fourth_at = add(hubspot, "alan@example.com", "Alan", second=10)
    assert reconcile(provider_name="hubspot") == {"unchanged": 1, "created": 1}
    cursor.refresh_from_db()
    assert cursor.modstamp == fourth_at
    assert cursor.failed_count == 1


def test_a_failed_read_midway_keeps_the_cursor_at_what_was_applied(hubspot):
    _, first_at = add(hubspot, "ada@example.com", "Ada", second=0)
    add(hubspot, "grace@example.com", "Grace", second=1)
    add(hubspot, "alan@example.com", "Alan", second=2)
    registry.get_provider("hubspot").search_page_size = 2  # two search pages, the second refused
    control = SandboxControl(registry.get_provider("hubspot").config["base_url"])
    control.config(search_rate_limit={"max": 1, "interval_ms": 600_000})

    counts = reconcile(provider_name="hubspot")

    assert counts == {"created": 1}
    assert SyncCursor.objects.get(provider="hubspot").modstamp == first_at
    assert list(Contact.objects.values_list("email", flat=True)) == ["ada@example.com"]

    control.config(search_rate_limit={"max": 100, "interval_ms": 1_000})
    assert reconcile(provider_name="hubspot") == {"unchanged": 1, "created": 2}
    assert Contact.objects.count() == 3


def test_deletions_are_merged_in_by_time_so_the_stream_never_steps_back(hubspot):
    """The cursor is saved as the stream goes: an archived contact read after every modified one
    would put the cursor past a deletion that a failed run had not applied yet."""
    gone_id, _ = add(hubspot, "gone@example.com", "Gone", second=0)
    add(hubspot, "stays@example.com", "Stays", second=1)
    hubspot.store.archive(gone_id, now_ms=T0_MS + 2000)
    add(hubspot, "later@example.com", "Later", second=5)

    changes = list(registry.get_provider("hubspot").changes_since(modstamp=None, last_id=""))

    times = [c.occurred_at for c in changes]
    assert times == sorted(times)
    assert [c.deleted for c in changes] == [False, True, False]


def test_a_run_stops_at_its_time_budget_and_the_next_reads_on(hubspot, settings):
    """A backlog longer than one run (thousands of records after a bulk write) is worked through
    over several runs, each ending at its budget with the cursor at what it applied."""
    settings.RECONCILE_MAX_SECONDS = 5
    for second in range(3):
        add(hubspot, f"p{second}@example.com", "P", second=second)
    now = [0.0]

    def clock() -> float:
        now[0] += 6  # each look at the clock: 6 s later
        return now[0]

    assert reconcile(provider_name="hubspot", clock=clock) == {"created": 1}  # 6 s in: past its 5 s
    assert Contact.objects.count() == 1
    assert reconcile(provider_name="hubspot") == {"unchanged": 1, "created": 2}
    assert Contact.objects.count() == 3


def test_the_workers_time_limit_ends_the_run_without_stepping_past_the_change_in_hand(hubspot, monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    import providers.reconcile

    _, first_at = add(hubspot, "ada@example.com", "Ada", second=0)
    add(hubspot, "grace@example.com", "Grace", second=1)
    apply = providers.reconcile.record_change_apply

    def limited(*, provider, change):
        if change.values.get("email") == "grace@example.com":
            raise SoftTimeLimitExceeded()
        return apply(provider=provider, change=change)

    monkeypatch.setattr(providers.reconcile, "record_change_apply", limited)
    with pytest.raises(SoftTimeLimitExceeded):
        reconcile(provider_name="hubspot")
    cursor = SyncCursor.objects.get(provider="hubspot")
    assert (cursor.modstamp, cursor.failed_count) == (first_at, 0)

    monkeypatch.setattr(providers.reconcile, "record_change_apply", apply)
    assert reconcile(provider_name="hubspot") == {"unchanged": 1, "created": 1}
    assert Contact.objects.count() == 2
