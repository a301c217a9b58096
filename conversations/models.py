"""Conversations and their messages, as users see them."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Conversation(models.Model):
    class Source(models.TextChoices):
        CHAT = "chat", "Chat"
        API = "api", "API"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    model_name = models.CharField(max_length=200)
    system_prompt = models.TextField(blank=True)
    temperature = models.FloatField()
    # Nucleus sampling: only the likeliest tokens making up this share of the odds (1: all).
    top_p = models.FloatField(default=1.0)
    max_tokens = models.PositiveIntegerField()
    # Lowers the odds of tokens the reply already used (OpenAI's frequency_penalty).
    frequency_penalty = models.FloatField(default=0.0)
    # Where the conversation came from: the chat pages, or the HTTP API with "store": true.
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.CHAT)
    # The last message of the branch the user is looking at; the model sees this path.
    active_leaf = models.ForeignKey("Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Set while the owner keeps it at the top of the sidebar (the latest pinned first).
    pinned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or "New chat"


class UserPreferences(models.Model):
    """What a user chose for how Parley looks; remembered on the server, so it follows them
    from one browser to another."""

    class Theme(models.TextChoices):
        SYSTEM = "system", "Follow my system"
        LIGHT = "light", "Light"
        DARK = "dark", "Dark"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preferences")
    theme = models.CharField(max_length=8, choices=Theme.choices, default=Theme.SYSTEM)

    def __str__(self) -> str:
        return f"preferences of {self.user_id}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETE = "complete", "Complete"
        ERROR = "error", "Error"

    class FinishReason(models.TextChoices):
        STOP = "stop", "Stop"
        LENGTH = "length", "Length"
        CANCELLED = "cancelled", "Cancelled"
        ERROR = "error", "Error"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    finish_reason = models.CharField(max_length=16, choices=FinishReason.choices, blank=True)
    error = models.TextField(blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # How the reply was written, shown under it: seconds from the engine taking the request
    # to the first token, seconds from there to the last, and the weight form it ran on
    # ("fp32", "int8"...; blank where the engine has none).
    first_token_seconds = models.FloatField(null=True, blank=True)
    decode_seconds = models.FloatField(null=True, blank=True)
    weights = models.CharField(max_length=20, blank=True)
    # Turns left out of the prompt to fit the context window (assistant replies only).
    dropped_turns = models.PositiveIntegerField(default=0)
    # Characters of the question's attached files cut from the prompt to fit it (replies only).
    attachment_cut_chars = models.PositiveIntegerField(default=0)
    # Number of text deltas already written to ``content``; lets a reconnecting
    # socket skip deltas it already has.
    stream_seq = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    # Refreshed by the generation job at every flush; a streaming reply whose
    # heartbeat is older than INFERENCE_STALE_AFTER_SECONDS lost its worker.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["conversation", "created_at"])]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    @property
    def tokens_per_second(self) -> float | None:
        """Decoding speed: the tokens after the first over the time after the first."""
        if not self.decode_seconds or not self.completion_tokens or self.completion_tokens < 2:
            return None
        return (self.completion_tokens - 1) / self.decode_seconds


class Attachment(models.Model):
    """A text file a user attached to a message: kept as text, given to the model after the
    message. Uploaded before the message is sent (``message`` empty until then)."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments")
    message = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.CASCADE, related_name="attachments"
    )
    name = models.CharField(max_length=255)
    text = models.TextField()
    size = models.PositiveIntegerField(help_text="Bytes, as uploaded.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.name


class MessageFeedback(models.Model):
    """A user's thumbs up or down on an assistant reply; one per reply per user, changeable."""

    class Rating(models.TextChoices):
        UP = "up", "Thumbs up"
        DOWN = "down", "Thumbs down"

    class Reason(models.TextChoices):
        WRONG = "wrong", "Wrong or made up"
        UNHELPFUL = "unhelpful", "Not helpful"
        INCOMPLETE = "incomplete", "Cut off or incomplete"
        UNSAFE = "unsafe", "Harmful or inappropriate"
        OTHER = "other", "Something else"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="message_feedback")
    rating = models.CharField(max_length=8, choices=Rating.choices)
    reason = models.CharField(max_length=16, choices=Reason.choices, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "user"], name="one_feedback_per_message_and_user")]
        indexes = [models.Index(fields=["rating", "-updated_at"])]

    def __str__(self) -> str:
        return f"{self.get_rating_display()} on {self.message_id}"


class GenerationRecord(models.Model):
    """What the model was given for one reply and how long it took (the staff "inspect" view)."""

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="generation")
    model_name = models.CharField(max_length=200)
    # The prompt after context fitting and the chat template, exactly as tokenized.
    prompt_text = models.TextField()
    prompt_tokens = models.PositiveIntegerField()
    prompt_messages = models.JSONField(default=list)
    dropped_messages = models.PositiveIntegerField(default=0)
    # SamplingParams as submitted (max_new_tokens already capped to the context window).
    params = models.JSONField(default=dict)
    queue_seconds = models.FloatField(null=True, blank=True)
    first_token_seconds = models.FloatField(null=True, blank=True)
    decode_seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"generation of {self.message_id}"


class TranscriptTag(models.Model):
    """A label a reviewer puts on a conversation ("good example", "hallucination"...)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=60)
    added_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["conversation", "name"], name="one_tag_name_per_conversation")]

    def __str__(self) -> str:
        return self.name


AUDIT_QUERY_CHARS = 200


class TranscriptView(models.Model):
    """An audit record: a staff member read users' text (a transcript, a reply's prompt, an
    export, a dataset) or searched it.

    It names the conversation by public id and keeps the usernames, with no foreign key to
    cascade: the record outlives the conversation and both accounts. Nothing in the app
    changes or deletes these rows.
    """

    class What(models.TextChoices):
        TRANSCRIPT = "transcript", "Opened the transcript"
        INSPECT = "inspect", "Inspected a reply's prompt"
        EXPORT = "export", "Exported the transcript"
        DATASET = "dataset", "Built a dataset from it"
        SEARCH = "search", "Searched transcripts"

    # None for a search that matched nothing.
    conversation_public_id = models.UUIDField(null=True, blank=True, db_index=True)
    owner_username = models.CharField(max_length=150, blank=True)
    viewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # Kept when the viewer's account is deleted, so the record still says who it was.
    viewer_username = models.CharField(max_length=150)
    what = models.CharField(max_length=40, choices=What.choices, default=What.TRANSCRIPT)
    # What was searched for (searches only): the reviewer's words, not a user's.
    query = models.CharField(max_length=AUDIT_QUERY_CHARS, blank=True)
    viewed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-viewed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.viewer_username}: {self.get_what_display()} {self.conversation_public_id or ''}".strip()
