"""API write cost: `POST /contacts` next to a minimal DRF endpoint doing only the same insert and enqueue.

Run: ``.venv/bin/python -m bench.api_write [--clients 8] [--rounds 6] [--seconds 8] [--profile 200]``.

Both endpoints are served by the same gunicorn (deploy/gunicorn.conf.py, settings module
bench.minimal_app.settings = the product's settings plus one URL), so the only difference is the
view. The minimal one (bench/minimal_app/views.py) inserts the contact and one ProviderLink per
connected CRM in one transaction and calls the same after-commit enqueue; `POST /contacts` adds
authentication, the per-token throttle, validation, the duplicate-email check and the full response
(sync state, ETag, Location). Both CRMs are connected (sandboxes running), so links and enqueues are
real. By default no Celery worker runs (they would compete for the same cores): the figures are the
API's alone; ``--with-workers`` runs them too (forwarder, dlq, webhooks; the CRM writes and their
webhook echoes then load the machine as well).

Client threads (one keep-alive session each) warm both endpoints up, then alternate rounds of a
fixed duration, A/B/A/B…, so drift on a shared machine hits both alike. Reported per endpoint:
req/s, p50/p99 latency, errors, gunicorn CPU per request, and the headline ratio full / minimal
throughput (target >= 0.95), and p99 full / minimal (target <= 1.2). When the ratio misses the
target, bench/minimal_app/profile.py then
profiles N writes of each endpoint in-process (Django's test client: SQL and Redis calls per
request, CPU per layer by taking the layers away one by one, cProfile) and prints where the full
endpoint's extra time goes.
Benchmarks do not assert: a missed target is reported, not raised.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any

from bench.stack import PYTHON, REPO, Stack, add_settings_option, machine, percentile, report

TARGET_RATIO = 0.95
TARGET_P99_RATIO = 1.2
SETTINGS_MODULE = "bench.minimal_app.settings"
ENDPOINTS = {"full": "/contacts", "minimal": "/bench/minimal-contacts"}


def contact_body(tag: str, index: int) -> dict[str, str]:
    return {
        "email": f"aw-{tag}-{index}@bench.example.com",
        "first_name": f"First{index}",
        "last_name": f"Last{index}",
        "phone": f"+1555{index % 10_000_000:07d}",
        "company": "Bench Inc",
        "job_title": "Engineer",
    }


def load_round(stack: Stack, sessions: list[Any], *, path: str, seconds: float, tag: str) -> dict[str, Any]:
    """Every client thread POSTs to `path` back to back for `seconds`; latencies and statuses."""
    url = f"{stack.api_url}{path}"
    latencies: list[list[float]] = [[] for _ in sessions]
    statuses: list[Counter] = [Counter() for _ in sessions]
    barrier = threading.Barrier(len(sessions) + 1)
    stop_at: list[float] = []

    def client(slot: int) -> None:
        session, mine, seen = sessions[slot], latencies[slot], statuses[slot]
        barrier.wait()
        index = 0
        while time.perf_counter() < stop_at[0]:
            began = time.perf_counter()
            try:
                status = session.post(url, json=contact_body(f"{tag}-{slot}", index), timeout=30).status_code
            except OSError as exc:  # requests' connection errors derive from OSError
                status = type(exc).__name__
            mine.append(time.perf_counter() - began)
            seen[status] += 1
            index += 1

    threads = [threading.Thread(target=client, args=(slot,), daemon=True) for slot in range(len(sessions))]
    for thread in threads:
        thread.start()
    cpu_before = stack.cpu_seconds().get("web", 0.0)
    started = time.perf_counter()
    stop_at.append(started + seconds)
    barrier.wait()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    elapsed = time.perf_counter() - started  # until the last in-flight request returned
    cpu = stack.cpu_seconds().get("web", 0.0) - cpu_before
    status_counts: Counter = sum(statuses, Counter())
    return {
        "elapsed": elapsed,
        "latencies": [x for lat in latencies for x in lat],
        "statuses": status_counts,
        "web_cpu_s": cpu,
    }


def summarise(rounds: list[dict[str, Any]], *, success: int) -> dict[str, Any]:
    latencies = [x for r in rounds for x in r["latencies"]]
    statuses: Counter = sum((r["statuses"] for r in rounds), Counter())
    elapsed = sum(r["elapsed"] for r in rounds)
    ok = statuses.get(success, 0)
    cpu = sum(r["web_cpu_s"] for r in rounds)
    return {
        "requests": sum(statuses.values()),
        "ok": ok,
        "errors": sum(statuses.values()) - ok,
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": round(elapsed, 2),
        "req_per_s": round(ok / elapsed, 1) if elapsed else None,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "web_cpu_ms_per_request": round(cpu / ok * 1000, 3) if ok else None,
        "rounds_req_per_s": [round(r["statuses"].get(success, 0) / r["elapsed"], 1) for r in rounds],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
        "API_THROTTLE_RATE": args.api_throttle,
        "BENCH_MINIMAL_LINKS": args.minimal_links,
    }
    env.update(dict(args.set))
    workers = ("forwarder", "dlq", "webhooks") if args.with_workers else ()
    stack = Stack(gunicorn_workers=args.gunicorn_workers, env=env, workers=workers)
    with stack:
        run_id = uuid.uuid4().hex[:8]
        sessions = [stack.new_session(pool=1) for _ in range(args.clients)]
        # Warm-up: every client connection open, every gunicorn thread with its database connection.
        for name, path in ENDPOINTS.items():
            load_round(stack, sessions, path=path, seconds=args.warmup, tag=f"{run_id}-warm-{name}")
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in ENDPOINTS}
        order = list(ENDPOINTS)
        for number in range(args.rounds):
            name = order[number % 2]  # A/B/A/B…: drift of a shared machine hits both alike
            result = load_round(stack, sessions, path=ENDPOINTS[name], seconds=args.seconds, tag=f"{run_id}-{number}")
            rounds[name].append(result)
            _say(f"round {number + 1}/{args.rounds} {name:<7} {_rps(result):.1f} req/s")
        full, minimal = summarise(rounds["full"], success=201), summarise(rounds["minimal"], success=201)
        ratio = (
            round(full["req_per_s"] / minimal["req_per_s"], 3) if full["req_per_s"] and minimal["req_per_s"] else None
        )
        pairs = [
            round(_rps(f) / _rps(m), 3) for f, m in zip(rounds["full"], rounds["minimal"], strict=False) if _rps(m)
        ]
        cpu_ratio = (
            round(full["web_cpu_ms_per_request"] / minimal["web_cpu_ms_per_request"], 3)
            if full["web_cpu_ms_per_request"] and minimal["web_cpu_ms_per_request"]
            else None
        )
        result = {
            "bench": "api_write",
            # The headline figures first (bench.all shows the first numeric ones).
            "ratio": ratio,
            "full_req_per_s": full["req_per_s"],
            "minimal_req_per_s": minimal["req_per_s"],
            "full_p99_ms": full["p99_ms"],
            "minimal_p99_ms": minimal["p99_ms"],
            "p99_ratio": round(full["p99_ms"] / minimal["p99_ms"], 3) if full["p99_ms"] and minimal["p99_ms"] else None,
            "met": bool(ratio and ratio >= TARGET_RATIO),
            "target_ratio": TARGET_RATIO,
            "target_p99_ratio": TARGET_P99_RATIO,
            "ratio_per_pair": pairs,
            "web_cpu_ratio": cpu_ratio,  # gunicorn CPU per request, full / minimal
            "full": full,
            "minimal": minimal,
            "machine": machine(),
            "config": {
                "clients": args.clients,
                "rounds": args.rounds,
                "round_seconds": args.seconds,
                "warmup_seconds": args.warmup,
                "minimal_links": args.minimal_links,
                "gunicorn_workers": args.gunicorn_workers,
                "gunicorn_threads": int(env.get("GUNICORN_THREADS", "2")),  # deploy/gunicorn.conf.py default
                "celery_workers": list(workers),
                "env": env,
            },
        }
        if args.profile and (args.always_profile or not result["met"]):
            _say(f"profiling {args.profile} writes per endpoint in-process")
            result["profile"] = profile(stack, requests=args.profile, top=args.profile_top)
        return result


# --- In-process profile (Django's test client, cProfile) ----------------------------------------------
def profile(stack: Stack, *, requests: int, top: int) -> dict[str, Any]:
    """Run the profiling child with the stack's environment (same database, Redis, settings)."""
    port = int(stack.api_url.rsplit(":", 1)[1])
    env = stack.syncroot_env(api_port=port)
    done = subprocess.run(
        [PYTHON, "-m", "bench.minimal_app.profile", "--requests", str(requests), "--top", str(top),
         "--token", stack.token],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode:
        return {"error": done.stderr[-3000:]}
    sys.stderr.write(done.stderr)  # the readable cProfile listing
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- Output ---------------------------------------------------------------------------------------
def print_table(result: dict[str, Any]) -> None:
    m, c = result["machine"], result["config"]
    print(f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, load {m['load_1m']}")
    print(
        f"{c['clients']} client threads, gunicorn {c['gunicorn_workers']} workers x {c['gunicorn_threads']} threads, "
        f"{c['rounds']} alternating rounds of {c['round_seconds']} s, Celery workers: {c['celery_workers'] or 'none'}"
    )
    print(
        f"{'endpoint':<9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'web cpu ms/req':>15}  rounds req/s"
    )
    for name in ENDPOINTS:
        row = result[name]
        print(
            f"{name:<9} {row['req_per_s']!s:>8} {row['p50_ms']!s:>8} {row['p99_ms']!s:>8} {row['errors']:>7} "
            f"{row['web_cpu_ms_per_request']!s:>15}  {row['rounds_req_per_s']}"
        )
    print(
        f"ratio full/minimal throughput {result['ratio']} "
        f"(target >= {TARGET_RATIO}; per A/B pair {result['ratio_per_pair']})"
    )
    print(f"full costs {result['web_cpu_ratio']}x the minimal endpoint's gunicorn CPU per request")
    prof = result.get("profile")
    if prof and "timing" in prof:
        print(f"in-process, Django test client, {prof['requests']} writes each:")
        for name, row in prof["timing"].items():
            print(f"  {name:<8} {row['ms_per_request']} ms/request wall; per request {row['per_request']}")
        abl = prof["ablation"]
        print(f"  CPU ms per request: full {abl['full_cpu_ms']}, minimal {abl['minimal_cpu_ms']}; "
              "the full endpoint's layers, taken away one after the other:")  # fmt: skip
        for label, value in abl["layers_cpu_ms"].items():
            print(f"    {label:<40} {value!s:>8}")
        print(f"    {'what is left (DRF view, insert, enqueue)':<40} {abl['left_cpu_ms']!s:>8}")
        print("  cProfile, full endpoint, cumulative ms per request (profiler overhead included):")
        for label, value in prof["stages_ms"].items():
            print(f"    {label:<48} {value:>8}")
    elif prof:
        print(f"profile failed: {prof.get('error')}")


def _rps(round_: dict[str, Any]) -> float:
    return round_["statuses"].get(201, 0) / round_["elapsed"] if round_["elapsed"] else 0.0


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 2) if seconds is not None else None


def _say(message: str) -> None:
    print(f"[api_write] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds, both endpoints (default 6)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per round (default 8)")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per endpoint (default 3)")
    parser.add_argument("--gunicorn-workers", type=int, default=3)
    parser.add_argument("--with-workers", action="store_true", help="run the Celery workers too")
    parser.add_argument(
        "--api-throttle", default="1000000/min", help="API_THROTTLE_RATE (the default 6000/min would refuse the load)"
    )
    parser.add_argument(
        "--minimal-links",
        choices=["orm", "product"],
        default="orm",
        help="how the minimal endpoint inserts its links: the ORM's bulk_create (default) or the product's upsert",
    )
    add_settings_option(parser)
    parser.add_argument(
        "--profile",
        type=int,
        default=200,
        metavar="N",
        help="when the ratio misses the target, profile N writes (0: never)",
    )
    parser.add_argument("--always-profile", action="store_true", help="profile even when the target is met")
    parser.add_argument("--profile-top", type=int, default=30, help="cProfile lines printed (stderr)")
    args = parser.parse_args(argv)
    return report(run(args), print_table)


if __name__ == "__main__":
    sys.exit(main())
