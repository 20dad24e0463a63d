"""Backfills past the Salesforce Bulk threshold: the push goes out as an ingest job, the import
comes in through a query job, and both end exactly where the REST path would."""

import pytest

from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from crm import registry
from providers.models import LinkStatus, ProviderLink

from .test_backfill import backfill, counts, crms, row  # noqa: F401  (crms is a fixture)

pytestmark = pytest.mark.django_db

INGEST_JOB = "POST /services/data/{version}/jobs/ingest"
QUERY_JOB = "POST /services/data/{version}/jobs/query"
COLLECTION_CREATE = "POST /services/data/{version}/composite/sobjects"
THRESHOLD = 20


@pytest.fixture
def bulk(crms, settings):  # noqa: F811
    settings.SALESFORCE = {**settings.SALESFORCE, "bulk_threshold": THRESHOLD, "bulk_batch_size": 500}
    crms.salesforce.config(query_batch_size=THRESHOLD)  # a REST page holds the threshold, as 2,000 do
    registry.reset()
    return crms


def calls(control, key):
    return sum(control.stats()["requests"].get(key, {}).values())


def test_a_push_past_the_threshold_goes_out_as_one_bulk_job(bulk):
    for n in range(60):
        ContactFactory(email=f"person{n}@example.com", company="Acme" if n % 3 else "")
    bulk.add_salesforce("person4@example.com", "Someone", "Else")

    output = backfill("--from", "syncroot", "--to", "salesforce", "--push-now", "--chunk-size", "100")

    assert row(output, "salesforce") == counts(created=59, matched=1)
    assert calls(bulk.salesforce, INGEST_JOB) == 1
    assert calls(bulk.salesforce, COLLECTION_CREATE) <= 1  # the Acme account, not contacts
    links = ProviderLink.objects.filter(provider="salesforce")
    assert links.filter(status=LinkStatus.SYNCED, external_id__isnull=False).count() == 60
    assert len(bulk.salesforce_contacts()) == 60


def test_an_import_past_the_threshold_reads_a_bulk_query_job(bulk):
    for n in range(45):
        bulk.add_salesforce(f"person{n}@example.com", last=f"Number {n}", **{"Account.Name": "Acme"})

    output = backfill("--from", "salesforce")

    assert row(output, "syncroot") == counts(created=45)
    assert calls(bulk.salesforce, QUERY_JOB) == 1
    assert set(Contact.objects.values_list("company", flat=True)) == {"Acme"}
    assert Contact.objects.get(email="person7@example.com").last_name == "Number 7"
