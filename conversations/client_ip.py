"""The address a request came from, as the proxies Parley trusts saw it.

Login throttling (django-axes, ``AXES_CLIENT_IP_CALLABLE``) and the sign-up throttle
key on it. Behind ``PARLEY_PROXY_COUNT`` proxies, each appends the address it saw to
``X-Forwarded-For``, so only the right-most entries were written by machines Parley
trusts; everything to their left is the client's own claim, free to change on every
try. daphne's ``--proxy-headers`` takes the left-most entry, which is why the
documented nginx site replaces the header instead of appending to it
(docs/deployment.md) and why this reads from the right whatever the proxy does.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The ``PARLEY_PROXY_COUNT``-th address from the right of X-Forwarded-For, or the
    connection's own address without proxies (or when the header has fewer entries)."""
    trusted = settings.PARLEY_PROXY_COUNT
    header = request.META.get("HTTP_X_FORWARDED_FOR", "")
    forwarded = [entry.strip() for entry in header.split(",") if entry.strip()]
    if trusted and len(forwarded) >= trusted:
        return forwarded[-trusted]
    return request.META.get("REMOTE_ADDR")
