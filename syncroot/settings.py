"""SyncRoot settings. Every value comes from the environment (see .env.example), read once here."""

import warnings
from pathlib import Path

import environ

from syncroot import queues

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- Core ---------------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="insecure-dev-key-change-me-in-production-0123456789")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_prometheus",  # /metrics (syncroot/metrics.py); its DB and cache wrappers are not used
    "contacts",
    "providers",
    "webhooks",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",  # first: times the whole request
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # the admin's CSS and JS under gunicorn, no proxy needed
    "syncroot.log_context.RequestIdMiddleware",
    "syncroot.middleware.BodySizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",  # last: sees the final status
]

ROOT_URLCONF = "syncroot.urls"
WSGI_APPLICATION = "syncroot.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://localhost:5432/syncroot")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 3)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://localhost:6379/0")
CACHES = {
    "default": {
        "BACKEND": "syncroot.cache.RedisCache",  # Django's, keeping its client (see the module)
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "syncroot",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = env.str("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "var" / "static"))
# --- Static files: WhiteNoise serves them from the app (gunicorn, containers) ------------------
# Compressed copies are made by collectstatic (the Dockerfile runs it). No manifest storage: it
# fails every page that links a static file when collectstatic has not run (`make run`, tests).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Files not collected yet are found in the apps themselves, so the admin has its CSS everywhere.
WHITENOISE_USE_FINDERS = True
warnings.filterwarnings("ignore", message="No directory at")  # WhiteNoise, before collectstatic ran
# --- end of static files -----------------------------------------------------------------------

# The API rejects bodies above this size with 413 before reading them.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1_048_576)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES

# --- Inbound webhooks (POST /webhooks/<provider>) ---------------------------------------------
# The origin CRMs call, e.g. https://sync.example.com, when a proxy or load balancer changes the
# scheme or host: HubSpot signs the exact URL it called. Empty: the request's own absolute URL.
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="").rstrip("/")
# Larger deliveries get 413 (chunked ones too). API_MAX_BODY_BYTES above still caps a declared length.
WEBHOOK_MAX_BODY_BYTES = env.int("WEBHOOK_MAX_BODY_BYTES", default=1_048_576)

# --- Security (production: DJANGO_SECURE=true behind TLS) -------------------------------------
SECURE = env.bool("DJANGO_SECURE", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if SECURE:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # Probes and CRM webhooks may reach the pod over plain HTTP inside the cluster.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# --- REST framework and OpenAPI --------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["contacts.auth.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["contacts.auth.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"token": env.str("API_THROTTLE_RATE", default="6000/min")},
    "DEFAULT_PARSER_CLASSES": ["syncroot.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "syncroot.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
API_PAGE_SIZE = env.int("API_PAGE_SIZE", default=50)
# Seconds an API process trusts a token it verified without asking the database again: a revoked
# token is refused within this time. 0 checks the database on every request.
API_TOKEN_CACHE_SECONDS = env.int("API_TOKEN_CACHE_SECONDS", default=5)
# Seconds an API process shows a CRM's pause or resume (the `sync` of the contacts it returns)
# from what it read last; the forwarder itself always reads it afresh.
API_CRM_STATE_CACHE_SECONDS = env.int("API_CRM_STATE_CACHE_SECONDS", default=2)
SPECTACULAR_SETTINGS = {
    "TITLE": "SyncRoot API",
    "DESCRIPTION": "Contacts kept in sync across CRMs. Authenticate with `Authorization: Bearer <token>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "COMPONENT_SPLIT_REQUEST": True,
    # A CRM field's `type` and a SyncRoot field's `type` are two choice sets under one name.
    "ENUM_NAME_OVERRIDES": {
        "TypeEnum": "contacts.models.FieldType.values",
        "RemoteFieldTypeEnum": "crm.base.FIELD_TYPES",
    },
}

# --- Celery (https://docs.celeryq.dev/en/stable/userguide/configuration.html) ------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None  # tasks report through the database, not results
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True  # a task is removed from the queue only once it finished
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a killed worker's task goes back to the queue
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=120)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=180)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CONSUMER = "syncroot.celery:PromptConsumer"  # back on the broker within 2 s of its return
# Redis redelivers an unacked message after this; every countdown we schedule stays below it.
CELERY_BROKER_VISIBILITY_TIMEOUT = env.int("CELERY_BROKER_VISIBILITY_TIMEOUT", default=3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
# The API must answer fast when Redis is down: the outbox sweeper re-enqueues what failed.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_TASK_DEFAULT_QUEUE = queues.FORWARDER
CELERY_TASK_ROUTES = {
    "providers.tasks.drain_provider": {"queue": queues.FORWARDER},
    "providers.tasks.retry_provider": {"queue": queues.DLQ},
    "providers.tasks.retry_dead_letter": {"queue": queues.DLQ},
    "providers.tasks.probe_crms": {"queue": queues.DLQ},
    "providers.tasks.field_backfill": {"queue": queues.DLQ},  # behind live changes (the forwarder's)
    "providers.tasks.backfill_connection": {"queue": queues.DLQ},
    "providers.tasks.sweep_outbox": {"queue": queues.FORWARDER},
    "contacts.tasks.expire_idempotency_keys": {"queue": queues.FORWARDER},
    "providers.tasks.prune_retention": {"queue": queues.FORWARDER},
    # webhooks.tasks.process_events and providers.tasks.reconcile_provider go to the queue their
    # provider names (webhooks.salesforce / webhooks.hubspot), chosen when they are sent.
}
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("CELERY_WORKER_SEND_TASK_EVENTS", default=True)
CELERY_TASK_SEND_SENT_EVENT = False  # a publish per task would slow the API and webhook acks
CELERY_BEAT_SCHEDULE: dict = {}

# --- Logging ---------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json")  # json | text
# Every line carries request_id / task_id / task_name / contact_id / provider when known, and
# never a credential (syncroot/log_context.py). Workers use this config too (syncroot/celery.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "syncroot.log_context.ContextFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "text": {"()": "syncroot.log_context.TextFormatter", "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Metrics (GET /metrics, Prometheus text; syncroot/metrics.py) -------------------------------
METRICS_ENABLED = env.bool("METRICS_ENABLED", default=True)
# When set, a scrape must send `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# --- end of metrics ----------------------------------------------------------------------------

# Fernet keys for credentials stored at rest, newest first (syncroot/credentials.py); empty: one
# derived from SECRET_KEY (development).
CREDENTIALS_KEYS = env.list("CREDENTIALS_KEYS", default=[])

# --- CRM providers ---------------------------------------------------------------------------
# A provider without credentials is simply not connected. Production and the local sandboxes
# differ only in these URLs and credentials.
SALESFORCE = {
    "login_url": env.str("SALESFORCE_LOGIN_URL", default="https://login.salesforce.com"),
    "instance_url": env.str("SALESFORCE_INSTANCE_URL", default=""),
    "api_version": env.str("SALESFORCE_API_VERSION", default="59.0"),
    "client_id": env.str("SALESFORCE_CLIENT_ID", default=""),
    "client_secret": env.str("SALESFORCE_CLIENT_SECRET", default=""),
    "username": env.str("SALESFORCE_USERNAME", default=""),
    "password": env.str("SALESFORCE_PASSWORD", default=""),
    "refresh_token": env.str("SALESFORCE_REFRESH_TOKEN", default=""),
    "access_token": env.str("SALESFORCE_ACCESS_TOKEN", default=""),
    "organization_id": env.str("SALESFORCE_ORGANIZATION_ID", default=""),
    "webhook_token": env.str("SALESFORCE_WEBHOOK_TOKEN", default=""),
    "event_secret": env.str("SALESFORCE_EVENT_SECRET", default=""),
    "rate_limit": env.str("SALESFORCE_RATE_LIMIT", default="25/second"),
    # Reads and pushes of more records than this go through Bulk API 2.0 jobs (0: never).
    "bulk_threshold": env.int("SALESFORCE_BULK_THRESHOLD", default=2000),
    "bulk_batch_size": env.int("SALESFORCE_BULK_BATCH_SIZE", default=10000),
    "bulk_external_id_field": env.str("SALESFORCE_BULK_EXTERNAL_ID_FIELD", default="SyncRoot_Id__c"),
    "record_url": env.str("SALESFORCE_RECORD_URL", default="{instance_url}/lightning/r/Contact/{id}/view"),
    # The admin's "Connect Salesforce" (the connected app above, web-server flow with PKCE): where
    # the browser approves it and the code is exchanged (empty: login_url), and the scopes asked.
    "oauth_login_url": env.str("SALESFORCE_OAUTH_LOGIN_URL", default=""),
    "scopes": env.str("SALESFORCE_SCOPES", default="api refresh_token"),
}
HUBSPOT = {
    "base_url": env.str("HUBSPOT_BASE_URL", default="https://api.hubapi.com"),
    "access_token": env.str("HUBSPOT_ACCESS_TOKEN", default=""),
    "client_id": env.str("HUBSPOT_CLIENT_ID", default=""),
    "client_secret": env.str("HUBSPOT_CLIENT_SECRET", default=""),
    "refresh_token": env.str("HUBSPOT_REFRESH_TOKEN", default=""),
    "app_id": env.str("HUBSPOT_APP_ID", default=""),
    "portal_id": env.str("HUBSPOT_PORTAL_ID", default=""),
    "rate_limit": env.str("HUBSPOT_RATE_LIMIT", default="100/10 seconds"),
    "record_url": env.str("HUBSPOT_RECORD_URL", default="https://app.hubspot.com/contacts/{portal_id}/record/0-1/{id}"),
    # The admin's "Connect HubSpot" (the app's client id and secret above): the app's install page,
    # the API base its codes are exchanged at and its portals are called at (empty: base_url), and
    # the scopes asked, which must be the app's required scopes.
    "authorize_url": env.str("HUBSPOT_AUTHORIZE_URL", default="https://app.hubspot.com/oauth/authorize"),
    "oauth_base_url": env.str("HUBSPOT_OAUTH_BASE_URL", default=""),
    "scopes": env.str(
        "HUBSPOT_SCOPES", default="oauth crm.objects.contacts.read crm.objects.contacts.write crm.schemas.contacts.read"
    ),
}

# --- Sync engine -------------------------------------------------------------------------------
SYNC_MAX_ATTEMPTS = env.int("SYNC_MAX_ATTEMPTS", default=8)
SYNC_BACKOFF_BASE_SECONDS = env.float("SYNC_BACKOFF_BASE_SECONDS", default=1.0)
# Capped at half the visibility timeout, so Redis never redelivers a delayed retry twice.
SYNC_BACKOFF_CAP_SECONDS = min(
    env.float("SYNC_BACKOFF_CAP_SECONDS", default=900.0), CELERY_BROKER_VISIBILITY_TIMEOUT / 2
)
# Under load the forwarder waits up to this long for a batch to fill; an idle change goes at once.
SYNC_BATCH_LINGER_MS = env.int("SYNC_BATCH_LINGER_MS", default=1000)
# Once changes stream in, a batch still waits for more while they keep coming at least this often
# (a busy machine spaces the API's writes out; a lone change is not kept waiting for it).
SYNC_BATCH_QUIET_MS = env.int("SYNC_BATCH_QUIET_MS", default=250)
# A contact written to a CRM is not written there again sooner than this: edits in between are
# coalesced into the next write, which carries the latest state (50 edits in 2 s: ~4 writes).
SYNC_WRITE_SPACING_MS = env.int("SYNC_WRITE_SPACING_MS", default=600)
# A drain claims its batch for this long while it calls the CRM outside any transaction; longer
# than the slowest call (the limiter waits up to 30 s, then the HTTP timeouts). A killed worker's
# claim is void at once (its PostgreSQL backend is gone), so this bounds only a hung one.
SYNC_CLAIM_LEASE_SECONDS = env.int("SYNC_CLAIM_LEASE_SECONDS", default=120)
# A CRM that refused our credentials is paused; a probe checks them this often (beat).
CRM_PROBE_INTERVAL_SECONDS = env.int("CRM_PROBE_INTERVAL_SECONDS", default=60)
# Every active connection, idle or not, has its credentials checked this often (one cheap call):
# tokens are refreshed before they expire and a revoked one is found before a change waits for it.
CONNECTION_CHECK_INTERVAL_SECONDS = env.int("CONNECTION_CHECK_INTERVAL_SECONDS", default=900)
# Seconds a process builds its CRM connections from what it read last (a connection added, paused
# or deleted by another process is seen within this time).
CONNECTIONS_REFRESH_SECONDS = env.float("CONNECTIONS_REFRESH_SECONDS", default=5.0)
# How long a CRM's contact fields (GET /providers/<provider>/fields) are kept before it is asked again.
CRM_SCHEMA_CACHE_SECONDS = env.int("CRM_SCHEMA_CACHE_SECONDS", default=3600)
# A field a CRM changes back more often than this within an hour is paused for that contact.
BOUNCE_LIMIT_PER_HOUR = env.int("BOUNCE_LIMIT_PER_HOUR", default=5)
OUTBOX_SWEEP_INTERVAL_SECONDS = env.int("OUTBOX_SWEEP_INTERVAL_SECONDS", default=30)
OUTBOX_SWEEP_AFTER_SECONDS = env.int("OUTBOX_SWEEP_AFTER_SECONDS", default=30)
# An inbox event that fails this many times (backoff between attempts) is `failed`, for an operator.
WEBHOOK_EVENT_MAX_ATTEMPTS = env.int("WEBHOOK_EVENT_MAX_ATTEMPTS", default=8)
CELERY_BEAT_SCHEDULE["sweep-outbox"] = {
    "task": "providers.tasks.sweep_outbox",
    "schedule": OUTBOX_SWEEP_INTERVAL_SECONDS,
    "options": {"expires": OUTBOX_SWEEP_INTERVAL_SECONDS},
}
CELERY_BEAT_SCHEDULE["probe-crms"] = {
    "task": "providers.tasks.probe_crms",
    "schedule": CRM_PROBE_INTERVAL_SECONDS,
    "options": {"expires": CRM_PROBE_INTERVAL_SECONDS},
}
RECONCILE_INTERVAL_SECONDS = env.int("RECONCILE_INTERVAL_SECONDS", default=60)
RECONCILE_LOOKBACK_SECONDS = env.int("RECONCILE_LOOKBACK_SECONDS", default=5)
# A run stops after this long (the next one reads on from its cursor): keep it below CELERY_TASK_SOFT_TIME_LIMIT.
RECONCILE_MAX_SECONDS = env.float("RECONCILE_MAX_SECONDS", default=60.0)
CELERY_BEAT_SCHEDULE["reconcile"] = {
    "task": "providers.tasks.reconcile_all",
    "schedule": RECONCILE_INTERVAL_SECONDS,
    "options": {"expires": RECONCILE_INTERVAL_SECONDS},
}
# Idempotency-Key replays are kept this long, then forgotten (beat, hourly).
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)
CELERY_BEAT_SCHEDULE["expire-idempotency-keys"] = {
    "task": "contacts.tasks.expire_idempotency_keys",
    "schedule": 3600,
    "options": {"expires": 3600},
}
# API budgets (crm/budget.py): SyncRoot uses this share of each connection's daily API limit (a
# connection's own `budget_share` overrides it); live changes may use all of it, the reconciler
# 90 %, backfills and imports 75 %.
API_BUDGET_SHARE = env.float("API_BUDGET_SHARE", default=0.5)
# A connection's daily API limit where its CRM does not report one (HubSpot OAuth apps), by
# connection key, e.g. "salesforce=100000,hubspot=250000"; a connection's own `daily_limit` wins.
CRM_DAILY_CALL_CAPS = {
    name.strip(): int(cap)
    for name, _, cap in (item.partition("=") for item in env.str("CRM_DAILY_CALL_CAPS", default="").split(","))
    if name.strip()
}
# Processed inbox events, sync attempts, resolved dead letters and delivered tombstones are
# pruned after this many days (beat, hourly, in bounded batches); 0 keeps them for ever.
RETENTION_DAYS = env.int("RETENTION_DAYS", default=30)
CELERY_BEAT_SCHEDULE["prune-retention"] = {
    "task": "providers.tasks.prune_retention",
    "schedule": 3600,
    "options": {"expires": 3600},
}
# A contact deleted in one CRM: soft-delete it here and archive it in the others, or keep it.
SYNC_DELETES = env.str("SYNC_DELETES", default="propagate")  # propagate | ignore
