"""Worker memory under a long inbound stream: RSS of the webhooks worker (and the forwarder) every 10,000 events.

Run: ``.venv/bin/python -m bench.worker_rss [--events 100000] [--every 10000] [--applies 1]``.

The real stack runs as processes (bench/stack.py) with the webhooks and forwarder workers. First a
few hundred contacts are created through the API and pushed to both CRM sandboxes, so they are
linked to real HubSpot records. Then signed HubSpot deliveries of 100 events each go to
`POST /webhooks/hubspot`, as HubSpot sends them, and the webhooks worker processes them (one task
per delivery). Each delivery holds, by default: 80 echoes of our own writes, 10 changes of a
property SyncRoot does not sync, 9 deletions of records it never linked (all cheap to apply but
each through the whole inbox path) and 1 real change of a linked contact (applied, then forwarded
to Salesforce by the forwarder). The sandboxes send no webhooks of their own, so the stream is
exactly the one sent. Sending stays at most two samples ahead of processing.

Every `--every` processed events the resident memory of each worker is read from
/proc/<pid>/status (VmRSS) for the worker process and its pool children, summed (PSS from
smaps_rollup too: it does not count pages the prefork children share with their parent twice).
Reported: the series, and the growth from the first sample (10k: imports and caches warmed) to
the last. Flat = small growth. Benchmarks do not assert.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.stack import SECRET, Stack, add_settings_option, machine, report

APP_ID = "1234567"  # HUBSPOT_APP_ID of the stack: events from it are our own echoes
SUBSCRIPTION_ID = 424242
EVENTS_PER_DELIVERY = 100
SAMPLED = ("webhooks", "forwarder")


# --- Memory -------------------------------------------------------------------------------------------
def group_memory(pgid: int) -> dict[str, Any]:
    """VmRSS and Pss (kB) of every live process in the group `pgid` (the worker and its pool)."""
    processes = []
    for pid in _group_pids(pgid):
        with contextlib.suppress(OSError, ValueError):  # a pool child may exit between the reads
            rss = _kb(Path(f"/proc/{pid}/status").read_text(), "VmRSS:")
            pss = _kb(Path(f"/proc/{pid}/smaps_rollup").read_text(), "Pss:")
            processes.append({"pid": pid, "main": pid == pgid, "rss_kb": rss, "pss_kb": pss})
    children = [p["rss_kb"] for p in processes if not p["main"]]
    return {
        "rss_kb": sum(p["rss_kb"] for p in processes),
        "pss_kb": sum(p["pss_kb"] for p in processes),
        "main_rss_kb": next((p["rss_kb"] for p in processes if p["main"]), 0),
        "children_rss_kb": sorted(children),
        "processes": len(processes),
    }


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces.
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                if int(fields[2]) == pgid:
                    pids.append(int(entry.name))
    return pids


def _kb(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    raise ValueError(f"{name} not found")


# --- Deliveries -------------------------------------------------------------------------------------
class Deliveries:
    """Signed HubSpot deliveries with the configured mix of events, event ids unique for the run."""

    def __init__(self, *, url: str, linked: list[str], applies: int, ignored: int, unknown_deletions: int) -> None:
        self.url, self.linked = url, linked
        self.mix = {"apply": applies, "ignored": ignored, "unknown_deletion": unknown_deletions}
        self.mix["echo"] = EVENTS_PER_DELIVERY - sum(self.mix.values())
        if self.mix["echo"] < 0:
            raise ValueError("more than 100 events per delivery")
        self._ids = itertools.count(1)
        self._linked = itertools.cycle(linked)

    def next(self) -> tuple[bytes, dict[str, str]]:
        now_ms = int(time.time() * 1000)
        events = []
        for kind, count in self.mix.items():
            for _ in range(count):
                events.append(self._event(kind, next(self._ids), now_ms))
        body = json.dumps(events, separators=(",", ":")).encode()
        timestamp = str(int(time.time() * 1000))
        signed = b"POST" + self.url.encode() + body + timestamp.encode()
        signature = base64.b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()).decode()
        headers = {
            "Content-Type": "application/json",
            "X-HubSpot-Request-Timestamp": timestamp,
            "X-HubSpot-Signature-v3": signature,
        }
        return body, headers

    def _event(self, kind: str, event_id: int, now_ms: int) -> dict[str, Any]:
        event: dict[str, Any] = {
            "eventId": event_id,
            "subscriptionId": SUBSCRIPTION_ID,
            "portalId": 62515,
            "appId": int(APP_ID),
            "occurredAt": now_ms,
            "attemptNumber": 0,
            "changeSource": "CRM_UI",
            "sourceId": "userId:45678",
        }
        if kind == "echo":  # our own write coming back: recognised by its source, nothing applied
            event.update(subscriptionType="contact.propertyChange", objectId=next(self._linked),
                         propertyName="firstname", propertyValue=f"Echo {event_id}",
                         changeSource="INTEGRATION", sourceId=APP_ID)  # fmt: skip
        elif kind == "ignored":  # a property SyncRoot does not sync
            event.update(subscriptionType="contact.propertyChange", objectId=next(self._linked),
                         propertyName="hs_lead_status", propertyValue="OPEN")  # fmt: skip
        elif kind == "unknown_deletion":  # a record SyncRoot never linked
            event.update(subscriptionType="contact.deletion", objectId=900_000_000 + event_id)
        else:  # a real change of a linked contact: applied, then forwarded to Salesforce
            event.update(subscriptionType="contact.propertyChange", objectId=next(self._linked),
                         propertyName="firstname", propertyValue=f"Changed {event_id}")  # fmt: skip
        return event


# --- The run --------------------------------------------------------------------------------------------
def seed(stack: Stack, *, contacts: int, timeout: float) -> list[str]:
    """Create contacts through the API and wait until both CRMs have them; their HubSpot ids."""
    run_id = uuid.uuid4().hex[:8]
    session = stack.new_session(pool=1)
    for index in range(contacts):
        body = {"email": f"rss-{run_id}-{index}@bench.example.com", "first_name": f"First{index}",
                "last_name": f"Last{index}", "company": "Bench Inc"}  # fmt: skip
        answer = session.post(f"{stack.api_url}/contacts", json=body, timeout=30)
        if answer.status_code != 201:
            raise RuntimeError(f"seeding failed: {answer.status_code} {answer.text[:300]}")
    deadline = time.monotonic() + timeout
    while True:
        counts = stack.link_counts()
        synced = [counts.get(p, {}).get("synced", 0) for p in ("hubspot", "salesforce")]
        if min(synced) >= contacts:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"seeding: links not synced within {timeout}s: {counts}")
        time.sleep(0.5)
    with contextlib.closing(stack.db()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT external_id FROM providers_providerlink WHERE provider = 'hubspot' ORDER BY 1")
        return [row[0] for row in cursor.fetchall()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet = {"webhooks_enabled": False}  # the stream is exactly what the bench sends
    stack = Stack(
        gunicorn_workers=args.gunicorn_workers,
        workers=("forwarder", "webhooks"),
        env={"API_THROTTLE_RATE": "1000000/min", **dict(args.set)},
        hubspot_config=quiet,
        salesforce_config=quiet,
    )
    with stack:
        linked = seed(stack, contacts=args.contacts, timeout=args.timeout)
        _say(f"{len(linked)} contacts linked in both CRMs; sending {args.events} events")
        url = f"{stack.api_url}/webhooks/hubspot"
        deliveries = Deliveries(
            url=url, linked=linked, applies=args.applies, ignored=args.ignored, unknown_deletions=args.unknown_deletions
        )
        pgids = {name: stack.pid(name) for name in SAMPLED}
        samples = [{"events": 0, "t_s": 0.0, **{name: group_memory(pgid) for name, pgid in pgids.items() if pgid}}]
        total = args.events // EVENTS_PER_DELIVERY
        sent = [0]  # events acknowledged by the API
        allowed = [min(total, 2 * args.every // EVENTS_PER_DELIVERY)]  # deliveries the sender may send so far
        errors: list[str] = []
        session = stack.new_session(pool=1)

        def sender() -> None:
            try:
                for number in range(total):
                    while number >= allowed[0]:
                        time.sleep(0.05)
                    body, headers = deliveries.next()
                    answer = session.post(url, data=body, headers=headers, timeout=60)
                    if answer.status_code != 200:
                        errors.append(f"delivery {number}: {answer.status_code} {answer.text[:200]}")
                    sent[0] += EVENTS_PER_DELIVERY
            except Exception as exc:  # reported with the result; the sampler stops waiting
                errors.append(f"sender: {exc!r}")

        thread = threading.Thread(target=sender, daemon=True)
        started = time.monotonic()
        thread.start()
        next_mark = args.every
        with contextlib.closing(stack.db()) as connection, connection.cursor() as cursor:
            while next_mark <= total * EVENTS_PER_DELIVERY:
                cursor.execute("SELECT count(*) FROM webhooks_webhookevent WHERE status = 'received'")
                processed = sent[0] - cursor.fetchone()[0]
                if processed >= next_mark:
                    sample = {"events": next_mark, "t_s": round(time.monotonic() - started, 1)}
                    sample.update({name: group_memory(pgid) for name, pgid in pgids.items() if pgid})
                    samples.append(sample)
                    _say(
                        f"{next_mark:>7} events  t {sample['t_s']:>6} s  "
                        + "  ".join(
                            f"{name} {sample[name]['rss_kb'] / 1024:.1f} MiB" for name in pgids if name in sample
                        )
                    )
                    next_mark += args.every
                    allowed[0] = min(total, (next_mark + args.every) // EVENTS_PER_DELIVERY)
                    continue
                if time.monotonic() - started > args.timeout:
                    errors.append(f"timed out at {processed} processed events")
                    break
                if not thread.is_alive() and sent[0] < total * EVENTS_PER_DELIVERY:
                    break  # the sender died (its error is in `errors`)
                time.sleep(0.25)
        elapsed = time.monotonic() - started
        thread.join(timeout=10)
        return result_of(stack, args, samples=samples, elapsed=elapsed, errors=errors, mix=deliveries.mix)


def result_of(
    stack: Stack, args: argparse.Namespace, *, samples: list[dict], elapsed: float, errors: list[str], mix: dict
) -> dict[str, Any]:
    with contextlib.closing(stack.db()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status, outcome, count(*) FROM webhooks_webhookevent GROUP BY 1, 2 ORDER BY 3 DESC")
        outcomes = {f"{status}: {outcome}": count for status, outcome, count in cursor.fetchall()}
    growth = {}
    measured = [s for s in samples if s["events"] > 0]
    for name in SAMPLED:
        series = [s for s in measured if name in s]
        if len(series) >= 2:
            first, last = series[0][name], series[-1][name]
            growth[name] = {
                "from_events": series[0]["events"],
                "to_events": series[-1]["events"],
                "rss_mib": round((last["rss_kb"] - first["rss_kb"]) / 1024, 1),
                "rss_pct": round((last["rss_kb"] - first["rss_kb"]) / first["rss_kb"] * 100, 1),
                "pss_mib": round((last["pss_kb"] - first["pss_kb"]) / 1024, 1),
            }
    webhooks = growth.get("webhooks", {})
    last = measured[-1] if measured else samples[0]
    processed = last["events"]
    return {
        "bench": "worker_rss",
        # The headline figures first (bench.all shows the first numeric ones).
        "webhooks_rss_growth_mib": webhooks.get("rss_mib"),
        "webhooks_rss_growth_pct": webhooks.get("rss_pct"),
        "webhooks_rss_mib_at_end": round(last.get("webhooks", {}).get("rss_kb", 0) / 1024, 1),
        "forwarder_rss_growth_mib": growth.get("forwarder", {}).get("rss_mib"),
        "events_per_s": round(processed / elapsed, 1) if elapsed else None,
        "events": processed,
        "seconds": round(elapsed, 1),
        "growth": growth,
        "series": [
            {"events": s["events"], "t_s": s["t_s"], **{name: _mib(s[name]) for name in SAMPLED if name in s}}
            for s in samples
        ],
        "outcomes": outcomes,
        "errors": errors[:20],
        "links": stack.link_counts(),
        "machine": machine(),
        "config": {
            "events": args.events,
            "every": args.every,
            "events_per_delivery": EVENTS_PER_DELIVERY,
            "mix_per_delivery": mix,
            "seeded_contacts": args.contacts,
            "webhooks_concurrency": "2 (Procfile default, prefork)",
            "gunicorn_workers": args.gunicorn_workers,
        },
    }


def _mib(memory: dict[str, Any]) -> dict[str, Any]:
    return {
        "rss_mib": round(memory["rss_kb"] / 1024, 1),
        "pss_mib": round(memory["pss_kb"] / 1024, 1),
        "main_rss_mib": round(memory["main_rss_kb"] / 1024, 1),
        "children_rss_mib": [round(kb / 1024, 1) for kb in memory["children_rss_kb"]],
    }


def print_table(result: dict[str, Any]) -> None:
    m, c = result["machine"], result["config"]
    print(f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, load {m['load_1m']}")
    print(
        f"{result['events']} events in {c['events'] // c['events_per_delivery']} signed HubSpot deliveries, "
        f"mix per delivery {c['mix_per_delivery']}, {result['events_per_s']} events/s"
    )
    print(
        f"{'events':>8} {'t s':>7}  {'webhooks RSS MiB (main + children)':<40} {'PSS':>7}  "
        f"{'forwarder RSS':>13} {'PSS':>7}"
    )
    for row in result["series"]:
        hook, fwd = row.get("webhooks", {}), row.get("forwarder", {})
        parts = f"{hook.get('rss_mib')} ({hook.get('main_rss_mib')} + {hook.get('children_rss_mib')})"
        print(
            f"{row['events']:>8} {row['t_s']:>7}  {parts:<40} {hook.get('pss_mib')!s:>7}  "
            f"{fwd.get('rss_mib')!s:>13} {fwd.get('pss_mib')!s:>7}"
        )
    for name, grow in result["growth"].items():
        print(
            f"growth {name:<10} {grow['from_events']} -> {grow['to_events']} events: RSS {grow['rss_mib']:+} MiB "
            f"({grow['rss_pct']:+}%), PSS {grow['pss_mib']:+} MiB"
        )
    print(f"outcomes: {result['outcomes']}")
    if result["errors"]:
        print(f"errors: {result['errors']}")


def _say(message: str) -> None:
    print(f"[worker_rss] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="inbound events in all (default 100000)")
    parser.add_argument("--every", type=int, default=10_000, help="sample memory every N events (default 10000)")
    parser.add_argument("--contacts", type=int, default=200, help="contacts linked in both CRMs first")
    parser.add_argument("--applies", type=int, default=1, help="real changes per 100-event delivery")
    parser.add_argument("--ignored", type=int, default=10, help="unsynced-property changes per delivery")
    parser.add_argument("--unknown-deletions", type=int, default=9, help="deletions of unlinked records per delivery")
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    add_settings_option(parser)
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    if args.every % EVENTS_PER_DELIVERY or args.events % args.every:
        parser.error(f"--every must be a multiple of {EVENTS_PER_DELIVERY}, --events a multiple of --every")
    return report(run(args), print_table)


if __name__ == "__main__":
    sys.exit(main())
