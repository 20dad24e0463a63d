from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from crm.registry import connected_providers, get_provider
from providers import mappings, outbox
from providers.admin_export import CsvExportMixin
from providers.field_values import NOT_AN_OPTION, WRONG_TYPE
from providers.issues import (
    EMAIL_CONFLICT,
    INVALID_EMAIL,
    NOT_TEXT,
    TOO_LONG,
    link_issues_resolve,
    presented_status,
)
from providers.models import (
    DeadLetter,
    FieldMapping,
    LinkIssue,
    MappingRule,
    ProviderLink,
    RecordIssue,
    SyncAttempt,
    SyncCursor,
)
from syncroot.adminlists import DistinctValuesFilter, ScaledAdmin


def _record_link(provider: str, external_id: str | None) -> str:
    if not external_id:
        return "—"
    url = get_provider(provider).record_url(external_id) if provider in connected_providers() else None
    return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, external_id) if url else external_id


def _issues_html(link: ProviderLink) -> str:
    """Each issue with its message; a clash links to the other contact, for the operator."""
    if not link.issues:
        return "—"
    items = []
    for issue in link.issues:
        other = issue.get("contact_id")
        other_link = (
            format_html(' (<a href="{}">other contact</a>)', reverse("admin:contacts_contact_change", args=[other]))
            if other
            else ""
        )
        items.append(format_html("<li><b>{}</b> {}: {}{}</li>", issue["field"], issue["code"], issue["message"],
                                 other_link))  # fmt: skip
    return format_html("<ul>{}</ul>", format_html_join("", "{}", ((item,) for item in items)))


def _no(self, request, obj=None) -> bool:
    """For admin pages of rows the system writes: nobody adds or deletes them by hand."""
    return False


class IssueCodeFilter(admin.SimpleListFilter):
    """Links with an issue of this code (the health page's groups link here)."""

    title = "issue code"
    parameter_name = "code"

    def lookups(self, request, model_admin):
        # The codes a link's issue can carry (no scan of the links to list them).
        codes = {TOO_LONG, INVALID_EMAIL, NOT_TEXT, EMAIL_CONFLICT, NOT_AN_OPTION, WRONG_TYPE}
        codes |= {self.value()} if self.value() else set()
        return [(code, code) for code in sorted(codes)]

    def queryset(self, request, queryset):
        return queryset.filter(issues__contains=[{"code": self.value()}]) if self.value() else queryset


@admin.register(LinkIssue)
class LinkIssueAdmin(CsvExportMixin, admin.ModelAdmin):
    """What needs a person: values refused for SyncRoot, email clashes. Fixing the value in the CRM
    clears an issue by itself; "Send SyncRoot's values" decides for SyncRoot's."""

    list_display = ("contact", "provider", "crm_record", "state", "issue_list", "updated_at")
    list_filter = ("provider", IssueCodeFilter)
    search_fields = ("contact__email", "external_id")
    list_select_related = ("contact",)
    actions = ("send_syncroot_values",)
    fields = ("contact", "provider", "crm_record", "state", "issue_list", "updated_at")
    readonly_fields = fields

    csv_header = ("provider", "crm_record", "contact_id", "email", "status", "field", "code", "message", "since")
    csv_filename = "sync-issues.csv"

    def csv_rows(self, link: ProviderLink):
        for issue in link.issues:
            yield (link.provider, link.external_id, link.contact_id, link.contact.email, presented_status(link),
                   issue["field"], issue["code"], issue["message"], issue.get("since", ""))  # fmt: skip

    def get_queryset(self, request):
        return super().get_queryset(request).exclude(issues=[])

    @admin.display(description="CRM record")
    def crm_record(self, link: ProviderLink) -> str:
        return _record_link(link.provider, link.external_id)

    @admin.display(description="status")
    def state(self, link: ProviderLink) -> str:
        return presented_status(link)

    @admin.display(description="issues")
    def issue_list(self, link: ProviderLink) -> str:
        return _issues_html(link)

    @admin.action(description="Send SyncRoot's values to the CRM (overwrites what the CRM holds)")
    def send_syncroot_values(self, request, queryset):
        resolved = sum(link_issues_resolve(link_id=pk) for pk in queryset.values_list("pk", flat=True))
        messages.success(request, f"Queued SyncRoot's values for {resolved} record(s).")

    has_add_permission = has_delete_permission = _no


