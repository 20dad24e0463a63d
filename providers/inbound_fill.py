"""After creates were matched by email to existing CRM records: SyncRoot's blanks take the records'
values (and go on to the other CRMs)."""

import logging

from django.db import transaction
from django.utils import timezone

from contacts.models import is_blank, time_key
from crm.base import InboundChange, ProviderError, field_hash
from crm.registry import get_provider
from providers.inbound import _lock_contact, _refuse, current_value, reported, source_label
from providers.mappings import NOT_APPLIED
from providers.models import LinkStatus, MappingRule, ProviderLink
from providers.provenance import changes_record
from providers.services import links_mark_pending

logger = logging.getLogger(__name__)


def matched_records_fill(*, provider_name: str, link_ids: list[int]) -> int:
    """After creates were matched by email to existing CRM records: SyncRoot's blanks take the
    records' values (and go on to the other CRMs); nothing the records held was blanked, since a
    match sends no blanks (`providers.ledger.changed_values`). Returns how many contacts changed.

    Called after the forwarder's write, outside any transaction: it reads the records first.
    """
    links = dict(ProviderLink.objects.filter(pk__in=link_ids).values_list("external_id", "pk"))
    links.pop(None, None)
    if not links:
        return 0
    try:
        records = get_provider(provider_name).fetch(list(links))
    except ProviderError as exc:  # the blanks stay blank; nothing in the CRM was lost
        logger.warning("matched records not read", extra={"provider": provider_name, "error": str(exc)})
        return 0
    filled = 0
    for record in records:
        if record.deleted or record.external_id not in links:
            continue
        try:
            filled += _fill_blanks(provider=provider_name, link_id=links[record.external_id], record=record)
        except Exception:  # one record must not keep the others from being filled
            logger.exception("matched record not applied", extra={"provider": provider_name})
    return filled


@transaction.atomic
def _fill_blanks(*, provider: str, link_id: int, record: InboundChange) -> bool:
    contact_id = ProviderLink.objects.filter(pk=link_id).values_list("contact_id", flat=True).first()
    if contact_id is None:
        return False
    contact = _lock_contact(contact_id)
    link = ProviderLink.objects.select_for_update().get(pk=link_id)
    if contact.is_deleted or link.external_id != record.external_id:
        return False
    report = reported(provider, record, source=source_label(provider))
    when = record.occurred_at or timezone.now()
    filled = []
    rules = report.mapped.rules
    for field, value in report.values.items():
        if field in link.field_hashes and rules[field] != MappingRule.PREFER_SYNCROOT_UNLESS_BLANK:
            continue  # SyncRoot sent this field in the match: the record holds SyncRoot's value
        link.field_hashes[field] = field_hash(field, value)
        link.field_seen_at[field] = report.times.get(field, when).isoformat()
        current = current_value(contact, field, report.mapped)
        if not is_blank(value) and is_blank(current) and rules[field] not in NOT_APPLIED:
            contact.set_value(field, value)
            contact.field_times[time_key(field)] = timezone.now().isoformat()
            filled.append(field)
    report.refused = {f: r for f, r in report.refused.items() if f not in link.field_hashes}
    _refuse(link, contact, report, when)
    if filled:
        contact.version += 1
        contact.save()
        changes_record(contact=contact, fields=filled, source=provider)
        if link.status == LinkStatus.SYNCED:
            link.synced_version = contact.version
        links_mark_pending(contact=contact, exclude=[provider])
    link.save(update_fields=["field_hashes", "field_seen_at", "issues", "synced_version", "updated_at"])
    return bool(filled)
