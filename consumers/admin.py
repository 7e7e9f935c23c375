"""API keys in the Django admin: listed, edited, revoked; a new key is shown once, on creation."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.forms import ModelForm
from django.http import HttpRequest

from consumers.models import ApiKey, UserGrant
from consumers.signals import announce


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "owner", "created", "expires", "disabled", "last_used")
    list_filter = ("disabled",)
    search_fields = ("name", "owner", "prefix")
    readonly_fields = ("prefix", "key_hash", "created", "last_used")
    fieldsets = (
        (None, {"fields": ("name", "owner", "prefix", "key_hash", "created", "last_used")}),
        ("Validity", {"fields": ("expires", "disabled")}),
        ("Entitlement", {"fields": ("symbols", "allowed_origins", "publish")}),
        (
            "Limits (empty: the global default)",
            {"fields": ("max_subscriptions", "min_throttle_ms", "max_requests_per_s", "max_connections")},
        ),
    )
    actions = ("revoke",)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ModelForm[ApiKey], change: bool) -> None:
        key = None
        if not change:
            key = ApiKey.generate()
            obj.set_key(key)
        super().save_model(request, obj, form, change)
        if key is not None:
            messages.warning(request, f"The new key of {obj.name}, shown only this once: {key}")

    @admin.action(description="Revoke (disable) the selected keys")
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        count = queryset.update(disabled=True)
        announce(f"{count} key(s) revoked in the admin")
        messages.success(request, f"Revoked {count} key(s).")


@admin.register(UserGrant)
class UserGrantAdmin(admin.ModelAdmin):
    """What a user logged in with a Django session may see (superusers without one: everything)."""

    list_display = ("user", "symbols", "max_connections", "publish")
    search_fields = ("user__username",)
    autocomplete_fields = ("user",)
    fieldsets = (
        (None, {"fields": ("user", "symbols", "publish")}),
        (
            "Limits (empty: the global default)",
            {"fields": ("max_subscriptions", "min_throttle_ms", "max_requests_per_s", "max_connections")},
        ),
    )
