"""API budgets: a new HubSpot portal backfilled with N contacts while a person edits contacts live.

Run: ``.venv/bin/python -m bench.budget [--contacts 10000] [--edits 100] [--edit-rate 2]``;
``--contacts 1000`` is a quick run.

The stack runs as `make run` runs it (API, forwarder, dlq and webhooks workers, beat with the outbox
sweeper and the reconcilers, both sandboxes) plus a second HubSpot portal (a sandbox of its own,
portal 62516, as `make run`'s hubspot2), with every sandbox's own limits ON as HubSpot has them:
100 calls per 10 s per portal (and 5 searches a second), so a call over the budget is a real 429.

N contacts are loaded straight into SyncRoot's database (one ``INSERT … SELECT generate_series``,
as bench.scale loads), linked to no CRM, so nothing is sent before the measure starts. Then the
portal is connected with ``POST /connections`` (a private-app token): a new connection gets every
live contact, so SyncRoot backfills all N to it through the forwarder, matched by email or created
(providers/backfill.py). While that runs, a person edits contacts through the API: ``PATCH
/contacts/{id}`` of a random contact already created in the new portal, ``--edit-rate`` a second,
a new first name each time, until the backfill is done and at least ``--edits`` were made.

Measured:

- contacts backfilled (links to the new portal holding a HubSpot id) and the seconds from the
  connection's request until all N were;
- the CRM calls the new portal answered from the connection to the end, and the 429s it sent, as
  counted by the sandbox itself (``/_sandbox/stats``, the control plane is not counted); SyncRoot's
  own counters (``/metrics``: ``syncroot_crm_requests_total`` and ``syncroot_crm_rate_limited_total``
  for the connection) are shown beside them. Goal: 429s < 1 % of the calls;
- each live edit's latency, from the PATCH's response to the edit being in the new portal. It is
  read from SyncRoot's database, not the CRM's API (polling the portal would spend the very budget
  measured): the contact's link to the portal ``synced`` with ``synced_version`` at least the
  version the PATCH answered, which the forwarder writes only after the portal accepted that state.
  The portal's records are read once at the end through the control plane, to check each edited
  contact holds its last value there and no contact was created twice. Goal: p50 <= 1 s for the
  edits made while the backfill ran (all edits are shown too).

Benchmarks do not assert; the figures are printed beside their goals with ✔/✘, then one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.scale import insert_select
from bench.stack import Stack, add_settings_option, machine, percentile, report

GOAL_429_SHARE = 0.01  # 429s ÷ CRM calls, on the backfilled portal
TARGET_P50_MS = 1000.0  # live edit → in the portal, while the backfill runs
PORTAL_ID = 62516  # make run's second HubSpot portal
PORTAL_TOKEN = "portal2-private-app-token"
# HubSpot's own limits, on in every sandbox (the defaults, named so a change of default shows here).
HUBSPOT_LIMITS = {
    "rate_limit": {"max": 100, "interval_ms": 10_000},
    "search_rate_limit": {"max": 5, "interval_ms": 1000},
}
POLL_S = 0.02  # the database poll of the edits waiting to be seen


@dataclass
class Edit:
    contact_id: str
    value: str
    version: int
    began: float  # perf_counter before the PATCH
    returned: float  # after its response
    seen: float | None = None  # when the link showed the version synced


@dataclass
class Monitor:
    """Polls the bench database: the edits not seen yet, and the backfill's progress."""

    stack: Stack
    key: str
    total: int
    started: float
    edits: list[Edit] = field(default_factory=list)
    marked: int = 0  # links to the portal (the backfill marks each contact pending there)
    created: int = 0  # links to the portal holding a HubSpot id
    failed: int = 0  # links failed or parked (a write the portal refused or a retry waiting)
    marked_at: float | None = None  # when all `total` were marked
    first_at: float | None = None  # when the first was in the portal
    done_at: float | None = None  # when all `total` were
    progress: list[tuple[float, int, int]] = field(default_factory=list)  # (seconds since the request, marked, in)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="budget-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def watch(self, edit: Edit) -> None:
        with self._lock:
            self.edits.append(edit)

    def unseen(self) -> int:
        with self._lock:
            return sum(1 for edit in self.edits if edit.seen is None)

    def _run(self) -> None:
        last_progress = 0.0
        with contextlib.closing(self.stack.db()) as connection, connection.cursor() as cursor:
            while not self._stop.is_set():
                now = time.perf_counter()
                with self._lock:
                    waiting = {edit.contact_id: edit for edit in self.edits if edit.seen is None}
                if waiting:
                    cursor.execute(
                        "SELECT contact_id::text, synced_version FROM providers_providerlink"
                        " WHERE provider = %s AND status = 'synced' AND contact_id = ANY(%s::uuid[])",
                        [self.key, list(waiting)],
                    )
                    for contact_id, synced_version in cursor.fetchall():
                        edit = waiting[contact_id]
                        if synced_version >= edit.version:
                            edit.seen = now
                if now - last_progress >= 0.25:
                    last_progress = now
                    cursor.execute(
                        "SELECT count(*), count(*) FILTER (WHERE external_id <> ''),"
                        " count(*) FILTER (WHERE status IN ('failed', 'parked'))"
                        " FROM providers_providerlink WHERE provider = %s",
                        [self.key],
                    )
                    self.marked, self.created, self.failed = cursor.fetchone()
                    if self.done_at is None:
                        self.progress.append((round(now - self.started, 2), self.marked, self.created))
                        if self.marked_at is None and self.marked >= self.total:
                            self.marked_at = now
                        if self.first_at is None and self.created:
                            self.first_at = now
                        if self.created >= self.total:
                            self.done_at = now
                self._stop.wait(POLL_S)


