"""`manage.py sync_backfill` against the in-process CRM sandboxes, on the real database."""

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from crm import registry
from crm.hubspot.provider import HubSpotProvider
from providers import mappings
from providers.backfill import checkpoint_key
from providers.lifecycle import contact_erase
from providers.models import FieldMapping, LinkStatus, ProviderLink, RecordIssue, SyncCursor
from providers.provenance import contact_history
from sandbox.testing import SandboxControl, running_sandbox

pytestmark = pytest.mark.django_db

SECRET = "sandbox-secret"


@dataclass
class Crms:
    hubspot: SandboxControl
    salesforce: SandboxControl
    hubspot_app: Any

    def hubspot_emails(self) -> list[str]:
        return [r["properties"]["email"] for r in self.hubspot.records() if not r.get("archived")]

    def salesforce_contacts(self) -> list[dict[str, Any]]:
        return [r for r in self.salesforce.records() if r["attributes"]["type"] == "Contact" and not r["IsDeleted"]]

    def add_hubspot(self, email: str, first: str = "Ada", last: str = "Lovelace", **more: str) -> str:
        return str(self.hubspot.edit(None, {"email": email, "firstname": first, "lastname": last, **more})["id"])

    def add_salesforce(self, email: str, first: str = "Ada", last: str = "Lovelace", **more: str) -> str:
        return str(self.salesforce.edit(None, {"Email": email, "FirstName": first, "LastName": last, **more})["Id"])


@pytest.fixture
def crms(settings) -> Iterator[Crms]:
    """Both sandboxes, SyncRoot connected to them with rate budgets of this test's own."""
    key = uuid.uuid4().hex
    with running_sandbox("hubspot") as hubspot, running_sandbox("salesforce") as salesforce:
        settings.HUBSPOT = {
            **settings.HUBSPOT, "base_url": hubspot.url, "access_token": "sandbox-token",
            "client_secret": SECRET, "app_id": "1234567", "rate_limit": "1000/10 seconds",
            "search_rate_limit": "5/second", "limiter_key": f"hubspot-backfill-{key}",
        }  # fmt: skip
        settings.SALESFORCE = {
            **settings.SALESFORCE, "login_url": salesforce.url, "client_id": "sandbox-client",
            "client_secret": SECRET, "organization_id": "00D000000000001EAA",
            "rate_limit": "10000/second", "rate_limit_name": f"salesforce-backfill-{key}",
        }  # fmt: skip
        registry.reset()
        found = Crms(SandboxControl(hubspot.url), SandboxControl(salesforce.url), hubspot.app)
        found.hubspot.config(webhooks_enabled=False)
        found.salesforce.config(webhooks_enabled=False)
        yield found
        registry.reset()


def backfill(*args: str) -> str:
    out = StringIO()
    call_command("sync_backfill", *args, "--no-progress", stdout=out, stderr=StringIO())
    return out.getvalue()


