"""Inbound scenarios: people edit records in both CRMs while the CRMs duplicate and reorder their
webhooks; the echoes of SyncRoot's own writes come back and must change nothing."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter

from bench.faults_common import (
    FIELDS,
    Answers,
    Context,
    Expected,
    Outcome,
    create_contacts,
    new_prefix,
    patch_contacts,
)
from bench.faults_state import (
    finish,
    query,
    snapshot,
    wait_idle,
)
from bench.stack import Stack

HUBSPOT_NAMES = {"first_name": "firstname", "last_name": "lastname", "phone": "phone", "company": "company",
                 "job_title": "jobtitle"}  # fmt: skip
SALESFORCE_NAMES = {"first_name": "FirstName", "last_name": "LastName", "phone": "Phone", "company": "company",
                    "job_title": "Title"}  # fmt: skip


def external_ids(stack: Stack, prefix: str) -> dict[str, dict[str, str]]:
    """email → {provider: external id} for the scenario's linked contacts."""
    rows = query(
        stack,
        "SELECT lower(c.email), l.provider, l.external_id FROM providers_providerlink l JOIN contacts_contact c"
        " ON c.id = l.contact_id WHERE c.email LIKE %s AND l.external_id IS NOT NULL AND c.deleted_at IS NULL",
        [prefix + "-%"],
    )
    found: dict[str, dict[str, str]] = {}
    for email, provider, external_id in rows:
        found.setdefault(email, {})[provider] = external_id
    return found


def _set(expected: Expected, email: str, field: str, value: str) -> None:
    current = list(expected.state[email] or ())
    current[FIELDS.index(field)] = value
    expected.state[email] = tuple(current)


def edits_with_flaky_webhooks(ctx: Context, *, rounds: int = 3) -> Outcome:
    """People edit synced contacts in both CRMs (each edit twice in a row, 5 ms apart, so both
    webhooks usually share a delivery) and create new ones there, while each CRM duplicates 30 % of
    its webhook deliveries and shuffles the events of each delivery. Latest change at its source
    wins: every system ends with each person's LAST value; no duplicates, no loops."""
    stack, outcome, prefix = ctx.stack, Outcome("webhooks_duplicated_reordered"), new_prefix("edit")
    answers, expected = Answers(), Expected()
    rng = random.Random(8)
    create_contacts(stack, answers, expected, prefix=prefix, count=ctx.contacts // 2, clients=6)
    outcome.check(wait_idle(stack, time.monotonic() + 120), "the contacts to edit never synced")
    ids = external_ids(stack, prefix)
    flaky = {"webhook_duplicate_rate": 0.3, "webhook_reorder": True}
    for crm in (stack.hubspot, stack.salesforce):
        crm.config(**flaky)
    edits: Counter = Counter()
    try:
        for round_no in range(rounds):
            for email in rng.sample(sorted(ids), k=max(1, len(ids) * 2 // 3)):
                crm = rng.choice(("hubspot", "salesforce"))
                field = rng.choice(("first_name", "last_name", "phone", "job_title", "company"))
                for step in ("a", "b"):
                    value = f"{field[:2]}{round_no}{step}-{uuid.uuid4().hex[:6]}"
                    _edit(stack, crm, ids[email][crm], field, value)
                    time.sleep(0.005)
                _set(expected, email, field, value)
                edits[crm] += 2
            for index in range(5):  # people create contacts in each CRM too
                email = f"{prefix}-hs{round_no}{index}@faults.example.com"
                stack.hubspot.edit(None, {"email": email, "firstname": "Hub", "lastname": f"Made {index}",
                                          "jobtitle": "Buyer"})  # fmt: skip
                expected.state[email] = (email, "Hub", f"Made {index}", "", "", "Buyer")
                email = f"{prefix}-sf{round_no}{index}@faults.example.com"
                stack.salesforce.edit(None, {"Email": email, "FirstName": "Sales", "LastName": f"Force {index}",
                                             "company": "Made There"})  # fmt: skip
                expected.state[email] = (email, "Sales", f"Force {index}", "", "Made There", "")
                edits["created"] += 2
            time.sleep(0.3)
        edited_at = time.monotonic()
        result = finish(outcome, stack, expected, answers, since=edited_at, prefix=prefix, settle_first=True)
    finally:
        for crm in (stack.hubspot, stack.salesforce):
            crm.config(webhook_duplicate_rate=0.0, webhook_reorder=False)
    hs, sf = stack.hubspot.stats()["webhooks"], stack.salesforce.stats()["webhooks"]
    result.details.update(
        people_edits=dict(edits),
        webhooks_duplicated={"hubspot": hs.get("duplicated"), "salesforce": sf.get("duplicated")},
        inbox_outcomes=_inbox_outcomes(stack),
    )
    result.check((hs.get("duplicated") or 0) + (sf.get("duplicated") or 0) > 0, "no webhook was duplicated")
    return result


def _edit(stack: Stack, crm: str, external_id: str, field: str, value: str) -> None:
    if crm == "hubspot":
        stack.hubspot.edit(external_id, {HUBSPOT_NAMES[field]: value})
    else:
        stack.salesforce.edit(external_id, {SALESFORCE_NAMES[field]: value})


def _inbox_outcomes(stack: Stack) -> dict[str, int]:
    return {f"{p}:{o or s}": n for p, s, o, n in query(
        stack, "SELECT provider, status, outcome, count(*) FROM webhooks_webhookevent GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )}  # fmt: skip


def echoes_of_own_writes(ctx: Context) -> Outcome:
    """A burst of API creates and updates; once SyncRoot has written them, the CRMs' webhooks for
    those writes come back (HubSpot marks them with our app id, Salesforce with our integration
    user). They must cause no CRM write (none after SyncRoot had nothing left to send, no version
    written twice) and no version bump (each contact ends at the version of the API's last answer)."""
    stack, outcome, prefix = ctx.stack, Outcome("echo_of_own_writes"), new_prefix("echo")
    answers, expected = Answers(), Expected()
    events_before = _count_events(stack)
    began = time.monotonic()
    create_contacts(stack, answers, expected, prefix=prefix, count=ctx.contacts, clients=6)
    patch_contacts(
        stack, answers, expected, ids=dict(list(expected.live().items())[: ctx.contacts // 2]),
        change=lambda i: {"job_title": f"Lead {i}", "company": "Echo Works"},
    )  # fmt: skip
    result = finish(outcome, stack, expected, answers, since=began, prefix=prefix)
    versions = snapshot(stack).versions
    bumped = [cid for cid, version in expected.versions.items() if versions.get(cid) != version]
    result.details.update(version_bumps=len(bumped), echo_events=_count_events(stack) - events_before,
                          inbox_outcomes=_inbox_outcomes(stack))  # fmt: skip
    result.check(not bumped, f"{len(bumped)} contacts are past the version the API answered")
    result.check(result.details["echo_events"] > 0, "no echo came back (webhooks not delivered?)")
    return result


def _count_events(stack: Stack) -> int:
    ((n,),) = query(stack, "SELECT count(*) FROM webhooks_webhookevent")
    return n
