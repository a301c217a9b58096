"""The fine-tuning models, moved here from the inference app with their tables.

The tables keep their names (``db_table``), so this only tells Django's state where the
models now live; ``inference/migrations/0008`` drops them from the inference app's state.
On a database made before the move, the models' content types (and so their
permissions and admin history) and the queued training tasks are relabelled too.
"""

import django.db.models.deletion
import finetuning.models
from django.conf import settings
from django.db import migrations, models


MOVED = ["trainingfile", "finetuningjob", "finetuningevent", "finetuningmetric", "finetunedmodel"]
TASK_BEFORE = "inference.tasks.finetune_job_run"
TASK_AFTER = "finetuning.tasks.finetune_job_run"


def relabel(apps, schema_editor, *, old: str = "inference", new: str = "finetuning", task=(TASK_BEFORE, TASK_AFTER)):  # type: ignore[no-untyped-def]
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label=old, model__in=MOVED).update(app_label=new)
    DBTaskResult = apps.get_model("django_tasks_database", "DBTaskResult")
    DBTaskResult.objects.filter(task_path=task[0]).update(task_path=task[1])


def relabel_back(apps, schema_editor):  # type: ignore[no-untyped-def]
    relabel(apps, schema_editor, old="finetuning", new="inference", task=(TASK_AFTER, TASK_BEFORE))


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('inference', '0007_finetuningjob_stop_reason'),
        ('contenttypes', '0002_remove_content_type_name'),
        ('django_tasks_database', '0001_initial'),
        ('auth', '0012_alter_user_first_name_max_length'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
            migrations.CreateModel(
                name='FineTuningJob',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('public_id', models.CharField(default=finetuning.models.new_job_id, editable=False, max_length=40, unique=True)),
                    ('base_model', models.CharField(help_text='The model id the job trains on (a base or a fine-tuned model).', max_length=200)),
                    ('validation_split', models.FloatField(default=0.0, help_text='Share of the training file held out when there is no validation file.')),
                    ('hyperparameters_requested', models.JSONField(default=dict)),
                    ('hyperparameters', models.JSONField(default=dict, help_text='Resolved: n_epochs, batch_size, learning_rate_multiplier.')),
                    ('method', models.CharField(choices=[('lora', 'LoRA'), ('full', 'Full')], default='lora', max_length=10)),
                    ('seed', models.IntegerField(default=0)),
                    ('suffix', models.CharField(blank=True, max_length=40)),
                    ('status', models.CharField(choices=[('validating_files', 'Validating files'), ('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], default='validating_files', max_length=20)),
                    ('error_code', models.CharField(blank=True, max_length=60)),
                    ('error_message', models.TextField(blank=True)),
                    ('step', models.PositiveIntegerField(default=0)),
                    ('total_steps', models.PositiveIntegerField(default=0)),
                    ('epoch', models.PositiveIntegerField(default=0)),
                    ('elapsed_seconds', models.FloatField(default=0.0)),
                    ('eta_seconds', models.FloatField(blank=True, null=True)),
                    ('trained_tokens', models.PositiveBigIntegerField(blank=True, null=True)),
                    ('tokens_per_second', models.FloatField(blank=True, null=True)),
                    ('threads', models.PositiveSmallIntegerField(blank=True, null=True)),
                    ('fine_tuned_model', models.CharField(blank=True, max_length=200)),
                    ('evaluation', models.JSONField(blank=True, default=dict)),
                    ('stop_reason', models.TextField(blank=True, help_text='Why training stopped, e.g. “learnt 64/64 training examples”.')),
                    ('kept_epoch', models.PositiveIntegerField(blank=True, help_text='The epoch whose weights were kept.', null=True)),
                    ('validation_note', models.TextField(blank=True, help_text='What the automatic split held out, and why.')),
                    ('created_at', models.DateTimeField(auto_now_add=True)),
                    ('started_at', models.DateTimeField(blank=True, null=True)),
                    ('finished_at', models.DateTimeField(blank=True, null=True)),
                    ('heartbeat_at', models.DateTimeField(blank=True, null=True)),
                    ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
                    ('retried_from', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='retries', to='finetuning.finetuningjob')),
                ],
                options={
                    'verbose_name': 'fine-tuning job',
                    'db_table': 'inference_finetuningjob',
                    'ordering': ['-created_at'],
                    'permissions': [('can_finetune', 'Can fine-tune models')],
                },
            ),
            migrations.CreateModel(
                name='FineTuningEvent',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('level', models.CharField(choices=[('info', 'Info'), ('warn', 'Warning'), ('error', 'Error')], default='info', max_length=10)),
                    ('message', models.TextField()),
                    ('created_at', models.DateTimeField(auto_now_add=True)),
                    ('job', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='events', to='finetuning.finetuningjob')),
                ],
                options={
                    'db_table': 'inference_finetuningevent',
                    'ordering': ['created_at', 'pk'],
                },
            ),
            migrations.CreateModel(
                name='TrainingFile',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('public_id', models.CharField(default=finetuning.models.new_file_id, editable=False, max_length=40, unique=True)),
                    ('filename', models.CharField(max_length=255)),
                    ('purpose', models.CharField(default='fine-tune', max_length=20)),
                    ('bytes', models.PositiveBigIntegerField(default=0)),
                    ('format', models.CharField(choices=[('prompt_completion', 'JSONL prompt/completion'), ('chat', 'JSONL chat'), ('csv', 'CSV')], max_length=20)),
                    ('status', models.CharField(choices=[('uploaded', 'Uploaded'), ('processed', 'Processed'), ('error', 'Error')], default='uploaded', max_length=20)),
                    ('stored_path', models.CharField(blank=True, help_text='Path under MEDIA_ROOT.', max_length=500)),
                    ('validation_errors', models.JSONField(blank=True, default=list)),
                    ('stats', models.JSONField(blank=True, default=dict)),
                    ('created_at', models.DateTimeField(auto_now_add=True)),
                    ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
                ],
                options={
                    'db_table': 'inference_trainingfile',
                    'ordering': ['-created_at'],
                },
            ),
            migrations.AddField(
                model_name='finetuningjob',
                name='training_file',
                field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='training_jobs', to='finetuning.trainingfile'),
            ),
            migrations.AddField(
                model_name='finetuningjob',
                name='validation_file',
                field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='validation_jobs', to='finetuning.trainingfile'),
            ),
            migrations.CreateModel(
                name='FineTunedModel',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('public_id', models.CharField(max_length=200, unique=True)),
                    ('label', models.CharField(max_length=120)),
                    ('base_model', models.CharField(help_text='The registry id of the base whose weights it runs on.', max_length=200)),
                    ('adapter_path', models.CharField(help_text='A LoRA adapter folder, or a whole model folder (method full).', max_length=500)),
                    ('method', models.CharField(choices=[('lora', 'LoRA'), ('full', 'Full')], default='lora', max_length=10)),
                    ('hyperparameters', models.JSONField(blank=True, default=dict)),
                    ('hidden', models.BooleanField(default=False, help_text='Hidden models leave the model picker and the API.')),
                    ('visibility', models.CharField(choices=[('everyone', 'Everyone'), ('staff', 'Staff only'), ('groups', 'Members of the groups chosen')], default='everyone', help_text='Who sees it in the model picker and may use it, in the chat and through the API. Superusers always may.', max_length=10)),
                    ('created_at', models.DateTimeField(auto_now_add=True)),
                    ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
                    ('groups', models.ManyToManyField(blank=True, help_text='With “Members of the groups chosen”: the groups whose members may use it.', related_name='+', to='auth.group')),
                    ('job', models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='result', to='finetuning.finetuningjob')),
                    ('training_file', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to='finetuning.trainingfile')),
                ],
                options={
                    'verbose_name': 'fine-tuned model',
                    'db_table': 'inference_finetunedmodel',
                    'ordering': ['created_at'],
                },
            ),
            migrations.CreateModel(
                name='FineTuningMetric',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('step', models.PositiveIntegerField()),
                    ('epoch', models.PositiveIntegerField()),
                    ('train_loss', models.FloatField()),
                    ('learning_rate', models.FloatField()),
                    ('epoch_train_loss', models.FloatField(blank=True, null=True)),
                    ('val_loss', models.FloatField(blank=True, null=True)),
                    ('val_token_accuracy', models.FloatField(blank=True, null=True)),
                    ('job', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='metrics', to='finetuning.finetuningjob')),
                ],
                options={
                    'db_table': 'inference_finetuningmetric',
                    'ordering': ['step'],
                    'constraints': [models.UniqueConstraint(fields=('job', 'step'), name='one_metric_per_job_step')],
                },
            ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(relabel, relabel_back),
    ]
