import re
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import EmailValidator
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts.fields import STRING_MAX_LENGTH
from contacts.models import MAX_LENGTHS, Contact, FieldType
from providers.budgets import backfills_held_for_display
from providers.crm_state import crm_paused_for_display
from providers.selectors import contact_sync_status


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not know, so typos never pass silently."""

    def to_internal_value(self, data: Any) -> dict:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class StrictSerializerSchema(OpenApiSerializerExtension):
    """The schema says what StrictSerializer enforces: no properties beyond the declared ones."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema, direction) -> dict:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        return schema


class _StringOnly:
    """Only a JSON string is text: DRF's CharField turns 123 or 1.5 into "123" and "1.5"."""

    default_error_messages = {"not_a_string": "Not a valid string."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")  # type: ignore[attr-defined]
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictCharField(_StringOnly, serializers.CharField):
    pass


class StrictEmailField(_StringOnly, serializers.EmailField):
    pass


def _text(field: str) -> StrictCharField:
    return StrictCharField(max_length=MAX_LENGTHS[field], allow_blank=True, required=False)


CUSTOM_VALUE = {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
CUSTOM_HELP = (
    "Custom field values by key (see GET /fields): a string, number, boolean, date (YYYY-MM-DD), date-time "
    "(ISO 8601 with a time zone) or one of an enum's options, as the field's type says; never coerced."
)


@extend_schema_field(
    {"type": "object", "additionalProperties": {**CUSTOM_VALUE, "nullable": True},
     "description": CUSTOM_HELP + " PATCH merges the keys given (null removes one); POST and PUT replace them all."}
)  # fmt: skip
class CustomValuesInputField(serializers.Field):
    """A JSON object of custom values; each value is checked against its field by the service."""

    default_error_messages = {"not_an_object": "Expected an object of custom field values."}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail("not_an_object")
        return data

    def to_representation(self, value: dict[str, Any]) -> dict[str, Any]:
        return value


@extend_schema_field({"type": "object", "additionalProperties": CUSTOM_VALUE, "description": CUSTOM_HELP})
class CustomValuesField(serializers.DictField):
    pass


class ContactInputSerializer(StrictSerializer):
    email = StrictEmailField(max_length=MAX_LENGTHS["email"])
    first_name = _text("first_name")
    last_name = _text("last_name")
    phone = _text("phone")
    company = _text("company")
    job_title = _text("job_title")
    custom = CustomValuesInputField(required=False)


_INPUT_FIELDS = frozenset(ContactInputSerializer._declared_fields)
_TEXT_LIMITS = {field: MAX_LENGTHS[field] for field in MAX_LENGTHS if field != "email"}
_email_valid = EmailValidator()
_NOT_PLAIN = re.compile("[\x00\ud800-\udfff]")  # what DRF's character validators refuse


def contact_input_plain(data: Any) -> dict[str, Any] | None:
    """`ContactInputSerializer(data=data).validated_data` for input that passes every check as it
    is (no whitespace to trim, nothing to refuse), in a tenth of the CPU of building and running the
    serializer; None for anything else, which the serializer then validates (and words the errors).
    A test holds the two equal."""
    if not isinstance(data, dict) or not data.keys() <= _INPUT_FIELDS:
        return None
    email = data.get("email")
    if not isinstance(email, str) or not email or len(email) > MAX_LENGTHS["email"] or email != email.strip():
        return None
    if _NOT_PLAIN.search(email):
        return None
    try:
        _email_valid(email)
    except DjangoValidationError:
        return None
    validated: dict[str, Any] = {"email": email}
    for field, limit in _TEXT_LIMITS.items():
        if field not in data:
            continue
        value = data[field]
        if not isinstance(value, str) or len(value) > limit or value != value.strip() or _NOT_PLAIN.search(value):
            return None
        validated[field] = value
    if "custom" in data:
        if not isinstance(data["custom"], dict):
            return None
        validated["custom"] = data["custom"]
    return validated


BATCH_MAX_CONTACTS = 1000


class ContactBatchInputSerializer(StrictSerializer):
    contacts = ContactInputSerializer(many=True, allow_empty=False, max_length=BATCH_MAX_CONTACTS)

    def validate_contacts(self, items: list[dict]) -> list[dict]:
        """Emails must be distinct within a batch (compared like the unique index: lower-cased)."""
        first: dict[str, int] = {}
        errors: dict[int, dict] = {}  # keyed by position, like the item serializer's own errors
        for index, item in enumerate(items):
            email = item["email"].strip().lower()
            if email in first:
                errors[index] = {"email": [f"Same email as contacts[{first[email]}]."]}
            first.setdefault(email, index)
        if errors:
            raise serializers.ValidationError(errors)
        return items


class SyncIssueSerializer(serializers.Serializer):
    field = serializers.CharField()
    code = serializers.ChoiceField(
        choices=["too_long", "invalid_email", "not_text", "email_conflict"],
        help_text="Why SyncRoot refused the value this CRM holds in `field`.",
    )
    message = serializers.CharField()


class SyncEntrySerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["pending", "synced", "failed", "parked", "deleted", "paused", "issue", "conflict"],
        help_text="`paused`: the CRM is unreachable for a reason of its own (see `reason`); `issue`/`conflict`: "
        "the CRM holds a value SyncRoot refused (see `issues`), never `synced` then.",
    )
    external_id = serializers.CharField(allow_null=True)
    synced_version = serializers.IntegerField()
    synced_at = serializers.DateTimeField(allow_null=True)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(allow_null=True)
    last_error_code = serializers.CharField(allow_null=True)
    issues = SyncIssueSerializer(many=True)
    reason = serializers.ChoiceField(
        choices=["auth_failed", "paused", "api_budget"],
        allow_null=True,
        help_text="Why a paused change waits: `auth_failed` (the CRM refused the credentials), `paused` (by an "
        "operator), `api_budget` (a backfill's change: the backfills' part of the API budget is spent; "
        "`next_attempt_at` says when it frees up).",
    )


class ContactSerializer(serializers.ModelSerializer):
    """A contact with its sync state. Context `links`: the contact's links when already known."""

    custom = CustomValuesField()
    sync = serializers.SerializerMethodField()

    class Meta:
        model = Contact
        fields = (
            "id", "email", "first_name", "last_name", "phone", "company", "job_title", "custom",
            "version", "created_at", "updated_at", "sync",
        )  # fmt: skip

    @extend_schema_field(serializers.DictField(child=SyncEntrySerializer(), help_text="Per connected CRM."))
    def get_sync(self, contact: Contact) -> dict[str, dict]:
        if "paused_crms" not in self.context:  # read once per response, not once per contact
            self.context["paused_crms"] = crm_paused_for_display()
            self.context["held_backfills"] = backfills_held_for_display()
        return contact_sync_status(
            contact=contact,
            links=self.context.get("links"),
            paused=self.context["paused_crms"],
            held=self.context["held_backfills"],
        )

    def to_representation(self, contact: Contact) -> dict[str, Any]:
        """The fields above, built directly: DRF's field-by-field path was a tenth of a write's CPU.
        The declared fields still define the schema; a test holds the two outputs equal."""
        return {
            "id": str(contact.id),
            "email": contact.email,
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "phone": contact.phone,
            "company": contact.company,
            "job_title": contact.job_title,
            "custom": contact.custom,
            "version": contact.version,
            "created_at": _iso(contact.created_at),
            "updated_at": _iso(contact.updated_at),
            "sync": self.get_sync(contact),
        }


def _iso(value: datetime | None) -> str | None:
    """DRF's DateTimeField output under USE_TZ and UTC: ISO 8601 with `Z`."""
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class FieldSerializer(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()
    type = serializers.ChoiceField(choices=FieldType.values)
    options = serializers.ListField(child=serializers.CharField(), allow_null=True, help_text="An enum's values.")
    max_length = serializers.IntegerField(allow_null=True, help_text="A string's longest value, in characters.")
    builtin = serializers.BooleanField(help_text="One of the six built-in fields: cannot be changed or deleted.")
    created_at = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField(allow_null=True)


def field_output(field: Any) -> dict[str, Any]:
    return {
        "key": field.key,
        "label": field.label,
        "type": field.type,
        "options": field.options if field.type == FieldType.ENUM else None,
        "max_length": field.max_length if field.type == FieldType.STRING else None,
        "builtin": False,
        "created_at": _iso(field.created_at),
        "updated_at": _iso(field.updated_at),
    }


class FieldCreateSerializer(StrictSerializer):
    key = StrictCharField(max_length=64, help_text="a-z, then a-z, 0-9 or _; not a built-in's.")
    label = StrictCharField(max_length=255)
    type = serializers.ChoiceField(choices=FieldType.values)
    options = serializers.ListField(
        child=StrictCharField(max_length=255), required=False, allow_null=True, help_text="For enum fields only."
    )
    max_length = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=STRING_MAX_LENGTH,
        help_text="For string fields only; 255 when not given.",
    )  # fmt: skip


class FieldUpdateSerializer(StrictSerializer):
    label = StrictCharField(max_length=255, required=False)
    options = serializers.ListField(child=StrictCharField(max_length=255), required=False)
    max_length = serializers.IntegerField(required=False, min_value=1, max_value=STRING_MAX_LENGTH)


class FieldPurgeSerializer(serializers.Serializer):
    purge = serializers.BooleanField(
        required=False, default=False, help_text="Also remove the field's values from the contacts holding them."
    )


class FieldDeletedSerializer(serializers.Serializer):
    key = serializers.CharField()
    purged = serializers.IntegerField(help_text="How many contacts held a value, now removed.")
