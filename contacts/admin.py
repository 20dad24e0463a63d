import uuid
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.validators import validate_email
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from contacts.field_services import custom_field_create, custom_field_delete, custom_field_update
from contacts.models import SYNCED_FIELDS, ApiToken, Contact, CustomField
from contacts.selectors import contact_by_email
from contacts.services import contact_create, contact_delete, contact_update
from crm.registry import connected_providers
from providers.admin import ProviderLinkInline, SyncAttemptInline
from providers.issues import CONFLICT_CODES
from providers.models import ChangeSource, LinkStatus, ProviderLink
from providers.provenance import contact_history
from providers.selectors import contact_ids_by_external_id
from syncroot.adminlists import ScaledAdmin
from syncroot.errors import ApplicationError


class DeletedFilter(admin.SimpleListFilter):
    title = "deleted"
    parameter_name = "deleted"

    def lookups(self, request, model_admin):
        return (("no", "Live"), ("yes", "Deleted (tombstones)"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(deleted_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(deleted_at__isnull=True)
        return queryset


class ChangedLastHourFilter(admin.SimpleListFilter):
    title = "changed"
    parameter_name = "changed"

    def lookups(self, request, model_admin):
        return (("hour", "In the last hour"),)

    def queryset(self, request, queryset):
        if self.value() == "hour":
            return queryset.filter(updated_at__gte=timezone.now() - timedelta(hours=1))
        return queryset


# What a contact's sync status with one CRM can be, as the API presents it (providers.issues).
_CONFLICT = Q(*[Q(issues__contains=[{"code": code}]) for code in sorted(CONFLICT_CODES)], _connector=Q.OR)
SYNC_STATUS_LINKS = {
    "pending": Q(status__in=(LinkStatus.PENDING, LinkStatus.FAILED)),
    "synced": Q(status=LinkStatus.SYNCED, issues=[]),
    "parked": Q(status=LinkStatus.PARKED),
    "issue": ~Q(issues=[]) & ~_CONFLICT,
    "conflict": _CONFLICT,
}


def sync_status_filter(provider: str) -> type[admin.SimpleListFilter]:
    """A list filter on the contact's sync status with one CRM (one filter per connected CRM)."""

    class SyncStatusFilter(admin.SimpleListFilter):
        title = f"sync with {provider}"
        parameter_name = f"sync_{provider}"

        def lookups(self, request, model_admin):
            return [(status, status) for status in SYNC_STATUS_LINKS]

        def queryset(self, request, queryset):
            if self.value() not in SYNC_STATUS_LINKS:
                return queryset
            links = ProviderLink.objects.filter(
                SYNC_STATUS_LINKS[self.value()], contact=OuterRef("pk"), provider=provider
            )
            return queryset.filter(Exists(links))

    return SyncStatusFilter


class ContactAdminForm(forms.ModelForm):
    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip()
        validate_email(email)
        # The unique index is conditional on deleted_at, which the form leaves out, so Django does not
        # check it; without this a duplicate only surfaces as a failed save after "changed successfully".
        existing = contact_by_email(email=email)
        if existing is not None and existing.pk != self.instance.pk:
            raise forms.ValidationError(f"A contact with this email already exists ({existing.pk}).")
        return email


@admin.register(Contact)
class ContactAdmin(ScaledAdmin):
    form = ContactAdminForm
    list_display = ("email", "first_name", "last_name", "company", "version", "sync_status", "updated_at", "deleted_at")
    # Searched by get_search_results below: what operators look contacts up by, each through an index.
    search_fields = ("email",)
    search_help_text = "An email or its beginning (any case), a contact id, or a CRM record id."
    list_filter = (DeletedFilter, ChangedLastHourFilter)
    # Custom values are shown, not edited here: the API validates them against their fields.
    readonly_fields = (
        "id",
        "version",
        "custom",
        "value_sources",
        "field_times",
        "created_at",
        "updated_at",
        "deleted_at",
    )
    ordering = ("-updated_at",)
    inlines = (ProviderLinkInline, SyncAttemptInline)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("links")

    def get_list_filter(self, request):
        return (*self.list_filter, *(sync_status_filter(provider) for provider in connected_providers()))

    def get_search_results(self, request, queryset, search_term):
        """Email prefix (case-insensitive), contact id, or CRM record id, all served by indexes.

        Not a substring of names or companies: `ILIKE '%q%'` over several columns reads the whole
        table, which at a million contacts takes most of a second per search.
        """
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(pk=uuid.UUID(term)), False
        except ValueError:
            pass
        matches = Q(email_ci__startswith=term.lower())
        if linked := contact_ids_by_external_id(external_id=term):
            matches |= Q(pk__in=linked)
        return queryset.alias(email_ci=Lower("email")).filter(matches), False

    @admin.display(description="where each value came from")
    def value_sources(self, contact: Contact) -> str:
        """Per field: the value, its source and when, and its last changes (providers/provenance.py)."""
        if not contact.pk:
            return "—"
        rows = []
        for field, entry in contact_history(contact=contact).items():
            changes = format_html_join(
                "", "<li>{} <b>{}</b> {}</li>",
                ((change["changed_at"].strftime("%Y-%m-%d %H:%M:%S"), change["source"], repr(change["value"]))
                 for change in entry["changes"][1:]),
            )  # fmt: skip
            when = entry["changed_at"].strftime("%Y-%m-%d %H:%M:%S") if entry["changed_at"] else "—"
            rows.append((field, repr(entry["value"]), entry["source"] or "before the change log", when, changes))
        body = format_html_join(
            "",
            '<tr class="provenance" data-field="{}"><td>{}</td><td>{}</td><td class="source">{}</td><td>{}</td>'
            "<td><ul>{}</ul></td></tr>",
            ((field, field, value, source, when, changes) for field, value, source, when, changes in rows),
        )
        return format_html(
            '<table id="value-sources"><thead><tr><th>field</th><th>value</th><th>source</th><th>when</th>'
            "<th>earlier changes</th></tr></thead><tbody>{}</tbody></table>",
            body,
        )

    # Edits go through the same services as the API: version bump, sync to every CRM.
    def save_model(self, request, obj, form, change):
        data = {field: form.cleaned_data[field] for field in SYNCED_FIELDS if field in form.cleaned_data}
        try:
            if change:
                contact_update(contact_id=obj.pk, data=data, partial=True, source=ChangeSource.OPERATOR)
            else:
                obj.pk = contact_create(data=data, source=ChangeSource.OPERATOR).pk
        except ApplicationError as exc:
            messages.error(request, f"Not saved: {exc.message} {exc.details or ''}")

    def delete_model(self, request, obj):
        if not obj.is_deleted:
            contact_delete(contact_id=obj.pk)

    def delete_queryset(self, request, queryset):
        for contact in queryset.filter(deleted_at__isnull=True):
            contact_delete(contact_id=contact.pk)

    @admin.display(description="sync")
    def sync_status(self, contact: Contact) -> str:
        return ", ".join(f"{link.provider}: {link.status}" for link in contact.links.all()) or "—"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "is_active", "created_at", "last_used_at")
    list_filter = ("is_active",)
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("name", "is_active", "prefix", "created_at", "last_used_at")

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = ApiToken.generate(name=obj.name, is_active=obj.is_active)
        obj.pk, obj.prefix, obj.key_hash = token.pk, token.prefix, token.key_hash
        messages.warning(request, f"New API token for {obj.name} (shown once, copy it now): {raw}")


@admin.register(CustomField)
class CustomFieldAdmin(admin.ModelAdmin):
    """Custom fields, written through the same services as the API (no stored value ever stops fitting)."""

    list_display = ("key", "label", "type", "max_length", "options", "updated_at")
    list_filter = ("type",)
    search_fields = ("key", "label")
    fields = ("key", "label", "type", "options", "max_length", "created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        return ("key", "type", "created_at", "updated_at") if obj else ("created_at", "updated_at")

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            if change:
                changes = {
                    name: data.get(name) for name in ("label", "options", "max_length") if name in form.changed_data
                }
                custom_field_update(key=obj.key, changes=changes)
            else:
                obj.pk = custom_field_create(
                    key=data["key"], label=data["label"], type=data["type"],
                    options=data.get("options") or None, max_length=data.get("max_length"),
                ).pk  # fmt: skip
        except ApplicationError as exc:
            messages.error(request, f"Not saved: {exc.message} {exc.details or ''}")

    def delete_model(self, request, obj):
        try:
            custom_field_delete(key=obj.key)
        except ApplicationError as exc:
            messages.error(request, f"Not deleted: {exc.message}")

    def delete_queryset(self, request, queryset):
        for field in queryset:
            self.delete_model(request, field)
