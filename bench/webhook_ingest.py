"""Inbound webhook ingest: ack latency and events/s of POST /webhooks/hubspot under gunicorn.

Run: ``.venv/bin/python -m bench.webhook_ingest [--deliveries 300] [--clients 4] [--workers 2]``.

The API runs as in deployment (gunicorn with deploy/gunicorn.conf.py) on a free loopback port,
against its own PostgreSQL database (created and migrated here, dropped afterwards unless
``--keep-database``) and its own Redis database number (``--redis-db``), with HubSpot connected
through a known client secret. Client threads send signed 100-event deliveries with unique event
ids, the way HubSpot does, and time each request until its ack. A second, smaller phase redelivers
deliveries already stored (HubSpot retries): acked, nothing new stored. No worker consumes the
queue, so events stay `received`; the bench checks every event landed in the inbox once and was
enqueued, then removes the queue it filled. Finally a few deliveries are timed stage by stage
(parse + verify, store, enqueue) in-process. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import itertools
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import redis
import requests
from psycopg2 import sql

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SECRET = "bench-client-secret"
APP_ID = "1234567"
PATH = "/webhooks/hubspot"
QUEUE = "webhooks.hubspot"


# --- Signed deliveries, as HubSpot builds them -----------------------------------------------------
def delivery(*, url: str, subscription_id: int, first_event_id: int, events: int) -> tuple[bytes, dict[str, str]]:
    now_ms = int(time.time() * 1000)
    payload = [
        {
            "eventId": first_event_id + i,
            "subscriptionId": subscription_id,
            "portalId": 62515,
            "appId": int(APP_ID),
            "occurredAt": now_ms,
            "subscriptionType": "contact.propertyChange",
            "attemptNumber": 0,
            "objectId": 100_000 + (first_event_id + i) % 5_000,
            "propertyName": "firstname",
            "propertyValue": f"Name {first_event_id + i}",
            "changeSource": "CRM_UI",
            "sourceId": "userId:45678",
        }
        for i in range(events)
    ]
    body = json.dumps(payload, separators=(",", ":")).encode()
    timestamp = str(int(time.time() * 1000))
    signed = b"POST" + url.encode() + body + timestamp.encode()
    signature = base64.b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()).decode()
    headers = {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": timestamp,
        "X-HubSpot-Signature-v3": signature,
        "X-HubSpot-Signature-Version": "v1",
    }
    return body, headers


# --- The API under gunicorn ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_params(database_url: str) -> dict[str, Any]:
    import environ

    config = environ.Env.db_url_config(database_url)
    params = {"host": config.get("HOST"), "port": config.get("PORT"), "user": config.get("USER"),
              "password": config.get("PASSWORD")}  # fmt: skip
    return {"dbname": config["NAME"], **{k: v for k, v in params.items() if v}}


@contextmanager
def bench_database(database_url: str, *, keep: bool) -> Iterator[dict[str, Any]]:
    """The bench's own database, created and migrated for the run (dropped afterwards)."""
    params = pg_params(database_url)
    name = params["dbname"]
    admin = psycopg2.connect(**{**params, "dbname": "postgres"}, connect_timeout=5)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=REPO, env={**os.environ, "DATABASE_URL": database_url}, check=True,
    )  # fmt: skip
    try:
        yield params
    finally:
        if not keep:
            with admin.cursor() as cursor:
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def app_env(*, database_url: str, broker_url: str, base_url: str) -> dict[str, str]:
    """The API's environment: the bench's database and Redis, HubSpot connected with a known secret."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": broker_url,
        "CELERY_BROKER_URL": broker_url,
        "PUBLIC_BASE_URL": base_url,
        "HUBSPOT_ACCESS_TOKEN": "bench-token",
        "HUBSPOT_CLIENT_SECRET": SECRET,
        "HUBSPOT_APP_ID": APP_ID,
        "HUBSPOT_BASE_URL": "http://127.0.0.1:9",  # never called: nothing processes the events
        "LOG_FORMAT": "json",
    }


@contextmanager
def gunicorn(*, port: int, workers: int, threads: int, env: dict[str, str], log: Path) -> Iterator[str]:
    base_url = f"http://127.0.0.1:{port}"
    server_env = {
        **env,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
        "GUNICORN_THREADS": str(threads),
        "PUBLIC_BASE_URL": base_url,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "syncroot.wsgi:application", "-c", "deploy/gunicorn.conf.py"],
            cwd=REPO, env=server_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_until_up(base_url, process, log)
            yield base_url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_up(base_url: str, process: subprocess.Popen, log: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"gunicorn exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(base_url + "/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    sys.exit(f"gunicorn did not answer within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


# --- Load --------------------------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    events: int = 0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        def pct(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2) if ordered else 0.0

        ok = self.statuses.get(200, 0)
        return {
            "deliveries": len(ordered),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "max_ms": round(ordered[-1], 2) if ordered else 0.0,
            "mean_ms": round(statistics.fmean(ordered), 2) if ordered else 0.0,
            "seconds": round(self.seconds, 3),
            "deliveries_per_s": round(ok / self.seconds, 1) if self.seconds else 0.0,
            "events_per_s": round(ok * self.events / self.seconds, 1) if self.seconds else 0.0,
        }


def run_phase(phase: Phase, *, url: str, jobs: list[tuple[int, int]], clients: int, events: int) -> None:
    """Send one delivery per job (subscription id, first event id) from `clients` threads."""
    phase.events = events
    todo = iter(jobs)
    todo_lock = threading.Lock()

    def client() -> None:
        session = requests.Session()
        session.trust_env = False  # loopback: never through a proxy
        while True:
            with todo_lock:
                job = next(todo, None)
            if job is None:
                return
            body, headers = delivery(url=url, subscription_id=job[0], first_event_id=job[1], events=events)
            started = time.perf_counter()
            try:
                status = session.post(url, data=body, headers=headers, timeout=30).status_code
            except requests.RequestException:
                status = 0
            elapsed = (time.perf_counter() - started) * 1000
            with phase.lock:
                phase.latencies_ms.append(elapsed)
                phase.statuses[status] += 1

    threads = [threading.Thread(target=client, name=f"client-{i}") for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.seconds = time.perf_counter() - started


# --- Where the time goes: the view's stages timed one by one, in a process set up like the API --
def stage_breakdown(*, env: dict[str, str], deliveries: int, events: int, subscription_id: int) -> dict[str, Any]:
    code = f"from bench.webhook_ingest import time_stages; time_stages({deliveries}, {events}, {subscription_id})"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**env, "DJANGO_SETTINGS_MODULE": "syncroot.settings",
        "LOG_LEVEL": "WARNING"}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_stages(deliveries: int, events: int, subscription_id: int) -> None:
    """Parse + verify, store (one transaction, enqueue held back), enqueue: medians per delivery.
    Removes the rows it stored. Runs in a child process (it sets Django up)."""
    import django

    django.setup()
    from crm.registry import get_provider
    from webhooks import services
    from webhooks.models import WebhookEvent

    provider, url = get_provider("hubspot"), "http://bench.invalid" + PATH
    real_enqueue, held = services.inbox_enqueue, []
    timings: dict[str, list[float]] = {"parse": [], "store": [], "enqueue": []}

    def timed(stage: str, call, **kwargs):
        started = time.perf_counter()
        value = call(**kwargs)
        timings[stage].append((time.perf_counter() - started) * 1000)
        return value

    services.inbox_enqueue = lambda *, provider, event_ids: held.append(list(event_ids))
    try:
        for n in range(deliveries):
            body, headers = delivery(url=url, subscription_id=subscription_id, first_event_id=n * 1_000, events=events)
            parsed = timed("parse", provider.parse_webhook, body=body, headers=headers, url=url, query={})
            timed("store", services.inbox_store, provider="hubspot", events=parsed)
            timed("enqueue", real_enqueue, provider="hubspot", event_ids=held.pop())
    finally:
        services.inbox_enqueue = real_enqueue
        WebhookEvent.objects.filter(provider="hubspot", event_id__startswith=f"{subscription_id}:").delete()

    def pct(values: list[float], p: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2) if ordered else 0.0

    print(json.dumps({stage: {"p50": pct(v, 50), "p90": pct(v, 90)} for stage, v in timings.items()}))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=300, help="signed deliveries to send (default 300)")
    parser.add_argument("--events", type=int, default=100, help="events per delivery (default 100, HubSpot's max)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="threads per gunicorn worker (default 2)")
    parser.add_argument("--redeliveries", type=int, default=50, help="stored deliveries sent again (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="deliveries before timing starts (default 10)")
    parser.add_argument("--database-url", default="postgres://127.0.0.1:5432/syncroot_bench_webhooks")
    parser.add_argument("--redis-db", type=int, default=11, help="Redis database number the bench may use")
    parser.add_argument("--keep-database", action="store_true", help="keep the bench database afterwards")
    parser.add_argument("--stages", type=int, default=30, help="deliveries timed stage by stage in-process")
    args = parser.parse_args(argv)

    run = secrets.randbelow(900_000_000) + 100_000_000  # subscription id: keeps this run's event ids apart
    ids = itertools.count(1)
    measured = [(run, next(ids) * 1_000) for _ in range(args.deliveries)]
    warmup = [(run, next(ids) * 1_000) for _ in range(args.warmup)]
    broker_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    broker = redis.Redis.from_url(broker_url)
    queued_before = broker.llen(QUEUE)

    with (
        tempfile.TemporaryDirectory(prefix="webhook-bench-") as scratch,
        bench_database(args.database_url, keep=args.keep_database) as db_params,
        gunicorn(
            port=free_port(),
            workers=args.workers,
            threads=args.threads,
            env=app_env(database_url=args.database_url, broker_url=broker_url, base_url=""),
            log=Path(scratch) / "gunicorn.log",
        ) as base_url,
    ):
        url = base_url + PATH
        run_phase(Phase("warmup"), url=url, jobs=warmup, clients=args.clients, events=args.events)
        ingest = Phase("ingest")
        run_phase(ingest, url=url, jobs=measured, clients=args.clients, events=args.events)
        redeliver = Phase("redeliver")
        run_phase(redeliver, url=url, jobs=measured[: args.redeliveries], clients=args.clients, events=args.events)

        stages = stage_breakdown(
            env=app_env(database_url=args.database_url, broker_url=broker_url, base_url="http://bench.invalid"),
            deliveries=args.stages,
            events=args.events,
            subscription_id=run + 1,
        )

        with psycopg2.connect(**db_params) as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM webhooks_webhookevent "
                "WHERE provider = 'hubspot' AND event_id LIKE %s",
                [f"{run}:%"],
            )
            rows, distinct = cursor.fetchone()
            if args.keep_database:  # a kept database is kept without this run's rows
                cursor.execute(
                    "DELETE FROM webhooks_webhookevent WHERE provider = 'hubspot' AND event_id LIKE %s", [f"{run}:%"]
                )
        enqueued = broker.llen(QUEUE) - queued_before
    # Nothing consumes this bench's queue: remove it and its bindings from the bench's Redis database.
    leftovers = list(broker.scan_iter(match=f"*{QUEUE}*"))
    if leftovers:
        broker.delete(*leftovers)
    broker.close()

    expected = (args.warmup + args.deliveries) * args.events
    result = {
        "bench": "webhook_ingest",
        "setup": {
            "deliveries": args.deliveries,
            "events_per_delivery": args.events,
            "body_bytes": len(delivery(url=url, subscription_id=run, first_event_id=1, events=args.events)[0]),
            "clients": args.clients,
            "gunicorn_workers": args.workers,
            "gunicorn_threads": args.threads,
            "cpus": os.cpu_count(),
        },
        "ingest": ingest.summary(),
        "redeliver": redeliver.summary(),
        "stages_ms": stages,
        "inbox": {"rows": rows, "distinct_event_ids": distinct, "expected": expected, "ok": rows == expected},
        # One task per delivery that stored events, the stage breakdown's included; a redelivery
        # stores nothing and enqueues nothing.
        "enqueued": enqueued,
    }
    print_table(result)
    print(json.dumps(result))
    return result


def print_table(result: dict[str, Any]) -> None:
    setup = result["setup"]
    print(
        f"\nPOST /webhooks/hubspot: {setup['deliveries']} signed deliveries x {setup['events_per_delivery']} events "
        f"({setup['body_bytes'] / 1024:.0f} KB), {setup['clients']} clients, gunicorn {setup['gunicorn_workers']}x"
        f"{setup['gunicorn_threads']} on {setup['cpus']} CPUs"
    )
    print(f"{'phase':<10} {'ok/sent':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'deliv/s':>8} "
          f"{'events/s':>9}")  # fmt: skip
    for name in ("ingest", "redeliver"):
        s = result[name]
        sent = f"{s['statuses'].get('200', 0)}/{s['deliveries']}"
        print(
            f"{name:<10} {sent:>9} {s['p50_ms']:>8} {s['p90_ms']:>8} {s['p99_ms']:>8} "
            f"{s['max_ms']:>8} {s['deliveries_per_s']:>8} {s['events_per_s']:>9}"
        )
    stages = result["stages_ms"]
    print(
        "in-process, per delivery (p50 / p90 ms): "
        + ", ".join(f"{k} {v['p50']} / {v['p90']}" for k, v in stages.items())
    )
    inbox = result["inbox"]
    print(
        f"inbox rows {inbox['rows']} (expected {inbox['expected']}, distinct {inbox['distinct_event_ids']}): "
        f"{'OK' if inbox['ok'] else 'MISMATCH'}; enqueued {result['enqueued']}\n"
    )


if __name__ == "__main__":
    outcome = main()
    sys.exit(0 if outcome["inbox"]["ok"] and set(outcome["ingest"]["statuses"]) == {"200"} else 1)
