"""Field mapping rules, field by field: what SyncRoot takes from a CRM and what it sends to it.

Service level, on the real database: the inbound apply path (`change_apply`, shared by webhooks,
the reconciler and the import) and the forwarder's choice of values (`changed_values`).
"""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

import providers.services
from contacts.models import SYNCED_FIELDS, Contact
from contacts.services import contact_update
from contacts.tests.factories import ContactFactory
from crm import registry
from crm.base import InboundChange, field_hash
from providers import inbound, mappings
from providers.ledger import changed_values
from providers.models import FieldMapping, LinkStatus, ProviderLink

pytestmark = pytest.mark.django_db

EARLIER = timezone.now() - timedelta(hours=1)  # when SyncRoot's values were set


@pytest.fixture(autouse=True)
def connected(settings, monkeypatch) -> None:
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "x"}
    settings.SALESFORCE = {**settings.SALESFORCE, "access_token": "x", "instance_url": "http://127.0.0.1:1"}
    registry.reset()
    monkeypatch.setattr(providers.services, "enqueue_forward", lambda *, providers: None)


def rule_set(rule: str, provider: str = "hubspot", field: str = "job_title") -> None:
    mappings.mappings_ensure(providers=[provider])
    mapping = FieldMapping.objects.get(provider=provider, field=field)
    mappings.mapping_update(mapping_id=mapping.pk, rule=rule)


def in_sync(job_title: str) -> tuple[Contact, ProviderLink]:
    """A contact HubSpot holds as SyncRoot does, its values set an hour ago."""
    contact = ContactFactory(job_title=job_title, field_times={f: EARLIER.isoformat() for f in SYNCED_FIELDS})
    hashes = {f: field_hash(f, v) for f, v in contact.synced_values().items()}
    link = ProviderLink.objects.create(
        contact=contact, provider="hubspot", external_id="101", status=LinkStatus.SYNCED,
        synced_version=contact.version, field_hashes=hashes,
    )  # fmt: skip
    return contact, link


def syncroot_edit(contact: Contact, value: str) -> None:
    contact_update(contact_id=contact.pk, data={"job_title": value}, partial=True)


def crm_edit(value: str, *, when=None) -> str:
    change = InboundChange(external_id="101", values={"job_title": value}, occurred_at=when or timezone.now())
    return inbound.change_apply(provider="hubspot", change=change)


