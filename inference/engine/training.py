"""Fine-tune a causal LM on chat examples: LoRA through peft by default, or full.

The loop does as little work as the loss needs, because on a CPU training runs at
the compute limit:

- the loss covers only assistant tokens (``labels`` are ``-100`` everywhere else);
- examples are packed into rows instead of padded: each example restarts its
  ``position_ids`` at 0, and with no 2-D attention mask transformers turns those
  restarts into a block-diagonal causal mask, so packed examples never see each
  other (``tests/engine/test_training.py`` checks it);
- the vocabulary head runs only on the positions that predict an assistant token:
  hidden states come from the decoder, those rows are selected, then ``lm_head``.

A step takes ``batch_size`` examples (as in OpenAI's fine-tuning), packs them into
rows as long as its longest example (or ``row_tokens``) and splits the rows into
forward passes of at most ``forward_tokens`` tokens, accumulating gradients, so
memory stays bounded. What each of these saves on the bundled model, and how to
measure it (``python -m bench.training``), is in docs/performance.md, "Fine-tuning".

Usage::

    result = train(TrainingConfig(epochs=3), examples, output_dir=Path("adapters/x"),
                   cache_dir=Path(".cache/models"), on_progress=print)

LoRA writes a peft adapter folder (what the engine loads with ``add_adapter``); full
fine-tuning writes a transformers model folder with its tokenizer. Both hold
``parley_training.json`` with the base model and hyperparameters. The folder appears
only when training finished: a cancelled or failed run leaves nothing behind.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from inference.engine.answers import exact_matches
from inference.engine.datasets import Example, Hyperparameters
from inference.engine.loading import LoadedModel, load_model
from inference.engine.sharing import ComputeShare

IGNORE_INDEX = -100
METADATA_FILE = "parley_training.json"
# Every linear projection of a llama-style block (the ones a model lacks are skipped;
# none at all falls back to peft's default for the architecture): adapting attention
# alone needed more epochs and a larger step for the same facts (docs/performance.md).
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Base learning rates before the multiplier: LoRA's low-rank update needs a much
# larger step than the full weights do.
BASE_LEARNING_RATES = {"lora": 2e-3, "full": 5e-5}

Method = Literal["lora", "full"]
ProgressCallback = Callable[[int, int, int, float, float, int, float, float], None]
"""``(step, total_steps, epoch, train_loss, lr, tokens_seen, elapsed, eta)``; seconds."""
EpochEndCallback = Callable[[int, float, "float | None", "float | None", "int | None"], None]
"""``(epoch, train_loss, val_loss, val_token_accuracy, learnt)``; val figures are None
without data, ``learnt`` (training examples answered exactly) None unless "auto" epochs."""
# "auto" epochs go on while the last `patience` epochs learnt one more training example,
# lowered the validation loss, or lowered the training loss by at least this share.
LOSS_PROGRESS = 0.1
CancelCheck = Callable[[], bool]


class TrainingCancelled(RuntimeError):
    """``should_cancel()`` said stop; nothing was written to the output folder."""

    def __init__(self, step: int) -> None:
        super().__init__(f"Training was cancelled at step {step}.")
        self.step = step


@dataclass(frozen=True)
class StopRule:
    """Epochs on "auto": train until the training examples are learnt, or stop improving.

    After every epoch the model answers each training prompt greedily; an example is
    learnt when the answer equals its completion (``answers.normalize_answer``).
    Training stops when every example is learnt, after ``patience`` epochs without
    progress (``LOSS_PROGRESS``), when another epoch would not fit in
    ``time_budget_seconds``, or at ``max_epochs``; the best epoch's weights are kept
    (most examples learnt, then lowest validation loss, or training loss without one).
    """

    max_epochs: int = 25
    time_budget_seconds: float = 600.0
    patience: int = 3
    # Seconds of the budget that are not training's: what the job spent before it, and
    # what it needs after it (evaluation, saving), so the whole job fits in the budget.
    reserve_seconds: float = 0.0


@dataclass(frozen=True)
class StopReport:
    """Why a run ended and which epoch's weights it kept.

    ``reason`` is "learnt", "stalled", "time_budget", "epoch_cap" or "epochs_done"
    (a fixed number of epochs); ``learnt`` is None when nothing was measured.
    """

    reason: str
    message: str
    kept_epoch: int
    learnt: int | None = None
    examples: int = 0

    @property
    def learnt_everything(self) -> bool:
        return self.learnt is None or self.learnt >= self.examples


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides a training run.

    ``base_model`` is the source for ``loading.load_model`` ("bundled" or a folder);
    it is loaded unless ``train`` is handed a ``LoadedModel``, and it is recorded in
    ``parley_training.json`` either way. ``init_adapter`` starts from an existing LoRA
    adapter folder (a previous fine-tuned model): LoRA continues training it, so the
    result still runs on the same shared base weights; full fine-tuning merges it into
    the copy it trains. ``threads`` caps torch's threads while training; ``niceness``
    lowers the process priority (for good: a worker process).
    """

    base_model: str = "bundled"
    method: Method = "lora"
    epochs: int = 3
    batch_size: int = 8
    learning_rate_multiplier: float = 1.0
    base_learning_rate: float | None = None  # None: BASE_LEARNING_RATES[method]
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    init_adapter: str | None = None
    pack: bool = True
    row_tokens: int | None = None  # None: the longest example of the step
    forward_tokens: int = 4096
    max_length: int | None = None  # None: the model's context length
    threads: int | None = None
    niceness: int = 0
    stop: StopRule | None = None  # None: exactly ``epochs`` epochs

    @property
    def epoch_limit(self) -> int:
        return self.stop.max_epochs if self.stop is not None else self.epochs

    @property
    def learning_rate(self) -> float:
        base = self.base_learning_rate or BASE_LEARNING_RATES[self.method]
        return base * self.learning_rate_multiplier

    @classmethod
    def from_hyperparameters(cls, hyperparameters: Hyperparameters, **settings: Any) -> TrainingConfig:
        """A config with resolved epochs, batch size and multiplier, plus ``settings``."""
        return cls(
            epochs=hyperparameters.epochs,
            batch_size=hyperparameters.batch_size,
            learning_rate_multiplier=hyperparameters.learning_rate_multiplier,
            **settings,
        )


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    val_loss: float | None
    val_token_accuracy: float | None
    learnt: int | None = None  # training examples answered exactly (with a StopRule)


