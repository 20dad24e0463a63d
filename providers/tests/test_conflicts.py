"""The conflict queue and the bounce guard at the service level, on the real database."""

import pytest

from contacts.tests.factories import ContactFactory
from crm.base import InboundChange
from providers import conflicts, inbound
from providers.models import ConflictKind, ConflictStatus, ProviderLink, RecordIssue
from providers.tests.test_issues import connected, edit, linked  # noqa: F401  (fixture)
from syncroot.errors import ApplicationError

pytestmark = pytest.mark.django_db


def test_a_value_that_does_not_fit_is_queued_kept_for_syncroot_and_closed():
    contact = ContactFactory(job_title="Analyst")
    link = linked(contact)
    edit(job_title="x" * 129)

    [case] = conflicts.conflict_list(status=ConflictStatus.OPEN)
    assert (case.kind, case.field, case.code, case.contact_id) == (ConflictKind.VALUE_NOT_FIT, "job_title", "too_long",
                                                                   contact.pk)  # fmt: skip
    assert conflicts.conflict_counts()[ConflictKind.VALUE_NOT_FIT] == 1
    with pytest.raises(ApplicationError) as refused:
        conflicts.conflict_resolve(conflict_id=case.pk, action="keep_crm")
    assert refused.value.details["allowed"] == ["keep_syncroot", "ignore"]

    resolved = conflicts.conflict_resolve(conflict_id=case.pk, action="keep_syncroot")

    assert (resolved.status, resolved.action) == (ConflictStatus.RESOLVED, "keep_syncroot")
    link.refresh_from_db()
    assert link.issues == []
    assert link.status == "pending"  # SyncRoot's "Analyst" goes back to the CRM
    assert conflicts.conflict_counts()[ConflictKind.VALUE_NOT_FIT] == 0


def test_a_case_that_clears_by_itself_is_resolved_as_cleared():
    contact = ContactFactory(job_title="Analyst")
    linked(contact)
    edit(job_title="x" * 129)
    [case] = conflicts.conflict_list(status=ConflictStatus.OPEN)

    edit(job_title="Lead")  # fixed in the CRM

    assert list(conflicts.conflict_list(status=ConflictStatus.OPEN)) == []
    case.refresh_from_db()
    assert (case.status, case.action) == (ConflictStatus.RESOLVED, "cleared")


def test_a_record_without_email_is_queued_and_an_ignored_case_stays_closed():
    inbound.change_apply(provider="hubspot", change=InboundChange(external_id="55", values={"first_name": "Nomail"}))
    [case] = conflicts.conflict_list(status=ConflictStatus.OPEN)
    assert case.kind == ConflictKind.NO_EMAIL

    conflicts.conflict_resolve(conflict_id=case.pk, action="ignore")
    inbound.change_apply(provider="hubspot", change=InboundChange(external_id="55", values={"first_name": "Again"}))

    assert RecordIssue.objects.filter(external_id="55").exists()
    assert list(conflicts.conflict_list(status=ConflictStatus.OPEN)) == []
    assert conflicts.conflict_counts()[ConflictKind.NO_EMAIL] == 0


def test_a_field_flipping_back_is_paused_after_the_limit_and_ignored_values_wait(settings):
    settings.BOUNCE_LIMIT_PER_HOUR = 2
    contact = ContactFactory(job_title="Engineer")
    link = linked(contact)
    for value in ["Rule", "Engineer", "Rule", "Engineer", "Rule"]:  # the CRM keeps changing it back
        edit(job_title=value)

    link.refresh_from_db()
    contact.refresh_from_db()
    assert [i["code"] for i in link.issues] == ["bouncing"]
    assert contact.job_title == "Rule"  # the flip that passed the limit
    edit(job_title="Something else")  # paused: not applied
    contact.refresh_from_db()
    assert contact.job_title == "Rule"
    type(contact).objects.filter(pk=contact.pk).update(job_title="Manual")  # meanwhile, through the API
    [case] = conflicts.conflict_list(status=ConflictStatus.OPEN)
    assert case.kind == ConflictKind.BOUNCING_FIELD

    conflicts.conflict_resolve(conflict_id=case.pk, action="keep_crm")

    contact.refresh_from_db()
    link = ProviderLink.objects.get(pk=link.pk)
    assert contact.job_title == "Rule"  # the CRM's value, as it set it when the field was paused
    assert link.issues == []
    assert link.bounces == {}


def test_a_record_syncroot_could_not_take_in_can_only_be_ignored():
    inbound.change_apply(provider="hubspot", change=InboundChange(external_id="56", values={"email": "not-an-email"}))
    [case] = conflicts.conflict_list(status=ConflictStatus.OPEN)
    assert (case.kind, case.code) == (ConflictKind.VALUE_NOT_FIT, "invalid_email")
    assert conflicts.allowed_actions(case) == ("ignore",)  # no SyncRoot value to keep: no contact holds it

    with pytest.raises(ApplicationError) as refused:
        conflicts.conflict_resolve(conflict_id=case.pk, action="keep_syncroot")

    assert (refused.value.code, refused.value.details["allowed"]) == ("action_not_allowed", ["ignore"])
    assert conflicts.conflict_resolve(conflict_id=case.pk, action="ignore").status == ConflictStatus.RESOLVED
