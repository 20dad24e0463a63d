"""Fault scenarios of the outbound path (API → PostgreSQL → Redis → forwarder → CRMs): a killed
worker, Redis and PostgreSQL going away under writes, CRMs answering 500s and 429 storms."""

from __future__ import annotations

import signal
import time
from collections import Counter

import requests

from bench.faults_common import (
    Answers,
    Context,
    Expected,
    Outcome,
    create_contacts,
    load_in_background,
    new_prefix,
)
from bench.faults_state import (
    finish,
    query,
)


def _links_of(ctx: Context, prefix: str) -> Counter:
    rows = query(
        ctx.stack,
        "SELECT l.status, count(*) FROM providers_providerlink l JOIN contacts_contact c ON c.id = l.contact_id"
        " WHERE c.email LIKE %s GROUP BY 1",
        [prefix + "-%"],
    )
    return Counter(dict(rows))


def _wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def kill_forwarder(ctx: Context) -> Outcome:
    """kill -9 the forwarder worker (its whole process group) while batches are in flight to slow
    CRMs, keep writing, start it again: the sweeper re-enqueues what the dead worker held."""
    stack, outcome, prefix = ctx.stack, Outcome("kill_forwarder"), new_prefix("kill")
    answers, expected = Answers(), Expected()
    for crm in (stack.hubspot, stack.salesforce):
        crm.config(latency_ms=250)
    try:
        loader = load_in_background(stack, answers, expected, prefix=prefix, count=ctx.contacts, pause=0.02)
        outcome.check(
            _wait_for(lambda: _links_of(ctx, prefix)["synced"] >= 5, timeout=90), "no link synced before the kill"
        )
        before = _links_of(ctx, prefix)
        stack.kill("forwarder")
        killed_at = time.monotonic()
        time.sleep(2.0)  # the load goes on with no forwarder
        stack.start("forwarder")
        loader.join()
        outcome.details["links_at_kill"] = dict(before)
        outcome.check(before["pending"] + before["failed"] > 0, "nothing was in flight when the worker died")
    finally:
        for crm in (stack.hubspot, stack.salesforce):
            crm.config(latency_ms=0)
    return finish(outcome, stack, expected, answers, since=killed_at, prefix=prefix)


def redis_outage(ctx: Context, *, outage_s: float = 30.0) -> Outcome:
    """The bench's own redis-server is killed for `outage_s` during a stream of writes, then comes
    back EMPTY (every queued task lost). The API answers 2xx (or a 503 JSON body), never a 500."""
    stack, outcome, prefix = ctx.stack, Outcome("redis_outage"), new_prefix("redis")
    answers, expected = Answers(allow_503=True), Expected()
    # The writes are spread over the outage and past it.
    loader = load_in_background(stack, answers, expected, prefix=prefix, count=ctx.contacts, spread_s=outage_s + 10)
    time.sleep(3.0)
    ctx.redis.stop(signal.SIGKILL)
    down_at = time.monotonic()
    accepted_before = len(expected.state)
    readyz = []
    while time.monotonic() - down_at < outage_s:
        try:
            readyz.append(requests.get(f"{stack.api_url}/readyz", timeout=5).status_code)
        except requests.RequestException:
            readyz.append(0)
        time.sleep(2.0)
    ctx.redis.start()
    up_at = time.monotonic()
    accepted_during = len(expected.state) - accepted_before
    loader.join()
    outcome.details.update(
        outage_s=round(up_at - down_at, 1),
        accepted_during_outage=accepted_during,
        readyz_during_outage=dict(Counter(readyz)),
    )
    outcome.check(accepted_during > 0, "no write was accepted while Redis was down")
    return finish(outcome, stack, expected, answers, since=up_at, prefix=prefix)


def postgres_restart(ctx: Context, *, down_s: float = 5.0) -> Outcome:
    """The bench's own PostgreSQL is stopped like a crash (`pg_ctl -m immediate`), kept down for
    `down_s`, and started again (WAL recovery) under a stream of writes. While it is down the API
    answers 503 JSON; nothing it acknowledged before may be missing afterwards."""
    stack, outcome, prefix = ctx.stack, Outcome("postgres_restart"), new_prefix("pg")
    answers, expected = Answers(allow_503=True), Expected()
    if ctx.postgres is None:
        outcome.failures.append(
            "no private PostgreSQL cluster (server binaries missing); the shared one is never stopped"
        )
        return outcome
    loader = load_in_background(stack, answers, expected, prefix=prefix, count=ctx.contacts, spread_s=down_s + 12)
    time.sleep(3.0)
    accepted_before = len(expected.state)
    ctx.postgres.stop("immediate")
    down_at = time.monotonic()
    statuses_before = Counter(answers.statuses)
    probes: Counter = Counter()
    while time.monotonic() - down_at < down_s:
        try:
            probe = requests.get(f"{stack.api_url}/contacts", headers={"Authorization": "Bearer x"}, timeout=5)
            is_json = probe.headers.get("Content-Type", "").startswith("application/json")
            probes[f"{probe.status_code}{'' if is_json else ' not JSON'}"] += 1
        except requests.RequestException:
            probes["no answer"] += 1
        time.sleep(0.5)
    ctx.postgres.start()
    up_at = time.monotonic()
    loader.join()
    during = Counter(answers.statuses) - statuses_before
    outcome.details.update(
        down_s=round(up_at - down_at, 1),
        accepted_before_crash=accepted_before,
        api_statuses_around_the_restart=dict(during),
        probes_while_down=dict(probes),
    )
    outcome.check(during[503] > 0 or probes["503"] > 0, "the API never answered 503 while PostgreSQL was down")
    outcome.check(not any(k != "503" for k in probes), f"while down the API answered {dict(probes)}")
    return finish(outcome, stack, expected, answers, since=up_at, prefix=prefix)


