import hashlib

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F
from django.utils import timezone

from contacts.models import Contact


class LinkStatus(models.TextChoices):
    PENDING = "pending"
    SYNCED = "synced"
    FAILED = "failed"  # a transient failure; retried with backoff at next_attempt_at
    PARKED = "parked"  # gave up; a DeadLetter says why, an operator retries or discards
    DELETED = "deleted"  # the tombstone reached the CRM


class ProviderLink(models.Model):
    """Sync state of one contact in one CRM: the outbox row the forwarder drains."""

    # No index of its own: link_contact_provider_unique (contact, provider) serves lookups by contact.
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="links", db_index=False)
    provider = models.CharField(max_length=32)
    external_id = models.CharField(max_length=64, null=True, blank=True)
    status = models.CharField(max_length=16, choices=LinkStatus.choices, default=LinkStatus.PENDING)
    synced_version = models.PositiveIntegerField(default=0)
    # Value hash per field of what we last wrote to (or read from) the CRM: an inbound value equal
    # to it is our own echo.
    field_hashes = models.JSONField(default=dict, blank=True)
    # The rest of the per-field ledger (see providers.inbound._apply_fields): the hash the CRM held
    # before our last write of the field, when we wrote it, and the source time of the last value
    # we saw from the CRM (ISO-8601). Together they tell a change from a stale snapshot.
    field_prior_hashes = models.JSONField(default=dict, blank=True)
    field_written_at = models.JSONField(default=dict, blank=True)
    field_seen_at = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    last_error_code = models.CharField(max_length=64, blank=True, default="")
    # Values this CRM holds that SyncRoot refused (too long, not an email, an email another contact
    # holds), each {"field", "code", "message", "held", …}: see providers/issues.py. Open issues keep
    # the link from showing "synced" and keep SyncRoot's value from overwriting the CRM's.
    issues = models.JSONField(default=list, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    pending_since = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    # A drain's claim while it calls the CRM outside any transaction (providers/sync.py): until when,
    # and by which PostgreSQL backend (a claim whose backend is gone, a killed worker's, is void).
    claimed_until = models.DateTimeField(null=True, blank=True)
    claimed_by = models.IntegerField(null=True, blank=True)
    # The contact was restored while this CRM's record was deleted: bring the record back (or,
    # where the CRM cannot, create it again) before writing to it.
    restore_pending = models.BooleanField(default=False)
    # Marked by a backfill, an import or a field backfill (not a live change): it goes after the
    # live changes and within the backfills' part of the API budget (crm/budget.py).
    backfill = models.BooleanField(default=False)
    # Per field, when this CRM last changed SyncRoot's value (ISO-8601, the last hour's): a field
    # that flips more than BOUNCE_LIMIT_PER_HOUR times is paused (providers/bounce.py).
    bounces = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=("contact", "provider"), name="link_contact_provider_unique"),
            models.UniqueConstraint(
                fields=("provider", "external_id"),
                condition=models.Q(external_id__isnull=False),
                name="link_provider_external_id_unique",
            ),
        ]
        indexes = [
            models.Index(
                fields=("provider", "pending_since"),
                condition=models.Q(status__in=("pending", "failed")),
                name="link_outbox_idx",
            ),
            # The forwarder's claim: live changes first, each kind oldest first.
            models.Index(
                fields=("provider", "backfill", "pending_since"),
                condition=models.Q(status__in=("pending", "failed")),
                name="link_outbox_priority_idx",
            ),
            models.Index(fields=("provider",), condition=~models.Q(issues=[]), name="link_issues_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.external_id or '-'} ({self.status})"


class LinkIssue(ProviderLink):
    """Links whose CRM holds a value SyncRoot refused: the admin's list of what needs a person."""

    class Meta:
        proxy = True
        verbose_name = "sync issue"


class DeadLetterStatus(models.TextChoices):
    PARKED = "parked"
    RETRIED = "retried"
    DISCARDED = "discarded"


class DeadLetter(models.Model):
    """A change that could not reach a CRM, parked with the CRM's own reason for an operator."""

    link = models.ForeignKey(ProviderLink, on_delete=models.CASCADE, related_name="dead_letters")
    provider = models.CharField(max_length=32, db_index=True)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="dead_letters")
    contact_version = models.PositiveIntegerField()
    error_code = models.CharField(max_length=64, db_index=True)
    error_message = models.TextField()
    attempts = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=DeadLetterStatus.choices, default=DeadLetterStatus.PARKED, db_index=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        # Retention prunes resolved letters by resolved_at, and /metrics reads the oldest one.
        indexes = [models.Index(fields=("resolved_at",), condition=models.Q(status__in=("retried", "discarded")),
                                name="dead_letter_resolved_idx"),
                   # The health page groups parked letters by CRM and code and shows each group's
                   # latest message: an index-only walk of the parked ones, never the whole table.
                   models.Index(fields=("provider", "error_code", "created_at"),
                                condition=models.Q(status="parked"), name="dead_letter_parked_group_idx"),
                   # The admin's list, newest first: a page is an index range, not a sort of the table.
                   models.Index(F("created_at").desc(), F("id").desc(), name="dead_letter_created_idx")]  # fmt: skip

    def __str__(self) -> str:
        return f"{self.provider} {self.error_code} ({self.status})"


class SyncAttempt(models.Model):
    """Audit trail: one row per provider call outcome for a contact."""

    link = models.ForeignKey(ProviderLink, on_delete=models.CASCADE, related_name="attempt_log")
    provider = models.CharField(max_length=32, db_index=True)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="sync_attempts")
    contact_version = models.PositiveIntegerField()
    operation = models.CharField(max_length=16)  # create | update | delete | match
    outcome = models.CharField(max_length=16, db_index=True)  # ok | transient | rate_limited | auth | permanent
    error_code = models.CharField(max_length=64, blank=True, default="", db_index=True)
    message = models.TextField(blank=True, default="")
    batch_size = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.provider} {self.operation} {self.outcome}"


