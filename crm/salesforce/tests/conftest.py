"""A Salesforce sandbox per test, a provider logged in to it over OAuth, and a private limiter."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg2
import pytest
import requests
from django.db import connection

from crm.ratelimit import RateLimiter
from crm.salesforce.provider import SalesforceProvider
from sandbox.testing import SandboxControl, running_sandbox

ORG_ID = "00D000000000001EAA"


@dataclass
class Org:
    url: str
    control: SandboxControl
    app: Any

    def contacts(self, *, deleted: bool = False) -> list[dict[str, Any]]:
        records = self.control.records()
        return [r for r in records if r["attributes"]["type"] == "Contact" and r["IsDeleted"] == deleted]

    def accounts(self) -> list[dict[str, Any]]:
        return [r for r in self.control.records() if r["attributes"]["type"] == "Account" and not r["IsDeleted"]]

    def edit_account(self, account_id: str, fields: dict[str, Any], *, delete: bool = False) -> dict[str, Any]:
        body = {"sobject": "Account", "id": account_id, "fields": fields, "delete": delete}
        response = requests.post(f"{self.url}/_sandbox/edit", json=body, timeout=5)
        response.raise_for_status()
        return response.json()

    def share_modstamp(self) -> None:
        """Give every Contact the same SystemModstamp, as records written in one transaction
        can have (the sandbox stamps each record of a collection on its own millisecond)."""
        store = self.app.store
        with store.lock:
            contacts = store.tables["Contact"].values()
            stamp = max(record["SystemModstamp"] for record in contacts)
            for record in contacts:
                record["SystemModstamp"] = stamp

    def calls(self) -> dict[str, dict[str, int]]:
        return self.control.stats()["requests"]

    def count(self, key: str) -> int:
        return sum(self.calls().get(key, {}).values())


@pytest.fixture
def org():
    with running_sandbox("salesforce", seed=11) as running:
        yield Org(running.url, SandboxControl(running.url), running.app)


@pytest.fixture
def limiter():
    """Every test gets its own budget in Redis, so no test waits for another's traffic."""
    limiter = RateLimiter(f"salesforce-test-{uuid.uuid4().hex}", "10000/second")
    yield limiter
    limiter.reset()


@pytest.fixture
def sf_config(org, settings):
    settings.SALESFORCE = {
        **settings.SALESFORCE,
        "login_url": org.url,
        "instance_url": "",
        "access_token": "",
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
        "username": "",
        "password": "",
        "refresh_token": "",
        "organization_id": ORG_ID,
        "webhook_token": "hook-secret",
        "event_secret": "sandbox-secret",
    }
    return settings.SALESFORCE


@pytest.fixture
def provider(sf_config, limiter, db):  # creating Accounts takes a lock in PostgreSQL (syncroot.locks)
    return SalesforceProvider(sf_config, limiter=limiter)


def contact_values(n: int, **overrides: str) -> dict[str, str]:
    values = {
        "email": f"person{n}@example.com",
        "first_name": f"First{n}",
        "last_name": f"Last{n}",
        "phone": f"+1 555 {n:04d}",
        "company": "",
        "job_title": "Engineer",
    }
    values.update(overrides)
    return values


@contextmanager
def psycopg_session() -> Iterator[Any]:
    """A second database session (another worker's), autocommit; closed on exit."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    other = psycopg2.connect(**params)
    other.autocommit = True
    try:
        with other.cursor() as cursor:
            yield cursor
    finally:
        other.close()
