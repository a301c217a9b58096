"""Transcript review for staff: conversations read as chats, tagged, exported, turned into training data.

Nobody changes or deletes what users wrote here, superusers included: conversations,
messages and feedback are read-only. The "Transcript reviewers" group (migration 0004)
grants exactly view + tag. The lists show no user text (no titles, reply excerpts or
comments); user text is read by opening a transcript or a reply's prompt, exporting,
building a dataset or searching, and each of those is recorded as a ``TranscriptView``
(who, when, what, which conversation), a record nobody can change or delete here.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import SEARCH_VAR
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from conversations import selectors, services, training_data
from conversations.models import Conversation, Message, MessageFeedback, TranscriptTag, TranscriptView
from finetuning.errors import FineTuningError

PREVIEW_EXAMPLES = 5

_M = TypeVar("_M", bound=Model)


class UserTextAdmin(admin.ModelAdmin[_M]):
    """A list of users' records that shows none of their text: searching it is audited,
    and nothing is added, changed or deleted through it."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def action_checkbox(self, obj: _M) -> SafeString:
        # Django labels each row's checkbox with str(obj), and a conversation's is its title.
        label = f"Select this object for an action - {self.model._meta.verbose_name} {obj.pk}"
        checkbox = forms.CheckboxInput({"class": "action-select", "aria-label": label}, lambda value: False)
        return checkbox.render(helpers.ACTION_CHECKBOX_NAME, str(obj.pk))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        query = request.GET.get(SEARCH_VAR, "").strip()
        changelist = (getattr(response, "context_data", None) or {}).get("cl")
        if query and changelist is not None:
            shown = self.conversations_of(changelist.result_list)
            services.transcript_search_record(viewer=request.user, query=query, conversations=shown)  # type: ignore[arg-type]
        return response

    def conversations_of(self, rows: QuerySet[_M]) -> list[Conversation]:
        """The conversations (owners loaded) whose text ``rows``, a page of results, matched."""
        raise NotImplementedError

    def history_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        # Its page names the object by its text; the transcript shows it with an audit record.
        return HttpResponseRedirect(self.transcript_url(object_id))

    def transcript_url(self, object_id: str) -> str:
        raise NotImplementedError


class FeedbackFilter(admin.SimpleListFilter):
    title = "feedback"
    parameter_name = "feedback"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("down", "Any thumbs down"), ("up", "Any thumbs up"), ("none", "No feedback")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in {"down", "up"}:
            return queryset.filter(messages__feedback__rating=value).distinct()
        if value == "none":
            return queryset.exclude(messages__feedback__isnull=False)
        return queryset


