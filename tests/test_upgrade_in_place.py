"""An upgrade in place keeps every row: a database at the previous layout, holding contacts, links,
dead letters, attempts and webhook events, is migrated to today's and everything is still there."""

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from contacts.models import Contact
from providers.models import DeadLetter, LinkStatus, ProviderLink, SyncAttempt
from webhooks.models import WebhookEvent

# The last migrations of the layout before the sync engine, the adapters and the domain were
# told apart (and before refused values, claims, credential states and inbox backoff).
PREVIOUS = [("contacts", "0001_initial"), ("providers", "0003_link_ledger_times"), ("webhooks", "0001_initial")]


@pytest.fixture
def previous_layout(transactional_db):
    executor = MigrationExecutor(connection)
    executor.migrate(PREVIOUS)
    yield executor.loader.project_state(PREVIOUS).apps
    call_command("migrate", verbosity=0)  # the rest of the suite finds today's schema


def test_an_upgrade_in_place_keeps_every_row(previous_layout):
    apps = previous_layout
    contact = apps.get_model("contacts", "Contact").objects.create(email="ada@example.com", first_name="Ada")
    tombstone = apps.get_model("contacts", "Contact").objects.create(email="gone@example.com")
    link = apps.get_model("providers", "ProviderLink").objects.create(
        contact=contact, provider="hubspot", external_id="101", status="synced", field_hashes={"email": "x"}
    )
    apps.get_model("providers", "DeadLetter").objects.create(
        link=link, provider="hubspot", contact=contact, contact_version=1, error_code="INVALID_EMAIL",
        error_message="Email is invalid", attempts=1,
    )  # fmt: skip
    apps.get_model("providers", "SyncAttempt").objects.create(
        link=link, provider="hubspot", contact=contact, contact_version=1, operation="create", outcome="ok"
    )
    apps.get_model("webhooks", "WebhookEvent").objects.create(
        provider="hubspot", event_id="e-1", payload={"objectId": 101}, status="processed"
    )

    call_command("migrate", verbosity=0)

    assert set(Contact.objects.values_list("email", flat=True)) == {"ada@example.com", "gone@example.com"}
    assert Contact.objects.get(pk=tombstone.pk).email == "gone@example.com"
    upgraded = ProviderLink.objects.get(pk=link.pk)
    assert (upgraded.external_id, upgraded.status, upgraded.field_hashes) == ("101", LinkStatus.SYNCED, {"email": "x"})
    assert upgraded.issues == []  # the new columns come with their defaults
    assert DeadLetter.objects.get().error_code == "INVALID_EMAIL"
    assert SyncAttempt.objects.get().outcome == "ok"
    event = WebhookEvent.objects.get()
    assert (event.event_id, event.status, event.payload) == ("e-1", "processed", {"objectId": 101})
