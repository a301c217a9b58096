"""Forms of the fine-tuning admin pages: upload a dataset, launch a job from it."""

from __future__ import annotations

from typing import Any

from django import forms

from finetuning.errors import FineTuningError
from finetuning.models import TrainingFile
from inference import registry

AUTO_HELP = 'A number, or "auto" to let Parley choose from the dataset\'s size.'
# Service field names that the launch form calls differently.
FORM_FIELDS = {"model": "base_model"}


class UploadForm(forms.Form):
    file = forms.FileField(
        label="Training data",
        help_text='JSONL of {"prompt", "completion"} pairs, JSONL of {"messages": [...]} chats, '
        "or CSV with prompt and completion columns.",
    )


METHOD_CHOICES = [
    ("lora", "LoRA: a small adapter that runs on the base's weights"),
    ("full", "Full: every weight, a whole new model (more memory and disk)"),
]


class LaunchForm(forms.Form):
    base_model = forms.ChoiceField(label="Base model")
    method = forms.ChoiceField(
        label="Method",
        choices=METHOD_CHOICES,
        required=False,  # left out: FINETUNE_METHOD
        help_text="Full fine-tuning from a LoRA model merges its adapter into a copy of its base first.",
    )
    n_epochs = forms.CharField(label="Epochs", initial="auto", max_length=10, help_text=AUTO_HELP)
    batch_size = forms.CharField(label="Batch size", initial="auto", max_length=10, help_text=AUTO_HELP)
    learning_rate_multiplier = forms.CharField(
        label="Learning rate multiplier", initial="auto", max_length=10, help_text=AUTO_HELP
    )
    time_budget_seconds = forms.CharField(
        label="Time budget (seconds)",
        initial="auto",
        required=False,  # left out: "auto"
        max_length=10,
        help_text='With "auto" epochs: training stops by then. "auto": FINETUNE_TIME_BUDGET_SECONDS.',
    )
    max_epochs = forms.CharField(
        label="Epoch cap",
        initial="auto",
        required=False,
        max_length=10,
        help_text='With "auto" epochs: at most this many. "auto": FINETUNE_MAX_EPOCHS.',
    )
    validation_file = forms.ModelChoiceField(
        queryset=TrainingFile.objects.none(),
        required=False,
        empty_label="None: hold out a share of the training file",
        to_field_name="public_id",
    )
    validation_split = forms.FloatField(
        label="Validation split", min_value=0.0, max_value=0.5, required=False, help_text="Share held out, 0 to 0.5."
    )
    seed = forms.IntegerField(required=False, min_value=0, help_text="Empty: a random seed (stored on the job).")
    suffix = forms.CharField(required=False, max_length=40, help_text="Part of the new model's name, e.g. support-bot.")
    accept_warnings = forms.BooleanField(
        label="Train on it anyway", required=False, help_text="The file has warnings (listed above)."
    )

    def __init__(self, *args: Any, training_file: TrainingFile, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.training_file = training_file
        base_field = self.fields["base_model"]
        assert isinstance(base_field, forms.ChoiceField)
        base_field.choices = registry.model_choices()
        validation_field = self.fields["validation_file"]
        assert isinstance(validation_field, forms.ModelChoiceField)
        validation_field.queryset = TrainingFile.objects.filter(status=TrainingFile.Status.PROCESSED).exclude(
            pk=training_file.pk
        )
        if not training_file.stats.get("warnings"):
            del self.fields["accept_warnings"]

    def clean_accept_warnings(self) -> bool:
        accepted = bool(self.cleaned_data.get("accept_warnings"))
        if not accepted:
            count = len(self.training_file.stats.get("warnings", []))
            raise forms.ValidationError(
                f"The file has {count} warning{'s' if count != 1 else ''} (listed above): "
                "tick this to train on it anyway, or upload a corrected file."
            )
        return accepted

    def add_service_error(self, error: FineTuningError) -> None:
        field = FORM_FIELDS.get(error.field or "", error.field)
        self.add_error(field if field in self.fields else None, str(error))
