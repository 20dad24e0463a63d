"""HubSpot sandbox batch endpoints through the official SDK."""

import json

import pytest
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
)
from hubspot.crm.contacts.exceptions import ApiException


def create_inputs(*emails, trace=False):
    inputs = []
    for index, email in enumerate(emails):
        item = {"properties": {"email": email, "firstname": f"F{index}"}}
        if trace:
            item["objectWriteTraceId"] = f"trace-{index}"
        inputs.append(item)
    return BatchInputSimplePublicObjectBatchInputForCreate(inputs=inputs)


def test_batch_create_of_100_is_201_complete(hubspot):
    emails = [f"b{i}@example.com" for i in range(100)]

    response, status, _ = hubspot.contacts.batch_api.create_with_http_info(create_inputs(*emails))

    assert status == 201
    assert response.status == "COMPLETE"
    assert sorted(result.properties["email"] for result in response.results) == sorted(emails)
    assert response.started_at <= response.completed_at
    assert hubspot.control.stats()["records"] == 100


def test_batch_over_100_inputs_is_refused(hubspot):
    with pytest.raises(ApiException) as excinfo:
        hubspot.contacts.batch_api.create(create_inputs(*[f"x{i}@example.com" for i in range(101)]))

    assert excinfo.value.status == 400
    assert json.loads(excinfo.value.body)["category"] == "VALIDATION_ERROR"
    assert hubspot.control.stats()["records"] == 0


def test_batch_create_without_trace_ids_fails_whole_batch_on_one_conflict(hubspot):
    hubspot.contacts.batch_api.create(create_inputs("taken@example.com"))

    with pytest.raises(ApiException) as excinfo:
        hubspot.contacts.batch_api.create(create_inputs("new1@example.com", "TAKEN@example.com"))

    assert excinfo.value.status == 409
    assert "Contact already exists. Existing ID:" in json.loads(excinfo.value.body)["message"]
    assert hubspot.control.stats()["records"] == 1  # nothing of the failed batch was written


def test_batch_create_with_trace_ids_is_207_with_per_input_errors(hubspot):
    hubspot.contacts.batch_api.create(create_inputs("taken@example.com"))

    response, status, _ = hubspot.contacts.batch_api.create_with_http_info(
        create_inputs("ok@example.com", "taken@example.com", "not-an-email", trace=True)
    )

    assert status == 207
    assert response.num_errors == 2
    assert [result.properties["email"] for result in response.results] == ["ok@example.com"]
    assert response.results[0].object_write_trace_id == "trace-0"
    categories = sorted(error.category for error in response.errors)
    assert categories == ["CONFLICT", "VALIDATION_ERROR"]
    traces = sorted(error.context["objectWriteTraceId"][0] for error in response.errors)
    assert traces == ["trace-1", "trace-2"]


def test_batch_read_reports_missing_ids_in_a_207(hubspot):
    created = hubspot.contacts.batch_api.create(create_inputs("r1@example.com", "r2@example.com")).results
    ids = [contact.id for contact in created]

    response, status, _ = hubspot.contacts.batch_api.read_with_http_info(
        BatchReadInputSimplePublicObjectId(
            inputs=[{"id": ids[0]}, {"id": "999999"}, {"id": ids[1]}], properties=["email"], properties_with_history=[]
        )
    )
    by_email = hubspot.contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[{"id": "R2@example.com"}], id_property="email", properties=["email"], properties_with_history=[]
        )
    )

    assert status == 207
    assert sorted(result.id for result in response.results) == sorted(ids)
    assert response.num_errors == 1
    assert response.errors[0].category == "OBJECT_NOT_FOUND"
    assert response.errors[0].context == {"ids": ["999999"]}
    assert [result.id for result in by_email.results] == [ids[1]]


def test_batch_update_is_200_and_207_with_a_missing_id(hubspot):
    created = hubspot.contacts.batch_api.create(create_inputs("u1@example.com", "u2@example.com")).results

    ok, ok_status, _ = hubspot.contacts.batch_api.update_with_http_info(
        BatchInputSimplePublicObjectBatchInput(
            inputs=[{"id": contact.id, "properties": {"jobtitle": "Engineer"}} for contact in created]
        )
    )
    partial, partial_status, _ = hubspot.contacts.batch_api.update_with_http_info(
        BatchInputSimplePublicObjectBatchInput(
            inputs=[{"id": created[0].id, "properties": {"phone": "1"}}, {"id": "424242", "properties": {"phone": "2"}}]
        )
    )

    assert ok_status == 200
    assert ok.status == "COMPLETE"
    assert {result.properties["jobtitle"] for result in ok.results} == {"Engineer"}
    assert partial_status == 207
    assert partial.num_errors == 1
    assert partial.errors[0].context["ids"] == ["424242"]
    assert hubspot.contacts.basic_api.get_by_id(created[0].id, properties=["phone"]).properties["phone"] == "1"


def test_batch_update_refuses_email_as_id_property(hubspot):
    hubspot.contacts.batch_api.create(create_inputs("e@example.com"))

    with pytest.raises(ApiException) as excinfo:
        hubspot.contacts.batch_api.update(
            BatchInputSimplePublicObjectBatchInput(
                inputs=[{"id": "e@example.com", "idProperty": "email", "properties": {"phone": "1"}}]
            )
        )

    assert excinfo.value.status == 400
    assert "non-unique 0-1 property email" in json.loads(excinfo.value.body)["message"]


def test_batch_upsert_by_email_creates_and_updates_in_one_call(hubspot):
    existing = hubspot.contacts.batch_api.create(create_inputs("old@example.com")).results[0]

    response, status, _ = hubspot.contacts.batch_api.upsert_with_http_info(
        BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                {"id": "OLD@example.com", "idProperty": "email", "properties": {"lastname": "Updated"}},
                {"id": "fresh@example.com", "idProperty": "email", "properties": {"lastname": "Created"}},
            ]
        )
    )

    assert status == 200
    by_email = {result.properties["email"]: result for result in response.results}
    assert by_email["old@example.com"].new is False
    assert by_email["old@example.com"].id == existing.id
    assert by_email["old@example.com"].properties["lastname"] == "Updated"
    assert by_email["fresh@example.com"].new is True
    assert hubspot.control.stats()["records"] == 2


def test_batch_upsert_reports_an_invalid_input_in_a_207(hubspot):
    response, status, _ = hubspot.contacts.batch_api.upsert_with_http_info(
        BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                {"id": "good@example.com", "idProperty": "email", "properties": {}},
                {"id": "bad-email", "idProperty": "email", "properties": {}},
            ]
        )
    )

    assert status == 207
    assert [result.properties["email"] for result in response.results] == ["good@example.com"]
    assert response.errors[0].category == "VALIDATION_ERROR"


def test_batch_archive_is_204_and_ignores_unknown_ids(hubspot):
    created = hubspot.contacts.batch_api.create(create_inputs("a1@example.com", "a2@example.com")).results

    _, status, _ = hubspot.contacts.batch_api.archive_with_http_info(
        BatchInputSimplePublicObjectId(inputs=[{"id": created[0].id}, {"id": "777777"}])
    )

    assert status == 204
    assert [contact.id for contact in hubspot.contacts.get_all()] == [created[1].id]