class FinishReasonFilter(admin.SimpleListFilter):
    title = "replies that ended with"
    parameter_name = "finish_reason"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        reasons = Message.FinishReason
        return [(reasons.ERROR, "An error"), (reasons.LENGTH, "The token limit"), (reasons.CANCELLED, "Stop")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(messages__finish_reason=self.value()).distinct()
        return queryset


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = TranscriptTag.objects.order_by("name").values_list("name", flat=True).distinct()
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(tags__name=self.value())
        return queryset


@admin.register(Conversation)
class ConversationAdmin(UserTextAdmin[Conversation]):
    list_display = (
        "conversation",
        "owner",
        "model_name",
        "message_count",
        "feedback_summary",
        "source",
        "created_at",
        "updated_at",
        "tag_list",
    )
    list_filter = (
        ("owner", admin.RelatedOnlyFieldListFilter),
        "model_name",
        "source",
        "created_at",
        FeedbackFilter,
        FinishReasonFilter,
        TagFilter,
    )
    search_fields = ("owner__username", "title", "messages__content")
    actions = ["export_jsonl", "build_training_dataset"]
    list_per_page = 50

    # -- The list: no user text (titles are the first message) ------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return (
            super()
            .get_queryset(request)
            .select_related("owner")
            .prefetch_related("tags")
            .annotate(
                n_messages=Count("messages", distinct=True),
                n_up=Count("messages__feedback", filter=Q(messages__feedback__rating="up"), distinct=True),
                n_down=Count("messages__feedback", filter=Q(messages__feedback__rating="down"), distinct=True),
            )
        )

    def conversations_of(self, rows: QuerySet[Conversation]) -> list[Conversation]:
        return list(rows)

    def transcript_url(self, object_id: str) -> str:
        return reverse("admin:conversations_conversation_change", args=[object_id])

    @admin.display(description="conversation", ordering="public_id")
    def conversation(self, obj: Conversation) -> str:
        return str(obj.public_id)[:8]

    @admin.display(description="messages", ordering="n_messages")
    def message_count(self, obj: Any) -> int:
        return int(obj.n_messages)

    @admin.display(description="feedback", ordering="n_down")
    def feedback_summary(self, obj: Any) -> str:
        if not obj.n_up and not obj.n_down:
            return "–"
        return f"{obj.n_up} up · {obj.n_down} down"

    @admin.display(description="tags")
    def tag_list(self, obj: Conversation) -> str:
        return ", ".join(tag.name for tag in obj.tags.all())

    # -- One transcript, as a chat -----------------------------------------------------------

    def get_urls(self) -> list[Any]:
        inspect = self.admin_site.admin_view(self.inspect_view)
        return [
            path("<path:object_id>/inspect/<uuid:message_id>/", inspect, name="conversations_conversation_inspect"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        conversation = self._conversation(request, object_id)
        if request.method == "POST":
            return self._tag_action(request, conversation)
        services.transcript_view_record(conversation=conversation, viewer=request.user)  # type: ignore[arg-type]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Transcript: {conversation}",
            "conversation": conversation,
            "entries": selectors.transcript_entries(conversation=conversation),
            "tags": list(conversation.tags.all()),
            "can_tag": request.user.has_perm("conversations.add_transcripttag"),
            "can_untag": request.user.has_perm("conversations.delete_transcripttag"),
            "views": TranscriptView.objects.filter(conversation_public_id=conversation.public_id)[:10],
        }
        return TemplateResponse(request, "admin/conversations/transcript.html", context)

    def _conversation(self, request: HttpRequest, object_id: str) -> Conversation:
        conversation = get_object_or_404(Conversation.objects.select_related("owner"), pk=object_id)
        if not self.has_view_permission(request, conversation):
            raise PermissionDenied
        return conversation

    def _tag_action(self, request: HttpRequest, conversation: Conversation) -> HttpResponse:
        if "remove_tag" in request.POST:
            if not request.user.has_perm("conversations.delete_transcripttag"):
                raise PermissionDenied
            services.transcript_tag_remove(conversation=conversation, name=request.POST["remove_tag"])
        else:
            if not request.user.has_perm("conversations.add_transcripttag"):
                raise PermissionDenied
            try:
                services.transcript_tag_add(
                    conversation=conversation,
                    name=request.POST.get("tag", ""),
                    added_by=request.user,  # type: ignore[arg-type]
                )
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
        return HttpResponseRedirect(request.path)

    def inspect_view(self, request: HttpRequest, object_id: str, message_id: Any) -> HttpResponse:
        """The exact prompt one reply was generated from, its settings and its timing."""
        conversation = self._conversation(request, object_id)
        reply = get_object_or_404(
            Message.objects.select_related("generation", "conversation"),
            conversation=conversation,
            public_id=message_id,
            role=Message.Role.ASSISTANT,
        )
        services.transcript_view_record(conversation=conversation, viewer=request.user, what="inspect")  # type: ignore[arg-type]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "What the model received",
            "conversation": conversation,
            "inspection": selectors.reply_inspection(reply=reply),
            "record": getattr(reply, "generation", None),
        }
        return TemplateResponse(request, "admin/conversations/inspect.html", context)

    # -- Actions ---------------------------------------------------------------------------

    @admin.action(description="Export selected transcripts as JSONL")
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> HttpResponse:
        lines = []
        for conversation in queryset.select_related("owner").order_by("id"):
            services.transcript_view_record(conversation=conversation, viewer=request.user, what="export")  # type: ignore[arg-type]
            lines.append(json.dumps(selectors.transcript_as_record(conversation=conversation), ensure_ascii=False))
        response = HttpResponse("".join(line + "\n" for line in lines), content_type="application/jsonl")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="transcripts-{stamp}.jsonl"'
        return response

    @admin.action(description="Build a fine-tuning dataset from selected conversations")
    def build_training_dataset(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> HttpResponse:
        conversations = list(queryset.order_by("id"))
        for conversation in conversations:
            services.transcript_view_record(conversation=conversation, viewer=request.user, what="dataset")  # type: ignore[arg-type]
        examples = training_data.examples_from_conversations(conversations=conversations)
        return dataset_response(self, request, examples, "build_training_dataset", len(conversations))


def dataset_response(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, examples: list[Any], action: str, picked: int
) -> HttpResponse:
    """Download the JSONL, or preview it with the upload validator's verdict."""
    data = training_data.examples_jsonl(examples)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    if request.POST.get("download"):
        response = HttpResponse(data, content_type="application/jsonl")
        response["Content-Disposition"] = f'attachment; filename="transcripts-dataset-{stamp}.jsonl"'
        return response
    if request.POST.get("save") and data:
        saved = _save_training_file(model_admin, request, data)
        if saved is not None:
            return saved
    parsed = training_data.dataset_validate(data=data) if data else None
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": "Fine-tuning dataset from transcripts",
        "action": action,
        "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "picked": picked,
        "examples": len(examples),
        "preview": [
            json.dumps({"messages": chat}, ensure_ascii=False, indent=2) for chat in examples[:PREVIEW_EXAMPLES]
        ],
        "parsed": parsed,
        "size": len(data),
        "can_save": request.user.has_perm("finetuning.can_finetune"),
    }
    return TemplateResponse(request, "admin/conversations/dataset_preview.html", context)


