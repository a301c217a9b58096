"""URLs of the API keys page and the API page."""

from __future__ import annotations

from django.urls import path

from api.keys import views

urlpatterns = [
    path("", views.api_docs, name="api_docs"),
    path("keys/", views.api_keys, name="api_keys"),
    path("keys/new/", views.api_key_create, name="api_key_create"),
    path("keys/<uuid:key_id>/revoke/", views.api_key_revoke, name="api_key_revoke"),
]
