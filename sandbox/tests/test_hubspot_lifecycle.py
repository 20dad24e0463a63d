"""HubSpot sandbox lifecycle through the hubspot-api-client SDK: merge, restore, GDPR delete, and
the contact.merge / contact.restore / contact.privacyDeletion webhooks."""

import pytest
from hubspot.crm.contacts import (
    PublicGdprDeleteInput,
    PublicMergeInput,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.contacts.exceptions import ApiException, NotFoundException


def create(hubspot, **properties):
    return hubspot.contacts.basic_api.create(SimplePublicObjectInputForCreate(properties=properties))


@pytest.fixture
def hooked(hubspot, webhook_receiver):
    hubspot.control.config(webhook_url=webhook_receiver.url, webhook_retry_base_ms=20)
    return hubspot, webhook_receiver


def test_merge_keeps_the_primary_fills_its_blanks_and_the_merged_id_answers_with_it(hooked):
    hubspot, receiver = hooked
    primary = create(hubspot, email="ada@example.com", firstname="Ada")
    other = create(hubspot, email="ada.l@example.com", firstname="Augusta", phone="+44 1")
    assert hubspot.control.flush_webhooks()
    receiver.clear()

    survivor = hubspot.contacts.basic_api.merge(
        public_merge_input=PublicMergeInput(primary_object_id=primary.id, object_id_to_merge=other.id)
    )
    by_merged_id = hubspot.contacts.basic_api.get_by_id(other.id, properties=["email", "phone", "firstname"])
    listed = [c.id for c in hubspot.contacts.get_all()]
    events = receiver.wait_for_events(1)

    assert survivor.id == primary.id
    assert survivor.properties["firstname"] == "Ada"  # the primary's value wins
    assert survivor.properties["phone"] == "+44 1"  # a blank of the primary takes the other's
    assert survivor.properties["hs_merged_object_ids"] == other.id
    assert by_merged_id.id == primary.id
    assert by_merged_id.properties["email"] == "ada@example.com"
    assert listed == [primary.id]
    merge = events[0]
    assert merge["subscriptionType"] == "contact.merge"
    assert (merge["primaryObjectId"], merge["mergedObjectIds"], merge["newObjectId"]) == (
        int(primary.id),
        [int(other.id)],
        int(primary.id),
    )
    assert merge["objectId"] == int(primary.id)
    # The merged-away email is free again: a new contact may take it.
    assert create(hubspot, email="ada.l@example.com").id not in (primary.id, other.id)


def test_merge_of_a_missing_record_is_404_and_of_itself_400(hubspot):
    contact = create(hubspot, email="solo@example.com")
    with pytest.raises(NotFoundException):
        hubspot.contacts.basic_api.merge(
            public_merge_input=PublicMergeInput(primary_object_id=contact.id, object_id_to_merge="999999999")
        )
    with pytest.raises(ApiException) as refused:
        hubspot.contacts.basic_api.merge(
            public_merge_input=PublicMergeInput(primary_object_id=contact.id, object_id_to_merge=contact.id)
        )
    assert refused.value.status == 400


def test_restore_from_the_recycle_bin_keeps_the_id_and_sends_contact_restore(hooked):
    hubspot, receiver = hooked
    contact = create(hubspot, email="back@example.com", firstname="Back")
    hubspot.contacts.basic_api.archive(contact.id)
    assert hubspot.control.flush_webhooks()
    receiver.clear()

    restored = hubspot.control.edit(contact.id, restore=True)
    read = hubspot.contacts.basic_api.get_by_id(contact.id, properties=["email", "firstname"])
    events = receiver.wait_for_events(1)

    assert restored["archived"] is False
    assert read.properties == {"email": "back@example.com", "firstname": "Back"}
    assert events[0]["subscriptionType"] == "contact.restore"
    assert events[0]["objectId"] == int(contact.id)
    assert events[0]["changeSource"] == "CRM_UI"


def test_restore_is_refused_while_another_contact_holds_the_email(hubspot):
    contact = create(hubspot, email="taken@example.com")
    hubspot.contacts.basic_api.archive(contact.id)
    create(hubspot, email="taken@example.com")

    response = hubspot.control.session.post(
        f"{hubspot.control.url}/_sandbox/edit", json={"id": contact.id, "restore": True}, timeout=5
    )

    assert response.status_code == 400
    assert "already exists" in response.json()["message"]


def test_gdpr_delete_removes_the_record_for_good_blocklists_the_email_and_fires_privacy_deletion(hooked):
    hubspot, receiver = hooked
    contact = create(hubspot, email="forget@example.com", firstname="Forget")
    assert hubspot.control.flush_webhooks()
    receiver.clear()

    hubspot.contacts.basic_api.purge(
        public_gdpr_delete_input=PublicGdprDeleteInput(object_id="forget@example.com", id_property="email")
    )
    events = receiver.wait_for_events(1)

    with pytest.raises(NotFoundException):
        hubspot.contacts.basic_api.get_by_id(contact.id)
    with pytest.raises(NotFoundException):
        hubspot.contacts.basic_api.get_by_id(contact.id, archived=True)
    with pytest.raises(ApiException) as again:
        create(hubspot, email="forget@example.com")
    assert again.value.status == 400
    assert events[0]["subscriptionType"] == "contact.privacyDeletion"
    assert events[0]["objectId"] == int(contact.id)


def test_a_workflow_rule_rewrites_the_property_after_each_update(hooked):
    hubspot, receiver = hooked
    hubspot.control.config(workflow_rules=[{"property": "jobtitle", "value": "Workflow"}])
    contact = create(hubspot, email="wf@example.com")
    assert hubspot.control.flush_webhooks()
    receiver.clear()

    hubspot.contacts.basic_api.update(contact.id, SimplePublicObjectInput(properties={"jobtitle": "Engineer"}))
    events = receiver.wait_for_events(2)  # the workflow's change comes a moment after
    read = hubspot.contacts.basic_api.get_by_id(contact.id, properties=["jobtitle"])

    assert read.properties["jobtitle"] == "Workflow"
    assert [(e["propertyValue"], e["changeSource"]) for e in events] == [
        ("Engineer", "INTEGRATION"),
        ("Workflow", "AUTOMATION_PLATFORM"),
    ]