def _attempt_counts(ctx: Context, prefix: str) -> dict:
    rows = query(
        ctx.stack,
        "SELECT a.provider, a.outcome, count(*) FROM providers_syncattempt a JOIN contacts_contact c"
        " ON c.id = a.contact_id WHERE c.email LIKE %s GROUP BY 1, 2",
        [prefix + "-%"],
    )
    counts: dict[str, dict[str, int]] = {}
    for provider, result, n in rows:
        counts.setdefault(provider, {})[result] = n
    return counts


def _dead_letters(ctx: Context, prefix: str) -> int:
    ((n,),) = query(
        ctx.stack,
        "SELECT count(*) FROM providers_deadletter d JOIN contacts_contact c ON c.id = d.contact_id"
        " WHERE c.email LIKE %s",
        [prefix + "-%"],
    )
    return n


def _crms(ctx: Context) -> list[tuple[str, object]]:
    return [("hubspot", ctx.stack.hubspot), ("salesforce", ctx.stack.salesforce)]


def crm_server_errors(ctx: Context) -> Outcome:
    """Both CRMs answer 20 % of calls with a 500 during the load and until convergence."""
    stack, outcome, prefix = ctx.stack, Outcome("crm_500s"), new_prefix("err")
    answers, expected = Answers(), Expected()
    for crm in (stack.hubspot, stack.salesforce):
        crm.config(error_rate=0.2)
    try:
        began = time.monotonic()
        # A trickle, not a burst: small batches, so many calls meet the 20 % (a burst is 4 calls).
        create_contacts(stack, answers, expected, prefix=prefix, count=ctx.contacts, clients=2, pause=0.05)
        result = finish(outcome, stack, expected, answers, since=began, prefix=prefix)
        faults = {name: crm.stats()["faults"]["errors"] for name, crm in _crms(ctx)}
    finally:
        for crm in (stack.hubspot, stack.salesforce):
            crm.config(error_rate=0.0)
    result.details.update(crm_500s_injected=faults, attempts=_attempt_counts(ctx, prefix))
    result.check(sum(faults.values()) > 0, "no 500 was injected")
    result.check(_dead_letters(ctx, prefix) == 0, "a transient failure was parked as a dead letter")
    return result


def crm_rate_limit_storm(ctx: Context) -> Outcome:
    """Both CRMs refuse 30 % of calls as rate-limited (HubSpot 429, Salesforce 503 "server
    unavailable", both with Retry-After: 1) while contacts trickle in (small batches, many calls):
    everything converges, nothing is parked, and no retry comes sooner than Retry-After."""
    stack, outcome, prefix = ctx.stack, Outcome("crm_429_storm"), new_prefix("storm")
    answers, expected = Answers(), Expected()
    for crm in (stack.hubspot, stack.salesforce):
        crm.config(rate_limit_storm=0.3)
    try:
        began = time.monotonic()
        count = max(40, ctx.contacts // 2)
        create_contacts(stack, answers, expected, prefix=prefix, count=count, clients=2, pause=0.1)
        result = finish(outcome, stack, expected, answers, since=began, prefix=prefix)
        storms = {name: crm.stats()["faults"]["storms"] for name, crm in _crms(ctx)}
    finally:
        for crm in (stack.hubspot, stack.salesforce):
            crm.config(rate_limit_storm=0.0)
    # Every refused attempt's next attempt for the same link came at least Retry-After (1 s) later.
    rows = query(
        stack,
        "SELECT a.provider, a.error_code, extract(epoch FROM nxt - a.created_at), a.message, a.batch_size,"
        " a.link_id FROM ("
        " SELECT a.*, (SELECT min(b.created_at) FROM providers_syncattempt b WHERE b.link_id = a.link_id"
        " AND b.created_at > a.created_at) AS nxt FROM providers_syncattempt a JOIN contacts_contact c"
        " ON c.id = a.contact_id WHERE c.email LIKE %s AND a.outcome IN ('rate_limited', 'transient')) a",
        [prefix + "-%"],
    )
    refused = len(rows)
    early_rows = [(p, code, round(float(gap), 3)) for p, code, gap, *_ in rows if gap is not None and gap < 0.95]
    early = len(early_rows)
    if early:  # what each early retry followed, for the report
        links = [row[5] for row in rows if row[2] is not None and row[2] < 0.95][:3]
        result.details["early_retry_histories"] = [
            [(str(at)[11:23], op, out, code, msg[:80], size) for at, op, out, code, msg, size in query(
                stack,
                "SELECT created_at, operation, outcome, error_code, message, batch_size FROM providers_syncattempt"
                " WHERE link_id = %s ORDER BY created_at",
                [link],
            )]
            for link in links
        ]  # fmt: skip
    result.details.update(
        storms_injected=storms,
        refused_attempts=refused,
        retried_before_retry_after=early,
        early_retries=Counter((p, code) for p, code, _ in early_rows).most_common(4),
        early_retry_gaps_s=sorted(gap for _, _, gap in early_rows)[:5],
        attempts=_attempt_counts(ctx, prefix),
    )
    result.check(refused > 0, "no write was refused by the storm")
    result.check(early == 0, f"{early} retries came before Retry-After")
    result.check(_dead_letters(ctx, prefix) == 0, "a rate-limited change was parked as a dead letter")
    return result
