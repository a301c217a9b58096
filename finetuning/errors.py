"""Errors the fine-tuning services raise, shaped for the admin, the command and the API.

Every error is a Django ``ValidationError`` that also names the ``field`` (the
argument or API parameter at fault, or None) and carries a ``code``; the API maps
them to OpenAI's ``{"error": {"message", "param", "code"}}``.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import ValidationError


class FineTuningError(ValidationError):
    """A request the fine-tuning services refuse; nothing was stored."""

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid") -> None:
        super().__init__(message, code=code)
        self.field = field
        self.text = message

    def __str__(self) -> str:
        return self.text


class DatasetRejected(FineTuningError):
    """A training file with problems; ``problems`` lists "Line N: reason" sentences."""

    def __init__(self, message: str, *, problems: Sequence[str], more: int = 0, field: str = "file") -> None:
        super().__init__(message, field=field, code="invalid_file")
        self.problems = list(problems)
        self.more = more


class FileUnavailable(FineTuningError):
    """A training file whose stored data is missing or cannot be read (deleted from the
    media storage, a folder in its place, no permission...). ``field`` names the job
    argument that chose the file: "training_file" or "validation_file"."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message, field=field, code="file_unavailable")


class JobStateError(FineTuningError):
    """The job is not in a status that allows the action (cancel a finished job...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field=None, code="invalid_state")
