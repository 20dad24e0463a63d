"""Salesforce merge through the partner SOAP call, when a person changed the records meanwhile."""

from crm.base import PushItem

from .conftest import contact_values


def created(provider, n: int) -> str:
    (result,) = provider.push([PushItem(key=str(n), values=contact_values(n))])
    return str(result.external_id)


def row(org, record_id: str) -> dict:
    return next(r for r in org.control.records() if r["Id"] == record_id)


def test_merge_deletes_the_loser_with_its_master(provider, org):
    master, loser = created(provider, 1), created(provider, 2)

    assert provider.merge_records(survivor_id=master, loser_id=loser) == master

    assert (row(org, loser)["IsDeleted"], row(org, loser)["MasterRecordId"]) == (True, master)


def test_merging_into_a_master_a_person_deleted_answers_none_and_leaves_the_loser(provider, org):
    master, loser = created(provider, 1), created(provider, 2)
    org.control.edit(master, delete=True)  # a person deleted the survivor's record meanwhile

    # None: no merge made; the caller deletes the loser (SyncRoot's survivor holds its values).
    assert provider.merge_records(survivor_id=master, loser_id=loser) is None
    assert row(org, loser)["IsDeleted"] is False


def test_merging_into_a_master_a_person_merged_away_merges_into_its_master(provider, org):
    master, loser, elsewhere = created(provider, 1), created(provider, 2), created(provider, 3)
    org.control.edit(master, merge_into=elsewhere)  # the merge wizard: the master merged into a third

    assert provider.merge_records(survivor_id=master, loser_id=loser) == elsewhere

    assert (row(org, loser)["IsDeleted"], row(org, loser)["MasterRecordId"]) == (True, elsewhere)


def test_merging_a_loser_gone_already_is_done(provider, org):
    master, loser = created(provider, 1), created(provider, 2)
    org.control.edit(loser, delete=True)

    assert provider.merge_records(survivor_id=master, loser_id=loser) == master
    assert row(org, master)["IsDeleted"] is False


def test_merging_records_a_person_merged_the_other_way_round_answers_the_one_left(provider, org):
    master, loser = created(provider, 1), created(provider, 2)
    org.control.edit(master, merge_into=loser)

    assert provider.merge_records(survivor_id=master, loser_id=loser) == loser
    assert row(org, loser)["IsDeleted"] is False
