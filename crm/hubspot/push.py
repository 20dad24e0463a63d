"""Writing contacts to HubSpot: routing each item to the cheapest endpoint, answers mapped back.

One item uses the single-record endpoints; several use the batch endpoints (archive, update by
id, upsert by email, 100 per call), in rounds so one email never appears twice in a call.
"""

from __future__ import annotations

import re
from typing import Any

from crm.base import Permanent, ProviderError, PushItem, PushResult, Transient
from crm.hubspot import transform
from crm.hubspot.client import BatchResult, HubSpotClient, chunked, classify_item_error

_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")


class PushRun:
    """One push call: routes items to the cheapest endpoints and maps every answer back to its item.

    After a whole-call failure (timeout, 429, auth) no further requests are made; items not yet
    written carry that error. `finish` raises it instead when nothing at all was written.
    """

    def __init__(self, client: HubSpotClient, items: list[PushItem]) -> None:
        self.client = client
        self.items = items
        self.results: dict[int, PushResult] = {}
        self.abort: ProviderError | None = None

    def finish(self) -> list[PushResult]:
        if self.abort is not None and not any(r.ok for r in self.results.values()):
            raise self.abort
        return [self.results.get(i) or self._failed(i, self.abort) for i in range(len(self.items))]

    def _ok(self, index: int, external_id: str | None, operation: str, answer: Any = None) -> None:
        """`answer`: the record as HubSpot answered the write (its updatedAt is when it applied it)."""
        written_at = transform.parse_time(answer.get("updatedAt")) if isinstance(answer, dict) else None
        self.results[index] = PushResult(key=self.items[index].key, external_id=external_id, operation=operation,
                                         written_at=written_at)  # fmt: skip

    def _failed(self, index: int, error: ProviderError | None) -> PushResult:
        item = self.items[index]
        error = error or Transient("HubSpot returned no result for this record", code="NO_RESULT")
        operation = "delete" if item.delete else "update" if item.external_id else "create"
        result = PushResult(key=item.key, external_id=item.external_id, error=error, operation=operation)
        self.results[index] = result
        return result

    # --- one item: single-record endpoints -----------------------------------------------------
    def single(self, index: int) -> None:
        item = self.items[index]
        properties = transform.item_properties(item)
        try:
            if item.delete:
                self._delete_one(index)
            elif item.external_id:
                self._update_one(index, properties)
            else:
                self._create_one(index, properties)
        except Permanent as exc:
            self._failed(index, exc)
        except ProviderError as exc:
            self.abort = exc

    def _delete_one(self, index: int) -> None:
        external_id = self.items[index].external_id
        if external_id:
            try:
                self.client.archive(external_id)
            except Permanent as exc:
                if exc.status != 404:  # already gone is what we wanted
                    raise
        self._ok(index, external_id, "delete")

    def _update_one(self, index: int, properties: dict[str, str]) -> None:
        external_id = str(self.items[index].external_id)
        if not properties:
            self._ok(index, external_id, "update")
            return
        try:
            answer = self.client.update(external_id, properties)
        except Permanent as exc:
            if exc.status != 404:
                raise
            self._recreate_one(index, properties, exc)
            return
        self._ok(index, external_id, "update", answer)

    def _recreate_one(self, index: int, properties: dict[str, str], gone: Permanent) -> None:
        """The linked contact was deleted in HubSpot: match by email or create, if we can."""
        if not properties.get("email"):
            self._failed(index, _gone_error(self.items[index].external_id, gone))
            return
        self._create_one(index, properties)

    def _create_one(self, index: int, properties: dict[str, str]) -> None:
        try:
            created = self.client.create(properties)
        except Permanent as exc:
            existing = _EXISTING_ID.search(exc.message) if exc.status == 409 else None
            if existing is None:
                raise
            # Someone (or an earlier attempt of ours) already created this email: link to it.
            answer = self.client.update(existing.group(1), properties)
            self._ok(index, existing.group(1), "match", answer)
            return
        self._ok(index, str(created["id"]), "create", created)

    # --- several items: batch endpoints --------------------------------------------------------
    def batched(self) -> None:
        deletes, linked, by_email, bare = [], [], [], []
        for index, item in enumerate(self.items):
            if item.delete:
                deletes.append(index)
            elif item.external_id:
                linked.append(index)
            elif transform.normalise_email(item.values.get("email")):
                by_email.append(index)
            else:
                bare.append(index)
        self._archive(deletes)  # first: a new contact taking a deleted one's email must not match its record
        by_email.extend(self._update(linked))
        self._upsert(by_email)
        for index in bare:  # no email to match on: rare, and only single creates can take them
            if self.abort is None:
                self.single(index)

    def _archive(self, indexes: list[int]) -> None:
        for index in indexes:
            if not self.items[index].external_id:
                self._ok(index, None, "delete")  # never reached HubSpot: nothing to delete there
        linked = [i for i in indexes if self.items[i].external_id]

        def apply(chunk: list[int], inputs: list[str], outcome: BatchResult) -> None:
            for index in chunk:
                self._ok(index, self.items[index].external_id, "delete")

        for group in _rounds(linked, lambda i: str(self.items[i].external_id)):
            for chunk in chunked(group):
                ids = [str(self.items[i].external_id) for i in chunk]
                self._call_batch(list(chunk), ids, self.client.batch_archive, apply)

    def _update(self, indexes: list[int]) -> list[int]:
        """batch/update by stored id; returns the items whose contact was deleted in HubSpot."""
        gone: list[int] = []

        def apply(chunk: list[int], inputs: list[tuple[str, dict[str, str]]], outcome: BatchResult) -> None:
            objects, errors = _by_position(outcome, [external_id for external_id, _ in inputs])
            for position, (index, (external_id, properties)) in enumerate(zip(chunk, inputs, strict=True)):
                error = errors.get(position)
                if position in objects and error is None:
                    self._ok(index, external_id, "update", objects[position])
                elif error is not None and error.status == 404:
                    if properties.get("email"):
                        gone.append(index)
                    else:
                        self._failed(index, _gone_error(external_id, error))
                else:
                    self._failed(index, error)

        for group in _rounds(indexes, lambda i: str(self.items[i].external_id)):
            for chunk in chunked(group):
                inputs = [(str(self.items[i].external_id), transform.item_properties(self.items[i])) for i in chunk]
                self._call_batch(list(chunk), inputs, self.client.batch_update, apply)
        return gone

    def _upsert(self, indexes: list[int]) -> None:
        """batch/upsert by email: HubSpot matches or creates in one call, `new` tells which."""

        def email(index: int) -> str:
            return transform.normalise_email(self.items[index].values.get("email"))

        def apply(chunk: list[int], inputs: list[tuple[str, dict[str, str]]], outcome: BatchResult) -> None:
            objects, errors = _by_position(outcome, [key for key, _ in inputs])
            for position, index in enumerate(chunk):
                obj = objects.get(position)
                if obj is not None and position not in errors:
                    self._ok(index, str(obj["id"]), "create" if obj.get("new") else "match", obj)
                else:
                    self._failed(index, errors.get(position))

        for group in _rounds(indexes, email):
            for chunk in chunked(group):
                properties = [transform.item_properties(self.items[i]) for i in chunk]
                inputs = [(email(i), props) for i, props in zip(chunk, properties, strict=True)]
                self._call_batch(list(chunk), inputs, self.client.batch_upsert, apply)

    def _call_batch(self, chunk: list[int], inputs: list[Any], call, apply) -> None:
        """One batch call, its answer handed to `apply`. A 400/409 refusing the whole batch is split
        in halves until the bad record is alone, so one invalid contact cannot hold back the others.
        A whole-call failure of another kind stops the run: the items keep no result."""
        if self.abort is not None:
            return
        try:
            outcome = call(inputs)
        except Permanent as exc:
            if len(inputs) == 1 or exc.status not in (400, 409):
                for index in chunk:
                    self._failed(index, exc)
                return
            middle = len(inputs) // 2
            self._call_batch(chunk[:middle], inputs[:middle], call, apply)
            self._call_batch(chunk[middle:], inputs[middle:], call, apply)
            return
        except ProviderError as exc:
            self.abort = exc
            return
        apply(chunk, inputs, outcome)


