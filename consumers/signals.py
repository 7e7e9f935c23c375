"""Announcing grant changes: every save or delete of a key, a session grant or a user.

`announce()` tells the hubs of this process (the `grants_changed` signal, which each
hub's grant book listens to) and, with REDIS_URL, every hub over Redis
(`marketstream.adapters.grant_notices`), once the transaction commits. Bulk updates
(`QuerySet.update`) send no model signal: code that uses them calls `announce()`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal, receiver

from consumers.models import ApiKey, UserGrant
from marketstream.adapters import grant_notices

grants_changed = Signal()  # sent with `what`: a short description, never a secret


def announce(what: str) -> None:
    """Tell every hub that grants changed, after the current transaction commits."""

    def send() -> None:
        grants_changed.send(sender=announce, what=what)
        if settings.REDIS_URL:
            grant_notices.publish(settings.REDIS_SHARDS[0].url, settings.MARKETSTREAM["PREFIX"], what)

    transaction.on_commit(send)


@receiver(post_save, sender=ApiKey)
@receiver(post_delete, sender=ApiKey)
def _key_changed(sender: Any, instance: ApiKey, **kwargs: Any) -> None:
    if kwargs.get("update_fields") == frozenset({"last_used"}):
        return  # the hub's own bookkeeping: rights unchanged
    announce(f"key {instance.name}")


@receiver(post_save, sender=UserGrant)
@receiver(post_delete, sender=UserGrant)
def _grant_changed(sender: Any, instance: UserGrant, **kwargs: Any) -> None:
    announce(f"session grant of user {instance.user_id}")


def _user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    if kwargs.get("update_fields") == frozenset({"last_login"}):
        return  # a login changes no rights
    announce(f"user {instance.pk}")


post_save.connect(_user_changed, sender=get_user_model(), dispatch_uid="marketstream-user-saved")
post_delete.connect(_user_changed, sender=get_user_model(), dispatch_uid="marketstream-user-deleted")
