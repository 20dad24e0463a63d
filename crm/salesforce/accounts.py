"""Company ⇄ Account: a Contact's company is the Name of the Account its AccountId points to.

Names are found with one SOQL query per batch and created (sObject Collections for
several) when missing; both directions are cached in-process, so a steady stream of
contacts of known companies costs no extra call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from crm.base import Permanent, ProviderError, Transient
from crm.salesforce.client import COLLECTION_SIZE, SalesforceClient
from crm.salesforce.errors import details, duplicate_match_id, record_error
from crm.salesforce.transform import soql_in, soql_quote
from syncroot.locks import advisory_lock

logger = logging.getLogger(__name__)

# Keeps a SOQL GET URL well below Salesforce's 16 KB URI limit.
MAX_IN_CHARS = 8000


class LRU:
    """A small thread-safe least-recently-used map whose entries expire after `ttl` seconds
    (Accounts get renamed and deleted in the CRM; a stale entry must not live forever)."""

    def __init__(self, size: int, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[1] <= self.clock():
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._items[key] = (value, self.clock() + self.ttl)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def pop(self, key: str) -> str | None:
        with self._lock:
            item = self._items.pop(key, None)
            return item[0] if item else None


def chunk_for_in(values: Iterable[str], *, max_items: int = COLLECTION_SIZE, max_chars: int = MAX_IN_CHARS):
    """Split values into lists whose `IN (…)` clause stays short enough for a GET."""
    chunk: list[str] = []
    size = 0
    for value in values:
        cost = len(soql_quote(value)) + 2
        if chunk and (len(chunk) >= max_items or size + cost > max_chars):
            yield chunk
            chunk, size = [], 0
        chunk.append(value)
        size += cost
    if chunk:
        yield chunk


class AccountDirectory:
    """Account ids by name and names by id, backed by the org."""

    def __init__(
        self, client: SalesforceClient, *, size: int = 4096, ttl: float = 3600.0, lock_wait: float = 30.0
    ) -> None:
        self.client = client
        self.lock_wait = lock_wait  # seconds to wait for another worker creating Accounts
        self._ids = LRU(size, ttl)  # name → id
        self._names = LRU(size, ttl)  # id[:15] → name

    def remember(self, account_id: str, name: str) -> None:
        self._ids.put(name, account_id)
        self._names.put(account_id[:15], name)

    def forget_id(self, account_id: str) -> None:
        name = self._names.pop(account_id[:15])
        if name is not None and self._ids.get(name) == account_id:
            self._ids.pop(name)

    def forget_name(self, name: str) -> None:
        account_id = self._ids.pop(name)
        if account_id:
            self._names.pop(account_id[:15])

    def ids_for(self, names: Iterable[str]) -> tuple[dict[str, str], dict[str, ProviderError]]:
        """Account id per company name, creating missing Accounts; and the names that failed.

        A query or create call that fails as a whole raises (nothing written for the batch).
        """
        wanted = sorted({name.strip() for name in names if name and name.strip()})
        found: dict[str, str] = {}
        for name in wanted:
            cached = self._ids.get(name)
            if cached:
                found[name] = cached
        missing = [name for name in wanted if name not in found]
        if missing:
            found.update(self._find(missing))
        to_create = [name for name in missing if name not in found]
        failed: dict[str, ProviderError] = {}
        if to_create:
            # Workers loading contacts of the same new company would each create its Account;
            # one at a time, and each looks again once it holds the lock.
            with self._creation_lock():
                found_now = self._find(to_create)
                found.update(found_now)
                created, failed = self._create([name for name in to_create if name not in found_now])
                found.update(created)
        return found, failed

    @contextmanager
    def _creation_lock(self) -> Iterator[None]:
        """Held in PostgreSQL, so a worker killed while creating Accounts holds up nobody."""
        with advisory_lock(f"syncroot:{self.client.limiter.name}:account-create", wait=self.lock_wait) as held:
            if not held:
                raise Transient("another worker is creating Salesforce Accounts", code="ACCOUNT_LOCK_BUSY")
            yield

    def _find(self, names: list[str]) -> dict[str, str]:
        by_lower: dict[str, list[tuple[str, str]]] = {}
        for chunk in chunk_for_in(names):
            soql = f"SELECT Id, Name FROM Account WHERE Name IN {soql_in(chunk)} ORDER BY CreatedDate, Id"
            for record in self.client.query(soql):
                by_lower.setdefault(str(record["Name"]).lower(), []).append((str(record["Name"]), str(record["Id"])))
        found: dict[str, str] = {}
        for name in names:
            candidates = by_lower.get(name.lower(), [])
            # SOQL compares text case-insensitively: prefer the exact spelling, else the oldest
            # Account of that name rather than creating a near-duplicate the sales team must merge.
            exact = [account_id for spelled, account_id in candidates if spelled == name]
            chosen = exact[0] if exact else candidates[0][1] if candidates else None
            if chosen:
                found[name] = chosen
                self._ids.put(name, chosen)
                if exact:
                    self._names.put(chosen[:15], name)
        return found

    def _create(self, names: list[str]) -> tuple[dict[str, str], dict[str, ProviderError]]:
        created: dict[str, str] = {}
        failed: dict[str, ProviderError] = {}
        if not names:
            return created, failed
        if len(names) == 1:
            try:
                answer = self.client.request("POST", "sobjects/Account", json={"Name": names[0]})
            except Permanent as exc:
                match = duplicate_match_id(details(exc)) if exc.code == "DUPLICATES_DETECTED" else None
                if match:  # a Block duplicate rule points at the Account to use
                    created[names[0]] = match
                else:
                    failed[names[0]] = exc
            else:
                created[names[0]] = str(answer["id"])
        else:
            for start in range(0, len(names), COLLECTION_SIZE):
                chunk = names[start : start + COLLECTION_SIZE]
                results = self.client.collection_create("Account", [{"Name": name} for name in chunk])
                for name, result in zip(chunk, results, strict=True):
                    if result.get("success") and result.get("id"):
                        created[name] = str(result["id"])
                    else:
                        failed[name] = record_error(result.get("errors"))
        for name, account_id in created.items():
            self.remember(account_id, name)
        if created:
            logger.info("salesforce accounts created", extra={"count": len(created)})
        return created, failed

    def name_for(self, account_id: str | None) -> str:
        """The Account's name ("" when no account). Raises a ProviderError when the org cannot say."""
        if not account_id:
            return ""
        cached = self._names.get(account_id[:15])
        if cached is not None:
            return cached
        records = list(self.client.query(f"SELECT Id, Name FROM Account WHERE Id = {soql_quote(account_id)}"))
        name = str(records[0].get("Name") or "") if records else ""
        if records:
            self._names.put(account_id[:15], name)
        return name
