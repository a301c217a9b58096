"""Uploading training data: validated before anything is stored, with line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from finetuning import selectors, services
from finetuning.errors import DatasetRejected, FineTuningError
from finetuning.models import TrainingFile
from tests.finetuning.conftest import jsonl, shout_pairs

pytestmark = pytest.mark.django_db

CHAT = jsonl(
    [
        {"messages": [{"role": "user", "content": "Shout cat"}, {"role": "assistant", "content": "CAT"}]},
        {
            "messages": [
                {"role": "system", "content": "Be loud."},
                {"role": "user", "content": "Shout dog"},
                {"role": "assistant", "content": "DOG"},
            ]
        },
    ]
)
CSV = b'prompt,completion\nShout cat,CAT\n"Shout dog, twice",DOG DOG\n'


def stored_files() -> list[Path]:
    return [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("filename", "data", "file_format", "examples"),
    [
        ("pairs.jsonl", shout_pairs(), "prompt_completion", 8),
        ("chat.jsonl", CHAT, "chat", 2),
        ("pairs.csv", CSV, "csv", 2),
    ],
)
def test_a_good_file_in_each_format_is_stored_with_its_statistics(
    admin_user, filename, data, file_format, examples
) -> None:
    file = services.training_file_create(filename=filename, data=data, created_by=admin_user)
    assert file.public_id.startswith("file-") and len(file.public_id) == 29
    assert (file.status, file.format, file.bytes, file.purpose) == ("processed", file_format, len(data), "fine-tune")
    assert file.stats["examples"] == examples
    assert 0 < file.stats["tokens_min"] <= file.stats["tokens_median"] <= file.stats["tokens_max"]
    assert file.stats["estimated_steps"] >= 1 and file.stats["estimated_seconds"] > 0
    assert file.stats["auto_hyperparameters"]["n_epochs"] >= 1
    assert selectors.training_file_read(file=file) == data


def test_a_file_with_errors_is_refused_with_line_numbers_and_nothing_is_stored(admin_user) -> None:
    data = b'{"prompt": "Shout cat", "completion": "CAT"}\nnot json\n{"prompt": "Shout dog", "completion": ""}\n{"prompt": "Shout cat", "completion": "CAT"}\n'
    with pytest.raises(DatasetRejected) as refused:
        services.training_file_create(filename="bad.jsonl", data=data, created_by=admin_user)
    assert str(refused.value) == "bad.jsonl was refused: 3 problems to fix."
    assert refused.value.field == "file"
    assert refused.value.problems[0].startswith("Line 2: not valid JSON")
    assert refused.value.problems[1:] == ['Line 3: empty field "completion"', "Line 4: duplicate of line 1"]
    assert TrainingFile.objects.count() == 0
    assert stored_files() == []


def test_an_example_longer_than_the_context_is_refused(admin_user) -> None:
    data = jsonl([{"prompt": "Shout cat", "completion": "CAT"}, {"prompt": "x" * 2000, "completion": "long"}])
    with pytest.raises(DatasetRejected) as refused:
        services.training_file_create(filename="long.jsonl", data=data)
    assert refused.value.problems[0].startswith("Line 2: longer than the model's context")


def test_the_list_of_errors_is_capped(admin_user, settings) -> None:
    settings.FINETUNE_MAX_ERRORS_SHOWN = 3
    with pytest.raises(DatasetRejected) as refused:
        services.training_file_create(filename="junk.jsonl", data=b"junk\n" * 10)
    assert [p.split(":")[0] for p in refused.value.problems] == ["Line 1", "Line 2", "Line 3"]
    assert refused.value.more == 7


def test_size_and_example_limits_are_named_settings(admin_user, settings) -> None:
    settings.FINETUNE_MAX_EXAMPLES = 5
    with pytest.raises(DatasetRejected) as refused:
        services.training_file_create(filename="many.jsonl", data=shout_pairs())
    assert refused.value.problems == ["The file has 8 examples; the limit is 5."]
    settings.FINETUNE_MAX_UPLOAD_BYTES = 100
    with pytest.raises(DatasetRejected) as refused:
        services.training_file_create(filename="big.jsonl", data=shout_pairs())
    assert "the limit is 100 bytes" in refused.value.problems[0]
    assert TrainingFile.objects.count() == 0


def test_only_the_fine_tune_purpose_is_accepted(admin_user) -> None:
    with pytest.raises(FineTuningError) as refused:
        services.training_file_create(filename="a.jsonl", data=shout_pairs(), purpose="assistants")
    assert refused.value.field == "purpose"


def test_a_line_nested_50000_levels_deep_is_refused_by_its_number(admin_user) -> None:
    deep = b'{"prompt": "Shout cat", "completion": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    data = shout_pairs() + deep + b"\n"
    with pytest.raises(DatasetRejected) as refused:
        services.training_file_create(filename="deep.jsonl", data=data, created_by=admin_user)
    lines = len(shout_pairs().splitlines())
    assert refused.value.problems == [f"Line {lines + 1}: nested more than 32 levels deep"]
    assert TrainingFile.objects.count() == 0


def test_a_line_over_a_million_characters_is_refused_unread(admin_user, settings) -> None:
    data = jsonl([{"prompt": "Shout cat", "completion": "CAT"}, {"prompt": "x" * 1_000_000, "completion": "X"}])
    with pytest.raises(DatasetRejected) as refused:
        services.training_file_create(filename="wide.jsonl", data=data, created_by=admin_user)
    assert refused.value.problems == ["Line 2: longer than 1,000,000 characters"]
