"""The API keys page (create, list, revoke, as htmx partials) and the API page."""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from api.keys import selectors, services
from conversations.selectors import conversation_list
from inference import registry


def _page(request: HttpRequest, template: str, **context: object) -> HttpResponse:
    context["conversations"] = conversation_list(owner=request.user)  # type: ignore[arg-type]
    return render(request, template, context)


def _keys_context(request: HttpRequest, **extra: object) -> dict[str, object]:
    return {"api_keys": selectors.api_key_list(owner=request.user), **extra}


@login_required
def api_keys(request: HttpRequest) -> HttpResponse:
    return _page(request, "api/keys.html", **_keys_context(request))


@login_required
@require_POST
def api_key_create(request: HttpRequest) -> HttpResponse:
    """Create a key and show its secret this one time; a bad name is shown next to the field."""
    name = request.POST.get("name", "")
    try:
        created = services.api_key_create(owner=request.user, name=name)  # type: ignore[arg-type]
    except ValidationError as exc:
        context = _keys_context(request, error=" ".join(exc.messages), name=name)
        return _keys_response(request, context, status=400)
    return _keys_response(request, _keys_context(request, created=created))


def _keys_response(request: HttpRequest, context: dict[str, object], *, status: int = 200) -> HttpResponse:
    if getattr(request, "htmx", False):
        return render(request, "api/_keys_section.html", context, status=status)
    response = _page(request, "api/keys.html", **context)
    response.status_code = status
    return response


@login_required
@require_POST
def api_key_revoke(request: HttpRequest, key_id: UUID) -> HttpResponse:
    api_key = selectors.api_key_get_for_owner(owner=request.user, public_id=key_id)
    services.api_key_revoke(api_key=api_key)
    return _keys_response(request, _keys_context(request))


@login_required
def api_docs(request: HttpRequest) -> HttpResponse:
    base_url = request.build_absolute_uri("/v1")
    return _page(request, "api/api.html", base_url=base_url, model_id=registry.default_model_id())
