"""Where `POST /contacts` spends what the minimal endpoint does not: run by bench.api_write.

``python -m bench.minimal_app.profile --requests N --token TOKEN`` in the environment of a bench
stack (same database, Redis and settings; bench.api_write starts it so). In-process, through the
whole middleware stack with Django's test client:

1. each endpoint N times: wall ms per request, SQL statements and Redis commands per request;
2. ablation: CPU ms per request of the full endpoint with its layers taken away one after the
   other (throttle, token lookup, duplicate check, sync state, response serializer, validation),
   each step's drop being that layer's cost; the minimal endpoint for reference. The layers are
   switched off by patching this process only: diagnostics, never a product setting;
3. the full endpoint under cProfile: a listing on stderr, cumulative ms of its known stages.

Prints one JSON object (the last stdout line).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import pstats
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

FULL, MINIMAL = "/contacts", "/bench/minimal-contacts"

# Functions of the full endpoint's path whose cumulative time says where it goes (ms per request).
STAGES = {
    "authentication (token lookup)": ("contacts/auth.py", "authenticate"),
    "throttle": ("contacts/auth.py", "allow_request"),
    "input validation": ("rest_framework/serializers.py", "is_valid"),
    "duplicate-email check": ("contacts/services.py", "_duplicate"),
    "contact_create (check + transaction + enqueue)": ("contacts/services.py", "contact_create"),
    "after-commit enqueue": ("providers/services.py", "enqueue_forward"),
    "response serializer": ("rest_framework/serializers.py", "data"),
    "sync state": ("providers/selectors.py", "contact_sync_status"),
    "rendering JSON": ("rest_framework/renderers.py", "render"),
    "view total (APIView.dispatch)": ("rest_framework/views.py", "dispatch"),
    "whole request (Django handler)": ("django/core/handlers/base.py", "get_response"),
}


class Writer:
    def __init__(self, token: str) -> None:
        from django.test import Client

        self.client = Client(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_HOST="127.0.0.1")
        self.tag = uuid.uuid4().hex[:8]
        self.numbers = itertools.count()

    def __call__(self, path: str) -> int:
        index = next(self.numbers)
        body = {"email": f"prof-{self.tag}-{index}@bench.example.com", "first_name": "Ada", "last_name": "Lovelace",
                "phone": "+15550000000", "company": "Bench Inc", "job_title": "Engineer"}  # fmt: skip
        return self.client.post(path, data=json.dumps(body), content_type="application/json").status_code


def counted(write: Writer, path: str, requests: int) -> dict[str, Any]:
    """Wall time, statuses, SQL statements and Redis commands per request."""
    import redis
    from django.db import connection

    counters: Counter = Counter()
    original = redis.Redis.execute_command

    def counting_execute(self, *args, **kwargs):
        counters[f"redis:{args[0]}"] += 1
        return original(self, *args, **kwargs)

    def counting_queries(execute, sql, params, many, context):
        counters[f"sql:{sql.split(None, 1)[0].upper()}"] += 1
        return execute(sql, params, many, context)

    redis.Redis.execute_command = counting_execute
    try:
        with connection.execute_wrapper(counting_queries):
            began = time.perf_counter()
            statuses = Counter(write(path) for _ in range(requests))
            elapsed = time.perf_counter() - began
    finally:
        redis.Redis.execute_command = original
    return {
        "ms_per_request": round(elapsed / requests * 1000, 3),
        "statuses": {str(k): v for k, v in statuses.items()},
        "per_request": {k: round(v / requests, 2) for k, v in sorted(counters.items())},
    }


def cpu_ms(write: Writer, path: str, requests: int, repeats: int = 5) -> float:
    """CPU ms per request of this process (best of `repeats`: least disturbed by the machine)."""
    best = float("inf")
    for _ in range(repeats):
        began = time.process_time()
        for _ in range(requests):
            write(path)
        best = min(best, (time.process_time() - began) / requests * 1000)
    return round(best, 3)


def ablation_steps(token_value: Any) -> list[tuple[str, Callable[[], None]]]:
    """(layer, switch it off) in the order they are taken away."""
    from contacts import auth, services, views
    from contacts import serializers as contact_serializers

    class IdOnly:  # the response: just the id and version the view needs for Location and ETag
        def __init__(self, contact: Any, context: Any = None) -> None:
            self.data = {"id": str(contact.pk), "version": contact.version}

    class Unchecked:  # input: the posted fields as they are
        def __init__(self, data: Any, partial: bool = False) -> None:
            self.validated_data = dict(data)

        def is_valid(self, raise_exception: bool = False) -> bool:
            return True

    def set_attr(target: Any, name: str, value: Any) -> Callable[[], None]:
        return lambda: setattr(target, name, value)

    return [
        ("throttle", set_attr(views.ContactListView, "throttle_classes", [])),
        ("token lookup", set_attr(auth.BearerTokenAuthentication, "authenticate", lambda s, r: (token_value,) * 2)),
        ("duplicate-email check", set_attr(services, "_duplicate", lambda email: None)),
        ("sync state in the response", set_attr(contact_serializers, "contact_sync_status", lambda **kw: {})),
        ("rest of the response serializer", set_attr(views, "ContactSerializer", IdOnly)),
        ("input validation", set_attr(views, "ContactInputSerializer", Unchecked)),
    ]


def ablation(write: Writer, requests: int) -> dict[str, Any]:
    from contacts.models import ApiToken

    token_value = ApiToken.objects.filter(is_active=True).first()
    full = cpu_ms(write, FULL, requests)
    minimal = cpu_ms(write, MINIMAL, requests)
    layers: dict[str, float | None] = {}
    previous = full
    for label, switch_off in ablation_steps(token_value):
        try:
            switch_off()
            now = cpu_ms(write, FULL, requests)
        except Exception as exc:  # a renamed product function: that step is not measured
            print(f"ablation step {label!r} failed: {exc!r}", file=sys.stderr)
            layers[label] = None
            continue
        layers[label] = round(previous - now, 3)
        previous = now
    return {
        "full_cpu_ms": full,
        "minimal_cpu_ms": minimal,
        "layers_cpu_ms": layers,
        "left_cpu_ms": previous,  # the full view with every layer above taken away
    }


def stage_times(stats: pstats.Stats, requests: int) -> dict[str, float]:
    found: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, _tt, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for label, (suffix, name) in STAGES.items():
            if function == name and filename.endswith(suffix):
                found[label] = max(found.get(label, 0.0), cumulative)
    return {label: round(found[label] / requests * 1000, 3) for label in STAGES if label in found}


def run(*, requests: int, top: int, token: str) -> dict[str, Any]:
    import django

    django.setup()
    write = Writer(token)
    for path in (FULL, MINIMAL):  # warm: imports, connections, caches
        for _ in range(20):
            write(path)
    timing = {"full": counted(write, FULL, requests), "minimal": counted(write, MINIMAL, requests)}
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        write(FULL)
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("cumulative").print_stats(top)
    sys.stderr.write(stream.getvalue())
    stages = stage_times(stats, requests)
    return {"requests": requests, "timing": timing, "stages_ms": stages, "ablation": ablation(write, requests)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--top", type=int, default=30, help="cProfile lines printed on stderr")
    parser.add_argument("--token", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(run(requests=args.requests, top=args.top, token=args.token)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
