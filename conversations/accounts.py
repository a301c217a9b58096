"""Who may create an account: ``PARLEY_SIGNUP`` (open, or closed so that only admins
create accounts) and, while open, at most ``PARLEY_SIGNUPS_PER_HOUR`` new accounts
from one address an hour (counted in Django's cache, shared through Redis)."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError


def signup_open() -> bool:
    return bool(settings.PARLEY_SIGNUP == "open")


def signup_throttle_take(*, address: str | None) -> None:
    """Count one new account from ``address`` in this hour's window, or refuse it."""
    name = f"parley:signups:{address or 'unknown'}:{int(time.time() // 3600)}"
    cache.add(name, 0, timeout=2 * 3600)
    try:
        count = cache.incr(name)
    except ValueError:  # the window expired between add and incr
        cache.set(name, 1, timeout=2 * 3600)
        count = 1
    if count > settings.PARLEY_SIGNUPS_PER_HOUR:
        raise ValidationError(
            "Too many accounts were created from your network in the last hour. Try again later, "
            "or ask an administrator to create yours."
        )
