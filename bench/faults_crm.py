"""Fault scenarios of a CRM connection: both CRMs refusing our credentials (a revoked HubSpot token,
a rotated Salesforce client secret) and both CRMs answering every call in 3 s."""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.faults_common import (
    Answers,
    Client,
    Context,
    Expected,
    Outcome,
    create_contacts,
    make_tokens,
    new_prefix,
    patch_contacts,
)
from bench.faults_state import finish, query
from bench.stack import SANDBOX_TOKEN, SECRET, percentile


def _crm_status(ctx: Context) -> dict[str, str]:
    return dict(query(ctx.stack, "SELECT provider, status FROM providers_connection"))


def _link_counts(ctx: Context, prefix: str) -> dict[str, int]:
    rows = query(
        ctx.stack,
        "SELECT l.status, count(*) FROM providers_providerlink l JOIN contacts_contact c ON c.id = l.contact_id"
        " WHERE c.email LIKE %s GROUP BY 1",
        [prefix + "-%"],
    )
    return dict(rows)


def _wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def _revoke(ctx: Context) -> None:
    ctx.stack.hubspot.config(token="revoked-by-faults")  # the private-app token SyncRoot holds: 401
    ctx.stack.salesforce.config(client_secret="rotated-by-faults")  # token requests: 400 invalid_client
    ctx.stack.salesforce.session.post(f"{ctx.stack.salesforce_url}/_sandbox/tokens/expire", timeout=10)


def _restore(ctx: Context) -> None:
    ctx.stack.hubspot.config(token=SANDBOX_TOKEN)
    ctx.stack.salesforce.config(client_secret=SECRET)


def _requests(ctx: Context) -> int:
    return ctx.stack.hubspot.stats()["requests_total"] + ctx.stack.salesforce.stats()["requests_total"]