def _save_training_file(model_admin: admin.ModelAdmin[Any], request: HttpRequest, data: bytes) -> HttpResponse | None:
    """Store the dataset as a training file and go to it; None (with a message) if refused."""
    if not request.user.has_perm("finetuning.can_finetune"):
        raise PermissionDenied
    try:
        file = training_data.dataset_save(data=data, created_by=request.user)  # type: ignore[arg-type]
    except FineTuningError as exc:
        problems = "; ".join(getattr(exc, "problems", [])[:5])
        model_admin.message_user(request, f"{exc} {problems}".strip(), messages.ERROR)
        return None
    model_admin.message_user(request, f"Saved as training file {file.public_id}: launch a fine-tuning job from it.")
    try:
        return HttpResponseRedirect(reverse("admin:finetuning_file", args=[file.public_id]))
    except NoReverseMatch:  # the fine-tuning admin pages are not installed
        return HttpResponseRedirect(reverse("admin:index"))


@admin.register(MessageFeedback)
class MessageFeedbackAdmin(UserTextAdmin[MessageFeedback]):
    """Rated replies: filter (say, thumbs up on one model) and build a dataset from them.

    The reply and the comment are read in the transcript (audited), not in this list.
    """

    list_display = ("rating", "reason", "has_comment", "user", "reply_model", "updated_at", "transcript")
    list_display_links = None
    list_filter = ("rating", "reason", "message__model_name", "updated_at", "message__conversation__source")
    search_fields = ("user__username", "message__content", "comment")
    actions = ["build_training_dataset"]
    list_select_related = ("message", "user", "message__conversation__owner")

    def conversations_of(self, rows: QuerySet[MessageFeedback]) -> list[Conversation]:
        return [feedback.message.conversation for feedback in rows]

    def transcript_url(self, object_id: str) -> str:
        feedback = get_object_or_404(MessageFeedback.objects.select_related("message"), pk=object_id)
        url = reverse("admin:conversations_conversation_change", args=[feedback.message.conversation_id])
        return f"{url}#m-{feedback.message.public_id}"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return HttpResponseRedirect(self.transcript_url(object_id))

    @admin.display(description="comment", boolean=True)
    def has_comment(self, obj: MessageFeedback) -> bool:
        return bool(obj.comment)

    @admin.display(description="model", ordering="message__model_name")
    def reply_model(self, obj: MessageFeedback) -> str:
        return obj.message.model_name

    @admin.display(description="transcript")
    def transcript(self, obj: MessageFeedback) -> str:
        url = reverse("admin:conversations_conversation_change", args=[obj.message.conversation_id])
        return format_html('<a href="{}#m-{}">open</a>', url, obj.message.public_id)

    @admin.action(description="Build a fine-tuning dataset from the selected thumbs-up replies")
    def build_training_dataset(self, request: HttpRequest, queryset: QuerySet[MessageFeedback]) -> HttpResponse:
        liked = queryset.filter(rating=MessageFeedback.Rating.UP).select_related("message__conversation")
        replies = {item.message.pk: item.message for item in liked.order_by("message_id")}
        for conversation in {reply.conversation for reply in replies.values()}:
            services.transcript_view_record(conversation=conversation, viewer=request.user, what="dataset")  # type: ignore[arg-type]
        examples = training_data.examples_from_replies(replies=replies.values())
        return dataset_response(self, request, examples, "build_training_dataset", queryset.count())


@admin.register(TranscriptView)
class TranscriptViewAdmin(admin.ModelAdmin[TranscriptView]):
    """The audit trail: who read or searched which user's transcripts, and when.

    Read-only for everyone, superusers included: no add, change or delete (so no bulk
    delete action either).
    """

    list_display = ("viewed_at", "viewer_username", "what", "conversation_public_id", "owner_username", "query")
    list_filter = ("what", "viewed_at", "viewer_username")
    search_fields = ("viewer_username", "owner_username", "query", "=conversation_public_id")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
