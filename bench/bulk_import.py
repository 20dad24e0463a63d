"""A big import from Salesforce: API calls and seconds, with Bulk API 2.0 and (optionally) without.

Run: ``.venv/bin/python -m bench.bulk_import [--contacts 5000] [--full] [--compare-rest] [--read-only]``.
``--full`` is the issue's size, 100,000 contacts (goal: a few dozen calls, not 500).

The Salesforce sandbox is filled with N contacts (one Bulk insert job, before counting starts),
then ``manage.py sync_backfill --from salesforce`` imports them into SyncRoot's database exactly
as an operator runs it. Counted: every API call the sandbox answered during the import (OAuth
included, the sandbox's control plane excluded) and the import's seconds. With
``--compare-rest`` the same import runs once more with ``SALESFORCE_BULK_THRESHOLD=0`` (SOQL pages
of 2,000): the contacts are then held already, so its seconds are the read and the no-op checks,
and its calls are what the REST path costs for the same records. No workers run: what the import
queues for HubSpot stays queued, so only the import is measured. ``--read-only`` times only the
read of every record as the import does it (SyncRoot's Salesforce provider in a process of its
own), applying nothing: the same calls, without the database's share of the seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import time
from typing import Any

import requests

from bench.stack import PYTHON, REPO, Stack, add_settings_option, machine

GOAL_CALLS = 50  # "a few dozen calls"
FULL = 100_000


def api_calls(stats: dict[str, Any]) -> int:
    return sum(sum(statuses.values()) for endpoint, statuses in stats["requests"].items() if "<" not in endpoint)


def seed(url: str, count: int) -> None:
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


READ_ONLY = """
import django, json, time
django.setup()
from crm.registry import get_provider
started = time.monotonic()
count = sum(1 for _ in get_provider("salesforce").changes_since(modstamp=None, last_id=""))
print(json.dumps({"rows": {"syncroot": {"read": count}}, "read_seconds": time.monotonic() - started}))
"""


def read_once(stack: Stack, env: dict[str, str]) -> tuple[int, float, dict[str, Any]]:
    """Only the read of every record, as the import does it (nothing applied)."""
    return _measure(stack, env, ["-c", READ_ONLY])


def import_once(stack: Stack, env: dict[str, str]) -> tuple[int, float, dict[str, Any]]:
    return _measure(stack, env, ["manage.py", "sync_backfill", "--from", "salesforce", "--json", "--no-progress"])


def _measure(stack: Stack, env: dict[str, str], command: list[str]) -> tuple[int, float, dict[str, Any]]:
    before = api_calls(stack.salesforce.stats())
    started = time.monotonic()
    done = subprocess.run(
        [PYTHON, *command], cwd=REPO, env={"DJANGO_SETTINGS_MODULE": "syncroot.settings", **stack.process_env, **env},
        capture_output=True, text=True, timeout=7200,
    )  # fmt: skip
    seconds = time.monotonic() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[:3])} failed:\n{done.stdout}\n{done.stderr}")
    report = json.loads(done.stdout)
    return api_calls(stack.salesforce.stats()) - before, seconds, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=5000, help="contacts in Salesforce (default 5,000)")
    parser.add_argument("--full", action="store_true", help=f"the issue's size: {FULL:,} contacts")
    parser.add_argument("--compare-rest", action="store_true", help="also import through SOQL pages")
    parser.add_argument(
        "--read-only", action="store_true", help="only read every record as the import does (apply nothing)"
    )
    parser.add_argument("--database", default="syncroot_bench", help="bench database (dropped and created)")
    parser.add_argument("--redis-db", type=int, default=14, help="Redis database (flushed)")
    add_settings_option(parser)
    args = parser.parse_args()
    count = FULL if args.full else args.contacts
    quiet_crm = {"webhooks_enabled": False, "outbound_messages": False}
    with Stack(
        gunicorn_workers=1, workers=(), env=dict(args.set), database=args.database, redis_db=args.redis_db,
        salesforce_config=quiet_crm, hubspot_config={"webhooks_enabled": False},
    ) as stack:  # fmt: skip
        seed(stack.salesforce_url, count)
        run = read_once if args.read_only else import_once
        calls, seconds, report = run(stack, {})
        rows = report.get("rows", {}).get("syncroot", {})
        rest_calls = rest_seconds = None
        if args.compare_rest:
            rest_calls, rest_seconds, _ = run(stack, {"SALESFORCE_BULK_THRESHOLD": "0"})
    what = "read (nothing applied)" if args.read_only else "imported"
    done = rows.get("created", rows.get("read", 0))
    print(f"\nbulk_import: {count:,} contacts from Salesforce, {what}")
    print(f"  with Bulk API 2.0   {calls:>6} calls   {seconds:8.1f} s   {done:,} records")
    if rest_calls is not None:
        held = "" if args.read_only else "   (contacts already held)"
        print(f"  SOQL pages (REST)   {rest_calls:>6} calls   {rest_seconds:8.1f} s{held}")
    print(f"  goal: a few dozen calls (≤ {GOAL_CALLS}); SOQL needs ≥ {math.ceil(count / 2000)} pages")
    print(json.dumps({
        "bench": "bulk_import", "mode": "read" if args.read_only else "import", "contacts": count,
        "calls": calls, "seconds": round(seconds, 1),
        "records": done, "failed": rows.get("failed", 0), "rest_calls": rest_calls,
        "rest_seconds": round(rest_seconds, 1) if rest_seconds is not None else None,
        "goal_calls": GOAL_CALLS, "met": calls <= GOAL_CALLS, "machine": machine(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