def _rounds(indexes: list[int], key) -> list[list[int]]:
    """Split so no key repeats within a round: HubSpot refuses duplicate ids in one batch."""
    rounds: list[list[int]] = []
    seen: list[set[str]] = []
    for index in indexes:
        k = key(index)
        for number, keys in enumerate(seen):
            if k not in keys:
                keys.add(k)
                rounds[number].append(index)
                break
        else:
            seen.append({k})
            rounds.append([index])
    return rounds


def _by_position(outcome: BatchResult, keys: list[str]) -> tuple[dict[int, dict], dict[int, ProviderError]]:
    """Map a batch answer back to input positions.

    Results are matched by the objectWriteTraceId we sent (the position), else by id or email.
    Errors name their inputs in `context` (ids, emails or trace ids); an error naming none of
    ours is given to every input that got no result.
    """
    by_key: dict[str, int] = {}
    for position, key in enumerate(keys):
        by_key.setdefault(transform.normalise_email(key), position)

    def position_of(value: Any, *, trace: bool = False) -> int | None:
        text = str(value)
        if trace and text.isdigit() and int(text) < len(keys):
            return int(text)
        return by_key.get(transform.normalise_email(text))

    objects: dict[int, dict] = {}
    for obj in outcome.results:
        position = position_of(obj.get("objectWriteTraceId"), trace=True) if obj.get("objectWriteTraceId") else None
        if position is None:
            position = position_of(obj.get("id"))
        if position is None:
            position = position_of((obj.get("properties") or {}).get("email"))
        if position is not None:
            objects[position] = obj
    errors: dict[int, ProviderError] = {}
    unnamed: list[ProviderError] = []
    for raw in outcome.errors:
        error = classify_item_error(raw)
        named = {
            position
            for name, values in (raw.get("context") or {}).items()
            if isinstance(values, list)
            for value in values
            if (position := position_of(value, trace=name == "objectWriteTraceId")) is not None
        }
        if raw.get("id") and (position := position_of(raw["id"])) is not None:
            named.add(position)
        for position in named:
            errors.setdefault(position, error)
        if not named:
            unnamed.append(error)
    for position in range(len(keys)):
        if unnamed and position not in objects and position not in errors:
            errors[position] = unnamed[0]
    return objects, errors


def _gone_error(external_id: str | None, cause: ProviderError) -> Permanent:
    return Permanent(
        f"HubSpot contact {external_id} no longer exists and the change carries no email to match or "
        f"create it by; push the full contact without its external id ({cause.message})",
        code="OBJECT_NOT_FOUND",
        status=404,
    )
