"""HTML fragments sent over the conversation websocket (htmx out-of-band swaps)."""

from __future__ import annotations

from django.template.loader import render_to_string
from django.utils.html import format_html

from conversations import selectors
from conversations.forms import ConversationSettingsForm
from conversations.models import Conversation, Message


def composer_error(text: str) -> str:
    return format_html('<div id="composer-error" class="composer-error" role="alert" hx-swap-oob="true">{}</div>', text)


def trimmed_notice(*, message_id: str, dropped: int, cut: int = 0) -> str:
    return render_to_string(
        "conversations/_trimmed_notice.html", {"message_id": message_id, "dropped": dropped, "cut": cut, "oob": True}
    )


def unsaved_notice(*, message_id: str) -> str:
    """The reply finished but the database refused it for too long: what the tab shows is
    all there is."""
    return format_html(
        '<div id="m-{}-notice" hx-swap-oob="true"><div class="msg-error" role="alert">{}</div></div>',
        message_id,
        "This reply could not be saved: the database is unavailable. Copy it now if you need it; "
        "it will not be in the conversation when you reload.",
    )


def turn_started(*, user_message: Message, reply: Message, conversation: Conversation) -> str:
    """The new turn, rendered once by the socket that started it and sent to every tab."""
    return render_to_string(
        "conversations/_turn_started.html",
        {"user_message": user_message, "reply": reply, "conversation": conversation, "streaming": True},
    )


def conversation_created(*, conversation: Conversation) -> str:
    """A new chat was stored: its full header, its place in the sidebar, and its address."""
    context = {"conversation": conversation, "settings_form": ConversationSettingsForm.for_conversation(conversation)}
    return render_to_string("conversations/_conversation_created.html", context)


def reply_finished(*, message_id: str, announce: bool = True) -> str:
    """The finished reply; with ``announce``, also the one status line a screen reader reads
    out (off when a reconnecting tab catches up on replies that ended meanwhile)."""
    reply = Message.objects.select_related("conversation__owner").get(public_id=message_id)
    [view] = selectors.message_views(messages=[reply], user=reply.conversation.owner)
    return render_to_string(
        "conversations/_reply_finished.html",
        {"message": reply, "view": view, "conversation": reply.conversation, "streaming": False, "announce": announce},
    )


def reply_continued(*, message_id: str) -> tuple[str, int, str]:
    """A continued reply streaming again from its text so far, its seq and that text."""
    reply = Message.objects.select_related("conversation").get(public_id=message_id)
    html = render_to_string("conversations/_reply_continued.html", {"message": reply, "conversation": reply.conversation})
    return html, reply.stream_seq, reply.content


def branch_started(*, conversation_pk: int, message_id: str) -> tuple[str, int]:
    """The whole message list again (a regenerated or edited branch), and the new reply's seq."""
    conversation = Conversation.objects.select_related("owner").get(pk=conversation_pk)
    page = selectors.conversation_message_page(conversation=conversation, user=conversation.owner)
    seq = next((v.message.stream_seq for v in page.views if str(v.message.public_id) == message_id), 0)
    html = render_to_string("conversations/_branch_started.html", {"conversation": conversation, "page": page})
    return html, seq
