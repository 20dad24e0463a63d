"""Reading SyncRoot's database and both CRMs, the integrity checks, and the wait for convergence
of the fault suite (the definitions of lost, duplicated, extra calls and loops are in
bench/faults_common.py)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import requests

from bench.faults_common import HUBSPOT_PROPS, READ_PATH_MARKS, WRITE_METHODS, Answers, Expected, Outcome, Values
from bench.faults_infra import FAULTS_DIR
from bench.stack import Stack


# --- reading the three systems ---------------------------------------------------------------------
def query(stack: Stack, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
    """Rows of one query on the bench database (retried a while: the suite restarts PostgreSQL)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with contextlib.closing(stack.db()) as connection, connection.cursor() as cursor:
                cursor.execute(sql, list(params))
                return cursor.fetchall()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@dataclass
class Snapshot:
    syncroot: dict[str, list[Values]]  # live contacts by lower-cased email
    hubspot: dict[str, list[Values]]  # live records by email
    salesforce: dict[str, list[Values]]
    versions: dict[str, int]  # contact id → version (live contacts)


def snapshot(stack: Stack) -> Snapshot:
    rows = query(
        stack,
        "SELECT id, email, first_name, last_name, phone, company, job_title, version FROM contacts_contact"
        " WHERE deleted_at IS NULL",
    )
    syncroot: dict[str, list[Values]] = {}
    versions = {}
    for row in rows:
        syncroot.setdefault(row[1].lower(), []).append((row[1].lower(), *row[2:7]))
        versions[str(row[0])] = row[7]
    hubspot: dict[str, list[Values]] = {}
    for record in stack.hubspot.records():
        if record.get("archived"):
            continue
        props = record.get("properties") or {}
        values = tuple(str(props.get(p) or "") for p in HUBSPOT_PROPS)
        values = (values[0].lower(), *values[1:])
        hubspot.setdefault(values[0], []).append(values)
    records = stack.salesforce.records()
    accounts = {r["Id"]: r["Name"] for r in records if r["attributes"]["type"] == "Account"}
    salesforce: dict[str, list[Values]] = {}
    for r in records:
        if r["attributes"]["type"] != "Contact" or r.get("IsDeleted"):
            continue
        last = "" if r.get("LastName") == "[not provided]" else (r.get("LastName") or "")
        values = ((r.get("Email") or "").lower(), r.get("FirstName") or "", last, r.get("Phone") or "",
                  accounts.get(r.get("AccountId"), ""), r.get("Title") or "")  # fmt: skip
        salesforce.setdefault(values[0], []).append(values)
    return Snapshot(syncroot, hubspot, salesforce, versions)


def integrity(expected: Expected, snap: Snapshot, *, prefix: str | None = None) -> dict[str, Any]:
    """lost / duplicated against the expected state; `prefix` marks the scenario's own emails."""
    problems: list[str] = []
    lost_emails: list[str] = []
    for email, want in expected.state.items():
        bad = False
        for system in ("syncroot", "hubspot", "salesforce"):
            have = getattr(snap, system).get(email, [])
            if want is None and have:
                problems.append(f"{system}: {email} still live after its deletion")
                bad = True
            elif want is not None and want not in have:
                problems.append(f"{system}: {email} is {have[:1] or 'missing'}, expected {want}")
                bad = True
        if bad:
            lost_emails.append(email)
    duplicates = []
    for system in ("syncroot", "hubspot", "salesforce"):
        for email, copies in getattr(snap, system).items():
            if len(copies) > 1:
                duplicates.append(f"{system}: {len(copies)} live records for {email}")
            elif prefix and email.startswith(prefix.lower()) and email not in expected.state:
                duplicates.append(f"{system}: {email} exists but nobody created it")
    return {
        "lost": len(lost_emails),
        "lost_emails": lost_emails,
        "duplicated": len(duplicates),
        "problems": problems[:6],
        "duplicates": duplicates[:6],
    }


