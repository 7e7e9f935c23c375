"""Shared test setup: Django settings, and the fixtures of tests that run real processes."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketstream.settings")

import django

django.setup()

pytest_plugins = ("tests.support.fixtures", "tests.embedded")  # redis_url, prefix, procs; embedded_hub
