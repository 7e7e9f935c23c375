"""Shared test setup: Django settings, and the fixtures of tests that run real processes."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketstream.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402

# In-process hubs (the consumer tests) admit clients without a key, as `make run` does
# (pytest-django reads the settings before this file: set the value, not the environment).
# The key tests build their gates with access rules of their own.
settings.MARKETSTREAM["ANONYMOUS"] = True

pytest_plugins = ("tests.support.fixtures", "tests.embedded")  # redis_url, prefix, procs; embedded_hub
