"""Shared test setup: Django settings, and a clear failure when Redis is missing."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketstream.settings")

import django

django.setup()

pytest_plugins = ("tests.embedded",)  # the embedded_hub fixture
