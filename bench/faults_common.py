"""What every fault scenario shares: API clients that count answers, the expected state, reading
SyncRoot's database and both CRMs, integrity checks and the wait for convergence.

Definitions (the suite's contract, printed with each result):

* lost: a contact the API accepted (2xx) that is missing or different after convergence in
  SyncRoot's database or in a CRM, or a CRM-side edit missing in SyncRoot;
* duplicated: two live CRM records with one email, two live SyncRoot contacts with one email,
  or a record/contact of the scenario that nobody created (a second copy under another identity);
* 5xx: server errors from SyncRoot that the scenario does not allow (a 503 JSON body is allowed
  only where the scenario takes a dependency away; a 500 never is);
* extra_crm_calls: CRM writes made after SyncRoot had nothing left to send (every link synced,
  the inbox drained), while the CRMs' own webhooks (echoes of our writes) were being delivered;
* loops: CRM writes in a further quiet window after convergence.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from bench.stack import Stack, _plain_session

FIELDS = ("email", "first_name", "last_name", "phone", "company", "job_title")
HUBSPOT_PROPS = ("email", "firstname", "lastname", "phone", "company", "jobtitle")
WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")
READ_PATH_MARKS = ("oauth", "/search", "/batch/read", "/query", "/Soap/")
Values = tuple[str, ...]  # FIELDS order, email lower-cased


@dataclass
class Context:
    """What a scenario gets: the running stack and the private servers under it."""

    stack: Stack
    postgres: Any  # bench.faults_infra.PrivatePostgres
    redis: Any  # bench.faults_infra.PrivateRedis
    contacts: int  # the load of each scenario


# --- results ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    scenario: str
    lost: int = 0
    duplicated: int = 0
    five_xx: int = 0
    extra_crm_calls: int = 0
    loops: int = 0
    seconds_to_converge: float | None = None
    converged: bool = True
    failures: list[str] = field(default_factory=list)  # scenario-specific checks that failed
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (
            self.converged
            and not (self.lost or self.duplicated or self.five_xx or self.loops or self.extra_crm_calls)
            and not self.failures
        )

    def line(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "passed": self.passed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "5xx": self.five_xx,
            "extra_crm_calls": self.extra_crm_calls,
            "loops": self.loops,
            "seconds_to_converge": None if self.seconds_to_converge is None else round(self.seconds_to_converge, 2),
            "converged": self.converged,
            "failures": self.failures,
            **self.details,
        }

    def check(self, condition: bool, message: str) -> bool:
        if not condition:
            self.failures.append(message)
        return condition


# --- the API, as a client app sees it --------------------------------------------------------------
@dataclass
class Answers:
    """Every status the API answered in a scenario, and the ones it should never have."""

    allow_503: bool = False
    statuses: Counter = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    transport_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, path: str, response: requests.Response) -> None:
        bad = response.status_code >= 500 and not (
            response.status_code == 503 and self.allow_503 and _json_error(response, "service_unavailable")
        )
        with self.lock:
            self.statuses[response.status_code] += 1
            if bad:
                self.unexpected.append(f"{method} {path} -> {response.status_code} {response.text[:160]!r}")

    @property
    def five_xx(self) -> int:
        return len(self.unexpected)

    def summary(self) -> dict[str, Any]:
        return {
            "api_statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "api_transport_errors": self.transport_errors,
            "unexpected_5xx": self.unexpected[:5],
        }


def _json_error(response: requests.Response, code: str | None = None) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "code" in body and "message" in body and (code is None or body["code"] == code)


def json_error(response: requests.Response) -> bool:
    """The API's error shape: a JSON object with code and message."""
    return _json_error(response)


def make_tokens(stack: Stack, count: int, *, name: str = "faults") -> list[str]:
    """API tokens straight into the database (the row `create_api_token` writes), one per client."""
    raws = ["sr_" + secrets.token_urlsafe(32) for _ in range(count)]
    with contextlib.closing(stack.db()) as connection, connection.cursor() as cursor:
        for raw in raws:
            cursor.execute(
                "INSERT INTO contacts_apitoken (name, prefix, key_hash, is_active, created_at)"
                " VALUES (%s, %s, %s, true, now())",
                [name, raw[:10], hashlib.sha256(raw.encode()).hexdigest()],
            )
    return raws


class Client:
    """One client app: its own token and connection pool; retries what a good client retries."""

    def __init__(self, stack: Stack, token: str, answers: Answers) -> None:
        self.url, self.answers = stack.api_url, answers
        self.session = _plain_session(4)
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, *, retry_for: float = 0.0, **kwargs: Any) -> requests.Response | None:
        """One request; with `retry_for` > 0, 429/503/transport errors are retried that long
        (Retry-After honoured). None when no answer ever came."""
        deadline = time.monotonic() + retry_for
        kwargs.setdefault("timeout", 30)
        while True:
            try:
                response = self.session.request(method, self.url + path, **kwargs)
            except requests.RequestException:
                with self.answers.lock:
                    self.answers.transport_errors += 1
                response = None
            if response is not None:
                self.answers.record(method, path, response)
                if response.status_code not in (429, 503):
                    return response
            if time.monotonic() >= deadline:
                return response
            wait = 0.5
            if response is not None:
                with contextlib.suppress(ValueError):
                    wait = min(5.0, max(0.2, float(response.headers.get("Retry-After", "0.5"))))
            time.sleep(wait)


