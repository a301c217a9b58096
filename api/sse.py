"""Server-sent events for streamed responses: ``data: {json}`` lines, never buffered.

An error after the stream has begun cannot change the status code any more, so it
goes out as a ``data: {"error": ...}`` event (the openai client raises it as an
APIError) and the stream ends without ``[DONE]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from django.http import StreamingHttpResponse

from api.errors import ApiError, error_body

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def sse_event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def sse_encode(events: AsyncIterator[dict[str, Any]], *, done_marker: bool) -> AsyncIterator[bytes]:
    """Encode each event; a failure becomes an error event. Cancellation passes through."""
    try:
        async for event in events:
            yield sse_event(event)
    except ApiError as exc:
        yield sse_event(exc.body())
        return
    except Exception:
        logger.exception("A streamed API response failed")
        yield sse_event(error_body(500, "The server failed while streaming the reply."))
        return
    if done_marker:
        yield DONE


def sse_response(events: AsyncIterator[dict[str, Any]], *, done_marker: bool = True) -> StreamingHttpResponse:
    response = StreamingHttpResponse(sse_encode(events, done_marker=done_marker), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
