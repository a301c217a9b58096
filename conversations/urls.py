from __future__ import annotations

from django.urls import path

from conversations import views

urlpatterns = [
    path("", views.home, name="home"),
    path("c/new/", views.conversation_new, name="conversation_new"),
    path("c/new/settings/", views.new_chat_settings_save, name="new_chat_settings"),
    path("c/<uuid:conversation_id>/pin/", views.conversation_pin, name="conversation_pin"),
    path("conversations/", views.conversation_sidebar_page, name="conversation_sidebar"),
    path("attachments/", views.attachment_upload, name="attachment_upload"),
    path("attachments/<uuid:attachment_id>/", views.attachment_text, name="attachment_text"),
    path("c/<uuid:conversation_id>/", views.conversation_detail, name="conversation"),
    path("c/<uuid:conversation_id>/rename/", views.conversation_rename, name="conversation_rename"),
    path("c/<uuid:conversation_id>/delete/", views.conversation_delete, name="conversation_delete"),
    path("c/<uuid:conversation_id>/settings/", views.conversation_settings, name="conversation_settings"),
    path("c/<uuid:conversation_id>/messages/", views.conversation_messages, name="conversation_messages"),
    path("c/<uuid:conversation_id>/switch/", views.branch_switch, name="branch_switch"),
    path("c/<uuid:conversation_id>/export.md", views.conversation_export, {"kind": "md"}, name="export_markdown"),
    path("c/<uuid:conversation_id>/export.json", views.conversation_export, {"kind": "json"}, name="export_json"),
    path("m/<uuid:message_id>/feedback/", views.message_feedback, name="message_feedback"),
    path("search/", views.conversation_search, name="conversation_search"),
    path("settings/", views.account_settings, name="account_settings"),
    path("settings/theme/", views.theme_set, name="theme_set"),
    path("settings/email/", views.account_email, name="account_email"),
    path("settings/delete-conversations/", views.conversations_delete_all, name="conversations_delete_all"),
]
