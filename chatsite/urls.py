"""Top-level URL map."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("conversations.auth_urls")),
    path("v1/", include("inference.api.urls")),
    path("api/", include("apikeys.urls")),
    path("", include("conversations.urls")),
]