def backfill_with_progress(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("sync_backfill", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def row(output: str, target: str) -> dict[str, int]:
    """The counts of one target's row in the summary table."""
    lines = output.splitlines()
    header = re.split(r"\s{2,}", next(line for line in lines if line.startswith("target")).strip())
    found = next(line for line in lines if line.split() and line.split()[0] == target)
    return dict(zip(header[1:], map(int, found.split()[1:]), strict=True))


def counts(**values: int) -> dict[str, int]:
    return {"created": 0, "matched": 0, "updated": 0, "skipped": 0, "failed": 0, **values}


# --- HubSpot → SyncRoot --------------------------------------------------------------------------
def test_dry_run_from_hubspot_reports_what_would_happen_and_writes_nothing(crms):
    ContactFactory(email="Grace@Example.com")
    crms.add_hubspot("grace@example.com", "Grace", "Hopper")
    crms.add_hubspot("alan@example.com", "Alan", "Turing")
    crms.add_hubspot("edsger@example.com", "Edsger", "Dijkstra")

    output = backfill("--from", "hubspot", "--dry-run")

    assert row(output, "syncroot") == counts(created=2, matched=1)
    assert "dry run: nothing was written" in output
    assert Contact.objects.count() == 1
    assert not ProviderLink.objects.exists()
    assert not SyncCursor.objects.exists()


def test_import_from_hubspot_creates_matches_by_email_and_queues_the_other_crm(crms):
    existing = ContactFactory(email="Grace@Example.com", job_title="Rear Admiral")
    grace = crms.add_hubspot("grace@example.com", "Grace", "Hopper")
    crms.add_hubspot("alan@example.com", "Alan", "Turing", company="Bletchley Park")

    output = backfill("--from", "hubspot")

    assert row(output, "syncroot") == counts(created=1, matched=1)
    assert Contact.objects.count() == 2  # the existing contact was linked, not duplicated
    link = ProviderLink.objects.get(contact=existing, provider="hubspot")
    assert link.external_id == grace
    alan = Contact.objects.get(email="alan@example.com")
    assert (alan.first_name, alan.company) == ("Alan", "Bletchley Park")
    # Imported contacts flow on to Salesforce through the forwarder.
    pending = ProviderLink.objects.filter(provider="salesforce", status=LinkStatus.PENDING)
    assert set(pending.values_list("contact__email", flat=True)) == {"alan@example.com", "Grace@Example.com"}
    assert "forwarder" in output
    assert "--push-now" in output
    assert not SyncCursor.objects.exists()  # a finished run clears its checkpoint

    again = backfill("--from", "hubspot")

    assert row(again, "syncroot") == counts(skipped=2)
    assert Contact.objects.count() == 2


def test_import_applies_a_crm_edit_to_a_linked_contact_as_an_update(crms):
    record = crms.add_hubspot("alan@example.com", "Alan", "Turing")
    backfill("--from", "hubspot")
    crms.hubspot.edit(record, {"jobtitle": "Cryptanalyst"})

    assert row(backfill("--from", "hubspot", "--dry-run"), "syncroot") == counts(updated=1)
    assert row(backfill("--from", "hubspot"), "syncroot") == counts(updated=1)
    assert Contact.objects.get(email="alan@example.com").job_title == "Cryptanalyst"


def test_import_and_its_dry_run_honour_the_field_mapping(crms):
    record = crms.add_hubspot("alan@example.com", "Alan", "Turing")
    backfill("--from", "hubspot")
    mappings.mappings_ensure(providers=["hubspot"])
    job_title = FieldMapping.objects.get(provider="hubspot", field="job_title")
    mappings.mapping_update(mapping_id=job_title.pk, rule="off")
    crms.hubspot.edit(record, {"jobtitle": "Cryptanalyst"})

    assert row(backfill("--from", "hubspot", "--dry-run"), "syncroot") == counts(skipped=1)
    assert row(backfill("--from", "hubspot"), "syncroot") == counts(skipped=1)
    assert Contact.objects.get(email="alan@example.com").job_title == ""


def test_an_interrupted_import_resumes_from_its_checkpoint(crms):
    for n in range(5):
        crms.add_hubspot(f"person{n}@example.com", last=f"Number {n}")

    first = backfill("--from", "hubspot", "--limit", "2")

    assert row(first, "syncroot") == counts(created=2)
    assert "checkpoint is kept" in first
    checkpoint = SyncCursor.objects.get(provider="backfill:hubspot")
    assert checkpoint.modstamp is not None
    assert checkpoint.last_id

    second = backfill("--from", "hubspot")

    assert "Resumed from checkpoint" in second
    assert row(second, "syncroot") == counts(created=3)
    emails = list(Contact.objects.values_list("email", flat=True))
    assert sorted(emails) == [f"person{n}@example.com" for n in range(5)]
    assert not SyncCursor.objects.exists()

    assert row(backfill("--from", "hubspot", "--restart"), "syncroot") == counts(skipped=5)


def test_progress_bar_on_stderr_knows_the_total(crms):
    for n in range(3):
        crms.add_hubspot(f"person{n}@example.com", last=f"Number {n}")
        crms.add_salesforce(f"sf{n}@example.com", last=f"Number {n}")

    hubspot_out, hubspot_bar = backfill_with_progress("--from", "hubspot")
    _, salesforce_bar = backfill_with_progress("--from", "salesforce", "--dry-run")

    assert "hubspot → syncroot: 100%" in hubspot_bar
    assert "3/3" in hubspot_bar
    assert "salesforce → syncroot: 100%" in salesforce_bar
    assert "3/3" in salesforce_bar
    assert "%" not in hubspot_out  # the bar never mixes into the summary on stdout


def test_a_read_failing_midway_resumes_from_the_position_reached(crms, settings, monkeypatch, caplog):
    settings.SYNC_BACKOFF_BASE_SECONDS = 0.01
    monkeypatch.setattr(HubSpotProvider, "search_page_size", 10)
    for n in range(40):
        crms.add_hubspot(f"person{n}@example.com", last=f"Number {n}")
    crms.hubspot.config(error_rate=0.3)
    crms.hubspot_app.rng.seed(3)

    output = backfill("--from", "hubspot")

    assert crms.hubspot.stats()["faults"]["errors"] > 0
    assert "backfill read failed; resuming" in caplog.text
    assert row(output, "syncroot") == counts(created=40)
    assert Contact.objects.count() == 40


def test_push_now_sends_imported_contacts_on_to_the_other_crm(crms):
    crms.add_salesforce("grace@example.com", "Grace", "Hopper")  # already there: matched, not duplicated
    crms.add_hubspot("grace@example.com", "Grace", "Hopper")
    crms.add_hubspot("alan@example.com", "Alan", "Turing")

    output = backfill("--from", "hubspot", "--push-now")

    assert row(output, "syncroot") == counts(created=2)
    assert "Pushed to the CRMs in this process" in output
    emails = Counter(r["Email"] for r in crms.salesforce_contacts())
    assert emails == {"grace@example.com": 1, "alan@example.com": 1}
    assert set(ProviderLink.objects.filter(provider="salesforce").values_list("status", flat=True)) == {"synced"}


# --- Salesforce → SyncRoot -----------------------------------------------------------------------
def test_import_from_salesforce_takes_the_company_from_the_account(crms):
    existing = ContactFactory(email="grace@example.com", company="")
    crms.add_salesforce("GRACE@example.com", "Grace", "Hopper", **{"Account.Name": "US Navy"})
    for n in range(3):
        crms.add_salesforce(f"person{n}@example.com", last=f"Number {n}", **{"Account.Name": "Acme"})

    assert row(backfill("--from", "salesforce", "--dry-run"), "syncroot") == counts(created=3, matched=1)
    assert row(backfill("--from", "salesforce", "--limit", "2"), "syncroot") == counts(created=1, matched=1)
    assert row(backfill("--from", "salesforce"), "syncroot") == counts(created=2)

    assert Contact.objects.count() == 4
    existing.refresh_from_db()
    assert existing.company == "US Navy"  # matched by email, case aside, and filled in
    assert set(Contact.objects.exclude(pk=existing.pk).values_list("company", flat=True)) == {"Acme"}
    assert row(backfill("--from", "salesforce"), "syncroot") == counts(skipped=4)


def test_two_crm_records_with_one_email_are_a_reported_failure(crms):
    crms.add_salesforce("twin@example.com", "First", "Twin")
    second = crms.add_salesforce("twin@example.com", "Second", "Twin")  # Salesforce allows duplicates
    crms.add_salesforce("alan@example.com", "Alan", "Turing")

    dry = backfill("--from", "salesforce", "--dry-run")
    real = backfill("--from", "salesforce")

    assert row(dry, "syncroot") == row(real, "syncroot") == counts(created=2, failed=1)
    assert f"{second} → syncroot: conflict" in real
    assert Contact.objects.filter(email="twin@example.com").count() == 1


# --- SyncRoot → CRMs -----------------------------------------------------------------------------
def test_push_from_syncroot_creates_in_both_crms_and_matches_existing_records_by_email(crms):
    for n in range(3):
        ContactFactory(email=f"person{n}@example.com", company="Acme")
    crms.add_hubspot("PERSON0@example.com", "Someone", "Else")
    crms.add_salesforce("person1@example.com", "Someone", "Else")

    dry = backfill("--from", "syncroot", "--dry-run")

    assert row(dry, "hubspot") == row(dry, "salesforce") == {**counts(), "to push": 3}
    assert not ProviderLink.objects.exists()

    output = backfill("--from", "syncroot", "--push-now")

    assert row(output, "hubspot") == counts(created=2, matched=1)
    assert row(output, "salesforce") == counts(created=2, matched=1)
    expected = {f"person{n}@example.com": 1 for n in range(3)}
    assert Counter(e.lower() for e in crms.hubspot_emails()) == expected
    assert Counter(r["Email"].lower() for r in crms.salesforce_contacts()) == expected
    assert ProviderLink.objects.filter(status=LinkStatus.SYNCED, external_id__isnull=False).count() == 6
    assert not SyncCursor.objects.exists()

    assert row(backfill("--from", "syncroot", "--push-now"), "hubspot") == counts(skipped=3)


def test_push_now_counts_contacts_a_drain_sent_before_their_own_chunk(crms):
    for n in range(3):
        crms.add_hubspot(f"person{n}@example.com", last=f"Number {n}")
    backfill("--from", "hubspot")  # leaves every contact pending for Salesforce

    output = backfill("--from", "syncroot", "--push-now", "--chunk-size", "1")

    assert row(output, "salesforce") == counts(created=3)
    assert row(output, "hubspot") == counts(skipped=3)
    assert len(crms.salesforce_contacts()) == 3


def test_push_from_syncroot_without_push_now_queues_for_the_workers_and_resumes(crms):
    contacts = [ContactFactory(email=f"person{n}@example.com") for n in range(4)]

    first = backfill("--from", "syncroot", "--to", "hubspot", "--limit", "3", "--chunk-size", "2")

    assert row(first, "hubspot") == {**counts(), "queued": 3}
    assert "salesforce" not in first.split("\n\n")[1]
    assert SyncCursor.objects.filter(provider="backfill:syncroot:hubspot").exists()

    second = backfill("--from", "syncroot", "--to", "hubspot")

    assert row(second, "hubspot") == {**counts(), "queued": 1}
    assert "forwarder" in second
    pending = ProviderLink.objects.filter(provider="hubspot", status=LinkStatus.PENDING)
    assert pending.count() == 4
    assert not ProviderLink.objects.filter(provider="salesforce").exists()
    assert crms.hubspot_emails() == []  # nothing sent from here: the workers do it
    assert {link.contact_id for link in pending} == {c.pk for c in contacts}


def test_naming_every_crm_is_the_same_run_as_naming_none(crms):
    ContactFactory(email="ada@example.com")

    output = backfill("--from", "syncroot", "--to", "salesforce", "--to", "hubspot", "--limit", "1")

    assert row(output, "hubspot")["queued"] == 1
    assert SyncCursor.objects.get().provider == "backfill:syncroot"


def test_checkpoint_keys_fit_their_column():
    assert checkpoint_key(source="hubspot") == "backfill:hubspot"
    assert checkpoint_key(source="syncroot", targets=["hubspot"]) == "backfill:syncroot:hubspot"
    long = checkpoint_key(source="syncroot", targets=["salesforce", "hubspot", "pipedrive"])
    assert len(long) == 32
    assert long.startswith("backfill:syncroot:")
    assert long == checkpoint_key(source="syncroot", targets=["pipedrive", "hubspot", "salesforce"])


def test_json_output_and_argument_errors(crms):
    crms.add_hubspot("alan@example.com", "Alan", "Turing")

    report = json.loads(backfill("--from", "hubspot", "--json"))

    assert report["rows"]["syncroot"]["created"] == 1
    assert report["finished"] is True
    assert report["errors"] == []
    with pytest.raises(CommandError, match="--to only applies"):
        backfill("--from", "hubspot", "--to", "salesforce")


def test_a_crm_that_is_not_connected_is_refused(settings):
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "", "refresh_token": ""}
    registry.reset()

    with pytest.raises(CommandError, match="hubspot is not connected"):
        backfill("--from", "hubspot")


def test_relink_sends_every_contact_again_to_a_crm_that_was_emptied(crms):
    for n in range(3):
        ContactFactory(email=f"person{n}@example.com", last_name=f"Number {n}")
    backfill("--from", "syncroot", "--push-now")
    old_ids = dict(ProviderLink.objects.values_list("pk", "external_id"))
    crms.hubspot.reset()  # the sandboxes restart empty; SyncRoot still holds their old record ids
    crms.salesforce.reset()
    assert crms.hubspot_emails() == []
    assert crms.salesforce_contacts() == []
    assert row(backfill("--from", "syncroot", "--push-now"), "hubspot") == counts(skipped=3)  # it cannot know

    # As after a restart: no in-process Account cache (a running worker forgets a vanished Account
    # at its first refusal and retries; see test_push).
    registry.reset()

    output = backfill("--from", "syncroot", "--relink", "--push-now")

    assert row(output, "hubspot") == row(output, "salesforce") == counts(created=3)
    expected = {f"person{n}@example.com": 1 for n in range(3)}
    assert Counter(crms.hubspot_emails()) == expected
    assert Counter(r["Email"] for r in crms.salesforce_contacts()) == expected
    links = ProviderLink.objects.all()
    assert {link.status for link in links} == {LinkStatus.SYNCED}
    assert all(link.external_id and link.external_id != old_ids[link.pk] for link in links)
    assert all(link.attempts == 0 and not link.last_error for link in links)


def test_relink_only_applies_to_a_push_from_syncroot(crms):
    with pytest.raises(CommandError, match="--relink only applies to --from syncroot"):
        backfill("--from", "hubspot", "--relink")


def test_the_import_refuses_what_syncroot_cannot_hold_and_cuts_nothing(crms):
    crms.add_hubspot("long@example.com", jobtitle="y" * 200)
    too_long = crms.add_hubspot("c" * 80 + "@example.com")

    out = backfill("--from", "hubspot")

    contact = Contact.objects.get()
    assert (contact.email, contact.job_title) == ("long@example.com", "")
    issue = ProviderLink.objects.get(contact=contact, provider="hubspot").issues[0]
    assert (issue["field"], issue["code"]) == ("job_title", "too_long")
    assert RecordIssue.objects.get().external_id == too_long
    assert "refused" in out


def test_values_an_import_brings_in_name_the_backfill_as_their_source(crms):
    existing = ContactFactory(email="grace@example.com", first_name="")
    crms.add_hubspot("grace@example.com", "Grace", "Hopper")
    crms.add_hubspot("alan@example.com", "Alan", "Turing")

    backfill("--from", "hubspot")

    alan = contact_history(contact=Contact.objects.get(email="alan@example.com"))
    assert (alan["first_name"]["value"], alan["first_name"]["source"]) == ("Alan", "backfill")
    grace = contact_history(contact=Contact.objects.get(pk=existing.pk))
    assert (grace["first_name"]["value"], grace["first_name"]["source"]) == ("Grace", "backfill")
    assert [change["source"] for change in grace["last_name"]["changes"]] == ["backfill"]


def test_an_import_never_brings_back_a_person_erased_on_request(crms):
    erased = ContactFactory(email="gone@example.com")
    contact_erase(contact_id=erased.pk)
    record = crms.add_hubspot("gone@example.com", "Gone", "Person")  # the CRM still has them
    crms.add_hubspot("alan@example.com", "Alan", "Turing")

    output = backfill("--from", "hubspot")

    assert row(output, "syncroot") == counts(created=1, failed=1)
    assert f"{record} → syncroot: conflict: This person was erased on request" in output
    assert not Contact.objects.filter(email__iexact="gone@example.com", deleted_at=None).exists()
    assert RecordIssue.objects.get().external_id == record


def test_an_import_reads_the_next_pages_while_it_writes(crms, monkeypatch):
    """The read runs ahead of the writing: while the first chunk (one page of 10) waits to be
    written, the CRM is asked for the next pages. Read and write in turn, the searches would stop at
    two (the count for the progress bar, the first page) until the chunk is written."""
    from providers import backfill_import

    monkeypatch.setattr(HubSpotProvider, "search_page_size", 10)
    for n in range(40):
        crms.add_hubspot(f"person{n}@example.com", last=f"Number {n}")

    def searches() -> int:
        return sum(crms.hubspot.stats()["requests"].get("POST /crm/v3/objects/contacts/search", {}).values())

    seen_at_first_write: list[int] = []
    create = backfill_import.records_create_many

    def slow_write(**kwargs):
        if not seen_at_first_write:
            deadline = time.monotonic() + 10
            while searches() < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            seen_at_first_write.append(searches())
        return create(**kwargs)

    monkeypatch.setattr(backfill_import, "records_create_many", slow_write)

    output = backfill("--from", "hubspot", "--chunk-size", "10")

    assert row(output, "syncroot") == counts(created=40)
    assert seen_at_first_write[0] >= 3
