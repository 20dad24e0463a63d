"""A big import from each CRM: API calls, seconds against the rate-limit floor, the importer's memory.

Run: ``.venv/bin/python -m bench.bulk_import [--crm salesforce --crm hubspot] [--contacts 5000] [--full]
[--compare-rest] [--read-only]``. ``--full`` is the issue's size, 100,000 contacts from each CRM.

Each CRM's sandbox is filled with N contacts of its own (Salesforce: one Bulk insert job; HubSpot: the
sandbox's seed, 10 ms apart), then ``manage.py sync_backfill --from <crm>`` imports them into SyncRoot's database
exactly as an operator runs it. Counted: every API call the sandbox answered during the import (OAuth
included, the control plane excluded), the import's seconds, and the rate-limit floor of those calls:
calls ÷ the configured rate (Salesforce ``SALESFORCE_RATE_LIMIT``, 25/s; HubSpot 100 per 10 s, and
its search endpoint's own 5/s, a budget of its own: the floor is the longer of the two). Goal: seconds ≤
1.2 × floor. The importing process's RSS is sampled every 0.25 s with the contacts it has written:
start (after its first chunk), end and peak.

With ``--compare-rest`` the Salesforce import runs once more with ``SALESFORCE_BULK_THRESHOLD=0`` (SOQL
pages of 2,000): the contacts are then held already, so its seconds are the read and the no-op checks,
and its calls are what the REST path costs for the same records. No workers run: what the import
queues for the other CRM stays queued, so only the import is measured. ``--read-only`` times only the
read of every record as the import does it (SyncRoot's provider in a process of its own), applying
nothing: the same calls, without the database's share of the seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from limits import parse as parse_rate

from bench.stack import PYTHON, REPO, Stack, add_settings_option, machine

GOAL_RATIO = 1.2  # seconds ÷ the rate-limit floor
GOAL_CALLS = 50  # Salesforce: "a few dozen calls" with Bulk API 2.0
FULL = 100_000
CRMS = ("salesforce", "hubspot")
RATES = {"salesforce": "25/second", "hubspot": "100/10 seconds", "hubspot-search": "5/second"}
SAMPLE_S = 0.25


def api_calls(stats: dict[str, Any], *, search: bool | None = None) -> int:
    """Calls the sandbox answered (control plane excluded); `search`: only search calls, or only others."""
    return sum(
        sum(statuses.values())
        for endpoint, statuses in stats["requests"].items()
        if "<" not in endpoint and (search is None or ("/search" in endpoint) == search)
    )


def per_second(rate: str) -> float:
    item = parse_rate(rate)
    return item.amount / (item.multiples * item.GRANULARITY.seconds)


def floor_seconds(crm: str, calls: dict[str, int]) -> float:
    """The least time the configured rate allows for these calls (separate budgets overlap)."""
    if crm == "hubspot":
        return max(calls["search"] / per_second(RATES["hubspot-search"]), calls["other"] / per_second(RATES["hubspot"]))
    return calls["all"] / per_second(RATES["salesforce"])


def seed_salesforce(url: str, count: int) -> None:
    """N contacts in the org, through one Bulk insert job (as a data loader would)."""
    out = io.StringIO()
    out.write("Email,FirstName,LastName,Title\n")
    for n in range(count):
        out.write(f"bulk{n}@example.com,First{n},Last {n},Engineer\n")
    session = requests.Session()
    session.headers["Authorization"] = "Bearer sandbox-token"
    base = f"{url}/services/data/v59.0/jobs/ingest"
    job = session.post(base, json={"object": "Contact", "operation": "insert"}, timeout=30).json()
    put = session.put(f"{url}/{job['contentUrl']}", data=out.getvalue().encode(), headers={"Content-Type": "text/csv"})
    put.raise_for_status()
    session.patch(f"{base}/{job['id']}", json={"state": "UploadComplete"}, timeout=30).raise_for_status()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        state = session.get(f"{base}/{job['id']}", timeout=30).json()
        if state["state"] in ("JobComplete", "Failed", "Aborted"):
            if state["state"] != "JobComplete" or state["numberRecordsFailed"]:
                raise RuntimeError(f"seeding failed: {state}")
            return
        time.sleep(0.5)
    raise RuntimeError("seeding did not finish in 10 minutes")


def seed_hubspot(url: str, count: int) -> None:
    """N contacts in the portal (other people than Salesforce's), created by the sandbox directly
    10 ms apart, as a portal filled over time is (records sharing one millisecond cost the read a
    call more for each such group, see `HubSpotClient.iter_modified_since`)."""
    body = {"count": count, "prefix": "hs", "spacing_ms": 10}
    requests.post(f"{url}/_sandbox/seed", json=body, timeout=600).raise_for_status()


READ_ONLY = """
import django, json, sys, time
django.setup()
from crm.registry import get_provider
started = time.monotonic()
count = sum(1 for _ in get_provider(sys.argv[1]).changes_since(modstamp=None, last_id=""))
print(json.dumps({"rows": {"syncroot": {"read": count}}, "read_seconds": time.monotonic() - started}))
"""


@dataclass
class Memory:
    """The importing process's RSS (MiB) over time, beside the contacts it had written."""

    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (seconds, rss, contacts)

    def summary(self) -> dict[str, Any]:
        written = [s for s in self.samples if s[2] > self.samples[0][2]] if self.samples else []
        written = written or self.samples  # a read that writes nothing: the whole run
        if not written:
            return {"start_mib": None, "end_mib": None, "peak_mib": None, "samples": len(self.samples)}
        rss = [s[1] for s in written]
        return {"start_mib": round(rss[0], 1), "end_mib": round(rss[-1], 1), "peak_mib": round(max(rss), 1),
                "growth_mib": round(rss[-1] - rss[0], 1), "samples": len(self.samples)}  # fmt: skip


def _rss_mib(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def _sample(stack: Stack, process: subprocess.Popen, memory: Memory, stop: threading.Event) -> None:
    started = time.monotonic()
    with contextlib.closing(stack.db()) as connection, connection.cursor() as cursor:
        while not stop.is_set():
            rss = _rss_mib(process.pid)
            if rss is None:
                return
            cursor.execute("SELECT count(*) FROM contacts_contact")
            memory.samples.append((time.monotonic() - started, rss, cursor.fetchone()[0]))
            stop.wait(SAMPLE_S)


def run_once(stack: Stack, crm: str, env: dict[str, str], *, read_only: bool) -> dict[str, Any]:
    """Import (or only read) every record of `crm`; calls, seconds and memory."""
    if read_only:
        command = ["-c", READ_ONLY, crm]
    else:
        command = ["manage.py", "sync_backfill", "--from", crm, "--json", "--no-progress"]
    control = getattr(stack, crm)
    before = control.stats()
    memory, stop = Memory(), threading.Event()
    started = time.monotonic()
    process = subprocess.Popen(
        [PYTHON, *command], cwd=REPO, env={"DJANGO_SETTINGS_MODULE": "syncroot.settings", **stack.process_env, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    sampler = threading.Thread(target=_sample, args=(stack, process, memory, stop), daemon=True)
    sampler.start()
    out, err = process.communicate(timeout=7200)
    seconds = time.monotonic() - started
    stop.set()
    sampler.join(timeout=10)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command[:3])} failed:\n{out}\n{err}")
    after = control.stats()
    calls = {
        "all": api_calls(after) - api_calls(before),
        "search": api_calls(after, search=True) - api_calls(before, search=True),
        "other": api_calls(after, search=False) - api_calls(before, search=False),
    }
    floor = floor_seconds(crm, calls)
    rows = json.loads(out).get("rows", {}).get("syncroot", {})
    return {
        "crm": crm, "calls": calls["all"], "search_calls": calls["search"], "seconds": round(seconds, 1),
        "floor_s": round(floor, 2), "ratio": round(seconds / floor, 2) if floor else None,
        "records": rows.get("created", rows.get("read", 0)), "failed": rows.get("failed", 0),
        "memory": memory.summary(), "rate_limited": after["rate_limited"] - before["rate_limited"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crm", action="append", choices=CRMS, help="import from this CRM (default both)")
    parser.add_argument("--contacts", type=int, default=5000, help="contacts in each CRM (default 5,000)")
    parser.add_argument("--full", action="store_true", help=f"the issue's size: {FULL:,} contacts")
    parser.add_argument("--compare-rest", action="store_true", help="Salesforce: also import through SOQL pages")
    parser.add_argument(
        "--read-only", action="store_true", help="only read every record as the import does (apply nothing)"
    )
    parser.add_argument("--database", default="syncroot_bench", help="bench database (dropped and created)")
    parser.add_argument("--redis-db", type=int, default=14, help="Redis database (flushed)")
    add_settings_option(parser)
    args = parser.parse_args()
    count = FULL if args.full else args.contacts
    crms = args.crm or list(CRMS)
    quiet_crm = {"webhooks_enabled": False, "outbound_messages": False}
    results, rest = [], None
    with Stack(
        gunicorn_workers=1, workers=(), env=dict(args.set), database=args.database, redis_db=args.redis_db,
        salesforce_config=quiet_crm, hubspot_config={"webhooks_enabled": False},
    ) as stack:  # fmt: skip
        for crm in crms:
            (seed_salesforce if crm == "salesforce" else seed_hubspot)(getattr(stack, f"{crm}_url"), count)
            results.append(run_once(stack, crm, {}, read_only=args.read_only) | {"load_1m": machine()["load_1m"]})
        if args.compare_rest and "salesforce" in crms:
            rest = run_once(stack, "salesforce", {"SALESFORCE_BULK_THRESHOLD": "0"}, read_only=args.read_only)
    what = "read (nothing applied)" if args.read_only else "imported"
    print(f"\nbulk_import: {count:,} contacts from each CRM, {what}")
    header = f"{'crm':<11} {'calls':>6} {'floor s':>8} {'seconds':>8} {'ratio':>6}  {'records':>8}"
    print(f"  {header}  RSS MiB start/end/peak")
    for row in results:
        mem = row["memory"]
        print(f"  {row['crm']:<11} {row['calls']:>6} {row['floor_s']:>8.2f} {row['seconds']:>8.1f} {row['ratio']:>6}  "
              f"{row['records']:>8,}  {mem['start_mib']}/{mem['end_mib']}/{mem['peak_mib']}")  # fmt: skip
    if rest is not None:
        held = "" if args.read_only else "   (contacts already held)"
        print(f"  Salesforce through SOQL pages (REST): {rest['calls']} calls, {rest['seconds']:.1f} s{held}")
    print(f"  goal: seconds ≤ {GOAL_RATIO} × floor (calls ÷ configured rate); Salesforce ≤ {GOAL_CALLS} calls "
          f"(SOQL needs ≥ {math.ceil(count / 2000)} pages)")  # fmt: skip
    for row in results:
        print(json.dumps({
            "bench": "bulk_import", "mode": "read" if args.read_only else "import", "contacts": count, **row,
            "goal_ratio": GOAL_RATIO, "met": row["ratio"] is not None and row["ratio"] <= GOAL_RATIO,
            "rest": rest if row["crm"] == "salesforce" else None, "machine": machine(),
        }))  # fmt: skip
    summary = {row["crm"]: {k: row[k] for k in ("calls", "floor_s", "seconds", "ratio", "memory")} for row in results}
    print(json.dumps({"bench": "bulk_import", "summary": summary, "goal_ratio": GOAL_RATIO, "machine": machine()}))


if __name__ == "__main__":
    main()