def crm_writes(stats: dict[str, Any]) -> int:
    """Write calls a sandbox answered (token, search, batch-read and query calls are reads)."""
    total = 0
    for route, statuses in stats["requests"].items():
        method, _, path = route.partition(" ")
        if method in WRITE_METHODS and not any(mark in path for mark in READ_PATH_MARKS):
            total += sum(statuses.values())
    return total


def writes(stack: Stack) -> int:
    return crm_writes(stack.hubspot.stats()) + crm_writes(stack.salesforce.stats())


def link_backlog(stack: Stack) -> tuple[int, int, int]:
    """(links pending or failed, links parked, inbox events still to process)."""
    (row,) = query(
        stack,
        "SELECT count(*) FILTER (WHERE status IN ('pending', 'failed')),"
        " count(*) FILTER (WHERE status = 'parked') FROM providers_providerlink",
    )
    ((inbox,),) = query(stack, "SELECT count(*) FROM webhooks_webhookevent WHERE status = 'received'")
    return row[0], row[1], inbox


def flush_webhooks(stack: Stack, timeout: float = 10.0) -> bool:
    done = True
    for control in (stack.hubspot, stack.salesforce):
        try:
            done = control.flush_webhooks(timeout_s=timeout) and done
        except (requests.RequestException, ValueError):
            done = False
    return done


def wait_idle(stack: Stack, deadline: float) -> bool:
    """Until no link waits to be sent and the inbox is drained (parked links are final)."""
    while time.monotonic() < deadline:
        supervise(stack)
        active, _, inbox = link_backlog(stack)
        if not active and not inbox:
            return True
        time.sleep(0.25)
    return False


@dataclass
class Convergence:
    converged: bool
    seconds: float | None
    extra_crm_calls: int
    loops: int
    backlog: tuple[int, int, int]


def converge(
    stack: Stack, *, since: float, timeout: float = 180.0, quiet: float = 2.0, settle_first: bool = False
) -> Convergence:
    """Wait until SyncRoot has nothing left to send (the needed CRM writes are done), then deliver
    every CRM webhook (echoes of those writes) until the CRMs see no write for `quiet` seconds, and
    watch one more quiet window for loops. `settle_first`: deliver the webhooks already waiting
    (people's edits) before the needed writes are counted."""
    deadline = time.monotonic() + timeout
    if settle_first:
        flush_webhooks(stack)
    if not wait_idle(stack, deadline):
        return Convergence(False, None, 0, 0, link_backlog(stack))
    idle_at, first = time.monotonic(), writes(stack)
    converged_at: float | None = None
    last = first
    while time.monotonic() < deadline:
        flush_webhooks(stack)
        if not wait_idle(stack, deadline):
            break
        at, before = time.monotonic(), writes(stack)
        time.sleep(quiet)
        delivered = flush_webhooks(stack)
        if not wait_idle(stack, deadline):
            break
        last = writes(stack)
        if delivered and last == before:
            converged_at = idle_at if last == first else at
            break
    if converged_at is None:
        return Convergence(False, None, last - first, 0, link_backlog(stack))
    time.sleep(quiet)
    flush_webhooks(stack)
    wait_idle(stack, time.monotonic() + 30)
    loops = writes(stack) - last
    return Convergence(True, converged_at - since, last - first, loops, link_backlog(stack))


