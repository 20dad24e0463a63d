"""Throughput of the CRM sandboxes: single creates and batch writes per second.

Run: ``.venv/bin/python -m bench.sandbox_bench [--seconds 3] [--threads 4] [--mode subprocess|inprocess]``.
Each sandbox is started on a loopback ephemeral port with rate limits and daily
quotas off, then hammered by a few client threads (one pooled ``requests``
session each) for a bounded time per workload. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
UNLIMITED = {"rate_limit": None, "daily_quota": None, "latency_ms": 0, "error_rate": 0, "rate_limit_storm": 0}

# A request factory gets a unique integer and returns (method, path, json body, records written).
RequestFactory = Callable[[int], tuple[str, str, Any, int]]


@dataclass(frozen=True)
class Workload:
    name: str
    make: RequestFactory
    ok: frozenset[int]


def hubspot_workloads() -> list[Workload]:
    contacts = "/crm/v3/objects/contacts"

    def single(n: int) -> tuple[str, str, Any, int]:
        return "POST", contacts, {"properties": {"email": f"s{n}@bench.test", "firstname": "S", "lastname": str(n)}}, 1

    def batch(n: int) -> tuple[str, str, Any, int]:
        inputs = [{"properties": {"email": f"b{n}-{i}@bench.test", "lastname": str(i)}} for i in range(100)]
        return "POST", contacts + "/batch/create", {"inputs": inputs}, 100

    def upsert(n: int) -> tuple[str, str, Any, int]:
        # Calls 2k and 2k+1 send the same emails: one creates the records, the other updates them.
        inputs = [
            {"id": f"u{n // 2}-{i}@bench.test", "idProperty": "email", "properties": {"jobtitle": f"T{n}"}}
            for i in range(100)
        ]
        return "POST", contacts + "/batch/upsert", {"inputs": inputs}, 100

    return [
        Workload("single create", single, frozenset({201})),
        Workload("batch create x100", batch, frozenset({201})),
        Workload("batch upsert x100", upsert, frozenset({200})),
    ]


def salesforce_workloads() -> list[Workload]:
    base = "/services/data/v59.0"

    def single(n: int) -> tuple[str, str, Any, int]:
        return "POST", base + "/sobjects/Contact/", {"LastName": f"L{n}", "Email": f"s{n}@bench.test"}, 1

    def batch(n: int) -> tuple[str, str, Any, int]:
        records = [
            {"attributes": {"type": "Contact"}, "LastName": f"L{i}", "Email": f"b{n}-{i}@bench.test"}
            for i in range(200)
        ]
        return "POST", base + "/composite/sobjects", {"allOrNone": False, "records": records}, 200

    return [
        Workload("single create", single, frozenset({201})),
        Workload("collection create x200", batch, frozenset({200})),
    ]


PROVIDERS: dict[str, Callable[[], list[Workload]]] = {"hubspot": hubspot_workloads}
if importlib.util.find_spec("sandbox.salesforce") is not None:
    PROVIDERS["salesforce"] = salesforce_workloads


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time used so far by process ``pid`` (Linux), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def started(kind: str, mode: str) -> Iterator[tuple[str, int | None]]:
    """Base URL and process id (None in-process) of a running sandbox ``kind`` with limits off."""
    if mode == "inprocess":
        from sandbox.testing import running_sandbox

        with running_sandbox(kind, **UNLIMITED) as running:
            yield running.url, None
        return
    command = [sys.executable, "-m", "sandbox", kind, "--port", "0", "--rate-limit", "off", "--daily-quota", "0"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        if "listening on" not in line:
            raise RuntimeError(f"{kind} sandbox did not start: {line!r}")
        yield line.rsplit(" ", 1)[-1].strip(), process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_workload(url: str, workload: Workload, *, threads: int, seconds: float) -> dict[str, Any]:
    """Hammer ``url`` with ``workload`` from ``threads`` threads for ``seconds``."""
    counter = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    records = [0] * threads
    failures = [0] * threads
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": "Bearer sandbox-token"}

    def client(index: int) -> None:
        with requests.Session() as session:
            session.trust_env = False
            while time.perf_counter() < deadline:
                method, path, body, written = workload.make(next(counter))
                started_at = time.perf_counter()
                response = session.request(method, url + path, json=body, headers=headers, timeout=30)
                latencies[index].append(time.perf_counter() - started_at)
                if response.status_code in workload.ok:
                    records[index] += written
                else:
                    failures[index] += 1

    started_at = time.perf_counter()
    workers = [threading.Thread(target=client, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started_at
    all_latencies = sorted(value for per_thread in latencies for value in per_thread)
    count = len(all_latencies)
    return {
        "workload": workload.name,
        "requests": count,
        "failed": sum(failures),
        "seconds": round(elapsed, 3),
        "requests_per_s": round(count / elapsed, 1),
        "records_per_s": round(sum(records) / elapsed, 1),
        "p50_ms": round(statistics.median(all_latencies) * 1000, 2) if count else None,
        "p99_ms": round(all_latencies[min(count - 1, int(count * 0.99))] * 1000, 2) if count else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each workload (default 3)")
    parser.add_argument("--threads", type=int, default=4, help="concurrent client threads (default 4)")
    parser.add_argument("--mode", choices=("subprocess", "inprocess"), default="subprocess")
    parser.add_argument("--only", choices=sorted(PROVIDERS), help="bench one sandbox")
    args = parser.parse_args(argv)

    results: dict[str, list[dict[str, Any]]] = {}
    for kind, workloads in PROVIDERS.items():
        if args.only and kind != args.only:
            continue
        with started(kind, args.mode) as (url, pid):
            for workload in workloads():
                # A short unmeasured warm-up (connections, imports, caches), then a clean store.
                run_workload(url, workload, threads=args.threads, seconds=min(0.3, args.seconds))
                requests.post(f"{url}/_sandbox/reset", json={}, timeout=10)
                cpu_before = cpu_seconds(pid)
                row = run_workload(url, workload, threads=args.threads, seconds=args.seconds)
                cpu_after = cpu_seconds(pid)
                if cpu_before is not None and cpu_after is not None and row["requests"]:
                    # Server CPU per request bounds what one core of sandbox can serve.
                    row["server_cpu_ms_per_request"] = round((cpu_after - cpu_before) * 1000 / row["requests"], 3)
                results.setdefault(kind, []).append(row)

    print(
        f"{'sandbox':<11} {'workload':<24} {'req/s':>9} {'records/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'failed':>7} {'srv cpu ms/req':>15}"
    )
    for kind, rows in results.items():
        for row in rows:
            print(
                f"{kind:<11} {row['workload']:<24} {row['requests_per_s']:>9} {row['records_per_s']:>10} "
                f"{row['p50_ms']:>8} {row['p99_ms']:>8} {row['failed']:>7} "
                f"{row.get('server_cpu_ms_per_request', '-'):>15}"
            )
    summary = {"mode": args.mode, "threads": args.threads, "seconds": args.seconds, "results": results}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
