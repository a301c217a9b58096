"""Fine-tuning data made from transcripts: chat-format JSON Lines, validated like an upload.

Staff pick conversations (their active branch) or replies rated thumbs up (the branch
leading to each reply). Only turns whose reply finished normally are used (no errors,
no replies cut off by the token limit or by Stop). The result is checked by the upload
validator (``finetuning.validation.dataset_parse``: same parser, limits and
tokenizer), so what the preview accepts is what "Save as training file" accepts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from django.contrib.auth.models import User
from django.utils import timezone

from conversations import selectors
from conversations.models import Conversation, Message
from finetuning.models import TrainingFile
from finetuning.services import training_file_create
from finetuning.validation import dataset_parse
from inference import registry
from inference.engine.datasets import ParsedDataset

ChatExample = list[dict[str, str]]


def _usable(message: Message) -> bool:
    return (
        message.role == Message.Role.ASSISTANT
        and message.status == Message.Status.COMPLETE
        and message.finish_reason == Message.FinishReason.STOP
        and bool(message.content.strip())
    )


def _chat(conversation: Conversation, path: list[Message]) -> ChatExample:
    """System prompt, then user/assistant pairs whose reply is usable; a bad reply drops its pair."""
    chat: ChatExample = []
    if conversation.system_prompt.strip():
        chat.append({"role": "system", "content": conversation.system_prompt})
    question: Message | None = None
    for message in path:
        if message.role == Message.Role.USER:
            question = message
        elif question is not None and _usable(message):
            chat += [{"role": "user", "content": question.content}, {"role": "assistant", "content": message.content}]
            question = None
    return chat if any(m["role"] == "assistant" for m in chat) else []


def examples_from_conversations(*, conversations: Iterable[Conversation]) -> list[ChatExample]:
    """One example per conversation: its active branch."""
    examples = []
    for conversation in conversations:
        chat = _chat(conversation, selectors.conversation_active_messages(conversation=conversation))
        if chat:
            examples.append(chat)
    return examples


def examples_from_replies(*, replies: Iterable[Message]) -> list[ChatExample]:
    """One example per reply: the branch that led to it, ending with the reply."""
    examples = []
    for reply in replies:
        if not _usable(reply):
            continue
        chat = _chat(reply.conversation, selectors.message_path(leaf=reply))
        if chat and chat[-1]["content"] == reply.content:
            examples.append(chat)
    return examples


def examples_jsonl(examples: list[ChatExample]) -> bytes:
    lines = [json.dumps({"messages": chat}, ensure_ascii=False) for chat in examples]
    return "".join(line + "\n" for line in lines).encode()


def dataset_validate(*, data: bytes) -> ParsedDataset:
    """Check ``data`` exactly as an upload is checked, against the default model."""
    return dataset_parse(data=data, base_source=registry.base_models()[0].base_source)


def dataset_save(*, data: bytes, created_by: User) -> TrainingFile:
    """Store the dataset as a training file, ready to launch a fine-tuning job from.

    Raises ``finetuning.errors.DatasetRejected`` (with the problems) and
    stores nothing if the upload checks refuse it.
    """
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    return training_file_create(filename=f"transcripts-{stamp}.jsonl", data=data, created_by=created_by)
