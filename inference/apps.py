from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from inference.runtime import ModelRuntime, ProcessRole


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Inference"
    # This process's model runtime (inference/runtime.py): made here, since every process
    # sets Django up once; ``manage.py runworker`` installs one with the worker's role.
    runtime: ModelRuntime

    def ready(self) -> None:
        refuse_what_this_machine_cannot_run()
        self.runtime = runtime_for(ProcessRole.WEB)


def runtime_for(role: ProcessRole) -> ModelRuntime:
    """A runtime whose housekeeping reports to the status table (inference/status.py)."""
    from inference.status import report_once

    return ModelRuntime(role=role, report=report_once)


def refuse_what_this_machine_cannot_run() -> None:
    """Stop start-up when INFERENCE_DEVICE or INFERENCE_WEIGHTS names something this
    machine cannot run, rather than failing at the first chat or quietly serving
    something else. torch is imported only when such a setting asks for a check."""
    if settings.INFERENCE_BACKEND != "transformers":
        return
    if settings.INFERENCE_DEVICE == "cuda":
        from inference.engine.loading import resolve_device

        try:
            resolve_device("cuda")
        except ValueError as exc:
            raise ImproperlyConfigured(str(exc)) from exc
    if settings.INFERENCE_WEIGHTS.startswith("int8"):
        from inference.engine.weights import int8_supported

        if not int8_supported() or settings.INFERENCE_DEVICE == "cuda":
            raise ImproperlyConfigured(
                f"INFERENCE_WEIGHTS={settings.INFERENCE_WEIGHTS} cannot run here: int8 weights need a CPU "
                "with the x86/fbgemm quantized engine. Use auto or fp32."
            )
