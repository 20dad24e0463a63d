"""Every benchmark in bench/, one after the other: `make bench` (``.venv/bin/python -m bench.all``).

Each module runs as its own process (its output streams through); every JSON line it prints is
appended to var/bench/results.jsonl as ``{"module", "at", "machine", "result"}``; a summary table
ends the run. ``--quick`` runs smaller sizes (a smoke run of the whole set in a few minutes).
Missed targets do not fail the run (benchmarks are not tests); a module that crashes does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench.stack import LOG_DIR, PYTHON, REPO, machine

# Order: the sandboxes alone, the API's inbound ingest, then the whole stack.
MODULES = (
    "sandbox_bench", "api_write", "webhook_ingest", "sync_latency", "propagation", "sync_throughput", "worker_rss",
    "field_backfill", "budget", "bulk_import", "write_coalescing", "scale", "health_page",
)  # fmt: skip
QUICK_ARGS = {
    "sandbox_bench": ["--seconds", "1"],
    "webhook_ingest": ["--deliveries", "60", "--redeliveries", "10"],
    "sync_latency": ["--contacts", "30"],
    "propagation": ["--edits", "15"],
    "sync_throughput": ["--contacts", "1000"],
    "api_write": ["--rounds", "2", "--seconds", "3", "--warmup", "1"],
    "worker_rss": ["--events", "20000", "--every", "5000"],
    "field_backfill": ["--contacts", "1000", "--edits", "10"],
    "budget": ["--contacts", "1000", "--edits", "30"],
    "bulk_import": ["--contacts", "3000"],
    "scale": ["--sizes", "10000", "100000", "--samples", "30"],
    "write_coalescing": ["--burst", "200"],
    "health_page": ["--contacts", "20000", "--dead-letters", "2000", "--loads", "3"],
}


# Modules run a second time with other arguments (a figure of its own in the summary).
EXTRA_RUNS = {"sync_throughput": [["--forwarders", "4"]], "api_write": [["--minimal-links", "product"]]}


def available() -> list[str]:
    return [name for name in MODULES if (REPO / "bench" / f"{name}.py").exists()]


def run_module(name: str, extra: list[str]) -> tuple[int, float, list[dict[str, Any]]]:
    """Run bench.<name>, echoing its output; exit code, seconds, JSON objects it printed."""
    began = time.monotonic()
    process = subprocess.Popen(
        [PYTHON, "-m", f"bench.{name}", *extra], cwd=REPO, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    results = []
    assert process.stdout is not None
    try:
        for line in process.stdout:
            stripped = line.strip()
            if stripped.startswith("{"):
                try:
                    parsed = json.loads(stripped)
                except ValueError:
                    parsed = None
                if isinstance(parsed, dict):
                    results.append(parsed)
                    line = f"{stripped[:200]}{' …' if len(stripped) > 200 else ''}\n"  # the file has it all
            sys.stdout.write(line)
            sys.stdout.flush()
        code = process.wait()
    except KeyboardInterrupt:
        process.wait(timeout=60)  # the module got the Ctrl-C too and tears its stack down
        raise
    return code, time.monotonic() - began, results


def headline(name: str, result: dict[str, Any]) -> str:
    """The figures that matter for each bench, as one short string."""

    def get(*path: str) -> Any:
        value: Any = result
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    if name == "sync_throughput":
        return (
            f"end-to-end {get('end_to_end_s')} s (<=20), HubSpot {get('hubspot', 'requests_per_contact')} req/contact "
            f"(<=0.011), API {get('api', 'writes_per_s')} contacts/s "
            f"({get('config', 'contacts_per_request')} per request), lost {get('hubspot', 'lost')}/"
            f"{get('salesforce', 'lost')}, dup {get('hubspot', 'duplicated')}/{get('salesforce', 'duplicated')}, "
            f"HubSpot batch mean {get('batches', 'hubspot', 'mean')} (>= 95 with --forwarders 4), "
            f"{get('config', 'forwarder_processes')} forwarder(s)"
        )
    if name == "sync_latency":
        both = get("visible_in_both") or {}
        return f"write->both CRMs p50 {both.get('p50_ms')} ms (<=250), p99 {both.get('p99_ms')} ms"
    if name == "propagation":
        parts = []
        for key, label in (("hubspot_to_salesforce", "HS->SF"), ("salesforce_to_hubspot", "SF->HS")):
            parts.append(f"{label} p50 {get(key, 'p50_ms')} / p99 {get(key, 'p99_ms')} ms")
        return ", ".join(parts) + " (p50 <=1000)"
    if name == "webhook_ingest":
        return (
            f"ack p50 {get('ingest', 'p50_ms')} / p99 {get('ingest', 'p99_ms')} ms, "
            f"{get('ingest', 'events_per_s')} events/s, inbox ok {get('inbox', 'ok')}"
        )
    if name == "field_backfill":
        calls = get("calls") or {}
        parts = [f"{crm} {row.get('reads')} reads + {row.get('writes')} writes (floor {row.get('floor_per_direction')}"
                 f"+3 each)" for crm, row in calls.items()]  # fmt: skip
        return (
            f"{get('config', 'contacts')} contacts in {get('backfill_s')} s: {', '.join(parts)}; live edits during it "
            f"p50 {get('with_live_edits', 'live_edit', 'p50_ms')} ms (<=1000)"
        )
    if name == "budget":
        calls, live = get("calls") or {}, get("live_edits") or {}
        goal_row = live.get(live.get("goal_on") or "all") or {}
        share = calls.get("share")
        return (
            f"{get('backfill', 'contacts')}/{get('config', 'contacts')} contacts to a new HubSpot portal in "
            f"{get('backfill', 'seconds')} s (first after {get('backfill', 'first_in_portal_s')} s): "
            f"{calls.get('crm')} CRM calls, {calls.get('rate_limited')} 429s = "
            f"{'?' if share is None else round(100 * share, 2)} % (< 1 %); live edits "
            f"({live.get('goal_on')}, n={goal_row.get('n')}) p50 {goal_row.get('p50_ms')} ms (<= 1000), "
            f"p95 {goal_row.get('p95_ms')} ms"
        )
    if name == "api_write":
        return (
            f"POST /contacts / minimal endpoint throughput {get('ratio')} (>= {get('target_ratio')}), "
            f"{get('full_req_per_s')} vs {get('minimal_req_per_s')} req/s; p99 {get('full_p99_ms')} vs "
            f"{get('minimal_p99_ms')} ms = {get('p99_ratio')} (<= {get('target_p99_ratio')}); "
            f"minimal endpoint's links: {get('config', 'minimal_links')}; load {get('machine', 'load_1m')}"
        )
    if name == "write_coalescing":
        return (
            f"with {get('config', 'cpu_hog_processes')} CPU hogs (load {get('load_1m')}): {get('burst', 'created')} "
            f"single POSTs {get('burst', 'hubspot_calls_per_contact')} HubSpot calls/contact (<= 0.03); "
            f"{get('patches', 'patches')} PATCHes in {get('patches', 'sent_in_s')} s: writes "
            f"{get('patches', 'writes')} (<= 5 per CRM), final value in both {get('patches', 'final_value_in_both')}"
        )
    if name == "scale":
        ratios = get("ratios") or {}
        over = [f"{k} {max(v['p50_ratio'], v['p99_ratio'])}" for k, v in ratios.items()
                if max(v["p50_ratio"], v["p99_ratio"]) > get("goal_ratio")]  # fmt: skip
        sizes = get("config", "sizes") or []
        return (
            f"{sizes[-1] if sizes else '?'} vs {sizes[0] if sizes else '?'} contacts: worst p50/p99 ratio "
            f"{get('worst_ratio')} (<= {get('goal_ratio')}) over {len(ratios)} requests; over the goal: "
            f"{', '.join(over) or 'none'}; load {get('load_1m')}"
        )
    if name == "bulk_import":
        parts = [
            f"{crm} {row['calls']} calls in {row['seconds']} s, floor {row['floor_s']} s: ratio {row['ratio']} "
            f"(<= {get('goal_ratio')}), RSS start/end/peak {row['memory']['start_mib']}/{row['memory']['end_mib']}/"
            f"{row['memory']['peak_mib']} MiB"
            for crm, row in (get("summary") or {}).items()
        ]  # fmt: skip
        return "; ".join(parts) or "no summary"
    if name == "sandbox_bench":
        rows = [row for rows in (result.get("results") or {}).values() for row in rows]
        return ", ".join(f"{row['workload']} {row['records_per_s']} rec/s" for row in rows[:3])
    numbers = {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return ", ".join(f"{k} {v}" for k, v in list(numbers.items())[:5]) or json.dumps(result)[:150]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=MODULES, help="run only these")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run of every bench")
    args = parser.parse_args(argv)
    names = [name for name in available() if not args.only or name in args.only]
    host = machine()
    print(f"machine: {host['cores']} cores, {host['cpu']}, Python {host['python']}, load {host['load_1m']}")
    print(f"benches: {', '.join(names)}\n", flush=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    out = LOG_DIR / "results.jsonl"
    rows = []
    for name in names:
        base = QUICK_ARGS.get(name, []) if args.quick else []
        for extra in [[], *EXTRA_RUNS.get(name, [])]:
            print(f"=== bench.{name} {' '.join(extra)}".rstrip(), flush=True)
            code, seconds, results = run_module(name, base + extra)
            at = datetime.now(UTC).isoformat(timespec="seconds")
            with out.open("a") as sink:
                for result in results:
                    sink.write(json.dumps({"module": name, "at": at, "machine": host, "result": result}) + "\n")
            main_result = next((r for r in reversed(results) if r.get("bench") == name), results[-1] if results else {})
            label = f"{name} {' '.join(extra)}".rstrip()
            rows.append((label, code, seconds, headline(name, main_result) if main_result else "no JSON result"))
            print(flush=True)
    print(f"{'bench':<31} {'exit':>4} {'secs':>6}  headline")
    for name, code, seconds, text in rows:
        print(f"{name:<31} {code:>4} {seconds:>6.0f}  {text}")
    print(f"\nall JSON results appended to {out.relative_to(REPO)}")
    return 1 if any(code for _, code, _, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
