"""Template filters for messages."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString, mark_safe

from conversations.models import MessageFeedback
from conversations.rendering import render_markdown

register = template.Library()


@register.filter
def markdown(text: str) -> SafeString:
    """Server-rendered, sanitized Markdown (see conversations.rendering)."""
    return mark_safe(render_markdown(text))  # noqa: S308 - nh3 has sanitized it


@register.simple_tag
def feedback_reasons() -> list[tuple[str, str]]:
    return list(MessageFeedback.Reason.choices)
