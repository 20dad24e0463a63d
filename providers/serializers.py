"""What the CRM endpoints accept and answer (for validation and the OpenAPI schema)."""

from typing import Any

from rest_framework import serializers

from contacts.models import SYNCED_FIELDS
from contacts.serializers import StrictSerializer
from crm.base import FIELD_TYPES
from providers.models import MappingRule

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


class MappingSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    provider = serializers.CharField(read_only=True, help_text="The CRM (`hubspot`, `salesforce`).")
    field = serializers.CharField(read_only=True, help_text="SyncRoot's field (one of the six built-ins).")
    remote_field = serializers.CharField(read_only=True, help_text="The CRM's field (`jobtitle`, `Title`).")
    rule = serializers.ChoiceField(choices=MappingRule.choices, help_text=RULES_HELP)
    builtin = serializers.SerializerMethodField(help_text="A built-in field's mapping: only its rule changes.")

    def get_builtin(self, mapping) -> bool:
        return mapping.field in SYNCED_FIELDS


class MappingQuerySerializer(serializers.Serializer):
    provider = serializers.CharField(required=False, help_text="Only this CRM's mappings.")


class MappingUpdateSerializer(StrictSerializer):
    rule = serializers.ChoiceField(choices=MappingRule.choices, help_text=RULES_HELP)

    def to_internal_value(self, data: Any) -> dict:
        if isinstance(data, dict) and (fixed := sorted({"provider", "field", "remote_field"} & set(data))):
            message = "A built-in field's mapping changes only its rule."
            raise serializers.ValidationError({name: [message] for name in fixed})
        return super().to_internal_value(data)
