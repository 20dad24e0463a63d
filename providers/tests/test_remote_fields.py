"""GET /providers/{provider}/fields: each CRM's contact fields, through the sandboxes."""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from django.core.cache import cache

from crm import registry
from providers.remote_fields import CACHE_VERSION
from sandbox.testing import SandboxControl, running_sandbox

SECRET = "sandbox-secret"
HUBSPOT_TIER = {
    "name": "tier",
    "label": "Tier",
    "type": "enumeration",
    "fieldType": "select",
    "groupName": "contactinformation",
    "options": [
        {"label": "Gold", "value": "gold", "displayOrder": 0, "hidden": False},
        {"label": "Silver", "value": "silver", "displayOrder": 1, "hidden": False},
    ],
}
SALESFORCE_TIER = {
    "FullName": "Contact.Tier__c",
    "Metadata": {
        "label": "Tier",
        "type": "Picklist",
        "valueSet": {
            "restricted": True,
            "valueSetDefinition": {
                "value": [{"fullName": "Gold", "label": "Gold"}, {"fullName": "Silver", "label": "Silver"}]
            },
        },
    },
}
SALESFORCE_REGION = {"FullName": "Contact.Region__c", "Metadata": {"label": "Region", "type": "Text", "length": 40}}


@dataclass
class Crms:
    hubspot: SandboxControl
    salesforce: SandboxControl
    hubspot_url: str
    salesforce_url: str

    def control(self, provider: str) -> SandboxControl:
        return getattr(self, provider)

    def add_field(self, provider: str, body: dict) -> None:
        url = self.hubspot_url if provider == "hubspot" else self.salesforce_url
        response = requests.post(f"{url}/_sandbox/fields", json=body, timeout=5)
        assert response.status_code == 201, response.text


@pytest.fixture
def crms(settings) -> Iterator[Crms]:
    key = uuid.uuid4().hex
    with running_sandbox("hubspot") as hubspot, running_sandbox("salesforce") as salesforce:
        settings.HUBSPOT = {
            **settings.HUBSPOT, "base_url": hubspot.url, "access_token": "sandbox-token",
            "rate_limit": "1000/10 seconds", "limiter_key": f"hubspot-schema-{key}",
        }  # fmt: skip
        settings.SALESFORCE = {
            **settings.SALESFORCE, "login_url": salesforce.url, "client_id": "sandbox-client",
            "client_secret": SECRET, "rate_limit": "10000/second", "rate_limit_name": f"salesforce-schema-{key}",
        }  # fmt: skip
        registry.reset()
        for name in ("hubspot", "salesforce"):
            cache.delete(f"crm-schema:{name}", version=CACHE_VERSION)
        found = Crms(SandboxControl(hubspot.url), SandboxControl(salesforce.url), hubspot.url, salesforce.url)
        found.hubspot.config(webhooks_enabled=False)
        found.salesforce.config(webhooks_enabled=False)
        yield found
        for name in ("hubspot", "salesforce"):
            cache.delete(f"crm-schema:{name}", version=CACHE_VERSION)
        registry.reset()


def fields_of(api_client, provider: str, *, refresh: bool = False) -> dict[str, dict]:
    response = api_client.get(f"/providers/{provider}/fields" + ("?refresh=true" if refresh else ""))
    assert response.status_code == 200, response.content
    return {field["name"]: field for field in response.json()}


def test_salesforce_built_in_fields_with_their_types_and_lengths(api_client, crms):
    fields = fields_of(api_client, "salesforce")
    email, title = fields["Email"], fields["Title"]
    assert email == {
        "name": "Email", "label": email["label"], "type": "email", "remote_type": "email", "length": 80,
        "options": None, "writable": True, "custom": False,
    }  # fmt: skip
    assert (title["type"], title["length"], title["writable"]) == ("string", 128, True)
    assert (fields["Birthdate"]["type"], fields["Birthdate"]["length"]) == ("date", None)
    assert fields["AccountId"]["type"] == "reference"
    assert (fields["Phone"]["type"], fields["Phone"]["length"]) == ("phone", 40)


def test_salesforce_system_fields_are_not_writable(api_client, crms):
    fields = fields_of(api_client, "salesforce")
    assert (fields["Id"]["type"], fields["Id"]["writable"]) == ("id", False)
    modstamp = fields["SystemModstamp"]
    assert (modstamp["type"], modstamp["length"], modstamp["writable"]) == ("datetime", None, False)


