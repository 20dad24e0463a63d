import pytest

pytestmark = pytest.mark.django_db


def test_create_then_read_round_trips(api_client):
    created = api_client.post("/contacts", {"email": "ada@example.com", "first_name": "Ada"}, format="json")
    assert created.status_code == 201
    read = api_client.get(created["Location"])
    assert read.status_code == 200
    assert read.json()["first_name"] == "Ada"
    assert read["ETag"] == '"1"'
