"""Reads and writes at scale: the same requests at 10,000 and at 1,000,000 contacts, side by side.

Run: ``.venv/bin/python -m bench.scale [--sizes 10000 1000000] [--samples 100]``; ``--sizes 10000
100000`` is a quick run. For each size the bench database is emptied and loaded straight in SQL
(`INSERT … SELECT generate_series`): N contacts with two links each (HubSpot and Salesforce, synced,
with CRM ids), a custom enum field `tier` held by every contact, N/10 dead letters and N webhook
events; then ANALYZE (as autovacuum would) and the requests below, one client, one at a time, over
gunicorn (no Celery worker runs: their work would compete for the cores; a PATCH leaves its links
pending, as it does before the forwarder runs):

- ``GET /contacts`` first page, a deep page (cursor at the middle of the table), ``?email=``,
  ``?custom.tier=gold``, ``GET /contacts/{id}``, ``PATCH /contacts/{id}``;
- the admin change lists of contacts, dead letters, the webhook inbox, and the contact search by
  an email's beginning and by a CRM record id.

Printed per request and size: p50/p99 ms, and the ratio largest / smallest size of each (goal
<= 1.3). Benchmarks do not assert.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import random
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from bench.stack import Stack, add_settings_option, machine, percentile

GOAL_RATIO = 1.3
TIERS = ("gold", "silver", "bronze", "iron")
ADMIN_USER, ADMIN_PASSWORD = "scale-admin", "scale-admin-password-0"

# Column values by type for the NOT NULL columns a load does not name (other migrations may add
# some): the bench keeps loading whatever the schema grows.
FILL_BY_TYPE = {
    "jsonb": "'{}'::jsonb", "text": "''", "character varying": "''", "integer": "0", "bigint": "0",
    "smallint": "0", "boolean": "false", "timestamp with time zone": "now()", "double precision": "0",
}  # fmt: skip


def insert_select(cursor: Any, table: str, values: dict[str, str], source: str) -> None:
    """INSERT INTO table (named columns + every other NOT NULL one without a default) SELECT …."""
    cursor.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
        "AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'",
        [table],
    )
    filled = dict(values)
    for column, data_type in cursor.fetchall():
        if column not in filled:
            filled[column] = FILL_BY_TYPE[data_type]
    columns = ", ".join(f'"{name}"' for name in filled)
    cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {', '.join(filled.values())} {source}")


def load(stack: Stack, size: int, say: Any) -> dict[str, Any]:
    """Empty the tables, then load `size` contacts and what goes with them; what to query."""
    began = time.monotonic()
    with contextlib.closing(stack.db()) as connection, connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE contacts_contact, providers_providerlink, providers_deadletter, providers_syncattempt, "
            "webhooks_webhookevent, contacts_customfield CASCADE"
        )
        insert_select(
            cursor, "contacts_customfield",
            {"key": "'tier'", "label": "'Tier'", "type": "'enum'", "options": f"'{json.dumps(TIERS)}'::jsonb",
             "created_at": "now()", "updated_at": "now()"},
            "",
        )  # fmt: skip
        # Newest first is the API's order: created_at spreads the rows over the last `size` seconds.
        insert_select(
            cursor, "contacts_contact",
            {"id": "md5('c' || i)::uuid", "email": "'scale-' || i || '@example.com'", "first_name": "'First' || i",
             "last_name": "'Last' || i", "phone": "''", "company": "'Company ' || (i % 1000)", "job_title": "''",
             "version": "1", "field_times": "'{}'::jsonb",
             "custom": "jsonb_build_object('tier', (ARRAY['gold','silver','bronze','iron'])[1 + i % 4])",
             "created_at": "now() - make_interval(secs => i)", "updated_at": "now() - make_interval(secs => i)"},
            f"FROM generate_series(1, {size}) AS i",
        )  # fmt: skip
        say(f"{size:,} contacts in {time.monotonic() - began:.0f}s")
        for provider, prefix in (("hubspot", ""), ("salesforce", "003SC")):
            insert_select(
                cursor, "providers_providerlink",
                {"contact_id": "md5('c' || i)::uuid", "provider": f"'{provider}'",
                 "external_id": f"'{prefix}' || (1000000 + i)", "status": "'synced'", "synced_version": "1",
                 "field_hashes": "'{}'::jsonb", "issues": "'[]'::jsonb", "synced_at": "now()", "updated_at": "now()"},
                f"FROM generate_series(1, {size}) AS i",
            )  # fmt: skip
        say(f"{2 * size:,} links in {time.monotonic() - began:.0f}s")
        letters = max(size // 10, 1)
        insert_select(
            cursor, "providers_deadletter",
            {"link_id": "l.id", "provider": "l.provider", "contact_id": "l.contact_id", "contact_version": "1",
             "error_code": "(ARRAY['INVALID_EMAIL_ADDRESS','REQUIRED_FIELD_MISSING','PROPERTY_DOESNT_EXIST'])"
                           "[1 + (l.id % 3)::int]",
             "error_message": "'The CRM refused the record'", "attempts": "8", "status": "'parked'",
             "created_at": "now() - make_interval(secs => l.id::int)"},
            f"FROM (SELECT id, provider, contact_id FROM providers_providerlink ORDER BY id LIMIT {letters}) AS l",
        )  # fmt: skip
        say(f"{letters:,} dead letters in {time.monotonic() - began:.0f}s")
        insert_select(
            cursor, "webhooks_webhookevent",
            {"provider": "(ARRAY['hubspot','salesforce'])[1 + i % 2]", "event_id": "'2100100:' || i",
             "payload": "jsonb_build_object('eventId', i, 'objectId', 1000000 + i, 'propertyName', 'firstname', "
                        "'propertyValue', 'First' || i)",
             "status": "'processed'", "outcome": "'applied'", "error": "''", "attempts": "1",
             "received_at": "now() - make_interval(secs => i)", "processed_at": "now()"},
            f"FROM generate_series(1, {size}) AS i",
        )  # fmt: skip
        say(f"{size:,} webhook events in {time.monotonic() - began:.0f}s")
        cursor.execute("VACUUM ANALYZE")
        middle = size // 2
        cursor.execute(
            "SELECT created_at FROM contacts_contact WHERE deleted_at IS NULL ORDER BY created_at DESC, id DESC "
            "OFFSET %s LIMIT 1",
            [middle],
        )
        deep_position = str(cursor.fetchone()[0])
    return {"load_s": round(time.monotonic() - began, 1), "deep_position": deep_position}


def contact_id(i: int) -> str:
    """The id the load gave contact i (md5('c' || i) as a UUID)."""
    return str(uuid.UUID(hashlib.md5(f"c{i}".encode()).hexdigest()))


def admin_session(stack: Stack) -> Any:
    """A logged-in admin session (the superuser is made once per run)."""
    session = stack.new_session()
    session.headers.pop("Authorization", None)
    login = f"{stack.api_url}/admin/login/"
    session.get(login, timeout=30)
    token = session.cookies.get("csrftoken")
    response = session.post(
        login,
        data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "csrfmiddlewaretoken": token, "next": "/admin/"},
        headers={"Referer": login},
        timeout=30,
    )
    if "logout" not in response.text.lower():
        raise RuntimeError(f"admin login failed ({response.status_code})")
    return session


def requests_of(size: int, deep_position: str) -> dict[str, tuple[str, str, Any]]:
    """name → (method, path, body or a function of the sample's index giving one)."""
    cursor = base64.b64encode(urlencode({"p": deep_position}).encode()).decode()
    rng = random.Random(size)
    ids = [contact_id(rng.randint(1, size)) for _ in range(1000)]
    some = rng.randint(1, size)
    return {
        "list_first_page": ("GET", "/contacts", None),
        "list_deep_page": ("GET", f"/contacts?{urlencode({'cursor': cursor})}", None),
        "list_email_filter": ("GET", f"/contacts?email=scale-{some}@example.com", None),
        "list_custom_filter": ("GET", "/contacts?custom.tier=gold", None),
        "get_by_id": ("GET", lambda n: f"/contacts/{ids[n % len(ids)]}", None),
        "patch": ("PATCH", lambda n: f"/contacts/{ids[(n * 7) % len(ids)]}", lambda n: {"job_title": f"Role {n}"}),
        "admin_contacts": ("ADMIN", "/admin/contacts/contact/", None),
        "admin_contact_search_email": ("ADMIN", f"/admin/contacts/contact/?q=scale-{some}%40", None),
        "admin_contact_search_crm_id": ("ADMIN", f"/admin/contacts/contact/?q=003SC{1000000 + some}", None),
        "admin_dead_letters": ("ADMIN", "/admin/providers/deadletter/", None),
        "admin_webhook_inbox": ("ADMIN", "/admin/webhooks/webhookevent/", None),
    }


def measure(stack: Stack, admin: Any, plan: dict, *, samples: int, warmup: int) -> dict[str, Any]:
    api = stack.new_session()
    results = {}
    for name, (method, path, body) in plan.items():
        times, statuses = [], {}
        for n in range(warmup + samples):
            url = stack.api_url + (path(n) if callable(path) else path)
            began = time.perf_counter()
            if method == "ADMIN":
                response = admin.get(url, timeout=60)
            else:
                payload = body(n) if callable(body) else body
                response = api.request(method, url, json=payload, timeout=60)
            elapsed = time.perf_counter() - began
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if n >= warmup:
                times.append(elapsed * 1000)
        results[name] = {
            "p50_ms": round(percentile(times, 50), 2),
            "p99_ms": round(percentile(times, 99), 2),
            "statuses": statuses,
        }
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = sorted(args.sizes)
    env = {"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD, "API_THROTTLE_RATE": "1000000/min", **dict(args.set)}
    by_size: dict[int, dict[str, Any]] = {}
    with Stack(gunicorn_workers=args.gunicorn_workers, workers=(), env=env, database=args.database,
               redis_db=args.redis_db) as stack:  # fmt: skip
        stack.manage("createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "admin@example.com")
        admin = admin_session(stack)
        for size in sizes:
            loaded = load(stack, size, lambda text, size=size: print(f"  [{size:,}] {text}", flush=True))
            load_avg = round(os.getloadavg()[0], 2)
            figures = measure(stack, admin, requests_of(size, loaded["deep_position"]), samples=args.samples,
                              warmup=args.warmup)  # fmt: skip
            by_size[size] = {"load_s": loaded["load_s"], "load_1m": load_avg, "requests": figures}
            print(json.dumps({"bench": "scale_size", "size": size, **by_size[size]}), flush=True)
    small, large = sizes[0], sizes[-1]
    ratios = {}
    for name, figure in by_size[large]["requests"].items():
        base = by_size[small]["requests"][name]
        ratios[name] = {
            "p50_ratio": round(figure["p50_ms"] / base["p50_ms"], 2),
            "p99_ratio": round(figure["p99_ms"] / base["p99_ms"], 2),
            f"p50_ms_{small}": base["p50_ms"], f"p50_ms_{large}": figure["p50_ms"],
            f"p99_ms_{small}": base["p99_ms"], f"p99_ms_{large}": figure["p99_ms"],
        }  # fmt: skip
    worst = max(max(r["p50_ratio"], r["p99_ratio"]) for r in ratios.values())
    return {
        "bench": "scale",
        "machine": machine(),
        "config": {"sizes": sizes, "samples": args.samples, "gunicorn_workers": args.gunicorn_workers},
        "ratios": ratios,
        "worst_ratio": worst,
        "goal_ratio": GOAL_RATIO,
        "load_1m": {size: by_size[size]["load_1m"] for size in sizes},
    }


def table(result: dict[str, Any]) -> str:
    small, large = result["config"]["sizes"][0], result["config"]["sizes"][-1]
    lines = [f"{'request':<30} {'p50 ' + str(small):>12} {'p50 ' + str(large):>12} {'ratio':>6}  "
             f"{'p99 ' + str(small):>12} {'p99 ' + str(large):>12} {'ratio':>6}  goal <= {GOAL_RATIO}"]  # fmt: skip
    for name, row in result["ratios"].items():
        lines.append(
            f"{name:<30} {row[f'p50_ms_{small}']:>12} {row[f'p50_ms_{large}']:>12} {row['p50_ratio']:>6}  "
            f"{row[f'p99_ms_{small}']:>12} {row[f'p99_ms_{large}']:>12} {row['p99_ratio']:>6}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000], help="contacts per load")
    parser.add_argument("--samples", type=int, default=100, help="timed requests of each kind per size")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--database", default="syncroot_bench_scale")
    parser.add_argument("--redis-db", type=int, default=13)
    add_settings_option(parser)
    args = parser.parse_args(argv)
    host = machine()
    print(f"machine: {host['cores']} cores, {host['cpu']}, load {host['load_1m']}", flush=True)
    result = run(args)
    print(table(result))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
