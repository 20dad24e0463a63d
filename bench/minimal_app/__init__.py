"""The irreducible write, served next to the product API so bench.api_write can compare them.

Used only by the benchmark: gunicorn runs with DJANGO_SETTINGS_MODULE=bench.minimal_app.settings,
which is the product's settings with one more URL (`POST /bench/minimal-contacts`).
"""
