"""Settings for the test suite: the real services, but a Redis database of its own, so tests never
consume the queues of a running `make run` (which uses database 0)."""

import os

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("DATABASE_URL", "postgres://127.0.0.1:5432/syncroot")
os.environ.setdefault("LOG_FORMAT", "text")

from syncroot.settings import *  # noqa: E402, F403
