"""Who is calling: the API key from ``Authorization: Bearer KEY`` (or ``x-api-key``),
the per-key rate limit (``API_RATE_LIMIT_PER_MINUTE``), and the owner's share of
generations (``INFERENCE_MAX_STREAMS_PER_USER``, shared with chat: inference/fair_use.py).

The limit counts requests in fixed one-minute windows in Django's cache, which is
Redis when ``REDIS_URL`` is set, so every process shares the same counters.
"""

from __future__ import annotations

import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from api.errors import ApiError, invalid
from api.keys import selectors, services
from api.models import ApiKey
from conversations.selectors import owner_streaming_count
from inference import fair_use


def _secret(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("X-Api-Key", "").strip()


def _masked(secret: str) -> str:
    return secret[:6] + "…" + secret[-4:] if len(secret) > 12 else "…"


async def api_key_from_request(request: HttpRequest) -> ApiKey:
    """The caller's active key, or a 401 saying what was wrong."""
    secret = _secret(request)
    if not secret:
        raise ApiError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'; "
            "create a key on Parley's API keys page.",
        )
    api_key = await sync_to_async(selectors.api_key_authenticate)(secret=secret)
    if api_key is None:
        raise ApiError(
            401,
            f"Incorrect API key provided: {_masked(secret)}. It may have been revoked; "
            "create a new key on Parley's API keys page.",
            code="invalid_api_key",
        )
    await sync_to_async(services.api_key_mark_used)(api_key=api_key)
    return api_key


async def rate_limit_check(*, api_key: ApiKey) -> None:
    """Count this request against the key's window; a 429 with Retry-After when over."""
    limit = settings.API_RATE_LIMIT_PER_MINUTE
    now = time.time()
    window = int(now // 60)
    name = f"parley:api-rate:{api_key.pk}:{window}"
    await cache.aadd(name, 0, timeout=120)
    try:
        count = await cache.aincr(name)
    except ValueError:  # the counter expired between add and incr
        await cache.aset(name, 1, timeout=120)
        count = 1
    if count > limit:
        retry_after = max(1, int(60 - now % 60))
        raise ApiError(
            429,
            f"Rate limit reached for this API key: {limit} requests per minute. Try again in {retry_after} s.",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(retry_after), "X-RateLimit-Limit-Requests": str(limit)},
        )


async def generation_slots_take(*, api_key: ApiKey, count: int) -> fair_use.ApiSlots:
    """One of the owner's generation slots per choice: a 400 naming ``n`` when it asks for
    more than anyone may run, a 429 with Retry-After while the owner runs their share."""
    limit = settings.INFERENCE_MAX_STREAMS_PER_USER
    if count > limit:
        raise invalid("n", f"'n' asks for {count} choices; one person may run {limit} generations at once.")

    def take() -> fair_use.ApiSlots:
        chat = owner_streaming_count(owner_id=api_key.owner_id)
        return fair_use.api_slots_take(user_id=api_key.owner_id, count=count, chat_streams=chat)

    try:
        return await sync_to_async(take)()
    except fair_use.StreamsLimitReached as exc:
        retry_after = str(fair_use.RETRY_AFTER_SECONDS)
        raise ApiError(429, str(exc), code="too_many_generations", headers={"Retry-After": retry_after}) from None