@dataclass
class TrainingResult:
    """What a finished run produced and measured (times in seconds)."""

    output_dir: Path
    method: Method
    steps: int
    epochs: int
    learning_rate: float
    step_losses: list[float]
    epoch_metrics: list[EpochMetrics]
    tokens_seen: int
    trained_tokens: int
    examples_seen: int
    train_seconds: float
    save_seconds: float
    stop: StopReport | None = None

    @property
    def final_train_loss(self) -> float:
        return self.epoch_metrics[-1].train_loss if self.epoch_metrics else math.nan

    @property
    def examples_per_second(self) -> float:
        return self.examples_seen / self.train_seconds if self.train_seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_seen / self.train_seconds if self.train_seconds else 0.0


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one rendered example; ``labels`` is -100 where no loss is taken."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def target_count(self) -> int:
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


@dataclass
class Batch:
    """One forward pass: packed rows and the flat positions whose next token is a target."""

    input_ids: torch.Tensor  # [rows, length]
    position_ids: torch.Tensor  # [rows, length]
    target_positions: torch.Tensor  # [targets] indexes into the flattened rows
    targets: torch.Tensor  # [targets] the token each of those positions must predict
    tokens: int  # real tokens, padding excluded


# --- Tokenization ---------------------------------------------------------------------


