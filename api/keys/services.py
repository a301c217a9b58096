"""Writes to API keys: create (the secret is returned once), revoke, mark used."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.utils import timezone

from api.models import ApiKey

KEY_PREFIX = "pk-"
VISIBLE_CHARS = 11
NAME_MAX_CHARS = 100


@dataclass(frozen=True)
class NewApiKey:
    """A key just made: ``secret`` is the only copy of the key anywhere."""

    api_key: ApiKey
    secret: str


def api_key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def api_key_name_clean(*, name: object) -> str:
    if not isinstance(name, str) or not " ".join(name.split()):
        raise ValidationError("Give the key a name, so you can tell it apart later.")
    name = " ".join(name.split())
    if len(name) > NAME_MAX_CHARS:
        raise ValidationError(f"A key's name can be at most {NAME_MAX_CHARS} characters.")
    return name


def api_key_create(*, owner: User, name: object) -> NewApiKey:
    clean_name = api_key_name_clean(name=name)
    limit = settings.API_KEYS_PER_USER
    if ApiKey.objects.filter(owner=owner, revoked_at__isnull=True).count() >= limit:
        raise ValidationError(f"You already have {limit} active keys; revoke one before creating another.")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        owner=owner, name=clean_name, prefix=secret[:VISIBLE_CHARS], key_hash=api_key_hash(secret)
    )
    return NewApiKey(api_key=api_key, secret=secret)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke once; revoking a revoked key changes nothing."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_mark_used(*, api_key: ApiKey) -> None:
    """Record use at most once a minute per key, so busy keys do not write on every call."""
    now = timezone.now()
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() >= 60:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
