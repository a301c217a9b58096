"""Pages and htmx partials for conversations and accounts."""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from conversations import selectors, services
from conversations.forms import ConversationSettingsForm, RenameForm, SignupForm
from conversations.models import Conversation, Message


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _page_context(request: HtmxHttpRequest, conversation: Conversation | None) -> dict[str, object]:
    return {
        "conversations": selectors.conversation_list(owner=request.user),  # type: ignore[arg-type]
        "conversation": conversation,
    }


@require_http_methods(["GET", "POST"])
def signup(request: HtmxHttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


@login_required
def home(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "conversations/home.html", _page_context(request, None))


@login_required
@require_POST
def conversation_new(request: HtmxHttpRequest) -> HttpResponse:
    conversation = services.conversation_create(owner=request.user)  # type: ignore[arg-type]
    url = reverse("conversation", args=[conversation.public_id])
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


@login_required
def conversation_detail(request: HtmxHttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = selectors.conversation_get_for_owner(owner=request.user, public_id=conversation_id)
    messages_list = selectors.conversation_active_messages(conversation=conversation)
    context = {
        **_page_context(request, conversation),
        "messages_list": messages_list,
        "has_streaming": any(m.status == Message.Status.STREAMING for m in messages_list),
        "settings_form": _settings_form(conversation),
    }
    return render(request, "conversations/conversation.html", context)


def _settings_form(conversation: Conversation, data: object = None) -> ConversationSettingsForm:
    initial = {
        "model_name": conversation.model_name,
        "system_prompt": conversation.system_prompt,
        "temperature": conversation.temperature,
        "max_tokens": conversation.max_tokens,
    }
    return ConversationSettingsForm(data, initial=initial)  # type: ignore[arg-type]


@login_required
@require_POST
def conversation_rename(request: HtmxHttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = selectors.conversation_get_for_owner(owner=request.user, public_id=conversation_id)
    form = RenameForm(request.POST)
    error = ""
    if form.is_valid():
        try:
            services.conversation_rename(conversation=conversation, title=form.cleaned_data["title"])
        except ValidationError as exc:
            error = " ".join(exc.messages)
    else:
        error = "A title cannot be empty."
    if not request.htmx:
        return redirect("conversation", conversation_id=conversation.public_id)
    context = {"conversation": conversation, "rename_error": error, "current": conversation}
    response = render(request, "conversations/_renamed.html", context)
    return response


@login_required
@require_POST
def conversation_delete(request: HtmxHttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = selectors.conversation_get_for_owner(owner=request.user, public_id=conversation_id)
    services.conversation_delete(conversation=conversation)
    if request.htmx:
        return HttpResponseClientRedirect(reverse("home"))
    return redirect("home")


@login_required
@require_POST
def conversation_settings(request: HtmxHttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = selectors.conversation_get_for_owner(owner=request.user, public_id=conversation_id)
    form = _settings_form(conversation, request.POST)
    saved = False
    if form.is_valid():
        try:
            services.conversation_update_settings(conversation=conversation, **form.cleaned_data)
            saved = True
        except ValidationError as exc:
            form.add_error("model_name", exc)
    status = 200 if saved or not form.errors else 422
    if not request.htmx:
        return redirect("conversation", conversation_id=conversation.public_id)
    return render(
        request,
        "conversations/_settings_form.html",
        {"conversation": conversation, "settings_form": form, "saved": saved},
        status=status,
    )