@admin.register(RecordIssue)
class RecordIssueAdmin(CsvExportMixin, admin.ModelAdmin):
    """CRM records SyncRoot cannot take in; they come in by themselves once fixed in the CRM."""

    list_display = ("provider", "crm_record", "code", "message", "first_seen_at", "last_seen_at")
    list_filter = ("provider", "code")
    search_fields = ("external_id", "message")
    readonly_fields = ("provider", "external_id", "code", "message", "first_seen_at", "last_seen_at")
    csv_header = readonly_fields
    csv_filename = "record-issues.csv"

    @admin.display(description="CRM record")
    def crm_record(self, issue: RecordIssue) -> str:
        return _record_link(issue.provider, issue.external_id)

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(DeadLetter)
class DeadLetterAdmin(CsvExportMixin, ScaledAdmin):
    list_display = ("created_at", "provider", "contact", "error_code", "short_message", "attempts", "status")
    list_filter = (("provider", DistinctValuesFilter), "status", ("error_code", DistinctValuesFilter))
    search_fields = ("contact__email", "error_code", "error_message")
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    actions = ("retry_now", "discard")
    list_select_related = ("contact",)
    # 100,000 parked letters: no exact total per page view.

    csv_header = ("id", "created_at", "provider", "contact_id", "email", "contact_version", "error_code",
                  "error_message", "attempts", "status", "resolved_at")  # fmt: skip
    csv_filename = "dead-letters.csv"

    def csv_rows(self, letter: DeadLetter):
        yield (letter.pk, letter.created_at.isoformat(), letter.provider, letter.contact_id, letter.contact.email,
               letter.contact_version, letter.error_code, letter.error_message, letter.attempts, letter.status,
               letter.resolved_at.isoformat() if letter.resolved_at else "")  # fmt: skip

    @admin.display(description="message")
    def short_message(self, letter: DeadLetter) -> str:
        return letter.error_message[:120]

    @admin.action(description="Retry now (sends the contact's current state)")
    def retry_now(self, request, queryset):
        retried = sum(outbox.dead_letter_retry(dead_letter_id=pk) for pk in queryset.values_list("pk", flat=True))
        messages.success(request, f"Queued {retried} dead letter(s) for another attempt.")

    @admin.action(description="Discard")
    def discard(self, request, queryset):
        discarded = sum(outbox.dead_letter_discard(dead_letter_id=pk) for pk in queryset.values_list("pk", flat=True))
        messages.success(request, f"Discarded {discarded} dead letter(s).")

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(SyncAttempt)
class SyncAttemptAdmin(ScaledAdmin):
    list_display = ("created_at", "provider", "contact", "operation", "outcome", "error_code", "batch_size")
    list_filter = (
        ("provider", DistinctValuesFilter), ("outcome", DistinctValuesFilter), "operation",
        ("error_code", DistinctValuesFilter),
    )  # fmt: skip
    search_fields = ("contact__email", "error_code", "message")
    readonly_fields = [f.name for f in SyncAttempt._meta.fields]
    list_select_related = ("contact",)

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(SyncCursor)
class SyncCursorAdmin(admin.ModelAdmin):
    """Where each reconciler (and backfill checkpoint) stands, and the last change it had to skip."""

    list_display = ("provider", "modstamp", "updated_at", "failed_count", "last_error_at", "short_error")
    readonly_fields = [f.name for f in SyncCursor._meta.fields]

    @admin.display(description="last error")
    def short_error(self, cursor: SyncCursor) -> str:
        return cursor.last_error[:120]

    def has_add_permission(self, request) -> bool:
        return False


class ProviderLinkInline(admin.TabularInline):
    model = ProviderLink
    extra = 0
    can_delete = False
    fields = ("provider", "crm_record", "state", "issue_list", "synced_version", "attempts", "next_attempt_at",
              "last_error_code", "last_error", "synced_at")  # fmt: skip
    readonly_fields = fields

    @admin.display(description="status")
    def state(self, link: ProviderLink) -> str:
        return presented_status(link)

    @admin.display(description="issues")
    def issue_list(self, link: ProviderLink) -> str:
        return _issues_html(link)

    @admin.display(description="external id")
    def crm_record(self, link: ProviderLink) -> str:
        return _record_link(link.provider, link.external_id)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class SyncAttemptInline(admin.TabularInline):
    model = SyncAttempt
    extra = 0
    can_delete = False
    fields = ("created_at", "provider", "contact_version", "operation", "outcome", "error_code", "message")
    readonly_fields = fields
    ordering = ("-created_at",)
    max_num = 0
    verbose_name_plural = "sync history"

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("-created_at")


class FieldMappingForm(forms.ModelForm):
    class Meta:
        model = FieldMapping
        fields = ("rule",)

    def clean_rule(self) -> str:
        rule = self.cleaned_data["rule"]
        if self.instance.field == mappings.IDENTITY_FIELD and rule != MappingRule.TWO_WAY:
            raise forms.ValidationError("The email mapping is how records are recognised: it stays two_way.")
        if rule in mappings.WRITES and not self.instance.remote_spec.get("writable", True):
            raise forms.ValidationError("The CRM's field is read-only: only crm_wins or off can map it.")
        return rule


@admin.register(FieldMapping)
class FieldMappingAdmin(admin.ModelAdmin):
    """Which side wins, per CRM and field: a rule changed here applies to the next change either way."""

    form = FieldMappingForm
    list_display = ("provider", "field", "remote_field", "rule", "backfill", "updated_at")
    list_editable = ("rule",)
    list_filter = ("provider", "rule", "backfill_status")
    fields = ("provider", "field", "remote_field", "rule", "value_map", "backfill", "backfill_error", "updated_at")
    readonly_fields = ("provider", "field", "remote_field", "value_map", "backfill", "backfill_error", "updated_at")

    @admin.display(description="backfill")
    def backfill(self, mapping: FieldMapping) -> str:
        """The field's backfill: its state and how far it got."""
        if mapping.backfill_status == "none":
            return "—"
        return f"{mapping.backfill_status} ({mapping.backfill_done}/{mapping.backfill_total})"

    has_add_permission = has_delete_permission = _no

    def get_changelist_form(self, request, **kwargs):
        return FieldMappingForm

    def changelist_view(self, request, extra_context=None):
        mappings.mappings_ensure()  # a CRM connected since the migration gets its built-in mappings
        return super().changelist_view(request, extra_context)

    def save_model(self, request, obj, form, change) -> None:
        mappings.mapping_update(mapping_id=obj.pk, rule=obj.rule)


# The connections, the conflict queue and the Sync health page.
from providers import admin_conflicts, admin_connections, health_admin  # noqa: E402,F401
