"""The forwarder counts each write that reaches a CRM, with its lag, as it works: what the Sync health
page reads instead of counting rows."""

import pytest

from providers import sync
from providers.health import crm_health
from syncroot.counters import sync_writes_read

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_health_counters")]


def test_a_drain_counts_its_writes_and_their_lag_for_the_health_page(api_client, hubspot):
    for n in range(3):
        assert api_client.post("/contacts", {"email": f"w{n}@example.com"}, format="json").status_code == 201

    report = sync.drain(provider_name="hubspot", linger=False)

    assert report.synced == 3
    assert sum(minute["w"] for minute in sync_writes_read(provider="hubspot")[-2:]) == 3
    row = next(row for row in crm_health() if row.provider == "hubspot")
    assert row.writes_last_hour == 3
    assert row.lag_p50 is not None
    assert row.lag_p95 >= row.lag_p50
    assert row.pending.count == 0
    assert row.budget["used"] >= 1  # each HTTP call to the CRM counts against its API budget

    assert sync.drain(provider_name="hubspot", linger=False).claimed == 0  # nothing sent: nothing counted
    assert sum(minute["w"] for minute in sync_writes_read(provider="hubspot")) == 3
