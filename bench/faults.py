"""The fault suite: `make faults` (``.venv/bin/python -m bench.faults``).

Runs the real stack as separate processes (gunicorn API, Celery forwarder/dlq/webhooks workers
and beat, both CRM sandboxes) on a PostgreSQL cluster and a redis-server of its own (the suite
stops and restarts them; the machine's shared servers are never touched), then injects one fault
per scenario under a load of a few hundred contacts:

 1 kill -9 of the forwarder mid-batch        8 duplicated and reordered webhooks, people's edits
 2 Redis down 30 s, back empty                9 echoes of our own writes
 3 crash between commit and enqueue          10 forged, replayed and stale webhooks
 4 PostgreSQL crash and restart              11 oversized, malformed, XXE, mistyped bodies
 5 CRMs answering 20 % 500s                  12 injection strings, unicode, maximum lengths
 6 CRM 429 storms with Retry-After           13 concurrent PUTs with one If-Match
 7 CRM 400s parked, fixed, retried (admin)   14 API abuse: no/bad tokens, throttling
                                              15 CRM credentials revoked, then restored
                                              16 CRMs answering in 3 s: API write latency

Each scenario prints one JSON line {"scenario", "passed", "lost", "duplicated", "5xx",
"extra_crm_calls", "loops", "seconds_to_converge", ...details}; a table ends the run. Pass = 0
lost, 0 duplicated, 0 unexpected 5xx, 0 extra CRM writes, 0 loops, converged, and the scenario's
own checks held (see bench/faults_common.py for the definitions). Exit code 1 if any failed.

    .venv/bin/python -m bench.faults [--contacts 200] [--only 2,redis_outage,...] [--list]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
from collections.abc import Callable

from bench import (
    faults_api,
    faults_bodies,
    faults_crm,
    faults_hostile,
    faults_inbound,
    faults_outbound,
    faults_recovery,
)
from bench.faults_common import Context, Outcome
from bench.faults_infra import FAULTS_DIR, private_servers
from bench.faults_state import RESTARTED, writes
from bench.stack import Stack, add_settings_option, machine

SCENARIOS: list[tuple[str, Callable[[Context], Outcome]]] = [
    ("kill_forwarder", faults_outbound.kill_forwarder),
    ("redis_outage", faults_outbound.redis_outage),
    ("crash_after_commit", faults_recovery.crash_after_commit),
    ("postgres_restart", faults_outbound.postgres_restart),
    ("crm_500s", faults_outbound.crm_server_errors),
    ("crm_429_storm", faults_outbound.crm_rate_limit_storm),
    ("crm_400_parked_then_fixed", faults_recovery.crm_refusals),
    ("webhooks_duplicated_reordered", faults_inbound.edits_with_flaky_webhooks),
    ("echo_of_own_writes", faults_inbound.echoes_of_own_writes),
    ("forged_replayed_stale_webhooks", faults_hostile.forged_webhooks),
    ("oversized_malformed_xxe_bodies", faults_bodies.bad_bodies),
    ("injection_unicode_max_length", faults_hostile.injection_round_trip),
    ("concurrent_if_match", faults_api.concurrent_if_match),
    ("api_abuse", faults_api.api_abuse),
    ("crm_credential_outage", faults_crm.credential_outage),
    ("slow_crm", faults_crm.slow_crm),
]

# Settings of every SyncRoot process of the suite: fast retries and sweeps, so a scenario
# converges in seconds; a per-token throttle low enough for a flood to reach it.
FAULT_ENV = {
    "SYNC_BACKOFF_BASE_SECONDS": "0.2",
    "SYNC_BACKOFF_CAP_SECONDS": "5",
    "OUTBOX_SWEEP_INTERVAL_SECONDS": "2",
    "OUTBOX_SWEEP_AFTER_SECONDS": "3",
    "RECONCILE_INTERVAL_SECONDS": "15",
    "CRM_PROBE_INTERVAL_SECONDS": "3",
    "API_THROTTLE_RATE": faults_api.THROTTLE_RATE,
    "GUNICORN_TIMEOUT": "60",
}


def selected(only: str | None) -> list[tuple[int, str, Callable[[Context], Outcome]]]:
    numbered = [(n, name, run) for n, (name, run) in enumerate(SCENARIOS, start=1)]
    if not only:
        return numbered
    wanted = {item.strip() for item in only.split(",") if item.strip()}
    chosen = [(n, name, run) for n, name, run in numbered if str(n) in wanted or name in wanted]
    unknown = wanted - {str(n) for n, _, _ in chosen} - {name for _, name, _ in chosen}
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))} (see --list)")
    return chosen


def run_one(ctx: Context, number: int, name: str, scenario: Callable[[Context], Outcome]) -> Outcome:
    print(f"[faults] {number:>2} {name} …", file=sys.stderr, flush=True)
    began = time.monotonic()
    writes_before = _writes(ctx)
    log_offset = _log_size()
    try:
        outcome = scenario(ctx)
    except Exception as exc:  # a crashed scenario fails; the others still run
        outcome = Outcome(name, converged=False)
        outcome.failures.append(f"crashed: {exc.__class__.__name__}: {exc}"[:500])
        outcome.details["traceback"] = traceback.format_exc()[-3000:]
        for server in (ctx.redis, ctx.postgres):  # a scenario that died mid-fault leaves them down
            if server is None:
                continue
            try:
                server.start()
            except Exception as again:
                outcome.failures.append(f"could not restart {server.__class__.__name__}: {again}")
        for process in ctx.stack.processes:
            if not ctx.stack.processes[process].alive:
                ctx.stack.start(process)
    outcome.details["number"] = number
    outcome.details["scenario_seconds"] = round(time.monotonic() - began, 1)
    outcome.details["crm_writes"] = _writes(ctx) - writes_before  # all of them, needed or not
    if RESTARTED:  # not a failure in itself (deployments restart them too), but always reported
        outcome.details["processes_restarted"] = list(RESTARTED)
        RESTARTED.clear()
    errors = _server_errors_logged(log_offset)
    if errors:  # e.g. a 500 answered to a CRM's webhook delivery, which no client of ours saw
        outcome.five_xx += len(errors)
        outcome.details["server_errors_logged"] = errors[:5]
    return outcome


WEB_LOG = FAULTS_DIR / "web.log"


def _log_size() -> int:
    return WEB_LOG.stat().st_size if WEB_LOG.exists() else 0


def _server_errors_logged(offset: int) -> list[str]:
    """5xx answers other than 503 (and gunicorn worker timeouts) the API logged since `offset`."""
    if not WEB_LOG.exists():
        return []
    with open(WEB_LOG, "rb") as log:
        log.seek(offset)
        lines = log.read().decode("utf-8", "replace").splitlines()
    found = []
    for line in lines:
        if "WORKER TIMEOUT" in line:
            found.append(line[:200])
        elif line.startswith("{") and '"status_code": 5' in line:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("status_code", 0) >= 500 and entry.get("status_code") != 503:
                    found.append(f"{entry.get('status_code')} {entry.get('message', '')[:150]}")
    return found


def _writes(ctx: Context) -> int:
    try:
        return writes(ctx.stack)
    except Exception:  # a sandbox that died is reported by the scenario
        return 0


def print_table(outcomes: list[Outcome], seconds: float) -> None:
    header = (f"{'#':>2} {'scenario':<31} {'result':<6} {'lost':>4} {'dup':>4} {'5xx':>4} {'extra':>5} "
              f"{'loops':>5} {'converge s':>10} {'run s':>6}  notes")  # fmt: skip
    print(header)
    print("-" * len(header))
    for o in outcomes:
        converge = "-" if o.seconds_to_converge is None else f"{o.seconds_to_converge:.1f}"
        restarted = [entry.split(":", 1)[0] for entry in o.details.get("processes_restarted", [])]
        note = "; ".join(o.failures + ([f"restarted after dying: {', '.join(restarted)}"] if restarted else []))[:90]
        print(f"{o.details['number']:>2} {o.scenario:<31} {'PASS' if o.passed else 'FAIL':<6} {o.lost:>4} "
              f"{o.duplicated:>4} {o.five_xx:>4} {o.extra_crm_calls:>5} {o.loops:>5} {converge:>10} "
              f"{o.details['scenario_seconds']:>6}  {note}")  # fmt: skip
    failed = sum(not o.passed for o in outcomes)
    print(f"{len(outcomes) - failed}/{len(outcomes)} scenarios passed in {seconds / 60:.1f} min")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SyncRoot fault suite against the real stack")
    parser.add_argument("--contacts", type=int, default=200, help="load of each scenario (default 200)")
    parser.add_argument("--only", help="comma-separated scenario numbers or names")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    add_settings_option(parser)
    args = parser.parse_args(argv)
    if args.list:
        for number, name, run in selected(None):
            summary = " ".join((run.__doc__ or "").split()).split(". ")[0]
            print(f"{number:>2} {name}: {summary}")
        return 0
    chosen = selected(args.only)
    began = time.monotonic()
    outcomes: list[Outcome] = []
    with private_servers() as (postgres, redis_server):
        env = {**FAULT_ENV, **dict(args.set)}
        stack = Stack(gunicorn_workers=3, beat=True, env=env, redis_port=redis_server.port, redis_db=0,
                      pg_port=postgres.port if postgres else 5432, log_dir=FAULTS_DIR)  # fmt: skip
        with stack:
            ctx = Context(stack=stack, postgres=postgres, redis=redis_server, contacts=args.contacts)
            for number, name, scenario in chosen:
                outcome = run_one(ctx, number, name, scenario)
                outcomes.append(outcome)
                print(json.dumps(outcome.line(), default=str), flush=True)
    print(json.dumps({"suite": "faults", "machine": machine(), "contacts_per_scenario": args.contacts,
                      "passed": sum(o.passed for o in outcomes), "failed": sum(not o.passed for o in outcomes),
                      "seconds": round(time.monotonic() - began, 1), "env": FAULT_ENV}))  # fmt: skip
    print_table(outcomes, time.monotonic() - began)
    return 0 if outcomes and all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
