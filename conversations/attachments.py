"""Text files attached to messages: checked and stored when uploaded, bound to the message
they were sent with, and shown to the model after that message's text."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from conversations.models import Attachment, Message

# Uploaded but never sent: gone after this long.
UNSENT_KEPT = timedelta(days=1)
NOT_TEXT = "“{name}” is not a text file. Attach plain text, Markdown, source code, CSV or JSON."


def attachment_create(*, owner_id: int, name: str, data: bytes) -> Attachment:
    """Store an uploaded file for a message not sent yet; refuse one that is too large or
    not text (a ValidationError naming the file), storing nothing."""
    name = (name or "file.txt").replace("\\\\", "/").rsplit("/", 1)[-1][:255] or "file.txt"
    if len(data) > settings.CHAT_ATTACHMENT_MAX_BYTES:
        raise ValidationError(too_large(name=name, size=len(data)))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(NOT_TEXT.format(name=name)) from None
    if "\x00" in text or re.search(r"[\x01-\x08\x0e-\x1f]", text[:4096]):
        raise ValidationError(NOT_TEXT.format(name=name))
    Attachment.objects.filter(owner_id=owner_id, message__isnull=True, created_at__lt=timezone.now() - UNSENT_KEPT).delete()
    return Attachment.objects.create(owner_id=owner_id, name=name, text=text, size=len(data))


def too_large(*, name: str, size: int) -> str:
    """The refusal of a file over CHAT_ATTACHMENT_MAX_BYTES (``name`` "" when unknown)."""
    limit = settings.CHAT_ATTACHMENT_MAX_BYTES
    label = f"“{name}”" if name else "That file"
    return f"{label} is {filesizeformat(size)}; files up to {filesizeformat(limit)} can be attached."


def attachment_ids_clean(value: object) -> list[str]:
    """The attachment ids a composer sent (one id, a list of them, or none)."""
    ids = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    clean = list(dict.fromkeys(str(item) for item in ids if isinstance(item, str) and item))
    if len(clean) > settings.CHAT_MAX_ATTACHMENTS:
        most = settings.CHAT_MAX_ATTACHMENTS
        raise ValidationError(f"A message can carry at most {most} file{'' if most == 1 else 's'}.")
    return clean


def attachments_bind(*, owner_id: int, ids: Iterable[str], message: Message) -> int:
    """Give the owner's unsent attachments ``ids`` to ``message``; how many there were."""
    ids = list(ids)
    if not ids:
        return 0
    try:
        unsent = Attachment.objects.filter(owner_id=owner_id, message__isnull=True, public_id__in=ids)
        bound = unsent.update(message=message)
    except ValidationError:  # not UUIDs
        bound = -1
    if bound != len(ids):
        raise ValidationError("An attached file is no longer there; attach it again.")
    return bound


def attachments_copy(*, source: Message, target: Message) -> None:
    """An edited message keeps the files of the one it replaces."""
    Attachment.objects.bulk_create(
        Attachment(owner_id=item.owner_id, message=target, name=item.name, text=item.text, size=item.size)
        for item in source.attachments.all()
    )


def attachment_block(name: str, text: str) -> str:
    """How the model sees one file: its name, then its text fenced as code."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"File {name}:\n{fence}\n{text.rstrip()}\n{fence}"


def with_attachments(content: str, attachments: Iterable[Attachment]) -> str:
    blocks = [attachment_block(item.name, item.text) for item in attachments]
    return "\n\n".join([content, *blocks]) if blocks else content
