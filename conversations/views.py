"""Pages and htmx partials for conversations and accounts."""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import escape
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from conversations import accounts, attachments, selectors, services
from conversations.client_ip import client_ip
from conversations.forms import ConversationSettingsForm, EmailForm, RenameForm, SignupForm
from conversations.models import Attachment, Conversation, Message, MessageFeedback, UserPreferences
from conversations.new_chat import new_chat_settings, new_chat_settings_store


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _page_context(request: HtmxHttpRequest, conversation: Conversation | None) -> dict[str, object]:
    """What app.html needs besides the sidebar (the conversation_sidebar tag reads that)."""
    return {"conversation": conversation}


@require_http_methods(["GET", "POST"])
def signup(request: HtmxHttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    if not accounts.signup_open():
        return render(request, "registration/signup_closed.html", status=403 if request.method == "POST" else 200)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            accounts.signup_throttle_take(address=client_ip(request))
        except ValidationError as exc:
            form.add_error(None, exc)
            return render(request, "registration/signup.html", {"form": form}, status=429)
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


@login_required
def home(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "conversations/home.html", _page_context(request, None))


@login_required
@require_http_methods(["GET", "POST"])
def conversation_new(request: HtmxHttpRequest) -> HttpResponse:
    """GET: a new chat's page; nothing is stored until its first message (the websocket
    stores it). POST, for scripts such as bench.client: store an empty chat and go to it."""
    if request.method == "GET":
        return _new_chat_page(request)
    conversation = services.conversation_create(owner=request.user)  # type: ignore[arg-type]
    url = reverse("conversation", args=[conversation.public_id])
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


@login_required
def conversation_detail(request: HtmxHttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = selectors.conversation_get_for_owner(owner=request.user, public_id=conversation_id)
    page = selectors.conversation_message_page(conversation=conversation, user=request.user)
    context = {
        **_page_context(request, conversation),
        "page": page,
        "has_streaming": conversation.messages.filter(status=Message.Status.STREAMING).exists(),
        "settings_form": _settings_form(conversation),
    }
    return render(request, "conversations/conversation.html", context)


def _settings_form(conversation: Conversation, data: object = None) -> ConversationSettingsForm:
    """The settings form of ``conversation`` (its owner's models to pick from)."""
    return ConversationSettingsForm.for_conversation(conversation, data)


def _new_chat(request: HtmxHttpRequest) -> Conversation:
    return services.conversation_draft(owner=request.user, chosen=new_chat_settings(request.session))  # type: ignore[arg-type]


def _new_chat_page(request: HtmxHttpRequest) -> HttpResponse:
    conversation = _new_chat(request)
    context = {
        **_page_context(request, conversation),
        "page": None,
        "has_streaming": False,
        "settings_form": _settings_form(conversation),
    }
    return render(request, "conversations/conversation.html", context)


@login_required
@require_POST
def new_chat_settings_save(request: HtmxHttpRequest) -> HttpResponse:
    """Settings chosen for a new chat before its first message: kept until it is stored."""
    conversation = _new_chat(request)
    form = _settings_form(conversation, request.POST)
    saved = form.is_valid()
    if saved:
        new_chat_settings_store(request.session, form.cleaned_data)
        form = _settings_form(_new_chat(request))
    if not request.htmx:
        return redirect("conversation_new")
    context = {"conversation": conversation, "settings_form": form, "saved": saved}
    return render(request, "conversations/_settings_form.html", context, status=200 if saved else 422)


@login_required
@require_POST
def conversation_pin(request: HtmxHttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = selectors.conversation_get_for_owner(owner=request.user, public_id=conversation_id)
    services.conversation_pin(conversation=conversation, pinned=request.POST.get("pinned") == "true")
    if not request.htmx:
        return redirect("conversation", conversation_id=conversation.public_id)
    return render(request, "conversations/_pinned.html", {"conversation": conversation})


# Room for the multipart envelope around one file (boundaries, headers, its name).
ATTACHMENT_FORM_OVERHEAD = 16_384


@login_required
@require_POST
def attachment_upload(request: HtmxHttpRequest) -> HttpResponse:
    """A file for the message being written: its chip for the composer, or a 400 saying why
    it was refused (then nothing is stored)."""
    limit = settings.CHAT_ATTACHMENT_MAX_BYTES
    length = int(request.META.get("CONTENT_LENGTH") or 0)
    if length > limit + ATTACHMENT_FORM_OVERHEAD:  # refused before Django reads the body
        return _refused(attachments.too_large(name="", size=length))
    upload = request.FILES.get("file")
    if upload is None:
        return _refused("Choose a file to attach.")
    if (upload.size or 0) > limit:
        return _refused(attachments.too_large(name=upload.name or "", size=upload.size or 0))
    data = upload.read()
    try:
        attachment = attachments.attachment_create(owner_id=request.user.pk, name=upload.name or "", data=data)  # type: ignore[arg-type]
    except ValidationError as exc:
        return _refused(" ".join(exc.messages))
    return render(request, "conversations/_attachment_chip.html", {"file": attachment})


def _refused(reason: str) -> HttpResponse:
    return HttpResponse(reason, status=400, content_type="text/plain; charset=utf-8")


@login_required
@require_GET
def attachment_text(request: HtmxHttpRequest, attachment_id: UUID) -> HttpResponse:
    """An attached file's text, escaped, for its chip (the owner's only)."""
    attachment = get_object_or_404(Attachment, public_id=attachment_id, owner_id=request.user.pk)
    return HttpResponse(escape(attachment.text), content_type="text/html; charset=utf-8")


@login_required
@require_GET
def conversation_sidebar_page(request: HtmxHttpRequest) -> HttpResponse:
    """The sidebar's next page, after ``?after=<conversation id>`` (scrolling down)."""
    sidebar = selectors.conversation_sidebar(owner=request.user, after=request.GET.get("after") or None)
    current = _owned_or_none(request, request.GET.get("current", ""))
    return render(request, "conversations/_sidebar_page.html", {"sidebar": sidebar, "conversation": current})


def _owned_or_none(request: HtmxHttpRequest, public_id: str) -> Conversation | None:
    try:
        return selectors.conversation_find_for_owner(owner_id=request.user.pk, public_id=public_id) if public_id else None
    except ValidationError:
        return None


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
            form = _settings_form(conversation)  # the values now in use, also those the post left out
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


@login_required
@require_GET
def conversation_messages(request: HtmxHttpRequest, conversation_id: UUID) -> HttpResponse:
    """The page of the active branch before ``?before=<message id>`` (scrolling up)."""
    conversation = selectors.conversation_get_for_owner(owner=request.user, public_id=conversation_id)
    before = request.GET.get("before") or None
    page = selectors.conversation_message_page(conversation=conversation, user=request.user, before=before)
    return render(request, "conversations/_message_page.html", {"conversation": conversation, "page": page})


@login_required
@require_POST
def branch_switch(request: HtmxHttpRequest, conversation_id: UUID) -> HttpResponse:
    """Show another sibling's branch; answers with the re-rendered message list."""
    conversation = selectors.conversation_get_for_owner(owner=request.user, public_id=conversation_id)
    target = request.POST.get("message", "")
    try:
        services.branch_switch(conversation=conversation, message_id=target)
    except ValidationError as exc:
        return HttpResponse(" ".join(exc.messages), status=400)
    if not request.htmx:
        return redirect("conversation", conversation_id=conversation.public_id)
    page = selectors.conversation_message_page(conversation=conversation, user=request.user, include=target)
    return render(request, "conversations/_message_list.html", {"conversation": conversation, "page": page})


@login_required
@require_POST
def message_feedback(request: HtmxHttpRequest, message_id: UUID) -> HttpResponse:
    """Thumbs up or down on a reply (down takes an optional reason); pressing it again clears it."""
    message = selectors.message_get_for_owner(owner=request.user, public_id=message_id)
    error = ""
    try:
        services.message_feedback_set(message=message, user=request.user, **_feedback_fields(request.POST))  # type: ignore[arg-type]
    except ValidationError as exc:
        error = " ".join(exc.messages)
    if not request.htmx:
        return redirect("conversation", conversation_id=message.conversation.public_id)
    feedback = MessageFeedback.objects.filter(message=message, user=request.user).first()  # type: ignore[misc]
    context = {"message": message, "feedback": feedback, "feedback_error": error, "reasons": MessageFeedback.Reason}
    return render(request, "conversations/_feedback.html", context, status=400 if error else 200)


def _feedback_fields(data: QueryDict) -> dict[str, str]:
    return {
        "rating": data.get("rating", ""),
        "reason": data.get("reason", ""),
        "comment": data.get("comment", ""),
    }


@login_required
@require_GET
def conversation_export(request: HtmxHttpRequest, conversation_id: UUID, kind: str) -> HttpResponse:
    """Download the active branch as Markdown, or as JSON in the chat training format."""
    conversation = selectors.conversation_get_for_owner(owner=request.user, public_id=conversation_id)
    name = slugify(conversation.title)[:60] or "conversation"
    if kind == "json":
        body, content_type = selectors.conversation_export_json(conversation=conversation), "application/json"
    else:
        body, content_type = selectors.conversation_export_markdown(conversation=conversation), "text/markdown"
    response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.{kind}"'
    return response


@login_required
@require_GET
def conversation_search(request: HtmxHttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")
    hits = selectors.conversation_search(owner=request.user, query=query)
    context = {"query": query, "hits": hits, "searched": bool(selectors.search_terms(query))}
    if request.htmx:
        return render(request, "conversations/_search_results.html", context)
    return render(request, "conversations/search.html", {**_page_context(request, None), **context})


def _settings_context(request: HtmxHttpRequest, **extra: object) -> dict[str, object]:
    return {
        **_page_context(request, None),
        "conversation_count": selectors.conversation_list(owner=request.user).count(),  # type: ignore[arg-type]
        "theme_choices": UserPreferences.Theme.choices,
        "email_form": EmailForm(initial={"email": request.user.email}),  # type: ignore[union-attr]
        **extra,
    }


@login_required
@require_GET
def account_settings(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "settings.html", _settings_context(request))


@login_required
@require_POST
def account_email(request: HtmxHttpRequest) -> HttpResponse:
    form = EmailForm(request.POST)
    if not form.is_valid():
        return render(request, "settings.html", _settings_context(request, email_form=form), status=400)
    services.user_email_set(user=request.user, email=form.cleaned_data["email"])  # type: ignore[arg-type]
    return redirect(f"{reverse('account_settings')}?email_saved=1#account")


@login_required
@require_POST
def conversations_delete_all(request: HtmxHttpRequest) -> HttpResponse:
    if request.POST.get("confirm") != "delete":
        context = _settings_context(request, delete_error="Type the word delete in the box to confirm.")
        return render(request, "settings.html", context, status=400)
    deleted = services.conversation_delete_all(owner=request.user)  # type: ignore[arg-type]
    return redirect(f"{reverse('account_settings')}?deleted={deleted}")


@login_required
@require_POST
def theme_set(request: HtmxHttpRequest) -> HttpResponse:
    """Remember the user's theme; from script a 204, from a plain form back to ``next``."""
    try:
        services.user_theme_set(user=request.user, theme=request.POST.get("theme", ""))  # type: ignore[arg-type]
    except ValidationError as exc:
        return HttpResponse(" ".join(exc.messages), status=400)
    if request.headers.get("X-Parley-Theme") or request.htmx:
        return HttpResponse(status=204)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("account_settings")
    return redirect(target)
