import hashlib
import secrets
import uuid
from typing import Any

from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import F
from django.db.models.functions import Lower

# Field bounds are the tightest of the connected CRMs (Salesforce Contact), so every value the API
# accepts round-trips exactly through both CRMs.
MAX_LENGTHS = {
    "email": 80,
    "first_name": 40,
    "last_name": 80,
    "phone": 40,
    "company": 255,
    "job_title": 128,
}
SYNCED_FIELDS = tuple(MAX_LENGTHS)


class Contact(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.CharField(max_length=MAX_LENGTHS["email"])
    first_name = models.CharField(max_length=MAX_LENGTHS["first_name"], blank=True, default="")
    last_name = models.CharField(max_length=MAX_LENGTHS["last_name"], blank=True, default="")
    phone = models.CharField(max_length=MAX_LENGTHS["phone"], blank=True, default="")
    company = models.CharField(max_length=MAX_LENGTHS["company"], blank=True, default="")
    job_title = models.CharField(max_length=MAX_LENGTHS["job_title"], blank=True, default="")
    version = models.PositiveIntegerField(default=1)
    # When each field last changed at its source (ISO-8601), so the latest change per field wins
    # whatever order CRM events arrive in.
    field_times = models.JSONField(default=dict, blank=True)
    # Values of the custom fields (CustomField), by key; validated against their definitions by
    # contacts.fields before every write. A custom field travels to a CRM where a mapping ties it
    # to one of the CRM's fields (providers/mappings.py).
    custom = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # A tombstone merged into another contact: reads of its id answer where it went.
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="merged_from"
    )
    # Erased on a person's request (GDPR): only this hash of the email is kept, so the person is
    # never imported again from a CRM that still has them.
    erased_email_hash = models.CharField(max_length=64, blank=True, default="", db_index=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            # A deleted contact keeps its tombstone but frees its email for a new contact.
            models.UniqueConstraint(
                Lower("email"), condition=models.Q(deleted_at__isnull=True), name="contact_email_ci_unique"
            ),
        ]
        indexes = [
            # Serves `custom @> {"key": value}` (GET /contacts?custom.<key>=<value>); jsonb_path_ops
            # is smaller and faster than the default opclass for containment, the only query made.
            GinIndex(fields=["custom"], opclasses=["jsonb_path_ops"], name="contact_custom_gin"),
            # The API's list order (GET /contacts: newest first, by cursor) over live contacts: a page
            # is an index range whatever the table's size, not a sort of every row.
            models.Index(
                F("created_at").desc(),
                F("id").desc(),
                condition=models.Q(deleted_at__isnull=True),
                name="contact_live_created_idx",
            ),  # fmt: skip
            # `lower(email) = …` with deleted contacts too, and the admin's search by the beginning
            # of an email (`lower(email) LIKE 'ada@%'`): text_pattern_ops serves both.
            models.Index(OpClass(Lower("email"), name="text_pattern_ops"), name="contact_email_prefix_idx"),
        ]

    def __str__(self) -> str:
        return self.email

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def synced_values(self) -> dict[str, str]:
        return {field: getattr(self, field) for field in SYNCED_FIELDS}

    # One way to read and write any field, built-in (`email`) or custom (`tier`): a built-in's blank
    # is "", a custom field's is None (no key). Custom keys never collide with built-ins.
    def value_of(self, field: str) -> Any:
        return getattr(self, field) if field in MAX_LENGTHS else self.custom.get(field)

    def set_value(self, field: str, value: Any) -> None:
        if field in MAX_LENGTHS:
            setattr(self, field, value)
        elif value is None or value == "":
            self.custom = {key: held for key, held in self.custom.items() if key != field}
        else:
            self.custom = {**self.custom, field: value}


def email_hash(email: str) -> str:
    """The hash an erased contact keeps of its email (compared trimmed and lower-cased)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def time_key(field: str) -> str:
    """The key of `Contact.field_times` for a field: a custom field's is `custom.<key>`."""
    return field if field in MAX_LENGTHS else f"custom.{field}"


def is_blank(value: Any) -> bool:
    """No value: "" for a built-in, None for a custom field (0 and false are values)."""
    return value is None or value == ""


class FieldType(models.TextChoices):
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    ENUM = "enum"


class CustomField(models.Model):
    """A field of SyncRoot's own beyond the built-ins; its values live in `Contact.custom`.

    Written only through contacts.services (custom_field_*), which keep stored values valid.
    """

    key = models.CharField(max_length=64, unique=True)
    label = models.CharField(max_length=255)
    type = models.CharField(max_length=16, choices=FieldType.choices)
    options = models.JSONField(default=list, blank=True, help_text="The allowed values of an enum field.")
    max_length = models.PositiveIntegerField(null=True, blank=True, help_text="Of a string field.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("key",)

    def __str__(self) -> str:
        return self.key


def hash_token(raw: str) -> str:
    # Tokens are 256-bit random values, so a fast hash is enough to make a leaked table useless.
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, editable=False, help_text="First characters, to recognise a token.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API token"
        ordering = ("name", "-created_at")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_authenticated(self) -> bool:
        return True

    @classmethod
    def generate(cls, *, name: str, is_active: bool = True) -> tuple["ApiToken", str]:
        raw = "sr_" + secrets.token_urlsafe(32)
        token = cls.objects.create(name=name, prefix=raw[:10], key_hash=hash_token(raw), is_active=is_active)
        return token, raw


class IdempotencyKey(models.Model):
    """The first response to a POST carrying `Idempotency-Key`, replayed for the same key and body."""

    token = models.ForeignKey(ApiToken, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    contact = models.ForeignKey(Contact, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=("token", "key"), name="idempotency_key_unique")]

    def __str__(self) -> str:
        return self.key