def load(stack: Stack, count: int, run_id: str) -> float:
    """`count` contacts straight into the database, linked to no CRM; seconds it took."""
    began = time.monotonic()
    with contextlib.closing(stack.db()) as connection, connection.cursor() as cursor:
        insert_select(
            cursor, "contacts_contact",
            {"id": "gen_random_uuid()", "email": f"'budget-{run_id}-' || i || '@bench.example.com'",
             "first_name": "'Budget'", "last_name": "'Contact ' || i", "phone": "''",
             "company": "'Company ' || (i % 500)", "job_title": "'Engineer'", "version": "1",
             "field_times": "'{}'::jsonb", "custom": "'{}'::jsonb",
             "created_at": "now() - make_interval(secs => i)", "updated_at": "now() - make_interval(secs => i)"},
            f"FROM generate_series(1, {count}) AS i",
        )  # fmt: skip
        cursor.execute("ANALYZE contacts_contact")
    return time.monotonic() - began


def connect_portal(stack: Stack, portal_url: str) -> dict[str, Any]:
    """The second portal connected through the API, as an operator holding a private-app token does."""
    body = {"provider": "hubspot", "name": "HubSpot portal 2", "instance_url": portal_url,
            "credentials": {"access_token": PORTAL_TOKEN}}  # fmt: skip
    answer = stack.session.post(f"{stack.api_url}/connections", json=body, timeout=60)
    if answer.status_code != 201:
        raise RuntimeError(f"POST /connections answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


def pick(cursor: Any, key: str, edited: list[str]) -> str | None:
    """A random contact already created in the portal and not edited yet (None: none yet)."""
    cursor.execute(
        "SELECT contact_id::text FROM providers_providerlink WHERE provider = %s AND external_id <> ''"
        " AND NOT (contact_id = ANY(%s::uuid[])) ORDER BY random() LIMIT 1",
        [key, edited],
    )
    row = cursor.fetchone()
    return row[0] if row else None


def live_edits(stack: Stack, monitor: Monitor, args: argparse.Namespace, deadline: float) -> dict[str, int]:
    """PATCH a random created contact every 1/rate s until the backfill is done and enough were made."""
    session, interval, tag = stack.new_session(pool=2), 1.0 / args.edit_rate, uuid.uuid4().hex[:6]
    edited: list[str] = []
    refused = 0
    next_at = time.perf_counter()
    with contextlib.closing(stack.db()) as connection, connection.cursor() as cursor:
        while time.perf_counter() < deadline:
            if len(edited) >= args.edits and monitor.done_at is not None:
                break
            contact_id = pick(cursor, monitor.key, edited)
            if contact_id is None:  # nothing in the portal yet
                time.sleep(0.05)
                next_at = time.perf_counter()
                continue
            time.sleep(max(0.0, next_at - time.perf_counter()))
            value = f"Live{tag}{len(edited)}"
            began = time.perf_counter()
            answer = session.patch(f"{stack.api_url}/contacts/{contact_id}", json={"first_name": value}, timeout=30)
            returned = time.perf_counter()
            edited.append(contact_id)
            if answer.status_code == 200:
                monitor.watch(Edit(contact_id, value, int(answer.json()["version"]), began, returned))
            else:
                refused += 1
            next_at = max(next_at + interval, returned - interval)  # no burst after a slow PATCH
    return {"made": len(edited), "refused": refused}


def sandbox_calls(stats: dict[str, Any]) -> dict[str, Any]:
    """API calls a sandbox answered (control plane excluded), its 429s, and the calls per endpoint."""
    by_endpoint = {
        endpoint: sum(statuses.values())
        for endpoint, statuses in sorted(stats["requests"].items())
        if "<" not in endpoint
    }
    statuses: dict[str, int] = {}
    for counts in stats["requests"].values():
        for status, count in counts.items():
            statuses[status] = statuses.get(status, 0) + count
    return {"calls": sum(by_endpoint.values()), "rate_limited": stats["rate_limited"], "by_endpoint": by_endpoint,
            "by_status": dict(sorted(statuses.items()))}  # fmt: skip


def syncroot_counters(stack: Stack, key: str) -> dict[str, Any]:
    """The connection's CRM calls and 429s as SyncRoot counts them (/metrics)."""
    text = stack.session.get(f"{stack.api_url}/metrics", timeout=30).text
    calls, limited, outcomes = 0.0, 0.0, {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("provider") != key:
                continue
            if sample.name == "syncroot_crm_requests_total":
                calls += sample.value
                outcome = sample.labels.get("outcome", "")
                outcomes[outcome] = outcomes.get(outcome, 0) + int(sample.value)
            elif sample.name == "syncroot_crm_rate_limited_total":
                limited += sample.value
    return {"calls": int(calls), "rate_limited": int(limited), "by_outcome": outcomes}


def check_portal(stack: Stack, portal: Any, edits: list[Edit]) -> dict[str, int]:
    """The portal's records, read once through the control plane: duplicates, and edits holding their value."""
    records = [r for r in portal.records() if not r.get("archived")]
    emails = [str(r["properties"].get("email", "")).lower() for r in records]
    first_names = {str(r["properties"].get("email", "")).lower(): r["properties"].get("firstname") for r in records}
    last_value: dict[str, str] = {}
    for edit in edits:
        last_value[edit.contact_id] = edit.value
    with contextlib.closing(stack.db()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id::text, lower(email) FROM contacts_contact WHERE id = ANY(%s::uuid[])",
                       [list(last_value)])  # fmt: skip
        email_of = dict(cursor.fetchall())
    wrong = sum(1 for contact_id, value in last_value.items() if first_names.get(email_of.get(contact_id)) != value)
    return {"records": len(records), "duplicated": len(emails) - len(set(emails)), "edits_not_holding": wrong}


def latency(edits: list[Edit]) -> dict[str, Any]:
    ms = [(edit.seen - edit.returned) * 1000 for edit in edits if edit.seen is not None]
    api = [(edit.returned - edit.began) * 1000 for edit in edits]

    def r(value: float | None) -> float | None:
        return round(value, 1) if value is not None else None

    return {"n": len(edits), "seen": len(ms), "p50_ms": r(percentile(ms, 50)), "p95_ms": r(percentile(ms, 95)),
            "max_ms": r(max(ms) if ms else None), "patch_p50_ms": r(percentile(api, 50))}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = dict(args.set)
    n, run_id = args.contacts, uuid.uuid4().hex[:8]
    limits = {"hubspot_config": HUBSPOT_LIMITS}
    with Stack(gunicorn_workers=args.gunicorn_workers, beat=True, forwarders=args.forwarders, env=env,
               **limits) as stack:  # fmt: skip
        portal = stack.add_sandbox(
            "hubspot2", "hubspot", webhook_url=f"{stack.api_url}/webhooks/hubspot",
            args=("--portal-id", str(PORTAL_ID), "--token", PORTAL_TOKEN), config=HUBSPOT_LIMITS,
        )  # fmt: skip
        load_s = load(stack, n, run_id)
        print(f"[budget] {n:,} contacts loaded in {load_s:.1f}s; connecting portal {PORTAL_ID}", file=sys.stderr)
        before = portal.stats()
        cpu_before = stack.cpu_seconds()
        started = time.perf_counter()
        connection = connect_portal(stack, portal.url)
        key = connection["key"]
        monitor = Monitor(stack, key, n, started)
        monitor.start()
        try:
            deadline = started + args.timeout
            made = live_edits(stack, monitor, args, deadline)
            while monitor.done_at is None and time.perf_counter() < deadline:
                time.sleep(0.2)
            settle_until = time.perf_counter() + args.settle
            while monitor.unseen() and time.perf_counter() < settle_until:
                time.sleep(0.1)
        finally:
            monitor.stop()
        ended = time.perf_counter()
        after = portal.stats()
        counted = syncroot_counters(stack, key)
        first_portal = sandbox_calls(stack.hubspot.stats())
        cpu = {name: round(value - cpu_before.get(name, 0.0), 1) for name, value in stack.cpu_seconds().items()}
        edits = list(monitor.edits)
        portal_check = check_portal(stack, portal, edits)
        links = stack.link_counts().get(key, {})

    calls_after, calls_before = sandbox_calls(after), sandbox_calls(before)
    by_endpoint = {k: v - calls_before["by_endpoint"].get(k, 0) for k, v in calls_after["by_endpoint"].items()}
    calls = calls_after["calls"] - calls_before["calls"]
    limited = calls_after["rate_limited"] - calls_before["rate_limited"]
    share = limited / calls if calls else 0.0
    done_at = monitor.done_at
    during = [edit for edit in edits if done_at is None or edit.returned < done_at]
    goal_edits = during or edits
    live_during, live_all = latency(during), latency(edits)
    goal_p50 = latency(goal_edits)["p50_ms"]
    unseen = sum(1 for edit in edits if edit.seen is None)

    def since(moment: float | None) -> float | None:
        return round(moment - started, 1) if moment is not None else None

    result = {
        "bench": "budget",
        "machine": machine(),
        "config": {
            "contacts": n,
            "edits": args.edits,
            "edit_rate": args.edit_rate,
            "forwarders": args.forwarders,
            "gunicorn_workers": args.gunicorn_workers,
            "env": env,
            "sandbox_limits": HUBSPOT_LIMITS,
            "latency_read": "database: link synced at the PATCH's version",
        },
        "connection": {"key": key, "account_id": connection.get("account_id"), "portal_id": PORTAL_ID},
        "load_s": round(load_s, 2),
        "backfill": {
            "contacts": monitor.created,
            "of": n,
            "seconds": since(done_at),
            "all_marked_s": since(monitor.marked_at),
            "first_in_portal_s": since(monitor.first_at),
            "finished": done_at is not None,
            "links": links,
            "failed_or_parked_seen": monitor.failed,
            "floor_s": math.ceil(n / 100) / 10,
            "progress": monitor.progress[:: math.ceil(len(monitor.progress) / 40) or 1],
        },
        "calls": {
            "crm": calls,
            "rate_limited": limited,
            "share": round(share, 5),
            "goal_share": GOAL_429_SHARE,
            "by_endpoint": by_endpoint,
            "by_status": calls_after["by_status"],
            "syncroot_metrics": counted,
            "first_portal": {"calls": first_portal["calls"], "rate_limited": first_portal["rate_limited"]},
        },
        "live_edits": {
            "made": made["made"],
            "refused": made["refused"],
            "not_seen": unseen,
            "during_backfill": live_during,
            "all": live_all,
            "goal_p50_ms": TARGET_P50_MS,
            "goal_on": "during_backfill" if during else "all",
        },
        "portal": portal_check,
        "seconds": round(ended - started, 1),
        "cpu_s": cpu,
    }
    result["met"] = {
        "backfilled": done_at is not None and portal_check["duplicated"] == 0,
        "share_429": calls > 0 and share < GOAL_429_SHARE,
        "live_p50": goal_p50 is not None and goal_p50 <= TARGET_P50_MS and unseen == 0,
        "edits": len(edits) >= args.edits,
    }
    return result


def mark(ok: bool) -> str:
    return "✔" if ok else "✘"


def print_table(result: dict[str, Any]) -> None:
    m, c, b, met = result["machine"], result["config"], result["backfill"], result["met"]
    calls, live = result["calls"], result["live_edits"]
    print(f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, load {m['load_1m']}, "
          f"revision {m['revision']}")  # fmt: skip
    print(f"budget: {c['contacts']:,} contacts backfilled to a new HubSpot portal ({result['connection']['key']}, "
          f"sandbox limit 100 per 10 s on) while {c['edit_rate']} live edits a second go through the API")  # fmt: skip
    seconds = f"{b['seconds']} s" if b["seconds"] is not None else "not done"
    first, done = b["first_in_portal_s"], b["seconds"]
    sending = round(done - first, 1) if first is not None and done is not None else None
    rows = [
        ("contacts backfilled", f"{b['contacts']:,} of {b['of']:,}, {result['portal']['duplicated']} duplicated",
         "all, none twice", mark(met["backfilled"])),
        ("backfill seconds", seconds, f"(floor {b['floor_s']} s)", ""),
        ("  all marked pending after", f"{b['all_marked_s']} s; first in the portal after {b['first_in_portal_s']} s, "
         f"the rest in {sending} s", "", ""),
        ("CRM calls to the portal", f"{calls['crm']:,}", "", ""),
        ("429s from the portal", f"{calls['rate_limited']:,} = {100 * calls['share']:.2f} %", "< 1 %",
         mark(met["share_429"])),
        ("  SyncRoot's /metrics", f"{calls['syncroot_metrics']['calls']:,} calls, "
         f"{calls['syncroot_metrics']['rate_limited']:,} rate-limited", "", ""),
        ("live edits", f"{live['made']} ({live['during_backfill']['n']} during the backfill), "
         f"{live['refused']} refused, {live['not_seen']} not seen", f">= {c['edits']}", mark(met["edits"])),
    ]  # fmt: skip
    for label, key in (("during the backfill", "during_backfill"), ("all edits", "all")):
        row = live[key]
        goal = f"p50 <= {TARGET_P50_MS / 1000:g} s" if live["goal_on"] == key else ""
        rows.append((f"  latency, {label}", f"p50 {row['p50_ms']} / p95 {row['p95_ms']} / max {row['max_ms']} ms "
                     f"(n={row['seen']})", goal, mark(met["live_p50"]) if goal else ""))  # fmt: skip
    for label, value, goal, ok in rows:
        print(f"  {label:<30} {value:<58} {goal:<16} {ok}")
    portal = result["portal"]
    print(f"  in the portal at the end: {portal['records']:,} records, {portal['edits_not_holding']} edited contacts "
          f"not holding their last value; the first portal meanwhile: {calls['first_portal']['calls']} calls, "
          f"{calls['first_portal']['rate_limited']} 429s")  # fmt: skip
    print(f"goals: {'met' if all(met.values()) else 'MISSED: ' + ', '.join(k for k, v in met.items() if not v)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=10_000, help="contacts backfilled (default 10000)")
    parser.add_argument("--edits", type=int, default=100, help="live edits at least (default 100)")
    parser.add_argument("--edit-rate", type=float, default=2.0, help="live edits a second (default 2)")
    parser.add_argument("--forwarders", type=int, default=1, help="forwarder processes (default 1)")
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds for the backfill and edits (420)")
    parser.add_argument("--settle", type=float, default=120.0, help="seconds more for the last edits to land (120)")
    add_settings_option(parser)
    args = parser.parse_args(argv)
    return report(run(args), print_table)


if __name__ == "__main__":
    sys.exit(main())