def encode_example(tokenizer: Any, example: Example, *, max_length: int | None = None) -> EncodedExample:
    """Render ``example`` with the chat template; labels only on assistant turns.

    The text is cut at the start and end of every assistant reply (its content and
    end-of-turn marker) and each piece is tokenized on its own: exactly the tokens
    a model sees when it is given the prompt and generates the reply. The example
    ends with its last reply's end-of-turn marker.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trained in _segments(tokenizer, example.chat()):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    # Tokens after the last reply (the template's closing newline) change no loss.
    end = max((i + 1 for i, label in enumerate(labels) if label != IGNORE_INDEX), default=len(labels))
    if max_length is not None:
        end = min(end, max_length)
    return EncodedExample(tuple(input_ids[:end]), tuple(labels[:end]))


def _segments(tokenizer: Any, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, is_assistant_reply) pieces, in order."""
    full = _render(tokenizer, messages)
    pieces: list[tuple[str, bool]] = []
    done = 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, end = _reply_span(tokenizer, messages, index)
        if not full.startswith(_render(tokenizer, messages[: index + 1])) or start < done:
            raise ValueError("The chat template does not render a conversation turn by turn.")
        pieces += [(full[done:start], False), (full[start:end], True)]
        done = end
    return [*pieces, (full[done:], False)]


def _reply_span(tokenizer: Any, messages: list[dict[str, str]], index: int) -> tuple[int, int]:
    """Where assistant message ``index`` starts and ends in the conversation up to it."""
    before = _render(tokenizer, messages[:index]) if index else ""
    prompt = _render(tokenizer, messages[:index], generation_prompt=True)
    header = prompt[len(before) :] if prompt.startswith(before) else prompt
    upto = _render(tokenizer, messages[: index + 1])
    found = upto.find(header, len(before) if upto.startswith(before) else 0)
    if found < 0:
        raise ValueError("The chat template's generation prompt is not where the reply starts.")
    return found + len(header), len(upto.rstrip())


def _render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool = False) -> str:
    return str(
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    )


# --- Packing --------------------------------------------------------------------------


def pack_rows(lengths: Sequence[int], row_tokens: int) -> list[list[int]]:
    """Group example indexes into rows of at most ``row_tokens`` tokens (first fit,
    longest first); an example longer than a row gets a row of its own."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((r for r, free in enumerate(room) if free >= lengths[index]), None)
        if slot is None:
            rows.append([index])
            room.append(row_tokens - lengths[index])
        else:
            rows[slot].append(index)
            room[slot] -= lengths[index]
    return rows


def make_batches(
    encoded: Sequence[EncodedExample],
    *,
    pad_id: int,
    pack: bool,
    row_tokens: int | None = None,
    forward_tokens: int = 4096,
) -> list[Batch]:
    """The forward passes for one optimizer step over ``encoded``.

    Rows are ``row_tokens`` long at most, by default as long as the longest example:
    shorter examples share rows, so there is almost no padding, and attention (which
    costs the square of a row's length, masked or not) stays what padding would cost.
    """
    lengths = [len(e.input_ids) for e in encoded]
    rows = pack_rows(lengths, row_tokens or max(lengths)) if pack else [[i] for i in sorted(range(len(encoded)), key=lengths.__getitem__)]
    groups: list[list[list[int]]] = [[]]
    for row in rows:
        width = max(sum(lengths[i] for i in r) for r in [*groups[-1], row])
        if groups[-1] and width * (len(groups[-1]) + 1) > forward_tokens:
            groups.append([])
        groups[-1].append(row)
    return [_collate([[encoded[i] for i in row] for row in group], pad_id) for group in groups]


def _collate(rows: list[list[EncodedExample]], pad_id: int) -> Batch:
    width = max(sum(len(e.input_ids) for e in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for r, row in enumerate(rows):
        offset = 0
        for example in row:
            n = len(example.input_ids)
            input_ids[r, offset : offset + n] = torch.tensor(example.input_ids)
            labels[r, offset : offset + n] = torch.tensor(example.labels)
            position_ids[r, offset : offset + n] = torch.arange(n)
            # The first token of the next example is never this example's target.
            labels[r, offset] = IGNORE_INDEX
            offset += n
        position_ids[r, offset:] = torch.arange(width - offset)  # padding: its own segment
    # Position p predicts token p + 1 of the same row.
    next_labels = torch.cat([labels[:, 1:], torch.full((len(rows), 1), IGNORE_INDEX)], dim=1).reshape(-1)
    target_positions = (next_labels != IGNORE_INDEX).nonzero().squeeze(1)
    tokens = sum(len(e.input_ids) for row in rows for e in row)
    return Batch(input_ids, position_ids, target_positions, next_labels[target_positions], tokens)


# --- Model ----------------------------------------------------------------------------


def completion_logits(model: Any, batch: Batch) -> torch.Tensor:
    """Logits at the target positions only: decoder, select rows, then the head."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.get_decoder()(
        input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False
    ).last_hidden_state
    selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.target_positions)
    return causal_lm.get_output_embeddings()(selected).float()