def contact_body(email: str, index: int) -> dict[str, str]:
    return {
        "email": email,
        "first_name": f"F{index}",
        "last_name": f"L{index}",
        "phone": f"+1 555 {index:04d}",
        "company": f"Company {index % 7}",
        "job_title": "Engineer" if index % 2 else "",
    }


class Expected:
    """What each contact must look like everywhere once converged (None: deleted)."""

    def __init__(self) -> None:
        self.state: dict[str, Values | None] = {}
        self.ids: dict[str, str] = {}
        self.versions: dict[str, int] = {}  # contact id → the version of the API's last answer
        self.lock = threading.Lock()

    def accepted(self, body: dict[str, Any]) -> None:
        """A 2xx answer from the API: its body is the contact as stored."""
        with self.lock:
            email = body["email"].lower()
            self.ids[email] = body["id"]
            self.state[email] = values_of(body)
            if "version" in body:
                self.versions[body["id"]] = max(int(body["version"]), self.versions.get(body["id"], 0))

    def deleted(self, email: str) -> None:
        with self.lock:
            self.state[email.lower()] = None

    def live(self) -> dict[str, str]:
        """email → contact id of every contact that must exist."""
        return {e: self.ids[e] for e, v in self.state.items() if v is not None and e in self.ids}


def values_of(body: dict[str, Any]) -> Values:
    return tuple(str(body.get(f) or "").lower() if f == "email" else str(body.get(f) or "") for f in FIELDS)


def create_contacts(
    stack: Stack, answers: Answers, expected: Expected, *, prefix: str, count: int, clients: int = 6,
    retry_for: float = 120.0, body: Callable[[str, int], dict[str, str]] = contact_body, pause: float = 0.0,
) -> int:  # fmt: skip
    """POST `count` contacts from `clients` concurrent client apps (each its own token), each with an
    Idempotency-Key so retries of a 503 cannot create twice. Returns how many were accepted."""
    tokens = make_tokens(stack, clients)
    accepted = Counter()

    def run(slot: int) -> None:
        client = Client(stack, tokens[slot], answers)
        for index in range(slot, count, clients):
            payload = body(f"{prefix}-{index}@faults.example.com", index)
            headers = {"Idempotency-Key": f"{prefix}-{index}"}
            answer = client.call("POST", "/contacts", json=payload, headers=headers, retry_for=retry_for)
            if answer is not None and answer.status_code == 201:
                expected.accepted(answer.json())
                accepted[slot] += 1
            if pause:
                time.sleep(pause)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    return sum(accepted.values())


def patch_contacts(
    stack: Stack, answers: Answers, expected: Expected, *, ids: dict[str, str], change: Callable[[int], dict],
    clients: int = 4, retry_for: float = 120.0,
) -> int:  # fmt: skip
    """PATCH each contact with change(index) (retried like creates: the same PATCH twice is a no-op)."""
    tokens = make_tokens(stack, clients)
    items = sorted(ids.items())
    done = Counter()

    def run(slot: int) -> None:
        client = Client(stack, tokens[slot], answers)
        for index in range(slot, len(items), clients):
            _, contact_id = items[index]
            answer = client.call("PATCH", f"/contacts/{contact_id}", json=change(index), retry_for=retry_for)
            if answer is not None and answer.status_code == 200:
                expected.accepted(answer.json())
                done[slot] += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, range(clients)))
    return sum(done.values())


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
    lost = 0
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
        lost += bad
    duplicates = []
    for system in ("syncroot", "hubspot", "salesforce"):
        for email, copies in getattr(snap, system).items():
            if len(copies) > 1:
                duplicates.append(f"{system}: {len(copies)} live records for {email}")
            elif prefix and email.startswith(prefix.lower()) and email not in expected.state:
                duplicates.append(f"{system}: {email} exists but nobody created it")
    return {
        "lost": lost,
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
    if check["duplicates"]:
        outcome.details["duplicate_examples"] = check["duplicates"]
    redundant = redundant_sends(stack, prefix)
    outcome.details["redundant_sends"] = redundant
    outcome.extra_crm_calls = max(outcome.extra_crm_calls, redundant)
    outcome.five_xx = answers.five_xx
    outcome.details.update(answers.summary())
    outcome.details["contacts_expected"] = len(expected.state)
    return outcome


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


def new_prefix(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def dead_processes(stack: Stack) -> list[str]:
    return [name for name, proc in stack.processes.items() if not proc.alive]
