"""Inbound propagation: from a person's edit in one CRM to the change being visible in the OTHER CRM.

Run: ``.venv/bin/python -m bench.propagation [--edits 50] [--contacts 20] [--pause 0.3]``.

Contacts are created through the API and synced to both sandboxes first. Then, in each direction
(HubSpot -> Salesforce, Salesforce -> HubSpot), a first name is changed through the sandbox's
``/_sandbox/edit`` (as in the CRM's UI: it fires the CRM's webhook to /webhooks/<provider>) and
the other CRM is polled through its own API until it shows the new value. Edits go round-robin
over the contacts so no contact is edited while its previous change is still settling. Also
counted: writes SyncRoot sent back to the CRM the edit came from (an echo loop would show here).
Target: p50 <= 1 s in each direction.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import uuid
from typing import Any

from bench.stack import Stack, add_settings_option, machine, report
from bench.sync_latency import UNLIMITED, CrmReader, summary, wait_visible

TARGET_P50_MS = 1000.0
WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")


def crm_writes(stats: dict[str, Any]) -> int:
    """API writes a sandbox answered (OAuth token calls and reads excluded)."""
    total = 0
    for endpoint, statuses in stats["requests"].items():
        method, _, path = endpoint.partition(" ")
        if method in WRITE_METHODS and "oauth" not in path and not path.endswith(("/query", "/search")):
            total += sum(statuses.values())
    return total


def external_ids(stack: Stack) -> list[tuple[str, str]]:
    """(HubSpot id, Salesforce id) of every contact synced to both."""
    with contextlib.closing(stack.db()) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT h.external_id, s.external_id FROM providers_providerlink h"
            " JOIN providers_providerlink s ON s.contact_id = h.contact_id AND s.provider = 'salesforce'"
            " WHERE h.provider = 'hubspot' AND h.status = 'synced' AND s.status = 'synced'"
            " ORDER BY h.contact_id"
        )
        return [(str(h), str(s)) for h, s in cursor.fetchall()]


def create_synced(stack: Stack, *, count: int, timeout: float) -> list[tuple[str, str]]:
    session, run_id = stack.new_session(pool=2), uuid.uuid4().hex[:8]
    for index in range(count):
        body = {"email": f"prop-{run_id}-{index}@bench.example.com", "first_name": "Prop", "last_name": str(index)}
        answer = session.post(f"{stack.api_url}/contacts", json=body, timeout=30)
        answer.raise_for_status()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = external_ids(stack)
        if len(ids) >= count:
            return ids
        time.sleep(0.2)
    raise RuntimeError(f"only {len(external_ids(stack))} of {count} contacts reached both CRMs in {timeout}s")


def measure(
    stack: Stack, reader: CrmReader, ids: list[tuple[str, str]], *, source: str, edits: int, args: argparse.Namespace
) -> dict[str, Any]:
    """`edits` edits in `source`, each timed until the other CRM shows it."""
    origin = stack.hubspot if source == "hubspot" else stack.salesforce
    writes_before = crm_writes(origin.stats())
    delays, missed, tag = [], 0, uuid.uuid4().hex[:6]
    for index in range(-args.warmup, edits):
        hs_id, sf_id = ids[index % len(ids)]
        value = f"P{tag}{index + args.warmup}"
        began = time.perf_counter()
        if source == "hubspot":
            stack.hubspot.edit(hs_id, {"firstname": value})
            check = lambda sf_id=sf_id, value=value: reader.salesforce_field(sf_id, "FirstName") == value  # noqa: E731
        else:
            stack.salesforce.edit(sf_id, {"FirstName": value})
            check = lambda hs_id=hs_id, value=value: reader.hubspot_property(hs_id, "firstname") == value  # noqa: E731
        seen = wait_visible({"other": check}, since=began, poll_s=args.poll_ms / 1000, timeout=args.timeout)
        if index >= 0:
            if seen["other"] is None:
                missed += 1
            else:
                delays.append(seen["other"])
        time.sleep(args.pause)
    time.sleep(2.0)  # let late echoes arrive before counting writes back to the origin
    return {
        **summary(delays),
        "not_visible_within_timeout": missed,
        "writes_back_to_origin": crm_writes(origin.stats()) - writes_before,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = dict(args.set)
    config = {"hubspot_config": UNLIMITED, "salesforce_config": UNLIMITED}
    with Stack(gunicorn_workers=args.gunicorn_workers, env=env, **config) as stack:
        ids = create_synced(stack, count=args.contacts, timeout=60)
        reader = CrmReader(stack)
        directions = {
            "hubspot_to_salesforce": measure(stack, reader, ids, source="hubspot", edits=args.edits, args=args),
            "salesforce_to_hubspot": measure(stack, reader, ids, source="salesforce", edits=args.edits, args=args),
        }
        with contextlib.closing(stack.db()) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT provider, status, count(*) FROM webhooks_webhookevent GROUP BY 1, 2 ORDER BY 1, 2")
            inbox = [{"provider": p, "status": s, "count": n} for p, s, n in cursor.fetchall()]
        result = {
            "bench": "propagation",
            "machine": machine(),
            "config": {
                "edits": args.edits,
                "contacts": args.contacts,
                "pause_s": args.pause,
                "poll_ms": args.poll_ms,
                "gunicorn_workers": args.gunicorn_workers,
                "env": env,
            },
            **directions,
            "inbox": inbox,
            "target_p50_ms": TARGET_P50_MS,
        }
        result["met"] = all(
            d["p50_ms"] is not None and d["p50_ms"] <= TARGET_P50_MS and not d["not_visible_within_timeout"]
            for d in directions.values()
        )
        return result


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, load {m['load_1m']}")
    print(f"{'edit -> visible in the other CRM':<34} {'n':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'missed':>7} {'echo writes':>12}")  # fmt: skip
    for key in ("hubspot_to_salesforce", "salesforce_to_hubspot"):
        row = result[key]
        print(f"{key.replace('_', ' '):<34} {row['n']:>4} {row['p50_ms']!s:>8} {row['p90_ms']!s:>8} "
              f"{row['p99_ms']!s:>8} {row['max_ms']!s:>8} {row['not_visible_within_timeout']:>7} "
              f"{row['writes_back_to_origin']:>12}")  # fmt: skip
    print(f"target p50 <= {TARGET_P50_MS} ms each way: {'met' if result['met'] else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=50, help="measured edits per direction (default 50)")
    parser.add_argument("--contacts", type=int, default=20, help="contacts edited round-robin (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured edits first (default 3)")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between edits (default 0.3)")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="CRM polling interval (default 5)")
    parser.add_argument("--timeout", type=float, default=20.0, help="per edit (default 20 s)")
    parser.add_argument("--gunicorn-workers", type=int, default=3)
    add_settings_option(parser)
    args = parser.parse_args(argv)
    return report(run(args), print_table)


if __name__ == "__main__":
    sys.exit(main())
