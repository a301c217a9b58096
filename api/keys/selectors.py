"""Reads of API keys, always scoped to their owner."""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from api.keys.services import api_key_hash
from api.models import ApiKey


def api_key_list(*, owner: AbstractBaseUser | AnonymousUser) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(owner_id=owner.pk)


def api_key_get_for_owner(*, owner: AbstractBaseUser | AnonymousUser, public_id: UUID | str) -> ApiKey:
    """The key, or Http404 for anyone but its owner."""
    return get_object_or_404(ApiKey, owner_id=owner.pk, public_id=public_id)


def api_key_authenticate(*, secret: str) -> ApiKey | None:
    """The active key with this secret and an active owner, or None."""
    if not secret:
        return None
    api_key = ApiKey.objects.select_related("owner").filter(key_hash=api_key_hash(secret)).first()
    if api_key is None or api_key.revoked_at is not None or not api_key.owner.is_active:
        return None
    return api_key