def finish(
    outcome: Outcome, stack: Stack, expected: Expected, answers: Answers, *, since: float, prefix: str,
    timeout: float = 180.0, settle_first: bool = False,
) -> Outcome:  # fmt: skip
    """Converge, then fill in lost/duplicated/5xx/extra calls/loops for the scenario."""
    result = converge(stack, since=since, timeout=timeout, settle_first=settle_first)
    outcome.converged = result.converged
    outcome.seconds_to_converge = result.seconds
    outcome.extra_crm_calls = max(0, result.extra_crm_calls)
    outcome.loops = max(0, result.loops)
    if not result.converged:
        outcome.failures.append(f"not converged within {timeout}s; backlog (active, parked, inbox)={result.backlog}")
    _, parked, _ = result.backlog
    outcome.details["parked_links"] = parked
    check = integrity(expected, snapshot(stack), prefix=prefix)
    outcome.lost, outcome.duplicated = check["lost"], check["duplicated"]
    if check["problems"]:
        outcome.details["lost_examples"] = check["problems"]
        outcome.details["diagnostics"] = diagnose(stack, outcome.scenario, check["lost_emails"])
    if check["duplicates"]:
        outcome.details["duplicate_examples"] = check["duplicates"]
    redundant = redundant_sends(stack, prefix)
    outcome.details["redundant_sends"] = redundant
    outcome.extra_crm_calls = max(outcome.extra_crm_calls, redundant)
    outcome.five_xx = answers.five_xx
    outcome.details.update(answers.summary())
    outcome.details["contacts_expected"] = len(expected.state)
    return outcome


def diagnose(stack: Stack, scenario: str, emails: list[str], *, limit: int = 5) -> str:
    """Everything SyncRoot and the CRMs hold about a few lost contacts, written to a file for a bug
    report (the private database is gone after the run). Returns the file's path."""
    report = []
    hubspot, salesforce = stack.hubspot.records(), stack.salesforce.records()
    for email in emails[:limit]:
        contacts = query(
            stack,
            "SELECT id, email, first_name, last_name, phone, company, job_title, version, field_times, deleted_at"
            " FROM contacts_contact WHERE lower(email) = %s",
            [email],
        )
        entry: dict[str, Any] = {"email": email, "contacts": contacts}
        ids = [row[0] for row in contacts]
        entry["links"] = query(
            stack,
            "SELECT provider, external_id, status, synced_version, field_hashes, synced_at, last_error_code"
            " FROM providers_providerlink WHERE contact_id = ANY(%s::uuid[])",
            [[str(i) for i in ids]],
        )
        entry["attempts"] = query(
            stack,
            "SELECT provider, operation, outcome, contact_version, error_code, created_at FROM providers_syncattempt"
            " WHERE contact_id = ANY(%s::uuid[]) ORDER BY created_at",
            [[str(i) for i in ids]],
        )
        external = [row[1] for row in entry["links"] if row[1]]
        entry["inbox"] = [
            row
            for ext in external
            for row in query(
                stack,
                "SELECT provider, event_id, status, outcome, received_at, processed_at, payload FROM"
                " webhooks_webhookevent WHERE payload::text LIKE %s ORDER BY received_at",
                [f"%{ext}%"],
            )
        ]
        entry["hubspot"] = [r for r in hubspot if (r.get("properties") or {}).get("email", "").lower() == email]
        entry["salesforce"] = [r for r in salesforce if (r.get("Email") or "").lower() == email]
        report.append(entry)
    path = FAULTS_DIR / f"diagnostics-{scenario}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    return str(path)


def redundant_sends(stack: Stack, prefix: str) -> int:
    """Successful CRM writes of a contact version that had already been written to that CRM."""
    ((count,),) = query(
        stack,
        "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM providers_syncattempt a"
        " JOIN contacts_contact c ON c.id = a.contact_id WHERE c.email LIKE %s AND a.outcome = 'ok'"
        " GROUP BY a.link_id, a.contact_version) per_version",
        [prefix + "%"],
    )
    return int(count)


def dead_processes(stack: Stack) -> list[str]:
    return [name for name, proc in stack.processes.items() if not proc.alive]


RESTARTED: list[str] = []  # processes the supervisor restarted (and why), read and cleared per scenario


def supervise(stack: Stack) -> None:
    """Restart a process that exited on its own, as the deployments' supervisors do (compose
    `restart: unless-stopped`, Kubernetes), and remember why it died for the report."""
    for name in dead_processes(stack):
        why = next(
            (line[:300] for line in reversed(stack.log_tail(name, 400).splitlines())
             if '"CRITICAL"' in line or "Unrecoverable" in line or "Error" in line[:40]),
            "no reason logged",
        )  # fmt: skip
        RESTARTED.append(f"{name}: {why}")
        stack.start(name)