def credential_outage(ctx: Context) -> Outcome:
    """HubSpot's token revoked and Salesforce's client secret rotated while contacts are written:
    both CRMs pause (nothing parked, no attempt counted, status paused in the API, auth_failed in
    /metrics), and once the credentials work again the beat probe resumes them and everything lands."""
    stack, outcome, prefix = ctx.stack, Outcome("crm_credential_outage"), new_prefix("auth")
    answers, expected = Answers(), Expected()
    began = time.monotonic()
    _revoke(ctx)
    try:
        count = max(20, ctx.contacts // 2)
        create_contacts(stack, answers, expected, prefix=prefix, count=count, clients=4)
        patch_contacts(
            stack, answers, expected, ids=dict(list(expected.live().items())[: count // 4]),
            change=lambda index: {"job_title": f"Changed during the outage {index}"},
        )  # fmt: skip
        outcome.check(
            _wait_for(lambda: set(_crm_status(ctx).values()) == {"auth_failed"} and len(_crm_status(ctx)) == 2, 60),
            f"both CRMs not marked auth_failed: {_crm_status(ctx)}",
        )
        paused_at, calls_before = time.monotonic(), _requests(ctx)
        time.sleep(5.0)  # what a paused CRM costs: probes only, no drain calls
        outcome.details["crm_calls_while_paused_5s"] = _requests(ctx) - calls_before
        links = _link_counts(ctx, prefix)
        outcome.details["links_while_paused"] = links
        outcome.check(not links.get("parked"), "changes were parked during the credential outage")
        ((counted,),) = query(
            stack,
            "SELECT count(*) FROM providers_providerlink l JOIN contacts_contact c ON c.id = l.contact_id"
            " WHERE c.email LIKE %s AND l.attempts > 0",
            [prefix + "-%"],
        )
        outcome.check(counted == 0, f"{counted} links counted attempts against an outage")
        outcome.details.update(_visible_state(ctx, expected, outcome))
    finally:
        _restore(ctx)
    restored_at = time.monotonic()
    result = finish(outcome, stack, expected, answers, since=restored_at, prefix=prefix)
    result.details["seconds_paused"] = round(restored_at - paused_at, 1)
    result.details["seconds_from_first_write"] = round(time.monotonic() - began, 1)
    result.check(_crm_status(ctx) == {"hubspot": "active", "salesforce": "active"}, "a CRM did not resume")
    ((dead,),) = query(
        stack,
        "SELECT count(*) FROM providers_deadletter d JOIN contacts_contact c ON c.id = d.contact_id"
        " WHERE c.email LIKE %s",
        [prefix + "-%"],
    )
    result.details["dead_letters"] = dead
    result.check(dead == 0, f"{dead} dead letters for a credential outage")
    return result


def _visible_state(ctx: Context, expected: Expected, outcome: Outcome) -> dict[str, Any]:
    """What an operator and a client app see during the outage: the API's sync status, /metrics."""
    client = Client(ctx.stack, make_tokens(ctx.stack, 1, name="faults-status")[0], Answers())
    contact_id = next(iter(expected.live().values()))
    sync = client.call("GET", f"/contacts/{contact_id}").json()["sync"]
    shown = {name: (entry["status"], entry.get("reason")) for name, entry in sync.items()}
    outcome.check(
        all(value == ("paused", "auth_failed") for value in shown.values()), f"sync status not paused: {shown}"
    )
    metrics = client.call("GET", "/metrics").text
    lines = [line for line in metrics.splitlines() if line.startswith("syncroot_crm_status{")]
    outcome.check(
        all(f'syncroot_crm_status{{provider="{p}",status="auth_failed"}} 1.0' in lines for p in sync),
        f"/metrics does not show auth_failed: {lines}",
    )
    return {"api_sync_status": shown, "metrics_crm_status": lines}


def slow_crm(ctx: Context, *, latency_ms: float = 3000.0, seconds: float = 20.0) -> Outcome:
    """Both CRMs answer every call in 3 s while client apps keep PATCHing contacts the forwarder
    has in flight: the API's write latency is what it is with fast CRMs (p50/p99 beside a baseline),
    and every change still reaches both CRMs."""
    stack, outcome, prefix = ctx.stack, Outcome("slow_crm"), new_prefix("slow")
    answers, expected = Answers(), Expected()
    count = max(20, ctx.contacts // 5)
    create_contacts(stack, answers, expected, prefix=prefix, count=count, clients=4)
    _wait_for(lambda: _link_counts(ctx, prefix).get("synced", 0) >= 2 * count, 120)
    ids = sorted(expected.live().values())
    baseline = _timed_patches(ctx, answers, expected, ids, label="fast", seconds=seconds / 2)
    for crm in (stack.hubspot, stack.salesforce):
        crm.config(latency_ms=latency_ms)
    claimed: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_claims, args=(ctx, prefix, claimed, stop), daemon=True)
    sampler.start()
    try:
        slow = _timed_patches(ctx, answers, expected, ids, label="slow", seconds=seconds)
    finally:
        stop.set()
        sampler.join(5)
        for crm in (stack.hubspot, stack.salesforce):
            crm.config(latency_ms=0)
    began = time.monotonic()
    result = finish(outcome, stack, expected, answers, since=began, prefix=prefix)
    result.details.update(
        crm_latency_ms=latency_ms,
        patch_ms_baseline=_summary(baseline),
        patch_ms_slow_crm=_summary(slow),
        max_links_in_flight=max(claimed, default=0),
    )
    result.check(max(claimed, default=0) > 0, "no contact was in flight while it was patched")
    slow_p99, fast_p99 = percentile(slow, 99) or 0.0, percentile(baseline, 99) or 0.0
    result.check(slow_p99 < max(500.0, 2 * fast_p99), f"PATCH p99 {slow_p99:.0f} ms with a slow CRM")
    return result


def _timed_patches(
    ctx: Context, answers: Answers, expected: Expected, ids: list[str], *, label: str, seconds: float
) -> list[float]:
    """PATCH the contacts round-robin from two client apps for `seconds`; each answer's ms."""
    tokens, took, lock = make_tokens(ctx.stack, 2, name=f"faults-{label}"), [], threading.Lock()
    deadline = time.monotonic() + seconds

    def run(slot: int) -> None:
        client, round_ = Client(ctx.stack, tokens[slot], answers), 0
        while time.monotonic() < deadline:
            for contact_id in ids[slot::2]:
                started = time.monotonic()
                answer = client.call("PATCH", f"/contacts/{contact_id}", json={"first_name": f"{label}{round_}"})
                elapsed = (time.monotonic() - started) * 1000
                if answer is not None and answer.status_code == 200:
                    expected.accepted(answer.json())
                    with lock:
                        took.append(elapsed)
                time.sleep(0.05)
            round_ += 1

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return took


def _sample_claims(ctx: Context, prefix: str, claimed: list[int], stop: threading.Event) -> None:
    while not stop.wait(0.25):
        ((n,),) = query(
            ctx.stack,
            "SELECT count(*) FROM providers_providerlink l JOIN contacts_contact c ON c.id = l.contact_id"
            " WHERE c.email LIKE %s AND l.claimed_until > now()",
            [prefix + "-%"],
        )
        claimed.append(n)


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50": round(percentile(values, 50) or 0.0, 1),
        "p99": round(percentile(values, 99) or 0.0, 1),
        "max": round(max(values, default=0.0), 1),
    }
