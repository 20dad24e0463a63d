"""What the CRM endpoints accept and answer (for validation and the OpenAPI schema)."""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts.models import SYNCED_FIELDS
from contacts.serializers import StrictCharField, StrictSerializer
from crm.base import FIELD_TYPES
from crm.registry import PROVIDER_CLASSES
from providers.budgets import connection_budget
from providers.conflicts import ACTIONS, allowed_actions
from providers.models import BackfillStatus, Conflict, ConflictKind, ConflictStatus, Connection, MappingRule

RULES_HELP = (
    "`two_way`: the later change at its source wins. `syncroot_wins`: SyncRoot's value is written to the "
    "CRM, a CRM edit is written back. `crm_wins`: the CRM's edits are applied, SyncRoot never writes the "
    "field there. `prefer_syncroot_unless_blank` / `prefer_crm_unless_blank`: as those two, except that a "
    "blank winner takes the other side's value. `off`: not synced. The email mapping is always `two_way`."
)


class RemoteFieldOptionSerializer(serializers.Serializer):
    value = serializers.CharField(help_text="What the CRM stores.")
    label = serializers.CharField(help_text="What the CRM shows.")


class RemoteFieldSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The CRM's API name of the field (`jobtitle`, `Tier__c`).")
    label = serializers.CharField()
    type = serializers.ChoiceField(choices=FIELD_TYPES, help_text="The field's type in SyncRoot's terms.")
    remote_type = serializers.CharField(help_text="The field's type as the CRM names it.")
    length = serializers.IntegerField(allow_null=True, help_text="Longest value the CRM keeps; null: no such limit.")
    options = RemoteFieldOptionSerializer(
        many=True, allow_null=True, help_text="A picklist's or enumeration's active values; null for other types."
    )
    writable = serializers.BooleanField(help_text="SyncRoot may set it on the contacts it creates and updates.")
    custom = serializers.BooleanField(help_text="Added by the CRM's admins (not one of the CRM's own fields).")


class RemoteFieldQuerySerializer(serializers.Serializer):
    refresh = serializers.BooleanField(
        required=False, default=False, help_text="Ask the CRM now instead of answering from the cache."
    )


class BackfillSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=BackfillStatus.choices,
        help_text=(
            "`none`: never needed one; `pending`, `running`, `done`; `failed`: stopped on an error the CRM gave."
        ),
    )
    done = serializers.IntegerField(help_text="Linked contacts handled so far.")
    total = serializers.IntegerField(help_text="Linked contacts in this CRM when the backfill began.")
    error = serializers.CharField(help_text="The CRM's last error, if the backfill met one.")


class MappingSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    provider = serializers.CharField(read_only=True, help_text="The CRM (`hubspot`, `salesforce`).")
    field = serializers.CharField(read_only=True, help_text="SyncRoot's field: a built-in or a custom field's key.")
    remote_field = serializers.CharField(read_only=True, help_text="The CRM's field (`jobtitle`, `Tier__c`).")
    rule = serializers.ChoiceField(choices=MappingRule.choices, help_text=RULES_HELP)
    value_map = serializers.DictField(
        child=serializers.CharField(), help_text="An enum field's options → the CRM's picklist values (both ways)."
    )
    builtin = serializers.SerializerMethodField(help_text="A built-in field's mapping: only its rule changes.")
    backfill = serializers.SerializerMethodField(help_text="The backfill of this field that the mapping started.")

    def get_builtin(self, mapping) -> bool:
        return mapping.field in SYNCED_FIELDS

    @extend_schema_field(BackfillSerializer)
    def get_backfill(self, mapping) -> dict:
        return {"status": mapping.backfill_status, "done": mapping.backfill_done, "total": mapping.backfill_total,
                "error": mapping.backfill_error}  # fmt: skip


class MappingQuerySerializer(serializers.Serializer):
    provider = serializers.CharField(required=False, help_text="Only this CRM's mappings.")


class MappingCreateSerializer(StrictSerializer):
    provider = serializers.CharField(help_text="A connected CRM (`hubspot`, `salesforce`).")
    field = serializers.CharField(help_text="A custom field's key (GET /fields).")
    remote_field = serializers.CharField(help_text="The CRM's field (GET /providers/{provider}/fields).")
    rule = serializers.ChoiceField(choices=MappingRule.choices, default=MappingRule.TWO_WAY, help_text=RULES_HELP)
    value_map = serializers.DictField(
        child=serializers.CharField(), required=False, default=dict,
        help_text="For an enum field: SyncRoot's option → the CRM's picklist value, e.g. {\"gold\": \"Gold\"}.",
    )  # fmt: skip


class MappingUpdateSerializer(StrictSerializer):
    rule = serializers.ChoiceField(choices=MappingRule.choices, required=False, help_text=RULES_HELP)
    value_map = serializers.DictField(
        child=serializers.CharField(), required=False, help_text="A custom enum field's option translation."
    )

    def to_internal_value(self, data: Any) -> dict:
        if isinstance(data, dict) and (fixed := sorted({"provider", "field", "remote_field"} & set(data))):
            message = "A mapping changes only its rule and value_map: delete it and create another instead."
            raise serializers.ValidationError({name: [message] for name in fixed})
        values = super().to_internal_value(data)
        if not values:
            raise serializers.ValidationError({"rule": ["Give a rule, a value_map, or both."]})
        return values


class PreviewSampleSerializer(serializers.Serializer):
    contact_id = serializers.UUIDField()
    external_id = serializers.CharField()
    side = serializers.ChoiceField(choices=["syncroot", "crm", "refused"], help_text="Which side would change.")
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)
    reason = serializers.DictField(required=False, help_text="Why a value would be refused: code and message.")


