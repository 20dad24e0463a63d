"""Outbound sync latency at idle: from the API write returning to the contact being visible in BOTH CRMs.

Run: ``.venv/bin/python -m bench.sync_latency [--contacts 100] [--pause 0.2] [--poll-ms 5]``.

Single writes, one at a time with a pause between (an idle system: the forwarder must not linger).
Visibility is read through each CRM's own API, as a client of the CRM would see it: HubSpot
``GET /crm/v3/objects/contacts/{email}?idProperty=email``, Salesforce SOQL by email, polled every
``--poll-ms``. The sandboxes' own rate limits are switched off so the polling cannot starve
SyncRoot (SyncRoot's limiter still runs at HubSpot's 100 per 10 s). Target: p50 <= 250 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import requests

from bench.stack import SANDBOX_TOKEN, Stack, add_settings_option, machine, percentile, report

TARGET_P50_MS = 250.0
UNLIMITED = {"rate_limit": None, "daily_quota": None}
SF_API = "/services/data/v59.0"


class CrmReader:
    """Reads contacts through the CRM APIs of both sandboxes with the sandbox token."""

    def __init__(self, stack: Stack) -> None:
        self.hubspot_url, self.salesforce_url = stack.hubspot_url, stack.salesforce_url
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {SANDBOX_TOKEN}"

    def hubspot_by_email(self, email: str) -> bool:
        url = f"{self.hubspot_url}/crm/v3/objects/contacts/{email}"
        return self.session.get(url, params={"idProperty": "email"}, timeout=5).status_code == 200

    def salesforce_by_email(self, email: str) -> bool:
        soql = f"SELECT Id FROM Contact WHERE Email = '{email}'"
        answer = self.session.get(f"{self.salesforce_url}{SF_API}/query", params={"q": soql}, timeout=5)
        return answer.status_code == 200 and answer.json().get("totalSize", 0) > 0

    def hubspot_property(self, record_id: str, name: str) -> str | None:
        url = f"{self.hubspot_url}/crm/v3/objects/contacts/{record_id}"
        answer = self.session.get(url, params={"properties": name}, timeout=5)
        return answer.json().get("properties", {}).get(name) if answer.status_code == 200 else None

    def salesforce_field(self, record_id: str, name: str) -> str | None:
        url = f"{self.salesforce_url}{SF_API}/sobjects/Contact/{record_id}"
        answer = self.session.get(url, params={"fields": name}, timeout=5)
        return answer.json().get(name) if answer.status_code == 200 else None


def wait_visible(checks: dict[str, Any], *, since: float, poll_s: float, timeout: float) -> dict[str, float | None]:
    """Poll each named check until it is true; seconds from `since` until each first was (None: never)."""
    seen: dict[str, float | None] = dict.fromkeys(checks)
    deadline = time.perf_counter() + timeout
    while any(value is None for value in seen.values()) and time.perf_counter() < deadline:
        for name, check in checks.items():
            if seen[name] is None and check():
                seen[name] = time.perf_counter() - since
        time.sleep(poll_s)
    return seen


def summary(values: list[float]) -> dict[str, float | None]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": _r(percentile(ms, 50)),
        "p90_ms": _r(percentile(ms, 90)),
        "p99_ms": _r(percentile(ms, 99)),
        "max_ms": _r(max(ms) if ms else None),
    }


def _r(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = dict(args.set)
    config = {"hubspot_config": UNLIMITED, "salesforce_config": UNLIMITED}
    with Stack(gunicorn_workers=args.gunicorn_workers, env=env, **config) as stack:
        reader, session, run_id = CrmReader(stack), stack.new_session(pool=2), uuid.uuid4().hex[:8]
        api, both, per_crm, missed = [], [], {"hubspot": [], "salesforce": []}, 0
        for index in range(-args.warmup, args.contacts):  # negative: warm-up, not measured
            email = f"lat-{run_id}-{index + args.warmup}@bench.example.com"
            began = time.perf_counter()
            answer = session.post(
                f"{stack.api_url}/contacts", json={"email": email, "first_name": "Lat", "last_name": str(index)},
                timeout=30,
            )  # fmt: skip
            returned = time.perf_counter()
            if answer.status_code != 201:
                raise RuntimeError(f"POST /contacts answered {answer.status_code}: {answer.text[:300]}")
            checks = {
                "hubspot": lambda email=email: reader.hubspot_by_email(email),
                "salesforce": lambda email=email: reader.salesforce_by_email(email),
            }
            seen = wait_visible(checks, since=returned, poll_s=args.poll_ms / 1000, timeout=args.timeout)
            if index >= 0:
                api.append(returned - began)
                if None in seen.values():
                    missed += 1
                else:
                    both.append(max(seen.values()))
                    for name, value in seen.items():
                        per_crm[name].append(value)
            time.sleep(args.pause)
        result = {
            "bench": "sync_latency",
            "machine": machine(),
            "config": {
                "contacts": args.contacts,
                "pause_s": args.pause,
                "poll_ms": args.poll_ms,
                "gunicorn_workers": args.gunicorn_workers,
                "env": env,
                "sandbox_limits": "off (polling)",
            },  # fmt: skip
            "visible_in_both": summary(both),
            "hubspot": summary(per_crm["hubspot"]),
            "salesforce": summary(per_crm["salesforce"]),
            "api_write": summary(api),
            "not_visible_within_timeout": missed,
            "links": stack.link_counts(),
            "target_p50_ms": TARGET_P50_MS,
        }
        p50 = result["visible_in_both"]["p50_ms"]
        result["met"] = p50 is not None and p50 <= TARGET_P50_MS and missed == 0
        return result


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, load {m['load_1m']}")
    print(f"{'latency (write returned ->)':<30} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, key in (("visible in both CRMs", "visible_in_both"), ("visible in HubSpot", "hubspot"),
                       ("visible in Salesforce", "salesforce"), ("API write itself", "api_write")):  # fmt: skip
        row = result[key]
        print(f"{label:<30} {row['n']:>5} {row['p50_ms']!s:>8} {row['p90_ms']!s:>8} {row['p99_ms']!s:>8} "
              f"{row['max_ms']!s:>8}")  # fmt: skip
    print(f"target p50 <= {TARGET_P50_MS} ms: {'met' if result['met'] else 'MISSED'}; "
          f"not visible within timeout: {result['not_visible_within_timeout']}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured writes first (default 5)")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between writes (default 0.2)")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="CRM polling interval (default 5)")
    parser.add_argument("--timeout", type=float, default=15.0, help="per contact (default 15 s)")
    parser.add_argument("--gunicorn-workers", type=int, default=3)
    add_settings_option(parser)
    args = parser.parse_args(argv)
    return report(run(args), print_table)


if __name__ == "__main__":
    sys.exit(main())
