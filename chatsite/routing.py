"""Websocket routes."""

from __future__ import annotations

from django.urls import path

from conversations.consumers import ConversationConsumer

websocket_urlpatterns = [
    path("ws/c/<uuid:conversation_id>/", ConversationConsumer.as_asgi()),
    path("ws/c/new/", ConversationConsumer.as_asgi()),
]
