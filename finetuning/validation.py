"""Validating training data for a base model, under the upload limits (settings FINETUNE_*)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from finetuning import bases
from finetuning.errors import DatasetRejected
from inference.engine.datasets import ParsedDataset, parse_dataset


def dataset_parse(*, data: bytes, base_source: str, tokens_per_second: float | None = None) -> ParsedDataset:
    """Parse and measure ``data`` with ``base_source``'s tokenizer and context length."""
    tokenizer, context_length = bases.tokenizer_for(base_source)
    return parse_dataset(
        data,
        tokenizer=tokenizer,
        context_length=context_length,
        max_bytes=settings.FINETUNE_MAX_UPLOAD_BYTES,
        max_examples=settings.FINETUNE_MAX_EXAMPLES,
        max_errors=settings.FINETUNE_MAX_ERRORS_SHOWN,
        tokens_per_second=tokens_per_second,
    )


def rejection(filename: str, parsed: ParsedDataset) -> DatasetRejected:
    """The error that refuses a file, listing its problems with their line numbers."""
    count = len(parsed.errors) + parsed.more_errors
    noun = "problem" if count == 1 else "problems"
    return DatasetRejected(
        f"{Path(filename).name or 'The file'} was refused: {count} {noun} to fix.",
        problems=[str(problem) for problem in parsed.errors],
        more=parsed.more_errors,
    )
