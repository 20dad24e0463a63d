"""GET /contacts/{id}/history: where each field's value came from."""

import uuid

import pytest

from contacts.services import contact_update
from providers.models import ChangeSource
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db


def test_history_names_the_api_as_the_source_of_each_value_written_through_it(api_client):
    created = api_client.post("/contacts", {"email": "ada@example.com", "first_name": "Ada"}, format="json").json()
    api_client.patch(f"/contacts/{created['id']}", {"first_name": "Augusta"}, format="json")

    response = api_client.get(f"/contacts/{created['id']}/history")

    assert response.status_code == 200
    fields = response.json()["fields"]
    assert fields["first_name"]["value"] == "Augusta"
    assert fields["first_name"]["source"] == "api"
    assert [c["value"] for c in fields["first_name"]["changes"]] == ["Augusta", "Ada"]
    assert fields["email"]["source"] == "api"
    # A blank the contact was created with is no change: no source, no log.
    assert fields["phone"] == {"value": "", "source": None, "changed_at": None, "changes": []}


def test_an_operator_edit_is_named_as_such(api_client):
    created = api_client.post("/contacts", {"email": "ada@example.com"}, format="json").json()
    contact_update(contact_id=created["id"], data={"company": "Engines"}, partial=True, source=ChangeSource.OPERATOR)

    fields = api_client.get(f"/contacts/{created['id']}/history").json()["fields"]

    assert (fields["company"]["value"], fields["company"]["source"]) == ("Engines", "operator")
    assert fields["email"]["source"] == "api"


def test_history_of_an_unknown_contact_is_a_json_404(api_client):
    response = api_client.get(f"/contacts/{uuid.uuid4()}/history")

    assert_error(response, 404, "not_found")
