"""Fine-tuning data made from transcripts: chat-format JSON Lines, validated like an upload.

Staff pick conversations (their active branch) or replies rated thumbs up (the branch
leading to each reply). Only turns whose reply finished normally are used (no errors,
no replies cut off by the token limit or by Stop). The result is checked with the same
parser and limits as an uploaded file (``inference.engine.datasets.parse_dataset``)
with the default model's tokenizer, so what the preview accepts is what a job accepts.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from conversations import selectors
from conversations.models import Conversation, Message
from inference import registry
from inference.engine.datasets import ParsedDataset, parse_dataset

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


@functools.lru_cache(maxsize=4)
def _tokenizer(source: str) -> tuple[Any, int]:
    from inference.engine.loading import load_tokenizer

    loaded = load_tokenizer(source, cache_dir=settings.INFERENCE_CACHE_DIR)
    return loaded.tokenizer, loaded.context_length


def dataset_validate(*, data: bytes) -> ParsedDataset:
    """Check ``data`` exactly as an upload is checked, against the default model."""
    tokenizer, context_length = _tokenizer(registry.base_models()[0].base_source)
    return parse_dataset(
        data,
        format="chat",
        tokenizer=tokenizer,
        context_length=context_length,
        max_bytes=settings.FINETUNE_MAX_UPLOAD_BYTES,
        max_examples=settings.FINETUNE_MAX_EXAMPLES,
        max_errors=settings.FINETUNE_MAX_ERRORS_SHOWN,
    )
