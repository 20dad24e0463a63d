"""The admin's Sync health page and the contact list at size: how long each takes to load.

Run: ``.venv/bin/python -m bench.health_page [--contacts 1000000] [--dead-letters 100000] [--loads 10]``.

A fresh PostgreSQL database (`syncroot_bench_health_<pid>`, dropped at the end unless `--keep`) is
migrated and filled in SQL (generate_series): `--contacts` contacts, each linked to both CRMs
(most synced, 2 % pending, 1 % with a sync issue), `--dead-letters` parked dead letters over a few
error codes, and 24 h of writes per minute in the Redis counters. Then, as a logged-in operator
(Django's test client, in this process), each page is loaded `--loads` times: the Sync health page,
the contact list (first page, and filtered by a CRM's sync status and by "changed in the last
hour"), the dead letters' list. Printed: p50 and max milliseconds per page, and SQL queries per load.
Goal: the health page and the contact list each well under 1 s at 1,000,000 contacts and 100,000
dead letters (no COUNT(*) over a whole table per request).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import psycopg2
from psycopg2 import sql

TARGET_MS = 1000.0
CODES = ("INVALID_EMAIL", "VALIDATION_ERROR", "REQUIRED_FIELD_MISSING", "STRING_TOO_LONG", "DUPLICATE_VALUE")


def _admin_connection():
    return psycopg2.connect(host="127.0.0.1", port=5432, dbname="postgres")


def database_create(name: str) -> None:
    connection = _admin_connection()
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    connection.close()


def database_drop(name: str) -> None:
    from django.db import connections

    connections.close_all()
    connection = _admin_connection()
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    connection.close()


FILL = [
    # Contacts: updated over the last 30 days, so "changed in the last hour" picks a few.
    """INSERT INTO contacts_contact (id, email, first_name, last_name, phone, company, job_title, version,
           field_times, custom, created_at, updated_at)
       SELECT md5('c' || i)::uuid, 'person' || i || '@bench.example.com', 'First' || i, 'Last' || i, '', 'Co',
              '', 1, '{}', '{}', now() - interval '30 days', now() - (i %% 43200) * interval '1 minute'
       FROM generate_series(1, %(contacts)s) AS i""",
    """INSERT INTO providers_providerlink (contact_id, provider, external_id, status, synced_version, field_hashes,
           field_prior_hashes, field_written_at, field_seen_at, attempts, last_error, last_error_code, issues,
           pending_since, synced_at, updated_at)
       SELECT md5('c' || i)::uuid, p, CASE WHEN i %% 50 = 0 THEN NULL ELSE p || '-' || i END,
              CASE WHEN i %% 50 = 0 THEN 'pending' WHEN i <= %(dead)s THEN 'parked' ELSE 'synced' END, 1,
              '{}', '{}', '{}', '{}', 0, '', '',
              CASE WHEN i %% 100 = 1 THEN jsonb_build_array(jsonb_build_object('field', 'last_name', 'code',
                   'too_long', 'message', 'the CRM holds 90 characters', 'held', 'x')) ELSE '[]'::jsonb END,
              CASE WHEN i %% 50 = 0 THEN now() - (i %% 600) * interval '1 second' END, now(), now()
       FROM generate_series(1, %(contacts)s) AS i, (VALUES ('hubspot'), ('salesforce')) AS crm(p)""",
    """INSERT INTO providers_deadletter (link_id, provider, contact_id, contact_version, error_code, error_message,
           attempts, status, created_at)
       SELECT l.id, l.provider, l.contact_id, 1, (%(codes)s::text[])[1 + (l.id %% 5)],
              'The CRM refused the record: ' || l.id, 1, 'parked', now() - (l.id %% 1000) * interval '1 minute'
       FROM providers_providerlink l WHERE l.status = 'parked' LIMIT %(dead_letters)s""",
    "VACUUM ANALYZE",  # what autovacuum keeps up in production (the visibility map: index-only scans)
]


def fill(*, contacts: int, dead_letters: int) -> float:
    from django.db import connection

    began = time.monotonic()
    # Both CRMs park each of the first links: that many contacts give `dead_letters` dead letters.
    params = {"contacts": contacts, "dead": (dead_letters + 1) // 2, "dead_letters": dead_letters, "codes": list(CODES)}
    with connection.cursor() as cursor:
        for statement in FILL:
            cursor.execute(statement, params if "%(" in statement else None)
    return time.monotonic() - began


def counters_fill() -> None:
    """24 h of writes per minute for both CRMs, as the forwarder counts them."""
    from syncroot.counters import sync_writes_record

    now = time.time()
    for minute in range(24 * 60):
        for provider in ("hubspot", "salesforce"):
            sync_writes_record(provider=provider, lags=[0.3] * (20 + minute % 30), now=now - minute * 60)


def timed_loads(client, path: str, loads: int) -> dict[str, float]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times, queries = [], 0
    for _ in range(loads):
        with CaptureQueriesContext(connection) as captured:
            began = time.perf_counter()
            response = client.get(path)
            if getattr(response, "streaming", False):
                b"".join(response.streaming_content)
            times.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (path, response.status_code)
        queries = len(captured)
    return {"p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1), "queries": queries}


PAGES = {
    "health page": "/admin/providers/synchealth/",
    "contact list": "/admin/contacts/contact/",
    "contacts synced with hubspot": "/admin/contacts/contact/?sync_hubspot=synced",
    "contacts pending for hubspot": "/admin/contacts/contact/?sync_hubspot=pending",
    "contacts changed in the last hour": "/admin/contacts/contact/?changed=hour",
    "dead letters (parked)": "/admin/providers/deadletter/?status__exact=parked",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--dead-letters", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args(argv)

    name = f"syncroot_bench_health_{os.getpid()}"
    database_create(name)
    os.environ.update({
        "DATABASE_URL": f"postgres://127.0.0.1:5432/{name}", "REDIS_URL": "redis://127.0.0.1:6379/13",
        "HUBSPOT_ACCESS_TOKEN": "bench", "SALESFORCE_ACCESS_TOKEN": "bench", "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "syncroot.settings", "DJANGO_ALLOWED_HOSTS": "*",
    })  # fmt: skip
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    settings.CACHES["default"]["KEY_PREFIX"] = f"bench-health-{os.getpid()}"
    settings.ALLOWED_HOSTS = ["*"]
    try:
        call_command("migrate", verbosity=0)
        fill_seconds = fill(contacts=args.contacts, dead_letters=args.dead_letters)
        counters_fill()
        operator = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
        client = Client()
        client.force_login(operator)
        results = {label: timed_loads(client, path, args.loads) for label, path in PAGES.items()}
    finally:
        if not args.keep:
            database_drop(name)
    print(f"{args.contacts:,} contacts, {args.dead_letters:,} dead letters (filled in {fill_seconds:.0f} s)")
    print(f"{'page':<36}{'p50 ms':>10}{'max ms':>10}{'queries':>9}")
    for label, figures in results.items():
        print(f"{label:<36}{figures['p50_ms']:>10}{figures['max_ms']:>10}{figures['queries']:>9}")
    worst = max(figures["p50_ms"] for figures in results.values())
    print(json.dumps({
        "bench": "health_page", "contacts": args.contacts, "dead_letters": args.dead_letters, "pages": results,
        "worst_p50_ms": worst, "target_ms": TARGET_MS, "met": worst < TARGET_MS,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
