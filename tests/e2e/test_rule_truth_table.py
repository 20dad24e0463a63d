"""The mapping rules' truth table, through a real worker and the HubSpot sandbox: for every rule, a
custom field changed in SyncRoot, changed in the CRM, changed on both sides within a second, and
blanked on either side; what each side holds once everything is quiet."""

import pytest
from hubspot.crm.properties import PropertyCreate

from tests.e2e.test_inbound import api_contact, quiet, writes
from tests.e2e.test_mappings import handled

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

BLANK = ""
# rule -> scenario -> (SyncRoot's value, the CRM's value) once quiet. Both start at "A"; SyncRoot
# changes to "S", the CRM to "C" ("both": SyncRoot first, the CRM a moment later).
TRUTH = {
    "two_way": {
        "syncroot": ("S", "S"), "crm": ("C", "C"), "both": ("C", "C"),
        "blank_syncroot": (BLANK, BLANK), "blank_crm": (BLANK, BLANK),
    },
    "syncroot_wins": {
        "syncroot": ("S", "S"), "crm": ("A", "A"), "both": ("S", "S"),
        "blank_syncroot": (BLANK, BLANK), "blank_crm": ("A", "A"),
    },
    "crm_wins": {
        "syncroot": ("S", "A"), "crm": ("C", "C"), "both": ("C", "C"),
        "blank_syncroot": (BLANK, "A"), "blank_crm": (BLANK, BLANK),
    },
    "prefer_syncroot_unless_blank": {
        "syncroot": ("S", "S"), "crm": ("A", "A"), "both": ("S", "S"),
        "blank_syncroot": ("A", "A"), "blank_crm": ("A", "A"),
    },
    "prefer_crm_unless_blank": {
        "syncroot": ("S", "A"), "crm": ("C", "C"), "both": ("C", "C"),
        "blank_syncroot": (BLANK, "A"), "blank_crm": ("A", "A"),
    },
    "off": {
        "syncroot": ("S", "A"), "crm": ("A", "C"), "both": ("S", "C"),
        "blank_syncroot": (BLANK, "A"), "blank_crm": ("A", BLANK),
    },
}  # fmt: skip


@pytest.fixture
def sandbox_options():
    return {"hubspot": {"webhook_properties": ["email", "firstname", "lastname", "region", "colour"]},
            "salesforce": {}}  # fmt: skip


def region_everywhere(stack, rule: str) -> None:
    """`region` in HubSpot (created with its properties API) and in SyncRoot, mapped with `rule`."""
    stack.hubspot_sdk().crm.properties.core_api.create(
        "contacts", PropertyCreate(name="region", label="Region", type="string", field_type="text",
                                   group_name="contactinformation"),
    )  # fmt: skip
    field = {"key": "region", "label": "Region", "type": "string"}
    assert stack.api.post("/fields", field, format="json").status_code == 201
    mapping = {"provider": "hubspot", "field": "region", "remote_field": "region", "rule": rule}
    assert stack.api.post("/mappings", mapping, format="json").status_code == 201


def crm_region(stack, hs_id: str) -> str:
    found = stack.hubspot_sdk().crm.contacts.basic_api.get_by_id(hs_id, properties=["region"])
    return found.properties.get("region") or BLANK


def syncroot_region(stack, contact_id: str) -> str:
    return api_contact(stack, contact_id)["custom"].get("region") or BLANK


def holding_a(stack, scenario: str) -> tuple[str, str]:
    """A contact both SyncRoot and HubSpot hold with region "A" (where the rule does not write it to
    the CRM, a person sets it there)."""
    created = stack.api.post(
        "/contacts", {"email": f"{scenario}@example.com", "custom": {"region": "A"}}, format="json"
    )
    assert created.status_code == 201, created.content
    contact_id = created.json()["id"]
    hs_id = stack.wait_until(lambda: api_contact(stack, contact_id)["sync"]["hubspot"]["external_id"])
    return contact_id, hs_id


def act(stack, scenario: str, contact_id: str, hs_id: str) -> None:
    def syncroot(value):
        response = stack.api.patch(f"/contacts/{contact_id}", {"custom": {"region": value}}, format="json")
        assert response.status_code == 200, response.content

    if scenario == "syncroot":
        syncroot("S")
    elif scenario == "crm":
        stack.hubspot_ctl.edit(hs_id, {"region": "C"})
    elif scenario == "both":
        syncroot("S")
        stack.hubspot_ctl.edit(hs_id, {"region": "C"})
    elif scenario == "blank_syncroot":
        syncroot(None)
    else:
        stack.hubspot_ctl.edit(hs_id, {"region": BLANK})


@pytest.mark.parametrize("rule", list(TRUTH))
def test_each_rule_in_each_case(stack, rule):
    region_everywhere(stack, rule)
    contacts = {scenario: holding_a(stack, scenario) for scenario in TRUTH[rule]}
    for _, hs_id in contacts.values():
        stack.wait_until(lambda hs_id=hs_id: crm_region(stack, hs_id) == "A" or rule in ("crm_wins", "off"))
        if crm_region(stack, hs_id) != "A":
            stack.hubspot_ctl.edit(hs_id, {"region": "A"})
    for contact_id, hs_id in contacts.values():
        stack.wait_until(lambda c=contact_id, h=hs_id: (syncroot_region(stack, c), crm_region(stack, h)) == ("A", "A"))
    quiet(stack)

    for scenario, (contact_id, hs_id) in contacts.items():
        act(stack, scenario, contact_id, hs_id)

    def outcome():
        return {s: (syncroot_region(stack, c), crm_region(stack, h)) for s, (c, h) in contacts.items()}

    expected = TRUTH[rule]
    try:
        stack.wait_until(lambda: outcome() == expected, timeout=30)
    except AssertionError:
        assert outcome() == expected  # which cases differ
    quiet(stack)
    assert outcome() == expected  # and it stays so: no late write undoes it


def test_a_change_to_an_unmapped_crm_field_writes_nowhere(stack):
    """HubSpot reports `colour` (a custom property, subscribed, not mapped): no contact changes, no
    CRM is written."""
    stack.hubspot_sdk().crm.properties.core_api.create(
        "contacts", PropertyCreate(name="colour", label="Colour", type="string", field_type="text",
                                   group_name="contactinformation"),
    )  # fmt: skip
    created = stack.api.post("/contacts", {"email": "unmapped@example.com", "last_name": "Lovelace"}, format="json")
    contact_id = created.json()["id"]
    hs_id = stack.wait_until(lambda: api_contact(stack, contact_id)["sync"]["hubspot"]["external_id"])
    stack.wait_until(lambda: api_contact(stack, contact_id)["sync"]["salesforce"]["status"] == "synced")
    quiet(stack)
    version = api_contact(stack, contact_id)["version"]
    hs_writes, sf_writes = writes(stack.hubspot_ctl.stats()), writes(stack.salesforce_ctl.stats())
    events = handled("hubspot")

    stack.hubspot_ctl.edit(hs_id, {"colour": "Teal"})

    stack.wait_until(lambda: handled("hubspot") > events)
    quiet(stack)
    assert api_contact(stack, contact_id)["version"] == version
    assert writes(stack.hubspot_ctl.stats()) == hs_writes
    assert writes(stack.salesforce_ctl.stats()) == sf_writes
