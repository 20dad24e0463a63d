"""Settings for the test suite: the real services, kept apart from a running `make run` (which
uses Redis database 0) and from any other test run on the same machine."""

import os

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("DATABASE_URL", "postgres://127.0.0.1:5432/syncroot")
os.environ.setdefault("LOG_FORMAT", "text")
# Inherited by the worker processes a test starts, so they share this run's database and queues.
RUN_ID = os.environ.setdefault("SYNCROOT_TEST_RUN_ID", str(os.getpid()))

from syncroot.settings import *  # noqa: E402, F403

DATABASES["default"]["TEST"] = {"NAME": f"test_syncroot_{RUN_ID}"}  # noqa: F405
CELERY_BROKER_TRANSPORT_OPTIONS = {**CELERY_BROKER_TRANSPORT_OPTIONS, "global_keyprefix": f"run{RUN_ID}:"}  # noqa: F405
CACHES["default"]["KEY_PREFIX"] = f"run{RUN_ID}"  # noqa: F405
# Tests drain right after each write and expect the next change to go out at once; the tests of
# the spacing itself (providers/tests/test_sync_spacing.py) set it.
SYNC_WRITE_SPACING_MS = 0
# Tests change a CRM's state in the database and read the API at once; the cache has its own test.
API_CRM_STATE_CACHE_SECONDS = 0
