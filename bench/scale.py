"""Reads and writes at scale: the same requests at 10,000 and at 1,000,000 contacts, side by side.

Run: ``.venv/bin/python -m bench.scale [--sizes 10000 1000000] [--samples 100] [--rounds 5]``;
``--sizes 10000 100000`` is a quick run. Each size gets a database of its own, loaded straight in
SQL (`INSERT … SELECT generate_series`): N contacts with two links each (HubSpot and Salesforce,
synced, with CRM ids), a custom enum field `tier` held by every contact, N/10 dead letters and N
webhook events; then VACUUM ANALYZE (as autovacuum would). Each database is served by its own
gunicorn (same command, same workers); no Celery worker runs (their work would compete for the
cores; a PATCH leaves its links pending, as before the forwarder runs).

The requests go one at a time, in rounds that alternate small / large, so a machine whose load
drifts (a shared one does) weighs on both sizes alike:

- ``GET /contacts`` first page, a deep page (cursor at the middle of the table), ``?email=``,
  ``?custom.tier=gold``, ``GET /contacts/{id}``, ``PATCH /contacts/{id}``;
- the admin change lists of contacts, dead letters, the webhook inbox, and the contact search by
  an email's beginning and by a CRM record id.

Printed per request and size: p50/p99 ms, and the ratio large / small of each (goal <= 1.3), with
the load average. Benchmarks do not assert.
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
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any
from urllib.parse import urlencode

import psycopg2
import requests

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


def load(connect: Any, size: int, say: Any) -> dict[str, Any]:
    """Empty the tables, then load `size` contacts and what goes with them; what to query."""
    began = time.monotonic()
    with contextlib.closing(connect()) as connection, connection.cursor() as cursor:
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


def admin_session(api_url: str) -> Any:
    """A session logged in to the admin of the API at `api_url`."""
    session = requests.Session()
    session.trust_env = False
    login = f"{api_url}/admin/login/"
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


@dataclass
class Target:
    """One size: its database, its API and the sessions that talk to it."""

    size: int
    database: str
    api_url: str = ""
    api: Any = None
    admin: Any = None
    plan: dict = dc_field(default_factory=dict)
    times: dict = dc_field(default_factory=dict)
    statuses: dict = dc_field(default_factory=dict)

    def connect(self) -> Any:
        connection = psycopg2.connect(dbname=self.database, host="127.0.0.1", connect_timeout=5)
        connection.autocommit = True
        return connection


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


def timed(target: Target, name: str, n: int) -> tuple[float, int]:
    method, path, body = target.plan[name]
    url = target.api_url + (path(n) if callable(path) else path)
    began = time.perf_counter()
    if method == "ADMIN":
        response = target.admin.get(url, timeout=60)
    else:
        response = target.api.request(method, url, json=body(n) if callable(body) else body, timeout=60)
    return time.perf_counter() - began, response.status_code


def measure(targets: list[Target], *, samples: int, rounds: int, warmup: int) -> None:
    """Each request kind, in `rounds` rounds alternating the targets; times kept on the targets."""
    per_round = max(samples // rounds, 1)
    for name in targets[0].plan:
        for target in targets:
            for n in range(warmup):
                timed(target, name, n)
            target.times[name], target.statuses[name] = [], {}
        n = warmup
        for _ in range(rounds):
            for target in targets:
                for i in range(per_round):
                    elapsed, status = timed(target, name, n + i)
                    target.times[name].append(elapsed * 1000)
                    target.statuses[name][status] = target.statuses[name].get(status, 0) + 1
            n += per_round


def setup_target(stack: Stack, target: Target, *, first: bool) -> None:
    """The target's database migrated (the stack's own for the first), its API, token and admin."""
    env = {"DATABASE_URL": f"postgres://127.0.0.1:{stack.pg_port}/{target.database}"}
    if first:
        target.api_url, token = stack.api_url, stack.token
    else:
        with contextlib.closing(psycopg2.connect(dbname="postgres", host="127.0.0.1", connect_timeout=5)) as server:
            server.autocommit = True
            with server.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
                cursor.execute(f'CREATE DATABASE "{target.database}"')
        stack.manage_with(env, "migrate", "--no-input", "-v0")
        token = stack.manage_with(env, "create_api_token", "bench").strip().splitlines()[-1]
        target.api_url = stack.add_web(f"web-{target.size}", env)
    stack.manage_with(env, "createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "admin@example.com")
    target.api = requests.Session()
    target.api.trust_env = False
    target.api.headers["Authorization"] = f"Bearer {token}"
    target.admin = admin_session(target.api_url)


def run(args: argparse.Namespace) -> dict[str, Any]:
    small, large = sorted(args.sizes)[0], sorted(args.sizes)[-1]
    env = {"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD, "API_THROTTLE_RATE": "1000000/min", **dict(args.set)}
    targets = [Target(small, f"{args.database}_small"), Target(large, args.database)]
    loaded: dict[int, dict[str, Any]] = {}
    with Stack(gunicorn_workers=args.gunicorn_workers, workers=(), env=env, database=args.database,
               redis_db=args.redis_db) as stack:  # fmt: skip
        for target in reversed(targets):  # the stack's own database (the large one) first
            setup_target(stack, target, first=target.database == args.database)
            say = lambda text, size=target.size: print(f"  [{size:,}] {text}", flush=True)  # noqa: E731
            loaded[target.size] = load(target.connect, target.size, say)
            target.plan = requests_of(target.size, loaded[target.size]["deep_position"])
        load_before = round(os.getloadavg()[0], 2)
        began = time.monotonic()
        measure(targets, samples=args.samples, rounds=args.rounds, warmup=args.warmup)
        load_after = round(os.getloadavg()[0], 2)
    ratios = {}
    for name in targets[0].plan:
        figures = {t.size: (percentile(t.times[name], 50), percentile(t.times[name], 99)) for t in targets}
        ratios[name] = {
            "p50_ratio": round(figures[large][0] / figures[small][0], 2),
            "p99_ratio": round(figures[large][1] / figures[small][1], 2),
            f"p50_ms_{small}": round(figures[small][0], 2), f"p50_ms_{large}": round(figures[large][0], 2),
            f"p99_ms_{small}": round(figures[small][1], 2), f"p99_ms_{large}": round(figures[large][1], 2),
            "statuses": {str(t.size): t.statuses[name] for t in targets},
        }  # fmt: skip
    return {
        "bench": "scale",
        "machine": machine(),
        "config": {
            "sizes": [small, large],
            "samples": args.samples,
            "rounds": args.rounds,
            "gunicorn_workers": args.gunicorn_workers,
        },  # fmt: skip
        "load_s": {size: row["load_s"] for size, row in loaded.items()},
        "measured_s": round(time.monotonic() - began, 1),
        "ratios": ratios,
        "worst_ratio": max(max(r["p50_ratio"], r["p99_ratio"]) for r in ratios.values()),
        "worst_p50_ratio": max(r["p50_ratio"] for r in ratios.values()),
        "goal_ratio": GOAL_RATIO,
        "load_1m": [load_before, load_after],
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
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the two sizes per request")
    parser.add_argument("--warmup", type=int, default=5)
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
