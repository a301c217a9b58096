"""Fine-tuning records: uploaded training files, jobs with their events and metrics,
and the fine-tuned models that succeeded jobs register.

Public ids follow OpenAI's shapes ("file-…", "ftjob-…", "ft:<base>:<suffix>:<id>") so
the admin, the management command and the HTTP API name things the same way.
Writes go through ``finetuning.services``; reads through its selectors.
"""

from __future__ import annotations

import secrets
import string

from django.conf import settings
from django.db import models

_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int = 24) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_file_id() -> str:
    return f"file-{random_token()}"


def new_job_id() -> str:
    return f"ftjob-{random_token()}"


class TrainingFile(models.Model):
    class Status(models.TextChoices):
        UPLOADED = "uploaded", "Uploaded"
        PROCESSED = "processed", "Processed"
        ERROR = "error", "Error"

    class Format(models.TextChoices):
        PROMPT_COMPLETION = "prompt_completion", "JSONL prompt/completion"
        CHAT = "chat", "JSONL chat"
        CSV = "csv", "CSV"

    public_id = models.CharField(max_length=40, unique=True, default=new_file_id, editable=False)
    filename = models.CharField(max_length=255)
    purpose = models.CharField(max_length=20, default="fine-tune")
    bytes = models.PositiveBigIntegerField(default=0)
    format = models.CharField(max_length=20, choices=Format.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UPLOADED)
    stored_path = models.CharField(max_length=500, blank=True, help_text="Path under MEDIA_ROOT.")
    validation_errors = models.JSONField(default=list, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "inference_trainingfile"  # the table it had in the inference app
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.filename} ({self.public_id})"


class FineTuningJob(models.Model):
    class Status(models.TextChoices):
        VALIDATING_FILES = "validating_files", "Validating files"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    public_id = models.CharField(max_length=40, unique=True, default=new_job_id, editable=False)
    base_model = models.CharField(
        max_length=200, help_text="The model id the job trains on (a base or a fine-tuned model)."
    )
    training_file = models.ForeignKey(TrainingFile, on_delete=models.PROTECT, related_name="training_jobs")
    validation_file = models.ForeignKey(
        TrainingFile, null=True, blank=True, on_delete=models.PROTECT, related_name="validation_jobs"
    )
    validation_split = models.FloatField(
        default=0.0, help_text="Share of the training file held out when there is no validation file."
    )
    hyperparameters_requested = models.JSONField(default=dict)
    hyperparameters = models.JSONField(
        default=dict, help_text="Resolved: n_epochs, batch_size, learning_rate_multiplier."
    )
    method = models.CharField(max_length=10, choices=[("lora", "LoRA"), ("full", "Full")], default="lora")
    seed = models.IntegerField(default=0)
    suffix = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.VALIDATING_FILES)
    error_code = models.CharField(max_length=60, blank=True)
    error_message = models.TextField(blank=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    epoch = models.PositiveIntegerField(default=0)
    elapsed_seconds = models.FloatField(default=0.0)
    eta_seconds = models.FloatField(null=True, blank=True)
    trained_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    threads = models.PositiveSmallIntegerField(null=True, blank=True)
    fine_tuned_model = models.CharField(max_length=200, blank=True)
    evaluation = models.JSONField(default=dict, blank=True)
    stop_reason = models.TextField(blank=True, help_text="Why training stopped, e.g. “learnt 64/64 training examples”.")
    kept_epoch = models.PositiveIntegerField(null=True, blank=True, help_text="The epoch whose weights were kept.")
    validation_note = models.TextField(blank=True, help_text="What the automatic split held out, and why.")
    retried_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "inference_finetuningjob"  # the table it had in the inference app
        ordering = ["-created_at"]
        permissions = [("can_finetune", "Can fine-tune models")]
        verbose_name = "fine-tuning job"

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def progress_percent(self) -> int:
        if self.status == self.Status.SUCCEEDED:
            return 100
        return int(100 * self.step / self.total_steps) if self.total_steps else 0


class FineTuningEvent(models.Model):
    class Level(models.TextChoices):
        INFO = "info", "Info"
        WARN = "warn", "Warning"
        ERROR = "error", "Error"

    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="events")
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "inference_finetuningevent"  # the table it had in the inference app
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return self.message


class FineTuningMetric(models.Model):
    """One optimizer step; the last step of an epoch also carries the epoch's figures."""

    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    epoch = models.PositiveIntegerField()
    train_loss = models.FloatField()
    learning_rate = models.FloatField()
    epoch_train_loss = models.FloatField(null=True, blank=True)
    val_loss = models.FloatField(null=True, blank=True)
    val_token_accuracy = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = "inference_finetuningmetric"  # the table it had in the inference app
        ordering = ["step"]
        constraints = [models.UniqueConstraint(fields=["job", "step"], name="one_metric_per_job_step")]

    def __str__(self) -> str:
        return f"{self.job_id} step {self.step}"


class FineTunedModel(models.Model):
    class Visibility(models.TextChoices):
        EVERYONE = "everyone", "Everyone"
        STAFF = "staff", "Staff only"
        GROUPS = "groups", "Members of the groups chosen"

    public_id = models.CharField(max_length=200, unique=True)
    label = models.CharField(max_length=120)
    base_model = models.CharField(max_length=200, help_text="The registry id of the base whose weights it runs on.")
    adapter_path = models.CharField(
        max_length=500, help_text="A LoRA adapter folder, or a whole model folder (method full)."
    )
    method = models.CharField(max_length=10, choices=[("lora", "LoRA"), ("full", "Full")], default="lora")
    job = models.OneToOneField(FineTuningJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="result")
    training_file = models.ForeignKey(TrainingFile, null=True, blank=True, on_delete=models.SET_NULL)
    hyperparameters = models.JSONField(default=dict, blank=True)
    hidden = models.BooleanField(default=False, help_text="Hidden models leave the model picker and the API.")
    # A model trained on transcripts can repeat them: who may use it (superusers always may).
    visibility = models.CharField(
        max_length=10,
        choices=Visibility.choices,
        default=Visibility.EVERYONE,
        help_text="Who sees it in the model picker and may use it, in the chat and through the API. "
        "Superusers always may.",
    )
    groups = models.ManyToManyField(
        "auth.Group",
        blank=True,
        related_name="+",
        help_text="With “Members of the groups chosen”: the groups whose members may use it.",
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "inference_finetunedmodel"  # the table it had in the inference app
        ordering = ["created_at"]
        verbose_name = "fine-tuned model"

    def __str__(self) -> str:
        return self.label