def test_salesforce_picklist_lists_its_active_values(api_client, crms):
    lead_source = fields_of(api_client, "salesforce")["LeadSource"]
    assert (lead_source["type"], lead_source["remote_type"]) == ("enum", "picklist")
    assert lead_source["options"]
    assert all(set(option) == {"value", "label"} for option in lead_source["options"])
    assert "Web" in {option["value"] for option in lead_source["options"]}


def test_hubspot_built_in_properties_with_their_types(api_client, crms):
    fields = fields_of(api_client, "hubspot")
    email, job_title = fields["email"], fields["jobtitle"]
    assert (email["type"], email["remote_type"], email["length"], email["writable"], email["custom"]) == (
        "email", "string/text", None, True, False,
    )  # fmt: skip
    assert (job_title["type"], job_title["label"], job_title["options"], job_title["writable"]) == (
        "string", "Job Title", None, True,
    )  # fmt: skip
    assert (fields["hs_object_id"]["type"], fields["hs_object_id"]["writable"]) == ("id", False)
    assert fields["hs_email_domain"]["writable"] is False  # calculated by HubSpot
    assert fields["lifecyclestage"]["type"] == "enum"
    assert {"value", "label"} == set(fields["lifecyclestage"]["options"][0])


@pytest.mark.parametrize(
    ("provider", "body", "name", "values"),
    [
        ("hubspot", HUBSPOT_TIER, "tier", ["gold", "silver"]),
        ("salesforce", SALESFORCE_TIER, "Tier__c", ["Gold", "Silver"]),
    ],
)
def test_a_custom_field_appears_after_a_refresh_not_before(api_client, crms, provider, body, name, values):
    options = [{"value": value, "label": value.title()} for value in values]
    assert name not in fields_of(api_client, provider)
    crms.add_field(provider, body)
    assert name not in fields_of(api_client, provider)  # the cached answer
    tier = fields_of(api_client, provider, refresh=True)[name]
    assert (tier["type"], tier["options"], tier["writable"], tier["custom"]) == ("enum", options, True, True)
    assert name in fields_of(api_client, provider)  # the refreshed answer is the cached one now


def test_a_custom_text_field_keeps_its_length(api_client, crms):
    crms.add_field("salesforce", SALESFORCE_REGION)
    region = fields_of(api_client, "salesforce", refresh=True)["Region__c"]
    assert (region["type"], region["length"], region["custom"], region["options"]) == ("string", 40, True, None)


def test_the_cache_spares_the_crm_a_call(api_client, crms):
    fields_of(api_client, "hubspot")
    before = crms.hubspot.stats()
    fields_of(api_client, "hubspot")
    assert crms.hubspot.stats() == before


def test_a_crm_that_is_not_connected_is_404(api_client, crms):
    response = api_client.get("/providers/pipedrive/fields")
    assert response.status_code == 404
    assert response.json()["code"] == "provider_not_connected"


def test_a_token_is_required(client, crms):
    response = client.get("/providers/hubspot/fields")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_an_invalid_refresh_flag_is_400(api_client, crms):
    response = api_client.get("/providers/hubspot/fields?refresh=perhaps")
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    ("provider", "crm_words"),
    [
        ("hubspot", ["injected fault"]),
        # Salesforce's own words for its 500 and its 503 (the sandbox picks one at random).
        ("salesforce", ["An unexpected error occurred", "Server temporarily unavailable"]),
    ],
)
def test_a_crm_answering_5xx_is_503_with_its_message(api_client, crms, provider, crm_words):
    crms.control(provider).config(error_rate=1.0)
    response = api_client.get(f"/providers/{provider}/fields")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "crm_unavailable"
    assert any(words in body["message"] for words in crm_words), body["message"]
    assert body["details"]["provider"] == provider
    assert body["details"]["crm_status"] in (500, 503)


def test_a_5xx_on_refresh_keeps_nothing_stale_out_of_sight(api_client, crms):
    """A refresh that fails answers the error: the caller asked for the CRM's current schema."""
    fields_of(api_client, "hubspot")
    crms.hubspot.config(error_rate=1.0)
    assert api_client.get("/providers/hubspot/fields?refresh=true").status_code == 503
    assert "email" in fields_of(api_client, "hubspot")  # the cached answer is still served


def test_refused_credentials_are_502_crm_auth_failed(api_client, crms):
    crms.hubspot.config(token="revoked")
    response = api_client.get("/providers/hubspot/fields")
    assert response.status_code == 502
    assert response.json()["code"] == "crm_auth_failed"
    crms.salesforce.config(client_secret="rotated-secret")
    response = api_client.get("/providers/salesforce/fields")
    assert response.status_code == 502
    assert response.json()["code"] == "crm_auth_failed"