# Scenario: (SyncRoot's and HubSpot's value before, who changes job_title to what, and when).
SCENARIOS = {
    "syncroot_edit": ("Analyst", ("syncroot", "Lead")),
    "crm_edit": ("Analyst", ("crm", "Manager")),
    "crm_edit_older": ("Analyst", ("crm_older", "Manager")),  # made before SyncRoot's value was set
    "syncroot_blanks": ("Analyst", ("syncroot", "")),
    "crm_blanks": ("Analyst", ("crm", "")),
    "crm_edit_over_blank": ("", ("crm", "Manager")),
    "syncroot_edit_over_blank": ("", ("syncroot", "Lead")),
}
# Per rule and scenario: SyncRoot's job_title after it, and what the forwarder sends HubSpot (None: nothing).
TRUTH = {
    "two_way": {
        "syncroot_edit": ("Lead", "Lead"), "crm_edit": ("Manager", None), "crm_edit_older": ("Analyst", "Analyst"),
        "syncroot_blanks": ("", ""), "crm_blanks": ("", None),
        "crm_edit_over_blank": ("Manager", None), "syncroot_edit_over_blank": ("Lead", "Lead"),
    },
    "syncroot_wins": {
        "syncroot_edit": ("Lead", "Lead"), "crm_edit": ("Analyst", "Analyst"),
        "crm_edit_older": ("Analyst", "Analyst"), "syncroot_blanks": ("", ""), "crm_blanks": ("Analyst", "Analyst"),
        "crm_edit_over_blank": ("", ""), "syncroot_edit_over_blank": ("Lead", "Lead"),
    },
    "crm_wins": {
        "syncroot_edit": ("Lead", None), "crm_edit": ("Manager", None), "crm_edit_older": ("Manager", None),
        "syncroot_blanks": ("", None), "crm_blanks": ("", None),
        "crm_edit_over_blank": ("Manager", None), "syncroot_edit_over_blank": ("Lead", None),
    },
    "prefer_syncroot_unless_blank": {
        "syncroot_edit": ("Lead", "Lead"), "crm_edit": ("Analyst", "Analyst"),
        "crm_edit_older": ("Analyst", "Analyst"), "syncroot_blanks": ("", None), "crm_blanks": ("Analyst", "Analyst"),
        "crm_edit_over_blank": ("Manager", None), "syncroot_edit_over_blank": ("Lead", "Lead"),
    },
    "prefer_crm_unless_blank": {
        "syncroot_edit": ("Lead", None), "crm_edit": ("Manager", None), "crm_edit_older": ("Manager", None),
        "syncroot_blanks": ("", None), "crm_blanks": ("Analyst", "Analyst"),
        "crm_edit_over_blank": ("Manager", None), "syncroot_edit_over_blank": ("Lead", "Lead"),
    },
    "off": {
        "syncroot_edit": ("Lead", None), "crm_edit": ("Analyst", None), "crm_edit_older": ("Analyst", None),
        "syncroot_blanks": ("", None), "crm_blanks": ("Analyst", None),
        "crm_edit_over_blank": ("", None), "syncroot_edit_over_blank": ("Lead", None),
    },
}  # fmt: skip


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("rule", TRUTH)
def test_each_rule_decides_what_syncroot_takes_and_what_it_sends(rule, scenario):
    before, (side, value) = SCENARIOS[scenario]
    contact, link = in_sync(before)
    rule_set(rule)

    if side == "syncroot":
        syncroot_edit(contact, value)
    else:
        crm_edit(value, when=EARLIER - timedelta(hours=1) if side == "crm_older" else None)

    contact.refresh_from_db()
    link.refresh_from_db()
    expected_value, expected_sent = TRUTH[rule][scenario]
    assert contact.job_title == expected_value
    sent = changed_values(contact=contact, link=link)
    assert sent.get("job_title") == expected_sent
    assert set(sent) <= {"job_title"}
    if side != "syncroot":  # a value written back leaves HubSpot's link pending; otherwise it is in sync
        assert link.status == (LinkStatus.PENDING if expected_sent is not None else LinkStatus.SYNCED)


def test_a_crm_value_syncroot_takes_goes_on_to_the_other_crm_by_its_own_rule():
    contact, _ = in_sync("Analyst")
    hashes = {f: field_hash(f, v) for f, v in contact.synced_values().items()}
    ProviderLink.objects.create(
        contact=contact, provider="salesforce", external_id="003", status=LinkStatus.SYNCED, field_hashes=hashes
    )
    rule_set("crm_wins")

    assert crm_edit("Manager", when=EARLIER - timedelta(hours=1)) == inbound.APPLIED

    salesforce = ProviderLink.objects.get(contact=contact, provider="salesforce")
    assert salesforce.status == LinkStatus.PENDING
    assert changed_values(contact=Contact.objects.get(pk=contact.pk), link=salesforce) == {"job_title": "Manager"}


def test_a_contact_created_from_a_crm_record_takes_its_values_but_those_turned_off():
    rule_set("off", field="phone")
    rule_set("syncroot_wins")

    change = InboundChange(
        external_id="202", occurred_at=timezone.now(),
        values={"email": "new@example.com", "first_name": "Nia", "phone": "+1 555", "job_title": "CTO"},
    )  # fmt: skip
    assert inbound.change_apply(provider="hubspot", change=change) == inbound.CREATED

    contact = Contact.objects.get(email="new@example.com")
    assert (contact.first_name, contact.job_title, contact.phone) == ("Nia", "CTO", "")
    link = ProviderLink.objects.get(provider="hubspot", external_id="202")
    assert link.status == LinkStatus.SYNCED  # the phone turned off is not blanked in HubSpot
    assert changed_values(contact=contact, link=link) == {}