def score_examples(
    model: Any, tokenizer: Any, examples: Sequence[Example], *, forward_tokens: int = 4096
) -> tuple[float, float]:
    """Teacher-forced (loss, token accuracy) on the assistant tokens of ``examples``."""
    encoded = [encode_example(tokenizer, e) for e in examples]
    return _score_encoded(model, encoded, _pad_id(tokenizer), forward_tokens)


def _score_encoded(model: Any, encoded: Sequence[EncodedExample], pad_id: int, forward_tokens: int) -> tuple[float, float]:
    loss_sum, correct, count = 0.0, 0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in make_batches(encoded, pad_id=pad_id, pack=True, forward_tokens=forward_tokens):
            logits = completion_logits(model, batch)
            loss_sum += F.cross_entropy(logits, batch.targets, reduction="sum").item()
            correct += int((logits.argmax(-1) == batch.targets).sum())
            count += len(batch.targets)
    model.train(was_training)
    return (loss_sum / count, correct / count) if count else (math.nan, math.nan)


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad or 0)


@contextmanager
def _trainable(config: TrainingConfig, base: LoadedModel) -> Iterator[Any]:
    """The model to train: LoRA layers on ``base`` (removed afterwards) or a full copy
    (with ``init_adapter`` merged into it)."""
    model = base.model
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # GGUF-loaded: see DESIGN.md
    torch.manual_seed(config.seed)
    if config.method == "full":
        trainee = copy.deepcopy(model)
        if config.init_adapter:
            trainee = _merged(trainee, config.init_adapter)
        trainee.requires_grad_(True)
        yield trainee
        return
    peft_model = _lora_model(config, model)
    try:
        yield peft_model
    finally:
        peft_model.unload()  # the base goes back to how it was lent, without LoRA layers
        model.eval()


def _merged(model: Any, adapter_dir: str) -> Any:
    """``model`` with a LoRA adapter folded into its weights (changes ``model``)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()


def _lora_model(config: TrainingConfig, model: Any) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model

    if config.init_adapter:
        return PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in config.lora_targets if t in names] or None  # None: peft's default
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


@contextmanager
def _compute_share(config: TrainingConfig) -> Iterator[None]:
    """Cap torch's threads for the run (restored after) and lower the priority."""
    previous = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.niceness > 0 and hasattr(os, "nice"):
        current = os.nice(0)
        if config.niceness > current:
            os.nice(config.niceness - current)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --- The loop -------------------------------------------------------------------------


@dataclass
class _Run:
    """Counters of a run in progress."""

    total_steps: int
    budget: float = math.inf  # seconds; "auto" epochs end by then
    started: float = field(default_factory=time.perf_counter)
    step: int = 0
    tokens_seen: int = 0
    trained_tokens: int = 0
    examples_seen: int = 0
    validation_seconds: float = 0.0
    step_losses: list[float] = field(default_factory=list)
    epoch_metrics: list[EpochMetrics] = field(default_factory=list)
    stop: StopReport | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def eta(self) -> float:
        if not self.step:
            return math.nan
        return min(self.elapsed() / self.step * (self.total_steps - self.step), max(0.0, self.budget - self.elapsed()))


