"""Salesforce records and webhook payloads → InboundChange (the company name is looked up by
the caller-supplied `account_name`, the only part that may need the API)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from crm.base import InboundChange
from crm.salesforce.transform import (
    COMPANY,
    FIELD_MAP,
    REVERSE_MAP,
    from_epoch_ms,
    from_salesforce,
    parse_datetime,
)

AccountName = Callable[[str | None], str]

# The Contact fields an Outbound Message action must select for us. Salesforce leaves null
# fields out of the message, so one of these missing means it is empty.
OUTBOUND_FIELDS: tuple[str, ...] = (*FIELD_MAP.values(), "AccountId")


def same_user(a: Any, b: str) -> bool:
    """Whether two user ids (15 or 18 characters) name the same user."""
    return bool(a and b) and str(a)[:15] == b[:15]


def _with_company(record: Mapping[str, Any], values: dict[str, str], account_name: AccountName) -> dict[str, str]:
    if COMPANY not in values and record.get("AccountId"):
        values[COMPANY] = account_name(str(record["AccountId"]))
    return values


def extra_values(record: Mapping[str, Any], extra: Iterable[str]) -> dict[str, Any]:
    """The custom fields asked for that the record carries, as Salesforce reports them."""
    return {name: record[name] for name in extra if name in record and name not in REVERSE_MAP}


def record_change(
    record: Mapping[str, Any], *, integration_user_id: str, account_name: AccountName, extra: Iterable[str] = ()
) -> InboundChange:
    """A SOQL/REST Contact record (with `Account.Name` when selected); `extra`: the custom fields
    asked for, reported under `remote`."""
    occurred_at = parse_datetime(record.get("SystemModstamp"))
    values = _with_company(record, from_salesforce(record), account_name)
    remote = extra_values(record, extra)
    return InboundChange(
        external_id=str(record["Id"]),
        values=values,
        remote=remote,
        remote_times=dict.fromkeys(remote, occurred_at) if occurred_at else {},
        occurred_at=occurred_at,
        field_times=dict.fromkeys(values, occurred_at) if occurred_at else {},
        deleted=record.get("IsDeleted") in (True, "true"),
        # A record deleted by a merge names its master; SOQL reads only ever see that once deleted.
        merged_into=str(record["MasterRecordId"]) if record.get("MasterRecordId") else None,
        from_integration=same_user(record.get("LastModifiedById"), integration_user_id),
    )


def outbound_change(
    payload: Mapping[str, Any],
    *,
    integration_user_id: str,
    account_name: AccountName,
    selected_fields: Iterable[str] = OUTBOUND_FIELDS,
    extra: tuple[str, ...] = (),
) -> InboundChange | None:
    """One Outbound Message notification (None unless it is about a Contact)."""
    if payload.get("sobject_type") not in ("Contact", ""):
        return None
    sobject = dict(payload.get("sobject") or {})
    if same_user(sobject.get("LastModifiedById"), integration_user_id):
        # Our own write coming back is dropped unread: resolving its Account name would cost an
        # API call for nothing.
        return InboundChange(
            external_id=str(sobject.get("Id") or ""), from_integration=True,
            occurred_at=parse_datetime(sobject.get("SystemModstamp")),
        )  # fmt: skip
    for name in selected_fields:
        sobject.setdefault(name, None)
    # A custom field the action selects is null when absent; one it carries was selected, whatever
    # the configuration says; any other is unknown, not blank.
    chosen = [name for name in extra if name in sobject or name in selected_fields]
    if len(chosen) < len(extra):
        # A mapped custom field the action does not select may have changed too: read the record
        # (selecting the field in the Outbound Message action saves this call).
        return InboundChange(
            external_id=str(sobject.get("Id") or ""), complete=False,
            occurred_at=parse_datetime(sobject.get("SystemModstamp") or sobject.get("LastModifiedDate")),
        )  # fmt: skip
    for name in chosen:
        sobject.setdefault(name, None)
    change = record_change(sobject, integration_user_id=integration_user_id, account_name=account_name, extra=chosen)
    # SOAP carries no relationship name, but SystemModstamp may be missing from a badly
    # configured action; LastModifiedDate is the next best clock.
    if change.occurred_at is None:
        occurred_at = parse_datetime(sobject.get("LastModifiedDate"))
        change.occurred_at = occurred_at
        change.field_times = dict.fromkeys(change.values, occurred_at) if occurred_at else {}
        change.remote_times = dict.fromkeys(change.remote, occurred_at) if occurred_at else {}
    return change


def event_change(
    payload: Mapping[str, Any], *, integration_user_id: str, account_name: AccountName, extra: Iterable[str] = ()
) -> InboundChange | None:
    """One change event (already split to a single record id); None unless about a Contact."""
    header = payload.get("ChangeEventHeader") or {}
    if header.get("entityName") != "Contact":
        return None
    record_id = str(header["recordIds"][0])
    change_type = str(header.get("changeType") or "")
    occurred_at = from_epoch_ms(header.get("commitTimestamp"))
    from_integration = same_user(header.get("commitUser"), integration_user_id)
    base = {"external_id": record_id, "occurred_at": occurred_at, "from_integration": from_integration}
    if change_type == "DELETE":
        # Read the record: one deleted by a merge names its master there (MasterRecordId), and
        # no change event tells a merge from a delete.
        return InboundChange(deleted=True, complete=from_integration, **base)
    if change_type == "UNDELETE":
        return InboundChange(complete=False, restored=True, **base)
    if change_type not in ("CREATE", "UPDATE"):
        # UNDELETE and GAP_* events say "something happened": read the record itself.
        return InboundChange(complete=False, **base)
    wire_fields = [*FIELD_MAP.values(), "AccountId", *(name for name in extra if name not in REVERSE_MAP)]
    if change_type == "CREATE":
        reported = wire_fields  # a CREATE carries every non-null field: absent means empty
    else:
        named = {*(header.get("changedFields") or ()), *(header.get("nulledFields") or ())}
        reported = [name for name in wire_fields if name in named]
        if not reported:
            return None  # only fields we do not sync changed
    nulled = set(header.get("nulledFields") or ())
    record: dict[str, Any] = {}
    for name in reported:
        if name in payload or name in nulled or change_type == "CREATE":
            record[name] = payload.get(name)
        else:  # named as changed but its value was left out: only a read can tell
            return InboundChange(complete=False, **base)
    values = _with_company(record, from_salesforce(record), account_name)
    remote = extra_values(record, extra)
    return InboundChange(
        values=values,
        field_times=dict.fromkeys(values, occurred_at) if occurred_at else {},
        remote=remote,
        remote_times=dict.fromkeys(remote, occurred_at) if occurred_at else {},
        **base,
    )