def test_a_rule_changed_by_another_process_applies_at_once():
    mappings.mappings_ensure(providers=["hubspot"])
    assert mappings.mapping_rules(provider="hubspot")["job_title"] == "two_way"  # now cached in this process
    # Another process changes the row and writes a new version token (as mapping_update does).
    FieldMapping.objects.filter(provider="hubspot", field="job_title").update(rule="off")
    assert mappings.mapping_rules(provider="hubspot")["job_title"] == "two_way"
    cache.set(mappings._VERSION_KEY, "written-by-another-process", timeout=None)

    assert mappings.mapping_rules(provider="hubspot")["job_title"] == "off"


def test_a_pinned_batch_reads_the_version_once_and_keeps_its_mappings(monkeypatch):
    mappings.mappings_ensure(providers=["hubspot"])
    reads = []
    real_get = cache.get
    monkeypatch.setattr(cache, "get", lambda *args, **kwargs: reads.append(args[0]) or real_get(*args, **kwargs))

    with mappings.mappings_pinned():
        assert mappings.mapping_rules(provider="hubspot")["job_title"] == "two_way"
        # Another process changes a rule meanwhile: the batch goes on with the mappings it began with.
        FieldMapping.objects.filter(provider="hubspot", field="job_title").update(rule="off")
        cache.set(mappings._VERSION_KEY, "written-by-another-process", timeout=None)
        for _ in range(50):
            assert mappings.mapping_rules(provider="hubspot")["job_title"] == "two_way"
    assert reads.count(mappings._VERSION_KEY) == 1  # was once per call: a Redis round trip per link

    assert mappings.mapping_rules(provider="hubspot")["job_title"] == "off"  # the next batch has it


def test_the_email_mapping_stays_two_way():
    mappings.mappings_ensure(providers=["hubspot"])
    email = FieldMapping.objects.get(provider="hubspot", field="email")

    with pytest.raises(mappings.IdentityMapping):
        mappings.mapping_update(mapping_id=email.pk, rule="off")
    with pytest.raises(mappings.BuiltinMapping):
        mappings.mapping_delete(mapping_id=email.pk)
    email.refresh_from_db()
    assert email.rule == "two_way"


def test_without_the_cache_the_rules_are_read_from_the_database_every_time(settings):
    rule_set("off")
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}

    assert mappings.mapping_rules(provider="hubspot")["job_title"] == "off"
    FieldMapping.objects.filter(provider="hubspot", field="job_title").update(rule="crm_wins")
    assert mappings.mapping_rules(provider="hubspot")["job_title"] == "crm_wins"  # no memo it cannot check


def test_a_newly_mapped_field_is_left_to_its_backfill_until_it_has_read_the_record():
    """A record the reconciler polls before the new mapping's backfill reaches it holds the field
    blank because nobody ever wrote it there, not because a person blanked it: SyncRoot's value
    stays, and the backfill (not the forwarder, one contact at a time) writes it."""
    from contacts.models import CustomField
    from providers.models import BackfillStatus

    CustomField.objects.create(key="region", label="Region", type="string", max_length=80)
    contact, link = in_sync("Analyst")
    contact.custom = {"region": "North"}
    contact.field_times["custom.region"] = EARLIER.isoformat()
    contact.save()
    mapping = FieldMapping.objects.create(
        provider="hubspot", field="region", remote_field="region", rule="two_way",
        remote_spec={"type": "string", "length": 80, "writable": True}, backfill_status=BackfillStatus.PENDING,
    )  # fmt: skip
    mappings.mappings_changed()
    polled = InboundChange(external_id="101", values=contact.synced_values(), remote={"region": None},
                           occurred_at=timezone.now())  # fmt: skip

    assert inbound.change_apply(provider="hubspot", change=polled) == inbound.UNCHANGED

    contact.refresh_from_db()
    link.refresh_from_db()
    assert contact.custom == {"region": "North"}
    assert link.status == LinkStatus.SYNCED
    assert "region" not in changed_values(contact=contact, link=link)

    # Once the backfill is over, the field is any other: the CRM's blank is a change a person made.
    FieldMapping.objects.filter(pk=mapping.pk).update(backfill_status=BackfillStatus.DONE)
    mappings.mappings_changed()
    assert inbound.change_apply(provider="hubspot", change=polled) == inbound.APPLIED
    contact.refresh_from_db()
    assert contact.custom == {}
