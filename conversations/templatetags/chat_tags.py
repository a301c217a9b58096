"""Template filters for messages."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from conversations import selectors
from conversations.models import MessageFeedback
from conversations.rendering import render_markdown
from conversations.starters import STARTERS, Starter
from conversations.streaming import streaming_body

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    """Server-rendered, sanitized Markdown (see conversations.rendering)."""
    return mark_safe(render_markdown(text))  # noqa: S308 - nh3 has sanitized it


@register.simple_tag
def streaming_markdown(message: Any) -> SafeString:
    """A streaming reply's text, rendered as its socket renders it (conversations.streaming)."""
    return streaming_body(str(message.public_id), message.content)


@register.simple_tag
def feedback_reasons() -> list[tuple[str, str]]:
    return list(MessageFeedback.Reason.choices)


@register.simple_tag
def starter_prompts() -> tuple[Starter, ...]:
    return STARTERS


@register.inclusion_tag("conversations/_sidebar.html", takes_context=True)
def conversation_sidebar(context: Any) -> dict[str, object]:
    """The sidebar's first page for the signed-in user, marking the open conversation."""
    return {
        "sidebar": selectors.conversation_sidebar(owner=context["request"].user),
        "conversation": context.get("conversation"),
    }
