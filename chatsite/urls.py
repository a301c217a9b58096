"""Top-level URL map."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from inference import views as inference_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("conversations.auth_urls")),
    path("v1/", include("inference.api.urls")),
    path("status/", inference_views.status_page, name="inference_status"),
    path("status.json", inference_views.status_json, name="inference_status_json"),
    path("api/", include("apikeys.urls")),
    path("", include("conversations.urls")),
]
