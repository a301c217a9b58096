"""The inference status page for staff, and its JSON twin for monitoring."""

from __future__ import annotations

from dataclasses import asdict

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from inference.status import status_overview


@staff_member_required
def status_page(request: HttpRequest) -> HttpResponse:
    return render(request, "inference/status.html", {"overview": status_overview()})


@staff_member_required
def status_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(asdict(status_overview()))