class PreviewCountsSerializer(serializers.Serializer):
    syncroot = serializers.IntegerField(help_text="Contacts whose SyncRoot value would change.")
    crm = serializers.IntegerField(help_text="CRM records that would be written.")
    refused = serializers.IntegerField(help_text="Values that would not fit and become sync issues.")
    unchanged = serializers.IntegerField()


class PreviewSerializer(serializers.Serializer):
    changes = PreviewCountsSerializer()
    samples = PreviewSampleSerializer(many=True, help_text="Up to 20 before/after examples.")


class ConflictSerializer(serializers.ModelSerializer):
    contact_id = serializers.UUIDField(allow_null=True, read_only=True)
    allowed_actions = serializers.SerializerMethodField()

    class Meta:
        model = Conflict
        fields = ("id", "kind", "provider", "status", "contact_id", "external_id", "field", "code", "message",
                  "details", "allowed_actions", "action", "opened_at", "resolved_at")  # fmt: skip

    def get_allowed_actions(self, row: Conflict) -> list[str]:
        return list(allowed_actions(row)) if row.status == ConflictStatus.OPEN else []


class ConflictQuerySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ConflictKind.choices, required=False)
    provider = serializers.CharField(required=False, max_length=32)
    status = serializers.ChoiceField(choices=ConflictStatus.choices, required=False)


class ConflictResolveSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=[(a, a) for a in ACTIONS])


class ApiBudgetSerializer(serializers.Serializer):
    used = serializers.IntegerField(help_text="SyncRoot's calls to this account in the last 24 hours.")
    limit = serializers.IntegerField(
        allow_null=True, help_text="The account's daily API limit: as the CRM reports it, or `daily_limit`; null "
        "while unknown (only the short window applies).",
    )  # fmt: skip
    share = serializers.FloatField(help_text="The part of the limit SyncRoot may use.")
    allowed = serializers.DictField(
        child=serializers.IntegerField(allow_null=True),
        help_text="Calls allowed in 24 hours per priority: `live`, `reconcile`, `backfill`.",
    )
    backfill_paused_until = serializers.DateTimeField(
        allow_null=True, help_text="Set while backfills and imports wait for the window to free up."
    )


class ConnectionSerializer(serializers.ModelSerializer):
    webhook_path = serializers.SerializerMethodField(help_text="Where the CRM delivers this account's webhooks.")
    budget = serializers.SerializerMethodField(help_text="Its API budget now; null when Redis cannot say.")

    class Meta:
        model = Connection
        fields = ("id", "key", "provider", "name", "account_id", "instance_url", "source", "status", "since",
                  "last_error", "last_probe_at", "webhook_path", "budget_share", "daily_limit", "budget",
                  "created_at", "updated_at", "deleted_at")  # fmt: skip
        extra_kwargs = {
            "key": {"help_text": "Names the connection in links, sync status, mappings, metrics and its webhook URL."},
            "account_id": {"help_text": "The HubSpot portal id or Salesforce organization id, asked of the CRM."},
            "status": {"help_text": "`active`; `paused` by an operator; `auth_failed`: the CRM refused the "
                       "credentials (changes wait, nothing is lost); `disabled`: deleted."},
        }  # fmt: skip

    def get_webhook_path(self, row: Connection) -> str:
        return f"/webhooks/{row.key}"

    @extend_schema_field(ApiBudgetSerializer(allow_null=True))
    def get_budget(self, row: Connection) -> dict[str, Any] | None:
        return connection_budget(connection=row)


class CredentialsSerializer(StrictSerializer):
    access_token = StrictCharField(required=False, max_length=4096, trim_whitespace=True)
    refresh_token = StrictCharField(required=False, max_length=4096, trim_whitespace=True)
    client_id = StrictCharField(required=False, max_length=1024, trim_whitespace=True)
    client_secret = StrictCharField(required=False, max_length=1024, trim_whitespace=True)


class ConnectionBudgetFields(serializers.Serializer):
    budget_share = serializers.FloatField(
        required=False, allow_null=True, min_value=0.01, max_value=1.0,
        help_text="The part of the account's daily API limit SyncRoot may use (null: API_BUDGET_SHARE).",
    )  # fmt: skip
    daily_limit = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=100_000_000,
        help_text="The account's daily API limit where the CRM does not report one (HubSpot OAuth apps).",
    )  # fmt: skip


class ConnectionCreateSerializer(ConnectionBudgetFields, StrictSerializer):
    provider = serializers.ChoiceField(choices=sorted(PROVIDER_CLASSES))
    name = StrictCharField(required=False, default="", allow_blank=True, max_length=100)
    instance_url = serializers.URLField(
        required=False, default="", allow_blank=True, max_length=255,
        help_text="The CRM's API base: a HubSpot API host, or a Salesforce My Domain URL (needed for "
        "client credentials). Default: the CRM's public one.",
    )  # fmt: skip
    credentials = CredentialsSerializer(
        help_text="An `access_token` (a HubSpot private-app token, a Salesforce session), or a `refresh_token` "
        "with the app's `client_id` and `client_secret`, or (Salesforce) `client_id` and `client_secret` for "
        "the client-credentials flow. Stored encrypted, never returned."
    )


class ConnectionUpdateSerializer(ConnectionBudgetFields, StrictSerializer):
    name = StrictCharField(required=False, allow_blank=True, max_length=100)
    instance_url = serializers.URLField(required=False, allow_blank=True, max_length=255)
    credentials = CredentialsSerializer(required=False, help_text="New credentials: they must reach the same account.")
