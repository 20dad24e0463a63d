"""The product's settings, plus the minimal write endpoint's URL (bench.api_write only)."""

from syncroot.settings import *  # noqa: F403 (every product setting, unchanged)

ROOT_URLCONF = "bench.minimal_app.urls"