class SyncCursor(models.Model):
    """Where the reconciler stopped reading a CRM's changes: a compound (modstamp, id) cursor."""

    provider = models.CharField(max_length=32, unique=True)
    modstamp = models.DateTimeField(null=True, blank=True)
    last_id = models.CharField(max_length=64, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)
    # The reconciler skips a change it cannot apply (the rest must not wait on it): the last such
    # failure and a running count, for the operator in the admin.
    failed_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.provider} @ {self.modstamp} / {self.last_id}"


class RecordIssue(models.Model):
    """A CRM record SyncRoot cannot take in (no email, an email it cannot hold, an email another
    record of the same CRM already links to): shown in the admin and `/metrics` until it can."""

    provider = models.CharField(max_length=32)
    external_id = models.CharField(max_length=64)
    code = models.CharField(max_length=64, db_index=True)
    message = models.TextField()
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-last_seen_at",)
        constraints = [
            models.UniqueConstraint(fields=("provider", "external_id"), name="record_issue_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.external_id} {self.code}"


class ConnectionStatus(models.TextChoices):
    ACTIVE = "active"
    PAUSED = "paused"  # an operator paused it: changes wait as they are until it is resumed
    AUTH_FAILED = "auth_failed"  # the CRM refused our credentials even after a refresh: paused
    DISABLED = "disabled"  # deleted: nothing is sent or read; its links and history are kept


class ConnectionSource(models.TextChoices):
    ENVIRONMENT = "environment"  # credentials in the environment (SALESFORCE_*, HUBSPOT_*)
    API = "api"  # POST /connections
    OAUTH = "oauth"  # the admin's Connect button


class Connection(models.Model):
    """One CRM account SyncRoot syncs with: a HubSpot portal or a Salesforce org.

    `key` names it everywhere else: the `provider` column of links, dead letters, attempts,
    mappings, cursors and conflicts, the webhook URL (`/webhooks/<key>`), its rate limiter and
    its metrics. While it is not active nothing is sent to it: its changes wait as they are
    (pending, not parked) until it is resumed or a probe finds its credentials work again.
    """

    key = models.SlugField(max_length=32, unique=True)
    provider = models.CharField(max_length=32)  # the CRM: a key of crm.registry.PROVIDER_CLASSES
    name = models.CharField(max_length=100, blank=True, default="")
    account_id = models.CharField(max_length=64, blank=True, default="")  # HubSpot portal id, Salesforce org id
    instance_url = models.URLField(max_length=255, blank=True, default="")
    source = models.CharField(max_length=16, choices=ConnectionSource.choices, default=ConnectionSource.ENVIRONMENT)
    # Encrypted JSON (syncroot.credentials); empty for a connection whose credentials are in the environment.
    credentials = models.TextField(blank=True, default="", editable=False)
    status = models.CharField(max_length=16, choices=ConnectionStatus.choices, default=ConnectionStatus.ACTIVE)
    since = models.DateTimeField(default=timezone.now)  # when the status last changed
    last_error = models.TextField(blank=True, default="")
    last_probe_at = models.DateTimeField(null=True, blank=True)
    # API budget (crm/budget.py): SyncRoot's share of the account's daily API limit (None: the
    # deployment's API_BUDGET_SHARE), and the limit where the CRM does not report one.
    budget_share = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.01), MaxValueValidator(1.0)]
    )
    daily_limit = models.PositiveIntegerField(null=True, blank=True)
    next_probe_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("key",)
        verbose_name = "CRM connection"
        constraints = [
            # One live connection per CRM account: two would write every contact twice.
            models.UniqueConstraint(
                fields=("provider", "account_id"),
                condition=models.Q(deleted_at__isnull=True) & ~models.Q(account_id=""),
                name="connection_account_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.key} ({self.status})"

    @property
    def credentials_version(self) -> str:
        """Changes whenever the stored credentials do (each encryption differs): a refusal by a
        provider built with older ones says nothing about these."""
        return hashlib.sha256(self.credentials.encode()).hexdigest()[:16] if self.credentials else ""


class MappingRule(models.TextChoices):
    """Which side's value a mapped field takes (see providers/mappings.py)."""

    TWO_WAY = "two_way"  # the later change at its source wins
    SYNCROOT_WINS = "syncroot_wins"  # SyncRoot's value is written to the CRM; a CRM edit is reverted
    CRM_WINS = "crm_wins"  # the CRM's value is applied; SyncRoot never writes the field there
    PREFER_SYNCROOT_UNLESS_BLANK = "prefer_syncroot_unless_blank"
    PREFER_CRM_UNLESS_BLANK = "prefer_crm_unless_blank"
    OFF = "off"  # not synced either way


class BackfillStatus(models.TextChoices):
    NONE = "none"  # never needed one (a built-in field's mapping as shipped)
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # stopped on an error it cannot retry; `backfill_error` says which


class FieldMapping(models.Model):
    """One SyncRoot field tied to one CRM's field, with the rule that decides which side wins."""

    provider = models.CharField(max_length=32)
    field = models.CharField(max_length=64)
    remote_field = models.CharField(max_length=255)
    rule = models.CharField(max_length=32, choices=MappingRule.choices, default=MappingRule.TWO_WAY)
    # SyncRoot's enum value → the CRM's picklist value (and back): {"gold": "Gold"}.
    value_map = models.JSONField(default=dict, blank=True)
    # What the CRM's field takes, as its schema said when the mapping was made or the schema was
    # last read: {"type", "length", "options"}. A value that does not fit is refused before sending.
    remote_spec = models.JSONField(default=dict, blank=True)
    # The backfill of this one field a new mapping or rule starts (providers/field_backfill.py):
    # its phase (`to_crm`, then `from_crm`) and the last link id done, to resume after a restart.
    backfill_status = models.CharField(max_length=16, choices=BackfillStatus.choices, default=BackfillStatus.NONE)
    backfill_phase = models.CharField(max_length=16, blank=True, default="")
    backfill_after = models.BigIntegerField(default=0)
    backfill_done = models.PositiveIntegerField(default=0)
    backfill_total = models.PositiveIntegerField(default=0)
    backfill_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("provider", "id")
        constraints = [
            models.UniqueConstraint(fields=("provider", "field"), name="mapping_provider_field_unique"),
            models.UniqueConstraint(fields=("provider", "remote_field"), name="mapping_provider_remote_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}: {self.field} ↔ {self.remote_field} ({self.rule})"


class ChangeSource(models.TextChoices):
    """Where a contact's field value came from (a CRM's source is its provider name)."""

    API = "api"
    OPERATOR = "operator"
    BACKFILL = "backfill"


class FieldChange(models.Model):
    """One value a contact's field took, and where it came from: written by the engine as it applies
    changes (providers/provenance.py), pruned by retention but for each field's latest change."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="field_changes")
    field = models.CharField(max_length=64)
    value = models.JSONField(null=True, blank=True)
    source = models.CharField(max_length=32)  # ChangeSource, or the CRM's provider name
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-changed_at", "-id")
        indexes = [
            models.Index(fields=("contact", "field", "-changed_at"), name="field_change_contact_idx"),
            models.Index(fields=("changed_at",), name="field_change_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.field} from {self.source} at {self.changed_at:%Y-%m-%d %H:%M:%S}"


class SyncHealth(Connection):
    """The admin's "Sync health" page (providers/health_admin.py): a page, not a list of rows."""

    class Meta:
        proxy = True
        verbose_name = verbose_name_plural = "Sync health"


class ConflictKind(models.TextChoices):
    EMAIL_CLASH = "email_clash"  # a CRM record took an email another contact holds
    MERGE_CANDIDATE = "merge_candidate"  # two records of one CRM for one email
    VALUE_NOT_FIT = "value_not_fit"  # a CRM's value SyncRoot (or a target) cannot hold
    BOUNCING_FIELD = "bouncing_field"  # a field flipping back and forth, paused
    NO_EMAIL = "no_email"  # a CRM record without the email that identifies a person


class ConflictStatus(models.TextChoices):
    OPEN = "open"
    RESOLVED = "resolved"


class Conflict(models.Model):
    """One case that needs a person, in one queue (providers/conflicts.py). The issues on links and
    the records SyncRoot cannot take in stay the engine's truth; this is their queue, with what was
    decided: a case that clears by itself is resolved as `cleared`."""

    key = models.CharField(max_length=200, help_text="What the case is about: link:<id>:<field> or record:<crm>:<id>")
    kind = models.CharField(max_length=32, choices=ConflictKind.choices, db_index=True)
    provider = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=ConflictStatus.choices, default=ConflictStatus.OPEN)
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    link = models.ForeignKey(ProviderLink, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    external_id = models.CharField(max_length=64, blank=True, default="")
    field = models.CharField(max_length=100, blank=True, default="")
    code = models.CharField(max_length=64, blank=True, default="")
    message = models.TextField(blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    action = models.CharField(max_length=32, blank=True, default="", help_text="How it was resolved")
    opened_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-opened_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=("key",), condition=models.Q(status="open"), name="conflict_open_key_unique"
            ),
        ]
        indexes = [models.Index(fields=("status", "kind"), name="conflict_status_kind_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.provider}:{self.external_id or self.field} ({self.status})"
