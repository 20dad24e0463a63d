"""A seeded random interleaving of API writes and people's edits in both CRMs (merges and restores
included), with the CRMs duplicating, reordering and dropping webhooks, ends with all three holding
the same contacts."""

import os
import random
import time
from collections import Counter

import pytest
import requests

from contacts.models import Contact
from providers.models import DeadLetter, LinkStatus, ProviderLink
from providers.reconcile import reconcile
from tests.e2e.test_inbound import quiet, writes
from webhooks.models import WebhookEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

OPERATIONS = 220
SEED = int(os.environ.get("SYNCROOT_CONVERGENCE_SEED", "2026"))  # another seed explores another interleaving
FLAKY_WEBHOOKS = {"webhook_duplicate_rate": 0.2, "webhook_drop_rate": 0.1, "webhook_reorder": True, "seed": SEED}
NAMES = ["Ada", "Grace", "Zoë", "Åsa", "Łukasz", "Nguyễn", "O'Brien", "Renée", "Søren", "Chloé"]
COMPANIES = ["Acme", "Initech", "Umbrella", "Ünïcode GmbH", "Globex", ""]
TITLES = ["CTO", "Engineer", "Directrice", "Analyst", ""]


@pytest.fixture
def sandbox_options():
    return {"hubspot": dict(FLAKY_WEBHOOKS), "salesforce": dict(FLAKY_WEBHOOKS)}


class Workload:
    def __init__(self, stack, rng: random.Random) -> None:
        self.stack, self.rng, self.serial = stack, rng, 0
        self.done: Counter = Counter()

    def email(self) -> str:
        self.serial += 1
        return f"person{self.serial}@example.com"

    def pick(self, items: list):
        return self.rng.choice(items) if items else None

    def api_create(self) -> None:
        body = {"email": self.email(), "first_name": self.pick(NAMES), "last_name": self.pick(NAMES),
                "company": self.pick(COMPANIES), "job_title": self.pick(TITLES)}  # fmt: skip
        assert self.stack.api.post("/contacts", body, format="json").status_code == 201

    def api_update(self) -> None:
        contact = self.pick(list(Contact.objects.filter(deleted_at__isnull=True).values_list("pk", flat=True)))
        if contact is None:
            return self.api_create()
        phones = ["+1 555 0100", "+44 20 7946 0000", ""]
        choices = [("first_name", NAMES), ("last_name", NAMES), ("company", COMPANIES), ("job_title", TITLES)]
        field, values = self.pick([*choices, ("phone", phones)])
        response = self.stack.api.patch(f"/contacts/{contact}", {field: self.pick(values)}, format="json")
        assert response.status_code in (200, 404)  # 404: deleted meanwhile by a CRM event

    def api_delete(self) -> None:
        contact = self.pick(list(Contact.objects.filter(deleted_at__isnull=True).values_list("pk", flat=True)))
        if contact is not None:
            assert self.stack.api.delete(f"/contacts/{contact}").status_code in (204, 404)

    def hubspot_edit(self, create: bool = False, delete: bool = False) -> None:
        record = None if create else self.pick(self.stack.hubspot_records())
        if record is None and not create:
            return
        fields = {"email": self.email()} if create else {}
        fields[self.pick(["firstname", "lastname", "company", "jobtitle"])] = self.pick(NAMES + COMPANIES)
        self._edit(self.stack.hubspot_ctl, record and record["id"], fields, delete)

    def salesforce_edit(self, create: bool = False, delete: bool = False) -> None:
        record = None if create else self.pick(self.stack.salesforce_contacts())
        if record is None and not create:
            return
        fields = {"Email": self.email(), "LastName": self.pick(NAMES)} if create else {}
        fields[self.pick(["FirstName", "LastName", "Title", "company"])] = self.pick(NAMES + TITLES[:-1])
        self._edit(self.stack.salesforce_ctl, record and record["Id"], fields, delete)

    def live_ids(self) -> list:
        return list(Contact.objects.filter(deleted_at__isnull=True).values_list("pk", flat=True))

    def api_merge(self) -> None:
        live = self.live_ids()
        if len(live) < 2:
            return
        keep, other = self.rng.sample(live, 2)
        response = self.stack.api.post(f"/contacts/{keep}/merge", {"other_id": str(other)}, format="json")
        assert response.status_code in (200, 404, 409), response.content

    def api_restore(self) -> None:
        gone = Contact.objects.filter(deleted_at__isnull=False, merged_into__isnull=True, erased_email_hash="")
        contact = self.pick(list(gone.values_list("pk", flat=True)))
        if contact is not None:
            assert self.stack.api.post(f"/contacts/{contact}/restore").status_code in (200, 404, 409)

    def hubspot_restore(self) -> None:
        record = self.pick(self.stack.hubspot_records(archived=True))
        if record is not None:
            self._lifecycle(self.stack.hubspot_ctl, record["id"], restore=True)

    def salesforce_undelete(self) -> None:
        # A record whose email a live record holds would come back as a duplicate: a merge candidate
        # for a person (tests/e2e/test_conflicts.py), not something that converges by itself.
        live = {(r["Email"] or "").lower() for r in self.stack.salesforce_contacts()}
        gone = self.stack.salesforce_contacts(deleted=True)
        record = self.pick([r for r in gone if not r.get("MasterRecordId") and (r["Email"] or "").lower() not in live])
        if record is not None:
            self._lifecycle(self.stack.salesforce_ctl, record["Id"], undelete=True)

    def _lifecycle(self, control, record_id, **action) -> None:
        try:
            control.edit(record_id, **action)
        except requests.HTTPError as exc:  # gone meanwhile, or its email taken by now
            if exc.response.status_code not in (404, 400):
                raise

    def _edit(self, control, record_id, fields, delete) -> None:
        try:
            control.edit(record_id, {} if delete else fields, delete=delete)
        except requests.HTTPError as exc:  # edited a record SyncRoot archived a moment ago
            if exc.response.status_code not in (404, 400):
                raise

    def run(self, count: int) -> None:
        table = [
            (self.api_create, 20), (self.api_update, 25), (self.api_delete, 4),
            (self.hubspot_edit, 15), (lambda: self.hubspot_edit(create=True), 8),
            (lambda: self.hubspot_edit(delete=True), 2),
            (self.salesforce_edit, 15), (lambda: self.salesforce_edit(create=True), 8),
            (lambda: self.salesforce_edit(delete=True), 2),
            (self.api_merge, 2), (self.api_restore, 2), (self.hubspot_restore, 2), (self.salesforce_undelete, 2),
        ]  # fmt: skip
        actions, weights = zip(*table, strict=True)
        for _ in range(count):
            action = self.rng.choices(actions, weights)[0]
            action()
            self.done[getattr(action, "__name__", "crm_edit")] += 1
            time.sleep(self.rng.uniform(0, 0.02))


