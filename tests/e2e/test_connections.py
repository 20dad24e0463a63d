"""Several accounts of one CRM at once: two HubSpot portals and a Salesforce org, through the API.

The second portal is connected at run time with an OAuth refresh token (the account id is asked
of HubSpot), its webhooks arrive at the one app URL and are routed by portal id, and a revoked
grant pauses that portal alone until it is reconnected, then what waited arrives.
"""

import requests

from contacts.models import Contact
from providers.models import Connection, ConnectionStatus, DeadLetter, LinkStatus, ProviderLink
from sandbox.testing import SandboxControl, running_sandbox
from tests.e2e.conftest import SECRET
from webhooks.models import WebhookEvent

EU_PORTAL = 777001


def _emails(records: list[dict]) -> list[str]:
    return sorted(r["properties"]["email"] for r in records if not r.get("archived"))


def _eu_record(eu: SandboxControl, email: str) -> dict | None:
    return next((r for r in eu.records() if r["properties"].get("email") == email and not r.get("archived")), None)


def test_two_hubspot_portals_and_salesforce_in_one_run(stack):
    before = stack.api.post("/contacts", {"email": "before@example.com", "first_name": "Ada"}, format="json")
    assert before.status_code == 201
    with running_sandbox(
        "hubspot", client_secret=SECRET, portal_id=EU_PORTAL, webhook_url=f"{stack.server_url}/webhooks/hubspot"
    ) as eu_server:
        eu = SandboxControl(eu_server.url)
        credentials = {"refresh_token": "sandbox-refresh-token", "client_id": "sandbox-client", "client_secret": SECRET}
        answer = stack.api.post(
            "/connections",
            {"provider": "hubspot", "name": "HubSpot EU", "instance_url": eu_server.url, "credentials": credentials},
            format="json",
        )
        assert answer.status_code == 201, answer.content
        connection = answer.json()
        assert (connection["key"], connection["account_id"], connection["status"]) == (
            "hubspot-eu",
            str(EU_PORTAL),
            "active",
        )
        assert "credentials" not in connection
        assert "sandbox-refresh-token" not in answer.content.decode()
        stored = Connection.objects.get(key="hubspot-eu").credentials
        assert stored
        assert "sandbox-refresh-token" not in stored

        # A contact made before the portal was connected is sent there too; a new one reaches all three.
        stack.wait_until(lambda: _eu_record(eu, "before@example.com"), timeout=30)
        created = stack.api.post("/contacts", {"email": "grace@example.com", "last_name": "Hopper"}, format="json")
        contact_id = created.json()["id"]
        stack.wait_until(
            lambda: ProviderLink.objects.filter(contact_id=contact_id, status=LinkStatus.SYNCED).count() == 3
        )
        assert set(stack.api.get(f"/contacts/{contact_id}").json()["sync"]) == {"hubspot", "hubspot-eu", "salesforce"}

        # A person's edit in the EU portal: its webhook, sent to the app's one URL, is routed by portal id.
        record = _eu_record(eu, "grace@example.com")
        eu.edit(record["id"], {"firstname": "FromEU"})
        stack.wait_until(lambda: Contact.objects.get(pk=contact_id).first_name == "FromEU", timeout=30)
        assert WebhookEvent.objects.filter(provider="hubspot-eu").exists()
        stack.wait_until(
            lambda: (
                any(r["properties"].get("firstname") == "FromEU" for r in stack.hubspot_records())
                and any(r.get("FirstName") == "FromEU" for r in stack.salesforce_contacts())
            ),
            timeout=30,
        )

        # The app is uninstalled from the EU portal: that connection alone pauses, nothing is parked.
        requests.delete(f"{eu_server.url}/oauth/v1/refresh-tokens/sandbox-refresh-token", timeout=5).raise_for_status()
        assert stack.api.patch(f"/contacts/{contact_id}", {"last_name": "Revoked"}, format="json").status_code == 200
        stack.wait_until(
            lambda: Connection.objects.filter(key="hubspot-eu", status=ConnectionStatus.AUTH_FAILED).exists(),
            timeout=30,
        )
        stack.wait_until(
            lambda: (
                any(r["properties"].get("lastname") == "Revoked" for r in stack.hubspot_records())
                and any(r.get("LastName") == "Revoked" for r in stack.salesforce_contacts())
            ),
            timeout=30,
        )
        sync = stack.api.get(f"/contacts/{contact_id}").json()["sync"]
        assert (sync["hubspot-eu"]["status"], sync["hubspot-eu"]["reason"]) == ("paused", "auth_failed")
        assert sync["hubspot"]["status"] == sync["salesforce"]["status"] == "synced"
        metrics = stack.api.get("/metrics").content.decode()
        assert 'syncroot_connection_up{connection="hubspot-eu",provider="hubspot"} 0.0' in metrics
        assert 'syncroot_connection_up{connection="hubspot",provider="hubspot"} 1.0' in metrics
        assert DeadLetter.objects.count() == 0

        # Installed again: reconnecting with the new grant drains what waited, once.
        eu.config(refresh_token="eu-refresh-2")
        reconnected = stack.api.patch(
            f"/connections/{connection['id']}",
            {"credentials": {**credentials, "refresh_token": "eu-refresh-2"}},
            format="json",
        )
        assert reconnected.status_code == 200, reconnected.content
        assert reconnected.json()["status"] == "active"
        stack.wait_until(
            lambda: (_eu_record(eu, "grace@example.com") or {}).get("properties", {}).get("lastname") == "Revoked",
            timeout=30,
        )

        emails = sorted(Contact.objects.values_list("email", flat=True))
        assert _emails(eu.records()) == emails
        assert _emails(stack.hubspot_records()) == emails
        assert sorted(r["Email"] for r in stack.salesforce_contacts()) == emails
        assert DeadLetter.objects.count() == 0