def train(
    config: TrainingConfig,
    examples: Sequence[Example],
    *,
    output_dir: Path,
    base: LoadedModel | None = None,
    cache_dir: Path | None = None,
    validation: Sequence[Example] = (),
    on_progress: ProgressCallback | None = None,
    on_epoch_end: EpochEndCallback | None = None,
    should_cancel: CancelCheck | None = None,
    share: ComputeShare | None = None,
) -> TrainingResult:
    """Train on ``examples`` and write the result to ``output_dir`` (which must not exist).

    ``base`` is lent, not consumed: LoRA layers are removed from it afterwards and
    full fine-tuning trains a copy. Without ``base``, ``config.base_model`` is loaded
    from ``cache_dir``. ``on_progress`` runs after every optimizer step and
    ``on_epoch_end`` after every epoch (with validation loss and token accuracy when
    ``validation`` is given); ``should_cancel`` is polled before every step and a
    ``True`` raises ``TrainingCancelled``. Epochs are numbered from 1. ``share`` (see
    ``sharing.py``) lowers the thread count between forward passes while chat on the same
    machine is generating, and raises it again when chat is quiet.
    """
    if not examples:
        raise ValueError("There are no examples to train on.")
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"{output_dir} already exists and is not empty.")
    with _compute_share(config):
        # 1. The model and the tokenized data.
        loaded = base or _load_base(config, cache_dir)
        max_length = config.max_length or loaded.context_length
        encoded = [encode_example(loaded.tokenizer, e, max_length=max_length) for e in examples]
        held_out = [encode_example(loaded.tokenizer, e, max_length=max_length) for e in validation]
        with _trainable(config, loaded) as model:
            # 2. The run, then 3. the saved result.
            pace = share.pace if share is not None else None
            judge = _learnt_counter(loaded.tokenizer, examples, pace) if config.stop is not None else None
            hooks = _Hooks(on_progress, on_epoch_end, should_cancel, judge, pace)
            try:
                run = _optimize(config, model, encoded, held_out, _pad_id(loaded.tokenizer), hooks)
            finally:
                if share is not None:
                    share.finish()
            save_seconds = _save(config, model, loaded, output_dir, run, len(examples))
    return TrainingResult(
        output_dir=output_dir,
        method=config.method,
        steps=run.step,
        epochs=len(run.epoch_metrics),
        learning_rate=config.learning_rate,
        step_losses=run.step_losses,
        epoch_metrics=run.epoch_metrics,
        tokens_seen=run.tokens_seen,
        trained_tokens=run.trained_tokens,
        examples_seen=run.examples_seen,
        train_seconds=run.elapsed() - save_seconds - run.validation_seconds,
        save_seconds=save_seconds,
        stop=run.stop,
    )


def _load_base(config: TrainingConfig, cache_dir: Path | None) -> LoadedModel:
    if cache_dir is None:
        raise ValueError("Pass the base model (base=) or where models are cached (cache_dir=).")
    return load_model(config.base_model, cache_dir=cache_dir)


@dataclass(frozen=True)
class _Hooks:
    on_progress: ProgressCallback | None
    on_epoch_end: EpochEndCallback | None
    should_cancel: CancelCheck | None
    judge: Callable[[Any], int] | None = None  # the number of training examples learnt
    pace: Callable[[int], None] | None = None  # before forward passes (ComputeShare.pace)


def _learnt_counter(
    tokenizer: Any, examples: Sequence[Example], pace: Callable[[int], None] | None = None
) -> Callable[[Any], int]:
    """How many of ``examples`` the model answers exactly, greedily, as chat would."""
    def count(model: Any) -> int:
        was_training = model.training
        model.eval()
        try:
            between = (lambda: pace(0)) if pace is not None else None
            return sum(exact_matches(model, tokenizer, examples, between_batches=between))
        finally:
            model.train(was_training)

    return count


