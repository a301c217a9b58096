"""The status page for staff, and its JSON twin for monitoring: every generating
process's row (inference/status.py) with the count of replies being written."""

from __future__ import annotations

from dataclasses import asdict

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from conversations.selectors import streaming_reply_count
from inference.status import Overview, status_overview


def _overview() -> Overview:
    return status_overview(replies_streaming=streaming_reply_count())


@staff_member_required
def status_page(request: HttpRequest) -> HttpResponse:
    return render(request, "inference/status.html", {"overview": _overview()})


@staff_member_required
def status_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(asdict(_overview()))
