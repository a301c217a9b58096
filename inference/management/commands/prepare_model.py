"""Convert the configured model to its local safetensors cache, and build Parley's CPU
kernels, once, before serving."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference.engine.loading import ModelLoadError, resolve_source


class Command(BaseCommand):
    help = "Prepare INFERENCE_MODEL (and the bundled model) so the server loads them in seconds."

    def handle(self, *args: Any, **options: Any) -> None:
        sources = {"bundled", settings.INFERENCE_MODEL}
        for source in sorted(sources):
            started = time.perf_counter()
            try:
                resolved = resolve_source(source, settings.INFERENCE_CACHE_DIR)
            except ModelLoadError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"Model {source}: ready at {resolved} ({time.perf_counter() - started:.1f} s)")
        if settings.INFERENCE_BACKEND == "synthetic" or settings.INFERENCE_WEIGHTS not in ("auto", "int4"):
            return
        from inference.engine import kernels

        started = time.perf_counter()
        self.stdout.write("Building Parley's int4 CPU kernels (once; about 45 s)")
        problem = kernels.build()
        elapsed = time.perf_counter() - started
        if problem:
            self.stdout.write(f"Parley's int4 kernels are unavailable here: {problem} ({elapsed:.1f} s)")
        else:
            self.stdout.write(f"Parley's int4 kernels: ready ({elapsed:.1f} s)")
