"""CRM calls per change when changes come fast, on a busy machine: a burst of single POSTs and a
burst of PATCHes of one contact.

Run: ``.venv/bin/python -m bench.write_coalescing [--burst 500] [--patches 50] [--patch-seconds 2]
[--cpu-hog 2]``.

The whole stack runs (gunicorn, forwarder, dlq, webhooks, both sandboxes; HubSpot limited to
100 requests / 10 s) with `--cpu-hog` busy-loop processes beside it the whole time, as a machine
busy with other work (0 for a quiet run). Two figures:

- burst: `--burst` contacts posted one by one through `POST /contacts` by 8 clients; HubSpot and
  Salesforce calls per contact until all are synced in both (goal: <= 0.03 HubSpot calls/contact);
- patches: one synced contact gets `--patches` PATCHes evenly over `--patch-seconds`; the CRM
  writes each CRM received until both hold the last value (goal: <= 5 writes per CRM, final value
  correct). Reads (HubSpot search/batch read, Salesforce queries) are counted apart.
Benchmarks do not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any

from bench.stack import Stack, add_settings_option, cpu_hog, machine
from bench.sync_throughput import HUBSPOT_LIMIT, crm_counts, write_contacts

GOAL_BURST_HUBSPOT_PER_CONTACT = 0.03
GOAL_PATCH_WRITES_PER_CRM = 5
READ_MARKERS = ("search", "batch/read", "/query", "oauth", "GET ")


def calls(stats: dict[str, Any]) -> tuple[int, int]:
    """(writes, reads) a sandbox received so far, by its per-endpoint counts."""
    writes = reads = 0
    for endpoint, by_status in stats["requests"].items():
        count = sum(by_status.values())
        if any(marker in endpoint for marker in READ_MARKERS):
            reads += count
        else:
            writes += count
    return writes, reads


def wait_until(predicate, *, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def all_synced(stack: Stack, count: int) -> bool:
    links = stack.link_counts()
    return all(links.get(crm, {}).get("synced", 0) >= count for crm in ("hubspot", "salesforce"))


def burst(stack: Stack, *, contacts: int, timeout: float) -> dict[str, Any]:
    before = {crm: getattr(stack, crm).stats()["requests_total"] for crm in ("hubspot", "salesforce")}
    began = time.perf_counter()
    load = write_contacts(stack, run=uuid.uuid4().hex[:8], count=contacts, clients=8, batch=1)
    done = wait_until(
        lambda: sum(load["written"]) >= contacts and crm_counts(stack) >= (contacts, contacts)
        and all_synced(stack, contacts),
        timeout=timeout, every=0.25,
    )  # fmt: skip
    for thread in load["threads"]:
        thread.join(timeout=5)
    created = sum(load["statuses"][slot].get(201, 0) for slot in range(len(load["statuses"])))
    used = {crm: getattr(stack, crm).stats()["requests_total"] - before[crm] for crm in before}
    return {
        "contacts": contacts,
        "created": created,
        "synced_in_s": round(time.perf_counter() - began, 2) if done else None,
        "hubspot_calls": used["hubspot"],
        "salesforce_calls": used["salesforce"],
        "hubspot_calls_per_contact": round(used["hubspot"] / created, 4) if created else None,
        "salesforce_calls_per_contact": round(used["salesforce"] / created, 4) if created else None,
        "goal_hubspot_calls_per_contact": GOAL_BURST_HUBSPOT_PER_CONTACT,
    }


def crm_value(stack: Stack, crm: str, email: str) -> str | None:
    for record in getattr(stack, crm).records():
        fields = record.get("properties") or record
        if str(fields.get("email") or fields.get("Email") or "").lower() == email:
            return fields.get("jobtitle") if crm == "hubspot" else fields.get("Title")
    return None


def patches(stack: Stack, *, count: int, seconds: float, timeout: float) -> dict[str, Any]:
    email = f"patched-{uuid.uuid4().hex[:8]}@bench.example.com"
    created = stack.session.post(f"{stack.api_url}/contacts", json={"email": email, "job_title": "Start"}, timeout=30)
    contact_id = created.json()["id"]
    synced_before = stack.link_counts()
    base = {crm: sum(synced_before.get(crm, {}).values()) for crm in ("hubspot", "salesforce")}
    wait_until(lambda: all(crm_value(stack, crm, email) == "Start" for crm in ("hubspot", "salesforce")),
               timeout=timeout)  # fmt: skip
    wait_until(lambda: all_synced(stack, base["hubspot"]), timeout=timeout)
    before = {crm: calls(getattr(stack, crm).stats()) for crm in ("hubspot", "salesforce")}
    final = f"Edit {count - 1}"
    began = time.perf_counter()
    statuses: dict[int, int] = {}
    for n in range(count):
        target = began + n * seconds / max(count - 1, 1)
        if (delay := target - time.perf_counter()) > 0:
            time.sleep(delay)
        response = stack.session.patch(f"{stack.api_url}/contacts/{contact_id}", json={"job_title": f"Edit {n}"},
                                       timeout=30)  # fmt: skip
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    sent_in = time.perf_counter() - began
    converged = wait_until(
        lambda: all(crm_value(stack, crm, email) == final for crm in ("hubspot", "salesforce")), timeout=timeout
    )
    converged_after = round(time.perf_counter() - began - sent_in, 2) if converged else None
    time.sleep(1.0)  # nothing more should follow the last write; give a straggler the chance to show
    after = {crm: calls(getattr(stack, crm).stats()) for crm in ("hubspot", "salesforce")}
    return {
        "patches": count,
        "statuses": statuses,
        "sent_in_s": round(sent_in, 2),
        "final_value_in_both": converged and all(crm_value(stack, crm, email) == final for crm in after),
        "converged_after_last_patch_s": converged_after,
        "writes": {crm: after[crm][0] - before[crm][0] for crm in after},
        "reads": {crm: after[crm][1] - before[crm][1] for crm in after},
        "goal_writes_per_crm": GOAL_PATCH_WRITES_PER_CRM,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {"API_THROTTLE_RATE": "1000000/min", **dict(args.set)}
    stack = Stack(gunicorn_workers=3, env=env, hubspot_config=dict(HUBSPOT_LIMIT))
    with stack, cpu_hog(args.cpu_hog):
        loads = [round(os.getloadavg()[0], 2)]
        burst_result = burst(stack, contacts=args.burst, timeout=args.timeout)
        loads.append(round(os.getloadavg()[0], 2))
        patch_result = patches(stack, count=args.patches, seconds=args.patch_seconds, timeout=args.timeout)
        loads.append(round(os.getloadavg()[0], 2))
    return {
        "bench": "write_coalescing",
        "machine": machine(),
        "config": {"cpu_hog_processes": args.cpu_hog, "env": env},
        "load_1m": loads,
        "burst": burst_result,
        "patches": patch_result,
        "met": {
            "burst": (burst_result["hubspot_calls_per_contact"] or 1) <= GOAL_BURST_HUBSPOT_PER_CONTACT,
            "patches": bool(patch_result["final_value_in_both"])
            and max(patch_result["writes"].values()) <= GOAL_PATCH_WRITES_PER_CRM,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=500, help="contacts posted one by one")
    parser.add_argument("--patches", type=int, default=50)
    parser.add_argument("--patch-seconds", type=float, default=2.0)
    parser.add_argument("--cpu-hog", type=int, default=2, help="busy-loop processes beside the stack (0: quiet)")
    parser.add_argument("--timeout", type=float, default=120.0)
    add_settings_option(parser)
    args = parser.parse_args(argv)
    result = run(args)
    b, p = result["burst"], result["patches"]
    print(f"load {result['load_1m']} with {args.cpu_hog} hog processes")
    print(f"burst   {b['created']} single POSTs: HubSpot {b['hubspot_calls_per_contact']} calls/contact "
          f"(goal <= {GOAL_BURST_HUBSPOT_PER_CONTACT}), Salesforce {b['salesforce_calls_per_contact']}, "
          f"synced in {b['synced_in_s']} s")  # fmt: skip
    print(f"patches {p['patches']} in {p['sent_in_s']} s: writes {p['writes']} (goal <= {GOAL_PATCH_WRITES_PER_CRM} "
          f"each), reads {p['reads']}, final value in both: {p['final_value_in_both']} "
          f"({p['converged_after_last_patch_s']} s after the last PATCH)")  # fmt: skip
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
