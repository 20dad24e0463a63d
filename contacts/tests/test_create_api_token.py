"""`manage.py create_api_token NAME [--replace]`."""

from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from contacts.models import ApiToken

pytestmark = pytest.mark.django_db


def create_token(*args: str) -> list[str]:
    out = StringIO()
    call_command("create_api_token", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def status_with(raw: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client.get("/contacts").status_code


def test_the_last_line_printed_is_a_working_token():
    lines = create_token("crm-bridge")

    raw = lines[-1]
    assert status_with(raw) == 200
    token = ApiToken.objects.get(name="crm-bridge")
    assert token.is_active
    assert raw.startswith(token.prefix)
    assert token.prefix in lines[0]


def test_without_replace_earlier_tokens_of_the_name_keep_working():
    first = create_token("app")[-1]
    second = create_token("app")[-1]

    assert first != second
    assert status_with(first) == status_with(second) == 200
    assert ApiToken.objects.filter(name="app", is_active=True).count() == 2


def test_replace_revokes_earlier_tokens_of_that_name_only():
    old = create_token("app")[-1]
    other = create_token("other-app")[-1]

    lines = create_token("app", "--replace")

    assert "Revoked 1" in lines[0]
    assert status_with(lines[-1]) == 200
    assert status_with(old) == 401
    assert status_with(other) == 200
    assert ApiToken.objects.filter(name="app", is_active=True).count() == 1


def test_replace_without_earlier_tokens_just_creates_one():
    lines = create_token("fresh", "--replace")

    assert not any("Revoked" in line for line in lines)
    assert status_with(lines[-1]) == 200


def test_a_name_is_required():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("create_api_token")