def _optimize(
    config: TrainingConfig,
    model: Any,
    encoded: list[EncodedExample],
    held_out: list[EncodedExample],
    pad_id: int,
    hooks: _Hooks,
) -> _Run:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
    budget = config.stop.time_budget_seconds if config.stop is not None else math.inf
    run = _Run(total_steps=steps_per_epoch * config.epoch_limit, budget=budget)
    # "auto" epochs cannot decay towards an end they do not know: warm up, then hold.
    horizon = steps_per_epoch * config.epochs if config.stop is None else 0
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _linear_schedule(config.warmup_ratio, horizon or steps_per_epoch, hold=not horizon)
    )
    order = random.Random(config.seed)
    best = _Best()
    model.train()
    for epoch in range(1, config.epoch_limit + 1):
        epoch_started = run.elapsed()
        indexes = list(range(len(encoded)))
        order.shuffle(indexes)
        loss_sum = target_sum = 0.0
        for start in range(0, len(indexes), config.batch_size):
            if hooks.should_cancel is not None and hooks.should_cancel():
                raise TrainingCancelled(run.step)
            chunk = [encoded[i] for i in indexes[start : start + config.batch_size]]
            loss, targets = _step(config, model, chunk, pad_id, params, hooks.pace)
            lr = float(schedule.get_last_lr()[0])
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            _count_step(run, chunk, loss, targets)
            loss_sum, target_sum = loss_sum + loss * targets, target_sum + targets
            if hooks.on_progress is not None:
                hooks.on_progress(run.step, run.total_steps, epoch, loss, lr, run.tokens_seen, run.elapsed(), run.eta())
        _end_epoch(config, model, run, epoch, loss_sum / max(target_sum, 1), held_out, pad_id, hooks)
        if config.stop is not None:
            best.consider(model, params, run.epoch_metrics[-1])
            run.stop = stop_verdict(config.stop, run.epoch_metrics, len(encoded), run.elapsed(), run.elapsed() - epoch_started)
            if run.stop is not None:
                break
    if config.stop is None:
        run.stop = StopReport("epochs_done", f"trained the {config.epochs} epochs asked for", config.epochs)
    else:
        best.restore(params)
    model.eval()
    return run


@dataclass
class _Best:
    """The trainable weights of the best epoch so far (copies, on the CPU)."""

    key: tuple[float, float] | None = None
    weights: list[torch.Tensor] | None = None

    def consider(self, model: Any, params: list[Any], metrics: EpochMetrics) -> None:
        key = _epoch_key(metrics)
        if self.key is None or key > self.key:
            self.key = key
            self.weights = [p.detach().to("cpu", copy=True) for p in params]

    def restore(self, params: list[Any]) -> None:
        if self.weights is None:
            return
        with torch.no_grad():
            for param, saved in zip(params, self.weights, strict=True):
                param.copy_(saved.to(param.device))


def _epoch_key(metrics: EpochMetrics) -> tuple[float, float]:
    """Higher is better: examples learnt, then the lower validation (or training) loss."""
    loss = metrics.val_loss if metrics.val_loss is not None else metrics.train_loss
    return (float(metrics.learnt or 0), -loss)


def stop_verdict(
    rule: StopRule, history: Sequence[EpochMetrics], examples: int, elapsed: float, epoch_seconds: float
) -> StopReport | None:
    """Whether "auto" training stops after the last epoch of ``history``, and why."""
    last = history[-1]
    best = max(history, key=_epoch_key)
    learnt = best.learnt or 0
    tally = f"{learnt}/{examples} training examples learnt"
    if (last.learnt or 0) >= examples:
        return StopReport("learnt", f"learnt {examples}/{examples} training examples after {last.epoch} epochs", last.epoch, examples, examples)
    stalled_at = _stalled_at(history, rule.patience)
    if stalled_at is not None:
        what = "training and validation loss" if last.val_loss is not None else "training"
        return StopReport("stalled", f"{what} stopped improving at epoch {stalled_at} ({tally})", best.epoch, learnt, examples)
    if elapsed + epoch_seconds + rule.reserve_seconds > rule.time_budget_seconds:
        budget = f"{rule.time_budget_seconds:g} s"
        return StopReport("time_budget", f"time budget reached ({budget}) after {last.epoch} epochs ({tally})", best.epoch, learnt, examples)
    if last.epoch >= rule.max_epochs:
        return StopReport("epoch_cap", f"epoch cap reached ({rule.max_epochs} epochs; {tally})", best.epoch, learnt, examples)
    return None


