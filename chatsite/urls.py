"""Top-level URL map."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from chatsite import views as status_views

urlpatterns = [
    # The fine-tuning admin was under the inference app until the apps were re-cut: old
    # bookmarks and links land on the same page under its own app.
    re_path(
        r"^admin/inference/(?P<rest>(?:finetuningjob|finetunedmodel|trainingfile)/.*)$",
        RedirectView.as_view(url="/admin/finetuning/%(rest)s", permanent=True, query_string=True),
    ),
    path("admin/", admin.site.urls),
    path("accounts/", include("conversations.auth_urls")),
    path("v1/", include("api.urls")),
    path("status/", status_views.status_page, name="inference_status"),
    path("status.json", status_views.status_json, name="inference_status_json"),
    path("api/", include("api.keys.urls")),
    path("", include("conversations.urls")),
]
