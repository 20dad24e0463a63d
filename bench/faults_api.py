"""API scenarios: concurrent conditional writes (If-Match) and abuse (no token, bad tokens,
a token over its throttle)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.faults_common import (
    Answers,
    Client,
    Context,
    Expected,
    Outcome,
    create_contacts,
    json_error,
    make_tokens,
    new_prefix,
)
from bench.faults_state import (
    finish,
)
from bench.stack import _plain_session

THROTTLE_RATE = "25/second"  # API_THROTTLE_RATE of the fault-suite stack, per token


def concurrent_if_match(ctx: Context, *, rounds: int = 12, writers: int = 12) -> Outcome:
    """`writers` threads PUT the same contact at the same instant, each with the same ETag and its
    own body: exactly one 200, every other one 412; the winner's body is what every system holds."""
    stack, outcome, prefix = ctx.stack, Outcome("concurrent_if_match"), new_prefix("etag")
    answers, expected = Answers(), Expected()
    create_contacts(stack, answers, expected, prefix=prefix, count=rounds, clients=3)
    tokens = make_tokens(stack, writers)
    clients = [Client(stack, token, answers) for token in tokens]
    began = time.monotonic()
    tally: Counter = Counter()
    split: list[str] = []
    for email, contact_id in sorted(expected.live().items()):
        etag = clients[0].call("GET", f"/contacts/{contact_id}").headers["ETag"]
        barrier = threading.Barrier(writers)

        def put(slot: int, contact_id: str = contact_id, email: str = email, etag: str = etag, barrier=barrier):
            body = {"email": email, "first_name": f"Writer {slot}", "last_name": "Race", "company": f"Team {slot}"}
            barrier.wait()
            return clients[slot].call("PUT", f"/contacts/{contact_id}", json=body, headers={"If-Match": etag})

        with ThreadPoolExecutor(writers) as pool:
            results = list(pool.map(put, range(writers)))
        statuses = Counter(r.status_code if r is not None else 0 for r in results)
        tally.update(statuses)
        if statuses[200] != 1 or statuses[412] != writers - 1:
            split.append(f"{email}: {dict(statuses)}")
        for response in results:
            if response is not None and response.status_code == 200:
                expected.accepted(response.json())
            elif response is not None and response.status_code == 412:
                outcome.check(json_error(response), "a 412 without the JSON error shape")
    outcome.details.update(rounds=rounds, writers_per_round=writers, statuses=dict(tally), bad_rounds=split[:5])
    outcome.check(not split, f"{len(split)} rounds did not end with exactly one 200")
    return finish(outcome, stack, expected, answers, since=began, prefix=prefix)


def api_abuse(ctx: Context, *, requests_per_kind: int = 300, threads: int = 8) -> Outcome:
    """Floods with no token, a made-up token, malformed Authorization headers (401 JSON), and one
    valid token far over API_THROTTLE_RATE (429 JSON with Retry-After, while another token is
    still served). Nothing is created by a refused request; nothing answers 5xx."""
    stack, outcome, prefix = ctx.stack, Outcome("api_abuse"), new_prefix("abuse")
    answers, expected = Answers(), Expected()
    good, other = make_tokens(stack, 2)
    kinds = {
        "no token": {},
        "unknown token": {"Authorization": "Bearer sr_" + "A" * 43},
        "malformed header": {"Authorization": "Bearer two words"},
        "basic auth": {"Authorization": "Basic Zm9vOmJhcg=="},
    }
    tally: dict[str, Counter] = {}
    shapes: Counter = Counter()
    lock = threading.Lock()

    def flood(name: str, headers: dict[str, str], total: int) -> None:
        session = _plain_session(threads)
        counts: Counter = Counter()

        def one(index: int) -> None:
            method, path = ("POST", "/contacts") if index % 3 == 0 else ("GET", "/contacts?page_size=1")
            email = f"{prefix}-{name.replace(' ', '-')}-{index}@faults.example.com"
            body = {"email": email, "first_name": "Abuse"} if method == "POST" else None
            try:
                response = session.request(method, stack.api_url + path, json=body, headers=headers, timeout=30)
            except requests.RequestException:
                counts["no answer"] += 1
                return
            answers.record(method, path, response)
            counts[response.status_code] += 1
            if response.status_code == 201:
                expected.accepted(response.json())
            if response.status_code in (401, 429):
                ok = json_error(response) and (response.status_code != 429 or "Retry-After" in response.headers)
                with lock:
                    shapes["ok" if ok else f"bad {response.status_code}"] += 1

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(total)))
        tally[name] = counts

    began = time.monotonic()
    for name, headers in kinds.items():
        flood(name, headers, requests_per_kind)
        outcome.check(set(tally[name]) == {401}, f"{name}: {dict(tally[name])}, wanted only 401")
    flood("over throttle", {"Authorization": f"Bearer {good}"}, requests_per_kind)
    served = Client(stack, other, answers).call("GET", "/contacts?page_size=1")
    throttled = tally["over throttle"]
    outcome.check(throttled[429] > 0, f"a token at {requests_per_kind} requests was never throttled: {dict(throttled)}")
    outcome.check(set(throttled) <= {200, 201, 429}, f"over throttle: {dict(throttled)}")
    outcome.check(served is not None and served.status_code == 200, "another token was refused meanwhile")
    outcome.check(not shapes.keys() - {"ok"}, f"refusals without the JSON shape or Retry-After: {dict(shapes)}")
    outcome.details.update(
        answers={name: dict(counts) for name, counts in tally.items()},
        throttle_rate=THROTTLE_RATE,
        flood_seconds=round(time.monotonic() - began, 1),
        created_by_the_throttled_token=throttled[201],
    )
    # What the throttled token got accepted is synced like anything else; refused requests created
    # nothing (a contact of this scenario nobody was told about counts as a duplicate).
    return finish(outcome, stack, expected, answers, since=began, prefix=prefix)