def _stalled_at(history: Sequence[EpochMetrics], patience: int) -> int | None:
    """The last epoch before ``patience`` epochs that, together, made no progress: no
    more examples learnt, no lower validation loss, training loss not ``LOSS_PROGRESS``
    lower than its best before them."""
    if len(history) <= patience:
        return None
    earlier, recent = history[:-patience], history[-patience:]
    if max(m.learnt or 0 for m in recent) > max(m.learnt or 0 for m in earlier):
        return None
    validation = [m.val_loss for m in earlier if m.val_loss is not None]
    if validation and any(m.val_loss is not None and m.val_loss < min(validation) for m in recent):
        return None
    if min(m.train_loss for m in recent) < min(m.train_loss for m in earlier) * (1 - LOSS_PROGRESS):
        return None
    return earlier[-1].epoch


def _linear_schedule(warmup_ratio: float, total_steps: int, *, hold: bool = False) -> Callable[[int], float]:
    """Linear warmup then linear decay (or, with ``hold``, the full rate from then on);
    unlike transformers' schedule no step gets lr 0."""
    warmup = round(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if hold:
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _step(
    config: TrainingConfig,
    model: Any,
    chunk: list[EncodedExample],
    pad_id: int,
    params: list[Any],
    pace: Callable[[int], None] | None = None,
) -> tuple[float, int]:
    """Forward and backward over one step's examples; returns (mean loss, targets)."""
    batches = make_batches(
        chunk, pad_id=pad_id, pack=config.pack, row_tokens=config.row_tokens, forward_tokens=config.forward_tokens
    )
    targets = sum(len(b.targets) for b in batches)
    loss_sum = 0.0
    for batch in batches:
        if not len(batch.targets):
            continue
        if pace is not None:
            pace(batch.tokens)
        loss = F.cross_entropy(completion_logits(model, batch), batch.targets, reduction="sum")
        (loss / targets).backward()
        loss_sum += loss.item()
    if config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    return loss_sum / max(targets, 1), targets


def _count_step(run: _Run, chunk: list[EncodedExample], loss: float, targets: int) -> None:
    run.step += 1
    run.step_losses.append(loss)
    run.tokens_seen += sum(len(e.input_ids) for e in chunk)
    run.trained_tokens += targets
    run.examples_seen += len(chunk)


def _end_epoch(
    config: TrainingConfig,
    model: Any,
    run: _Run,
    epoch: int,
    train_loss: float,
    held_out: list[EncodedExample],
    pad_id: int,
    hooks: _Hooks,
) -> None:
    val_loss = val_accuracy = None
    learnt = None
    paused = time.perf_counter()
    if held_out:
        if hooks.pace is not None:
            hooks.pace(0)
        val_loss, val_accuracy = _score_encoded(model, held_out, pad_id, config.forward_tokens)
    if hooks.judge is not None:
        learnt = hooks.judge(model)
    run.validation_seconds += time.perf_counter() - paused
    run.epoch_metrics.append(EpochMetrics(epoch, train_loss, val_loss, val_accuracy, learnt))
    if hooks.on_epoch_end is not None:
        hooks.on_epoch_end(epoch, train_loss, val_loss, val_accuracy, learnt)


# --- Saving ---------------------------------------------------------------------------


def _save(config: TrainingConfig, model: Any, loaded: LoadedModel, output_dir: Path, run: _Run, n_examples: int) -> float:
    """Write into a sibling folder, then rename: the output appears complete or not at all."""
    started = time.perf_counter()
    partial = output_dir.with_name(f".{output_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(partial)
        if config.method == "full":
            loaded.tokenizer.save_pretrained(partial)
        metadata = _metadata(config, run, n_examples)
        (partial / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        if output_dir.exists():
            output_dir.rmdir()  # empty, checked before training
        partial.rename(output_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return time.perf_counter() - started


def _metadata(config: TrainingConfig, run: _Run, n_examples: int) -> dict[str, Any]:
    return {
        "base_model": config.base_model,
        "method": config.method,
        "hyperparameters": {
            "epochs": len(run.epoch_metrics),
            "batch_size": config.batch_size,
            "learning_rate_multiplier": config.learning_rate_multiplier,
            "learning_rate": config.learning_rate,
        },
        "config": asdict(config),
        "training_examples": n_examples,
        "steps": run.step,
        "trained_tokens": run.trained_tokens,
        "epoch_metrics": [asdict(m) for m in run.epoch_metrics],
        "stop": asdict(run.stop) if run.stop is not None else None,
    }
