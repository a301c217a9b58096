"""Transcript review for staff: conversations and their messages, read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from conversations.models import Conversation, Message


class MessageInline(admin.TabularInline[Message, Conversation]):
    model = Message
    fields = ("created_at", "role", "content", "status", "finish_reason", "prompt_tokens", "completion_tokens", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("created_at", "id")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = ("__str__", "owner", "model_name", "source", "created_at", "updated_at")
    list_filter = ("source", "model_name", "created_at")
    search_fields = ("title", "owner__username", "messages__content")
    readonly_fields = (
        "public_id",
        "owner",
        "title",
        "model_name",
        "source",
        "system_prompt",
        "temperature",
        "max_tokens",
        "created_at",
        "updated_at",
    )
    exclude = ("active_leaf",)
    inlines = [MessageInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