def snapshot(stack) -> dict[str, set[tuple]]:
    accounts = {r["Id"]: r["Name"] for r in stack.salesforce_ctl.records() if r["attributes"]["type"] == "Account"}
    syncroot = {
        (c.email.lower(), c.first_name, c.last_name, c.phone, c.company, c.job_title)
        for c in Contact.objects.filter(deleted_at__isnull=True)
    }
    hubspot = {
        tuple(
            (r["properties"].get(p) or "") for p in ("email", "firstname", "lastname", "phone", "company", "jobtitle")
        )
        for r in stack.hubspot_records()
    }
    salesforce = {
        (r["Email"].lower(), r["FirstName"] or "", "" if r["LastName"] == "[not provided]" else r["LastName"],
         r["Phone"] or "", accounts.get(r["AccountId"], ""), r["Title"] or "")
        for r in stack.salesforce_contacts()
    }  # fmt: skip
    return {"syncroot": syncroot, "hubspot": hubspot, "salesforce": salesforce}


def settle(stack) -> None:
    """Webhooks delivered, reconciler run, forwarder drained, the CRMs quiet."""
    for _ in range(4):
        stack.hubspot_ctl.flush_webhooks()
        stack.salesforce_ctl.flush_webhooks()
        stack.wait_until(lambda: not WebhookEvent.objects.filter(status="received").exists(), timeout=60)
        for provider in ("hubspot", "salesforce"):
            reconcile(provider_name=provider)
        stack.wait_until(
            lambda: not ProviderLink.objects.filter(status__in=(LinkStatus.PENDING, LinkStatus.FAILED)).exists(),
            timeout=60,
        )
        quiet(stack)
        state = snapshot(stack)
        if state["syncroot"] == state["hubspot"] == state["salesforce"]:
            return


def test_random_interleaving_converges_without_loops(stack, settings):
    settings.SYNC_BACKOFF_BASE_SECONDS = 0.1
    workload = Workload(stack, random.Random(SEED))

    workload.run(OPERATIONS)
    settle(stack)

    state = snapshot(stack)
    for crm in ("hubspot", "salesforce"):
        differ = {row[0] for row in state["syncroot"] ^ state[crm]}
        links = ProviderLink.objects.filter(contact__email__in=differ).values_list(
            "contact__email", "contact__deleted_at", "contact__merged_into", "provider", "status", "external_id"
        )
        assert state["syncroot"] == state[crm], (
            crm, sorted(state["syncroot"] - state[crm]), sorted(state[crm] - state["syncroot"]), list(links)
        )  # fmt: skip
    assert len(state["syncroot"]) > 20
    parked = ProviderLink.objects.filter(status=LinkStatus.PARKED)
    assert not parked.exists(), list(DeadLetter.objects.values("provider", "error_code", "error_message"))
    # No loops: once settled, firing every trigger again (webhooks delivered and processed, the
    # reconciler run) leaves nothing to write: a loop would leave a change or a link pending.
    before = writes(stack.hubspot_ctl.stats()), writes(stack.salesforce_ctl.stats())
    assert stack.hubspot_ctl.flush_webhooks()
    assert stack.salesforce_ctl.flush_webhooks()
    stack.wait_until(lambda: not WebhookEvent.objects.filter(status="received").exists(), timeout=60)
    for provider in ("hubspot", "salesforce"):
        assert not {"applied", "created", "deleted", "failed"} & set(reconcile(provider_name=provider))
    assert not ProviderLink.objects.filter(status__in=(LinkStatus.PENDING, LinkStatus.FAILED)).exists()
    assert (writes(stack.hubspot_ctl.stats()), writes(stack.salesforce_ctl.stats())) == before
    outcomes = Counter(WebhookEvent.objects.values_list("outcome", flat=True))
    hs, sf = stack.hubspot_ctl.stats(), stack.salesforce_ctl.stats()
    print(
        f"\noperations={sum(workload.done.values())} {dict(workload.done)}\n"
        f"contacts={len(state['syncroot'])} webhook events={sum(outcomes.values())} outcomes={dict(outcomes)}\n"
        f"hubspot calls={hs['requests_total']} webhooks={hs['webhooks']}\n"
        f"salesforce calls={sf['requests_total']} webhooks={sf['webhooks']}\n"
        f"seed={SEED} echo loops=0"
    )
