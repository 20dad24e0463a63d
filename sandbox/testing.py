"""Test helpers for any test in the project that needs a CRM sandbox or a webhook receiver.

Context managers (no pytest needed): :func:`running_sandbox`, :func:`running_webhook_receiver`.
Pytest fixtures (``from sandbox.testing import hubspot_sandbox, ...`` in a
``conftest.py``, or ``pytest_plugins = ["sandbox.testing"]`` in the root one):
``hubspot_sandbox``, ``salesforce_sandbox`` (each yields a started
:class:`~sandbox.server.RunningSandbox` on an ephemeral loopback port, stopped
afterwards) and ``webhook_receiver`` (yields a :class:`WebhookReceiver`).
:class:`SandboxControl` drives the ``/_sandbox/*`` control plane over HTTP, so it
works for in-process and subprocess sandboxes alike.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from werkzeug.wrappers import Request, Response

from sandbox import create_app
from sandbox.server import RunningSandbox, serve

__all__ = [
    "ManualClock",
    "ReceivedRequest",
    "SandboxControl",
    "WebhookReceiver",
    "hubspot_sandbox",
    "running_sandbox",
    "running_webhook_receiver",
    "salesforce_sandbox",
    "next_millisecond",
    "webhook_receiver",
]


class ManualClock:
    """A clock a test moves by hand (``advance``), injected where code reads ``time.monotonic``
    or ``time.time``: expiry and windows are then tested without sleeping through them."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def next_millisecond(timeout_s: float = 5.0) -> None:
    """Return once the wall clock shows a later millisecond than at the call (CRM timestamps have
    millisecond precision: a write after this is stamped after everything before it)."""
    start = int(time.time() * 1000)
    deadline = time.monotonic() + timeout_s
    while int(time.time() * 1000) <= start:
        if time.monotonic() > deadline:
            raise AssertionError("the wall clock did not move")
        time.sleep(0.0005)


@contextmanager
def running_sandbox(kind: str, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Iterator[RunningSandbox]:
    """Serve sandbox ``kind`` (``"hubspot"``, ``"salesforce"``) built with ``options`` for the block."""
    running = serve(create_app(kind, **options), host=host, port=port)
    try:
        yield running
    finally:
        running.stop()


class SandboxControl:
    """HTTP client of a sandbox's control plane (``/_sandbox/*``)."""

    def __init__(self, url: str, session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.session = session or requests.Session()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        response = self.session.request(method, f"{self.url}/_sandbox/{path}", json=body, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def config(self, **changes: Any) -> dict[str, Any]:
        """Apply config changes (none: just read the config)."""
        return self._call("POST", "config", changes) if changes else self._call("GET", "config")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")

    def records(self) -> list[dict[str, Any]]:
        return self._call("GET", "records")["records"]

    def reset(self, *, config: bool = False) -> dict[str, Any]:
        return self._call("POST", "reset", {"config": config})

    def edit(
        self, record_id: str | None = None, fields: dict[str, Any] | None = None, *, delete: bool = False, **flags: Any
    ) -> Any:
        """Change a record as a person in the CRM UI would (no id: create). ``flags``: the lifecycle
        actions, e.g. ``restore=True`` / ``undelete=True``, ``merge_into=<id>``, ``gdpr_delete=True``."""
        body: dict[str, Any] = {"fields": fields or {}, **flags}
        if record_id is not None:
            body["id"] = record_id
        if delete:
            body["delete"] = True
        return self._call("POST", "edit", body)

    def flush_webhooks(self, timeout_s: float = 10.0) -> bool:
        response = self.session.post(
            f"{self.url}/_sandbox/webhooks/flush", json={"timeout_s": timeout_s}, timeout=timeout_s + 5
        )
        return bool(response.json().get("flushed"))


@dataclass(frozen=True)
class ReceivedRequest:
    """One request a :class:`WebhookReceiver` got."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.monotonic()
    status: int  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A loopback HTTP endpoint that records every request.

    ``script`` holds statuses answered to the next requests, in order (then
    ``default_status``); ``delay_s`` delays every answer (to provoke timeouts).
    ``url`` is the full URL to configure as a webhook target (path ``/hooks``).
    """

    default_status: int = 200
    delay_s: float = 0.0
    script: list[int] = field(default_factory=list)
    requests: list[ReceivedRequest] = field(default_factory=list)
    max_concurrency: int = 0  # most requests being answered at once
    _in_flight: int = field(default=0, repr=False)
    _running: RunningSandbox | None = field(default=None, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        with self._cond:
            self._in_flight += 1
            self.max_concurrency = max(self.max_concurrency, self._in_flight)
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._cond:
            self._in_flight -= 1
            status = self.script.pop(0) if self.script else self.default_status
            self.requests.append(
                ReceivedRequest(request.method, request.url, dict(request.headers), body, time.monotonic(), status)
            )
            self._cond.notify_all()
        return Response(b"", status=status)(environ, start_response)

    @property
    def url(self) -> str:
        assert self._running is not None, "receiver not started"
        return f"{self._running.url}/hooks"

    def start(self) -> WebhookReceiver:
        self._running = serve(self)
        return self

    def stop(self) -> None:
        if self._running is not None:
            self._running.stop()
            self._running = None

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[ReceivedRequest]:
        """Wait until at least ``count`` requests arrived; all received so far."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return list(self.requests)

    def wait_for_events(self, count: int, timeout_s: float = 5.0, *, acked_only: bool = True) -> list[dict[str, Any]]:
        """Wait until ``count`` events (JSON array items) arrived; the events in arrival order."""
        deadline = time.monotonic() + timeout_s
        while True:
            events = self.events(acked_only=acked_only)
            if len(events) >= count or time.monotonic() >= deadline:
                return events
            with self._cond:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def events(self, *, acked_only: bool = True) -> list[dict[str, Any]]:
        """Every event of every (acknowledged) JSON-array delivery so far."""
        with self._cond:
            received = list(self.requests)
        events: list[dict[str, Any]] = []
        for item in received:
            if not acked_only or 200 <= item.status < 300:
                payload = item.json()
                events.extend(payload if isinstance(payload, list) else [payload])
        return events

    def clear(self) -> None:
        with self._cond:
            self.requests.clear()
            self.script.clear()


@contextmanager
def running_webhook_receiver(**options: Any) -> Iterator[WebhookReceiver]:
    """A started :class:`WebhookReceiver` (``default_status``, ``delay_s``, ``script``) for the block."""
    receiver = WebhookReceiver(**options).start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def hubspot_sandbox() -> Iterator[RunningSandbox]:
    """A HubSpot sandbox on an ephemeral port with default config."""
    with running_sandbox("hubspot") as running:
        yield running


@pytest.fixture
def salesforce_sandbox() -> Iterator[RunningSandbox]:
    """A Salesforce sandbox on an ephemeral port with default config."""
    with running_sandbox("salesforce") as running:
        yield running


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A started webhook receiver answering 200."""
    with running_webhook_receiver() as receiver:
        yield receiver
