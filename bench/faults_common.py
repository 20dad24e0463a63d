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
from collections.abc import Callable
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
    postgres: Any  # bench.faults_infra.PrivatePostgres, None when the shared server is used
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


def load_in_background(
    stack: Stack, answers: Answers, expected: Expected, *, prefix: str, count: int, clients: int = 4,
    spread_s: float | None = None, pause: float = 0.0,
) -> threading.Thread:  # fmt: skip
    """`create_contacts` in a thread, already started (join it to wait for the last write). With
    `spread_s`, each client pauses so the writes last about that long, e.g. across an outage."""
    if spread_s is not None:
        pause = max(0.0, spread_s * clients / count - 0.03)  # 30 ms: about what each write takes
    loader = threading.Thread(
        target=create_contacts,
        args=(stack, answers, expected),
        kwargs={"prefix": prefix, "count": count, "clients": clients, "pause": pause},
    )
    loader.start()
    return loader


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


def new_prefix(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"
