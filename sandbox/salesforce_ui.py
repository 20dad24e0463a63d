"""Record rendering (REST JSON) and simulated edits by a person in the Salesforce UI."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sandbox.salesforce_lifecycle import fill_blanks, merge, undelete
from sandbox.salesforce_schema import ObjectSpec, format_datetime, normalize_id
from sandbox.salesforce_store import OrgStore, RecordError

__all__ = ["edit", "render"]

#: changeOrigin of UI edits in change events (the CRM leaves it empty for the UI).
UI_ORIGIN = ""


def render(spec: ObjectSpec, record: Mapping[str, Any], names: list[str] | None, version: str) -> dict[str, Any]:
    """A record as the REST API returns it: ``attributes`` then the fields (all when ``names`` is None)."""
    out: dict[str, Any] = {
        "attributes": {"type": spec.name, "url": f"/services/data/v{version}/sobjects/{spec.name}/{record['Id']}"}
    }
    for name in names if names is not None else spec.field_names:
        value = record.get(name)
        out[name] = format_datetime(value) if isinstance(value, datetime) else value
    return out


def edit(store: OrgStore, payload: Mapping[str, Any], *, user_id: str) -> dict[str, Any]:
    """Apply ``{"sobject"?, "id"?, "fields": {...}, "delete"?: true}`` as a UI user.

    ``"Account.Name"`` (or ``"company"``) in ``fields`` finds the Account by exact
    name or creates it, and sets ``AccountId`` (empty: no Account). Raises
    ``KeyError`` for an unknown id and ``ValueError`` with the CRM's error code
    for anything the CRM would refuse.
    """
    spec = store.objects.get(str(payload.get("sobject", "Contact")))
    if spec is None:
        raise ValueError(f"unknown sobject {payload.get('sobject')!r}; known: {', '.join(store.objects)}")
    fields = payload.get("fields") or {}
    if not isinstance(fields, Mapping):
        raise ValueError("fields must be an object of Salesforce field names")
    fields = dict(fields)
    raw_id = payload.get("id")
    try:
        with store.transaction(user_id=user_id, origin=UI_ORIGIN) as tx:
            tx.allow_duplicates = True  # an alerting rule only warns a person, who may save anyway
            company_keys = [key for key in ("Account.Name", "company") if key in fields]
            if company_keys and spec.name == "Contact":
                company = fields.pop(company_keys[0])
                for key in company_keys[1:]:
                    fields.pop(key)
                fields["AccountId"] = _account_for(store, tx, company)
            lifecycle = [key for key in ("delete", "undelete", "merge_into") if payload.get(key)]
            if raw_id is None:
                if lifecycle:
                    raise ValueError(f"{lifecycle[0]} needs an id")
                record_id = tx.create(spec, fields)
            else:
                record_id = normalize_id(raw_id) or str(raw_id)
                if payload.get("undelete"):  # from the recycle bin
                    undelete(tx, spec, raw_id)
                elif payload.get("merge_into"):  # the merge wizard: this record into the master
                    master = store.live(spec, payload["merge_into"])
                    fields = {**fill_blanks(spec, master, store.live(spec, raw_id)), **fields}
                    record_id = merge(tx, spec, master["Id"], [raw_id], fields)
                elif payload.get("delete"):
                    tx.delete(spec, raw_id)
                else:
                    tx.update(spec, raw_id, fields)
    except RecordError as error:
        if error.code in ("NOT_FOUND", "INVALID_ID_FIELD"):
            raise KeyError(raw_id) from None
        raise ValueError(f"{error.code}: {error.message}") from None
    return render(spec, store.tables[spec.name][record_id], None, "59.0")


def _account_for(store: OrgStore, tx: Any, company: Any) -> str | None:
    if company in (None, ""):
        return None
    name = str(company)
    existing = [i for i in store.lookup("Account", "Name", name) if store.tables["Account"][i]["Name"] == name]
    return existing[0] if existing else tx.create(store.objects["Account"], {"Name": name})
