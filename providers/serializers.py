"""What the CRM endpoints accept and answer (for validation and the OpenAPI schema)."""

from rest_framework import serializers

from crm.base import FIELD_TYPES


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
