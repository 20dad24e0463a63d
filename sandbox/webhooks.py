"""Background webhook delivery shared by the sandboxes.

:class:`WebhookDispatcher` queues events, coalesces those that arrive together
into batches (up to ``webhook_batch_size``, after waiting ``webhook_linger_ms``
for company), and hands each batch to a provider-supplied
``send(events, attempt) -> bool`` on one of ``concurrency`` worker threads. A
failed batch is retried with exponential backoff and jitter up to
``webhook_max_retries`` times; ``attempt`` counts from 0. Fault options (read
live from the app config): ``webhook_drop_rate`` (event never delivered),
``webhook_duplicate_rate`` (event delivered again in a separate request),
``webhook_reorder`` (events shuffled before batching).

:func:`post_bytes` is the HTTP client the providers' ``send`` uses: pooled
``requests`` sessions, one per worker thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

__all__ = ["WebhookDispatcher", "post_bytes"]

logger = logging.getLogger(__name__)

_sessions = threading.local()


def post_bytes(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int | None:
    """POST ``body`` to ``url``; the status code, or None on a connection error or timeout."""
    session = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = requests.Session()
        session.trust_env = False  # never route loopback deliveries through a proxy
    try:
        return session.post(url, data=body, headers=dict(headers), timeout=timeout_s).status_code
    except requests.RequestException as exc:
        logger.info("webhook delivery to %s failed: %s", url, exc.__class__.__name__)
        return None


class WebhookDispatcher:
    """Coalescing, retrying, fault-injecting background sender. Thread-safe.

    Threads start on the first :meth:`enqueue`; :meth:`stop` ends them.
    """

    def __init__(
        self,
        send: Callable[[list[Any], int], bool],
        *,
        config: Mapping[str, Any],
        rng: random.Random,
        concurrency: int = 10,
    ) -> None:
        self._send = send
        self._config = config
        self._rng = rng
        self._concurrency = concurrency
        self._cond = threading.Condition()
        self._pending: list[Any] = []
        self._pending_since = 0.0
        # (due, tiebreak, events, attempt): retries and delayed duplicates.
        self._delayed: list[tuple[float, int, list[Any], int]] = []
        self._ready: list[tuple[list[Any], int]] = []
        self._tiebreak = itertools.count()
        self._busy = 0  # batches taken by a worker and not finished
        self._generation = 0  # bumped by clear(): late results of old batches are ignored
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._counters = self._zero_counters()

    @staticmethod
    def _zero_counters() -> dict[str, int]:
        return {
            "sent": 0,  # POST attempts made
            "acked": 0,  # attempts answered 2xx
            "failed": 0,  # attempts that failed (non-2xx, timeout, connection error)
            "retried": 0,  # batches scheduled for another attempt
            "gave_up": 0,  # batches abandoned after the last retry
            "events_queued": 0,
            "events_delivered": 0,
            "dropped": 0,  # events dropped by webhook_drop_rate
            "duplicated": 0,  # events re-sent by webhook_duplicate_rate
        }

    # -- public API --------------------------------------------------------------

    def enqueue(self, events: list[Any]) -> None:
        """Queue events for delivery (applies drop/duplicate faults)."""
        config, rng = self._config, self._rng
        drop, duplicate = config["webhook_drop_rate"], config["webhook_duplicate_rate"]
        kept, copies = [], []
        for event in events:
            if drop and rng.random() < drop:
                continue
            kept.append(event)
            if duplicate and rng.random() < duplicate:
                copies.append(event)
        with self._cond:
            self._ensure_started()
            self._counters["events_queued"] += len(events)
            self._counters["dropped"] += len(events) - len(kept)
            self._counters["duplicated"] += len(copies)
            if kept:
                if not self._pending:
                    self._pending_since = time.monotonic()
                self._pending.extend(kept)
            for event in copies:
                # A duplicate travels in its own later request, as redeliveries do.
                due = time.monotonic() + 0.05 + rng.random() * 0.1
                heapq.heappush(self._delayed, (due, next(self._tiebreak), [event], 0))
            self._cond.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until nothing is pending, scheduled or in flight; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._delayed or self._ready or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def clear(self) -> None:
        """Forget pending and scheduled deliveries and zero the counters."""
        with self._cond:
            self._pending.clear()
            self._delayed.clear()
            self._ready.clear()
            self._busy = 0
            self._generation += 1
            self._counters = self._zero_counters()
            self._cond.notify_all()

    def stats(self) -> dict[str, int]:
        with self._cond:
            body = dict(self._counters)
            body["pending"] = len(self._pending) + sum(len(batch) for _, _, batch, _ in self._delayed)
            body["in_flight"] = self._busy
            return body

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=1.0)
        self._threads = []

    # -- threads -------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._threads or self._stopped:
            return
        for index in range(self._concurrency):
            thread = threading.Thread(target=self._worker, name=f"webhook-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _take_ready(self, now: float) -> float | None:
        """Move due work to ``_ready``; return how long to wait for the next due item."""
        config = self._config
        wait: float | None = None
        if self._pending:
            size = config["webhook_batch_size"] or 100
            due = self._pending_since + config["webhook_linger_ms"] / 1000.0
            if now >= due or len(self._pending) >= size:
                if config["webhook_reorder"]:
                    self._rng.shuffle(self._pending)
                for start in range(0, len(self._pending), size):
                    self._ready.append((self._pending[start : start + size], 0))
                self._pending = []
            else:
                wait = due - now
        while self._delayed and self._delayed[0][0] <= now:
            _, _, events, attempt = heapq.heappop(self._delayed)
            self._ready.append((events, attempt))
        if self._delayed:
            until = self._delayed[0][0] - now
            wait = until if wait is None else min(wait, until)
        return wait

    def _worker(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    wait = self._take_ready(time.monotonic())
                    if self._ready:
                        events, attempt = self._ready.pop(0)
                        self._busy += 1
                        generation = self._generation
                        if self._ready:
                            self._cond.notify()
                        break
                    self._cond.wait(wait)
            self._deliver(events, attempt, generation)

    def _deliver(self, events: list[Any], attempt: int, generation: int) -> None:
        try:
            ok = bool(self._send(events, attempt))
        except Exception:
            logger.exception("webhook send raised")
            ok = False
        config = self._config
        with self._cond:
            if generation != self._generation:
                return
            self._busy -= 1
            self._counters["sent"] += 1
            if ok:
                self._counters["acked"] += 1
                self._counters["events_delivered"] += len(events)
            else:
                self._counters["failed"] += 1
                if attempt < (config["webhook_max_retries"] or 0):
                    self._counters["retried"] += 1
                    base = config["webhook_retry_base_ms"] / 1000.0
                    delay = min(config["webhook_retry_max_ms"] / 1000.0, base * (2**attempt))
                    delay *= 0.5 + self._rng.random()  # jitter: 50–150 % of the backoff step
                    due = time.monotonic() + delay
                    heapq.heappush(self._delayed, (due, next(self._tiebreak), events, attempt + 1))
                else:
                    self._counters["gave_up"] += 1
            self._cond.notify_all()
