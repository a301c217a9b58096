"""Template context every page needs."""

from __future__ import annotations

from django.http import HttpRequest

from conversations import selectors


def appearance(request: HttpRequest) -> dict[str, str]:
    """``theme``: what <html data-theme> carries (system, light or dark)."""
    user = getattr(request, "user", None)
    if user is None:
        return {"theme": "system"}
    return {"theme": selectors.user_theme(user=user)}
