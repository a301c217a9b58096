"""The engine: one model thread, continuous batching, prefix reuse, LoRA adapters.

Usage::

    engine = Engine(load_model("bundled", cache_dir=Path(".cache/models")))
    engine.start()
    engine.submit(GenerationRequest("r1", prompt_ids), callback)   # events on the engine thread
    text, finish = generate_text(engine, GenerationRequest("r2", prompt_ids))

Every step of the model thread (``Engine._step``):
1. apply what callers sent (submits, cancels) since the last step;
2. admit the next queued request when a batch slot is free, restoring a cached prefix;
3. prefill one chunk (at most ``prefill_chunk_tokens``) of the request being admitted;
   when its prompt is done it samples its first token and joins the batch;
4. decode one token for every active stream in ONE batched forward pass over a
   ragged KV cache (per-row positions and attention mask; see ``kvcache``);
5. streams that finish leave the batch at once (their cache rows are freed, their KV
   kept in the prefix cache when they carry a ``cache_key``).

Callbacks run on the engine thread and get ``TokenEvent`` deltas and exactly one
``FinishEvent`` per request, also when the step loop fails (``finish_reason="error"``).
A request with ``SamplingParams.logprobs`` also gets each token's log probability and
its most likely alternatives, from one log-softmax per step over the rows that asked.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from . import invariance, kernels
from .blocks import BlockLinear
from .detokenize import IncrementalDetokenizer, StopFilter, TokenPieces
from .kvcache import PrefixCache, RaggedKVCache
from .lora import LoraAdapters
from .sampling import make_generator, sample_batch, sample_row, token_logprobs
from .types import (
    EngineEvent,
    EventCallback,
    FinishEvent,
    FinishReason,
    GenerationRequest,
    TokenEvent,
    TokenLogprob,
)
from .weights import choose_weights, prepare_weights

logger = logging.getLogger(__name__)
T = TypeVar("T")


class RequestError(ValueError):
    """A request the engine cannot serve; its message is shown to whoever sent it."""


@dataclass(eq=False)
class _Stream:
    request: GenerationRequest
    callback: EventCallback
    submitted_at: float
    tokens: list[int] = field(default_factory=list)
    generated: int = 0
    started_at: float | None = None
    first_token_at: float | None = None
    reused_tokens: int = 0
    generator: torch.Generator | None = None
    detokenizer: IncrementalDetokenizer | None = None
    stops: StopFilter | None = None
    unsent_logprobs: list[TokenLogprob] = field(default_factory=list)
    cache: RaggedKVCache | None = None
    row: int = 0
    in_batch: bool = False
    done: bool = False

    def reply_ids(self) -> list[int]:
        return self.tokens[len(self.request.prompt_ids) :]

    @property
    def request_id(self) -> str:
        return self.request.request_id


class Engine:
    """Serve a loaded causal LM to many concurrent requests from one model thread.

    The engine takes ownership of ``loaded.model`` (int8 weights replace its linear
    layers in place).
    """

    def __init__(
        self,
        loaded: Any,
        *,
        max_batch_size: int = 16,
        prefill_chunk_tokens: int = 256,
        prefix_cache_bytes: int = 512 * 2**20,
        weights: str = "auto",
        parallel_rows: int | None = None,
        on_busy: Callable[[bool], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or prefill_chunk_tokens < 1 or prefix_cache_bytes < 0:
            raise ValueError("max_batch_size and prefill_chunk_tokens must be positive.")
        self.tokenizer = loaded.tokenizer
        self.weights, self.weights_reason = choose_weights(weights, loaded.model)
        self.model, smoothing = in_own_thread(
            prepare_weights, loaded.model, self.weights, loaded.tokenizer, max_batch_size
        )
        logger.info("Serving %s weights: %s", self.weights, self.weights_reason)
        self.model.eval()
        self.device = next(self.model.parameters()).device
        self.context_length = int(loaded.context_length)
        self.max_batch_size = max_batch_size
        self.prefill_chunk_tokens = prefill_chunk_tokens
        # torch's thread count when the engine was built: prefill chunks and decode steps
        # of at least ``parallel_rows`` rows use all of them; smaller decode steps run on
        # one thread where waking the others costs more than it saves. That depends on
        # the CPU (one row on two threads: slower on the AVX2 EPYC, a quarter faster on
        # the AVX-512 one; docs/performance.md), so unless given it is measured at
        # start-up (``_choose_parallel_rows``).
        self.threads = torch.get_num_threads()
        self._parallel_rows_fixed = parallel_rows is not None
        self.parallel_rows = parallel_rows or 8
        self.row_timing_ms: dict[int, float] = {}
        self.row_padding: dict[int, int] | None = None
        # No request's logits may depend on its neighbours (invariance.py says how).
        self.invariance = in_own_thread(self._make_batch_invariant)
        self._shape = _cache_shape(self.model)
        self.vocab_size = int(self.model.get_input_embeddings().num_embeddings)
        self.eos_token_ids = _eos_token_ids(self.model, self.tokenizer)
        self.pieces = TokenPieces(self.tokenizer)
        self.adapters = LoraAdapters(self.model, smoothing)
        self._prefixes = PrefixCache(prefix_cache_bytes)
        self._batch = self._new_cache(max_batch_size)
        self._active: list[_Stream] = []
        self._queue: deque[_Stream] = deque()
        self._prefilling: _Stream | None = None
        self._streams: dict[str, _Stream] = {}
        self._inbox: deque[tuple[str, Any]] = deque()
        self._wake = threading.Condition()
        self._model_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._shutdown_finish: tuple[FinishReason, str] = ("cancelled", "The engine shut down.")
        self._closed = False
        self.tokens_generated = 0
        self.steps = 0
        # Told True when the engine gets work and False when it has none left (from the
        # model thread; sharing.ChatActivity.set_busy lets training on this machine yield).
        self._on_busy = on_busy
        self._busy = False

    # -- public surface -------------------------------------------------------

    def start(self) -> None:
        """Start the model thread (a daemon); returns once it has warmed the model up."""
        if self._thread is not None:
            return
        warmed = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(warmed, failure), name="parley-engine", daemon=True)
        self._thread.start()
        warmed.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]

    def submit(self, request: GenerationRequest, callback: EventCallback) -> None:
        """Queue ``request``; returns at once. Events arrive through ``callback``."""
        stream = _Stream(request=request, callback=callback, submitted_at=time.perf_counter())
        with self._wake:
            if not self._closed:
                self._inbox.append(("submit", stream))
                self._wake.notify()
                return
        self._finish(stream, "error", "The engine has shut down.")

    def cancel(self, request_id: str) -> None:
        """Stop ``request_id`` at the next step (``finish_reason="cancelled"``)."""
        with self._wake:
            self._inbox.append(("cancel", request_id))
            self._wake.notify()

    def add_adapter(self, name: str, path: str | Path) -> None:
        """Register a peft LoRA adapter folder under ``name`` (replacing one of that name)."""
        loaded = self.adapters.load(name, Path(path))
        with self._model_lock:
            self.adapters.install(loaded)

    def remove_adapter(self, name: str) -> None:
        """Unregister ``name``; requests still using it end with an error."""
        with self._model_lock:
            self.adapters.remove(name)

    def stats(self) -> dict:
        return {
            "active_streams": len(self._active),
            "queued_requests": len(self._queue) + (1 if self._prefilling else 0),
            "cached_prefixes": len(self._prefixes),
            "cached_prefix_bytes": self._prefixes.nbytes,
            "kv_cache_bytes": self._batch.nbytes(),
            "tokens_generated": self.tokens_generated,
            "steps": self.steps,
            "weights": self.weights,
            "weights_reason": self.weights_reason,
            "batch_invariance": self.invariance,
            "adapters": sorted(self.adapters.names()),
            "running": self._thread is not None and self._thread.is_alive(),
        }

    def shutdown(self, error: str | None = None) -> None:
        """Stop the model thread; requests still in flight end as cancelled, or, given
        ``error`` (the model went away), as errors with that reason."""
        with self._wake:
            if error is not None:
                self._shutdown_finish = ("error", error)
            self._stopping = True
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._thread is None or not self._thread.is_alive():
            self._abandon_all(*self._shutdown_finish)

    # -- the model thread -----------------------------------------------------

    def _run(self, warmed: threading.Event, failure: list[BaseException]) -> None:
        try:
            self._warm_up()
        except BaseException as exc:
            failure.append(exc)
            return
        finally:
            warmed.set()
        try:
            while True:
                commands = self._wait_for_work()
                if commands is None:
                    return
                try:
                    self._apply(commands)
                    self._report_busy()
                    self._step()
                except Exception as exc:
                    logger.exception("The engine step failed")
                    self._abandon_all("error", f"The engine failed: {exc}")
                self._report_busy()
        finally:
            self._abandon_all(*self._shutdown_finish)
            self._report_busy()

    def _report_busy(self) -> None:
        busy = self._has_work()
        if busy != self._busy and self._on_busy is not None:
            try:
                self._on_busy(busy)
            except Exception:
                logger.exception("The engine could not report its activity")
        self._busy = busy

    def _wait_for_work(self) -> list[tuple[str, Any]] | None:
        with self._wake:
            while not self._inbox and not self._has_work() and not self._stopping:
                self._wake.wait()
            if self._stopping:
                return None
            commands = list(self._inbox)
            self._inbox.clear()
            return commands

    def _has_work(self) -> bool:
        return bool(self._active or self._queue or self._prefilling)

    def _apply(self, commands: list[tuple[str, Any]]) -> None:
        for kind, payload in commands:
            if kind == "submit":
                self._accept_submission(payload)
            elif kind == "cancel":
                stream = self._streams.get(payload)
                if stream is not None:
                    self._finish(stream, "cancelled")

    def _accept_submission(self, stream: _Stream) -> None:
        try:
            self._validate(stream.request)
        except RequestError as exc:
            self._emit(stream, self._finish_event(stream, "error", str(exc)))
            return
        self._streams[stream.request_id] = stream
        self._queue.append(stream)

    def _validate(self, request: GenerationRequest) -> None:
        prompt, params = request.prompt_ids, request.params
        if request.request_id in self._streams:
            raise RequestError(f"A request with id {request.request_id!r} is already running.")
        if not prompt:
            raise RequestError("The prompt is empty.")
        if any(not isinstance(t, int) or not 0 <= t < self.vocab_size for t in prompt):
            raise RequestError(f"The prompt holds token ids outside 0..{self.vocab_size - 1}.")
        if len(prompt) >= self.context_length:
            raise RequestError(
                f"The prompt has {len(prompt)} tokens; the model's context window holds "
                f"{self.context_length}, with room needed for the reply."
            )
        if params.max_new_tokens < 1:
            raise RequestError("max_new_tokens must be at least 1.")
        if not math.isfinite(params.temperature) or params.temperature < 0:
            raise RequestError("temperature must be 0 (greedy) or positive.")
        if not 0 < params.top_p <= 1:
            raise RequestError("top_p must be in (0, 1].")
        if params.logprobs is not None and not 0 <= params.logprobs <= self.vocab_size:
            raise RequestError(f"logprobs must be from 0 to {self.vocab_size}.")
        if request.adapter is not None and request.adapter not in self.adapters.names():
            raise RequestError(f"There is no adapter named {request.adapter!r}.")

    def _step(self) -> None:
        with self._model_lock:
            self._drop_orphans()
            self._admit()
            if self._prefilling is not None:
                self._guarded(self._prefill_chunk, [self._prefilling])
            if self._active:
                self._guarded(self._decode_step, list(self._active))
        self.steps += 1

    def _guarded(self, work: Any, streams: list[_Stream]) -> None:
        """Run ``work``; if it raises, end only ``streams`` with an error."""
        try:
            work()
        except Exception as exc:
            logger.exception("Generation failed for %d request(s)", len(streams))
            for stream in streams:
                self._finish(stream, "error", f"Generation failed: {exc}")
            if any(s.in_batch for s in streams):
                self._reset_batch()

    def _drop_orphans(self) -> None:
        """Requests whose adapter was removed while they waited or ran."""
        names = self.adapters.names()
        for stream in list(self._streams.values()):
            if stream.request.adapter is not None and stream.request.adapter not in names:
                self._finish(stream, "error", f"The adapter {stream.request.adapter!r} was removed.")

    # -- admission and prefill ------------------------------------------------

    def _admit(self) -> None:
        if self._prefilling is not None or not self._queue:
            return
        if len(self._active) >= self.max_batch_size:
            return
        stream = self._queue.popleft()
        request = stream.request
        stream.started_at = time.perf_counter()
        stream.tokens = list(request.prompt_ids)
        stream.generator = make_generator(request.params.seed)
        stream.detokenizer = IncrementalDetokenizer(self.tokenizer, stream.tokens)
        stream.stops = StopFilter(request.params.stop)
        stream.cache = self._new_cache(1)
        stream.cache.add_empty_row()
        stream.row = 0
        if request.cache_key is not None:
            hit = self._prefixes.lookup(request.cache_key, stream.tokens, request.adapter)
            if hit is not None:
                stream.reused_tokens, layers = hit
                stream.cache.load_prefix(0, layers)
        self._prefilling = stream

    def _prefill_chunk(self) -> None:
        stream = self._prefilling
        assert stream is not None and stream.cache is not None
        done = stream.cache.lengths[0]
        prompt = stream.tokens
        chunk = prompt[done : done + self.prefill_chunk_tokens]
        logits = self._forward(stream.cache, [chunk], [stream.request.adapter], prefill=True)
        if stream.cache.lengths[0] < len(prompt):
            return
        # 1. The prompt is in the cache: join the batch, 2. take the first token.
        self._prefilling = None
        stream.row = self._batch.add_row(stream.cache, 0)
        stream.cache = self._batch
        stream.in_batch = True
        self._active.append(stream)
        assert stream.generator is not None
        token = sample_row(logits[0], stream.request.params, stream.generator)
        self._accept_token(stream, token, self._token_logprobs(logits, [stream], [token])[0])

    # -- decode ---------------------------------------------------------------

    def _decode_step(self) -> None:
        streams = list(self._active)
        logits = self._forward(self._batch, [[s.tokens[-1]] for s in streams], [s.request.adapter for s in streams])
        generated: list[Sequence[int]] | None = None
        if any(s.request.params.penalized for s in streams):
            generated = [s.reply_ids() if s.request.params.penalized else () for s in streams]
        tokens = sample_batch(
            logits,
            [s.request.params for s in streams],
            [s.generator for s in streams],  # type: ignore[misc]
            generated,
        )
        entries = self._token_logprobs(logits, streams, tokens)
        for stream, token, entry in zip(streams, tokens, entries, strict=True):
            self._accept_token(stream, token, entry)

    def _token_logprobs(
        self, logits: torch.Tensor, streams: list[_Stream], tokens: list[int]
    ) -> list[TokenLogprob | None]:
        """Each chosen token's entry for the streams that asked (one batched log-softmax
        over their rows of the raw logits); None for the others, which pay nothing."""
        entries: list[TokenLogprob | None] = [None] * len(streams)
        rows = [row for row, stream in enumerate(streams) if stream.request.params.logprobs is not None]
        if not rows:
            return entries
        picked = logits if len(rows) == len(streams) else logits[rows]
        tops = [streams[row].request.params.logprobs or 0 for row in rows]
        found = token_logprobs(picked, [tokens[row] for row in rows], tops)
        for row, (logprob, top) in zip(rows, found, strict=True):
            alternatives = tuple(self._logprob_entry(token, value) for token, value in top)
            entries[row] = self._logprob_entry(tokens[row], logprob, alternatives)
        return entries

    def _logprob_entry(self, token: int, logprob: float, top: tuple[TokenLogprob, ...] = ()) -> TokenLogprob:
        text, piece = self.pieces.get(token)
        return TokenLogprob(token, text, piece, logprob, top)

    def _forward(
        self,
        cache: RaggedKVCache,
        input_ids: list[list[int]],
        adapters: list[str | None],
        *,
        prefill: bool = False,
    ) -> torch.Tensor:
        """One forward pass; returns the last position's logits ``[rows, vocab]``."""
        ids = torch.tensor(input_ids, dtype=torch.long, device=self.device)
        threads = self.threads if prefill else self._threads_for(len(input_ids))
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if prefill:
            positions, mask = cache.begin_prefill(0, ids.shape[1])
        else:
            positions, mask = cache.begin_decode()
        with torch.inference_mode(), self.adapters.batch(adapters):
            output = self.model(
                input_ids=ids,
                position_ids=positions.to(self.device),
                attention_mask=mask,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        cache.commit()
        return output.logits[:, -1].float().cpu()  # sampling runs on the CPU

    def _accept_token(self, stream: _Stream, token: int, logprob: TokenLogprob | None = None) -> None:
        assert stream.detokenizer is not None and stream.stops is not None
        now = time.perf_counter()
        if stream.first_token_at is None:
            stream.first_token_at = now
        stream.tokens.append(token)
        stream.generated += 1
        self.tokens_generated += 1
        if logprob is not None:
            stream.unsent_logprobs.append(logprob)
        if token in self.eos_token_ids and not stream.request.params.ignore_eos:
            tail = stream.stops.feed(stream.detokenizer.flush()) + stream.stops.finish()
            self._send_text(stream, tail, last=True)
            self._finish(stream, "stop")
            return
        text = stream.stops.feed(stream.detokenizer.push(token))
        self._send_text(stream, text, last=stream.stops.stopped)
        if stream.stops.stopped:
            self._finish(stream, "stop")
        elif stream.generated >= stream.request.params.max_new_tokens or len(stream.tokens) >= self.context_length:
            tail = stream.stops.feed(stream.detokenizer.flush())
            if not stream.stops.stopped:
                tail += stream.stops.finish()
            self._send_text(stream, tail, last=True)
            self._finish(stream, "stop" if stream.stops.stopped else "length")

    def _send_text(self, stream: _Stream, text: str, *, last: bool = False) -> None:
        """Send ``text`` with the log probabilities of the tokens since the last event;
        the ``last`` event before a reply ends also goes out with no text if any are left."""
        if text or (last and stream.unsent_logprobs):
            logprobs = tuple(stream.unsent_logprobs)
            stream.unsent_logprobs.clear()
            self._emit(stream, TokenEvent(stream.request_id, text, stream.generated, logprobs))

    # -- leaving --------------------------------------------------------------

    def _finish(self, stream: _Stream, reason: FinishReason, error: str | None = None) -> None:
        """End ``stream`` exactly once: free its cache row, keep its prefix, tell the caller."""
        if stream.done:
            return
        stream.done = True
        self._streams.pop(stream.request_id, None)
        try:
            if reason in ("stop", "length"):
                self._keep_prefix(stream)
        except Exception:
            logger.exception("Could not keep the prefix of %s", stream.request_id)
        finally:
            self._leave(stream)
            self._emit(stream, self._finish_event(stream, reason, error))

    def _leave(self, stream: _Stream) -> None:
        if stream in self._queue:
            self._queue.remove(stream)
        if self._prefilling is stream:
            self._prefilling = None
        if stream.in_batch:
            stream.in_batch = False
            moved = self._batch.remove_row(stream.row)
            last = self._active.pop()
            if moved is not None:
                self._active[stream.row] = last
                last.row = stream.row
            self._batch.maybe_shrink()
        stream.cache = None

    def _keep_prefix(self, stream: _Stream) -> None:
        key = stream.request.cache_key
        if key is None or stream.cache is None:
            return
        known = stream.cache.lengths[stream.row]
        layers = stream.cache.export_row(stream.row, known)
        self._prefixes.put(key, stream.tokens[:known], stream.request.adapter, layers)

    def _finish_event(self, stream: _Stream, reason: FinishReason, error: str | None) -> FinishEvent:
        now = time.perf_counter()
        return FinishEvent(
            request_id=stream.request_id,
            finish_reason=reason,
            prompt_tokens=len(stream.request.prompt_ids),
            completion_tokens=stream.generated,
            error=error,
            queue_seconds=_elapsed(stream.submitted_at, stream.started_at or now),
            first_token_seconds=_elapsed(stream.submitted_at, stream.first_token_at),
            decode_seconds=_elapsed(stream.first_token_at, now),
            reused_prompt_tokens=stream.reused_tokens,
            completion_ids=tuple(stream.reply_ids()),
        )

    def _emit(self, stream: _Stream, event: EngineEvent) -> None:
        try:
            stream.callback(event)
        except Exception:
            logger.exception("The callback for %s raised", stream.request_id)

    def _abandon_all(self, reason: FinishReason, error: str) -> None:
        with self._wake:
            pending = [payload for kind, payload in self._inbox if kind == "submit"]
            self._inbox.clear()
        for stream in pending + list(self._streams.values()):
            self._finish(stream, reason, error)
        self._reset_batch()

    def _reset_batch(self) -> None:
        for stream in list(self._active):
            if not stream.done:
                self._finish(stream, "error", "The batch was reset after a failure.")
        self._active = []
        self._batch = self._new_cache(self.max_batch_size)

    # -- helpers --------------------------------------------------------------

    def _new_cache(self, rows: int) -> RaggedKVCache:
        layers, kv_heads, head_dim, dtype = self._shape
        return RaggedKVCache(
            num_layers=layers,
            kv_heads=kv_heads,
            head_dim=head_dim,
            dtype=dtype,
            max_rows=rows,
            max_length=self.context_length,
            device=self.device,
        )

    def _threads_for(self, rows: int) -> int:
        return self.threads if rows >= self.parallel_rows else 1

    def _make_batch_invariant(self) -> str:
        """Pick decode attention and linear kernels whose rows come out the same whatever
        else is in the step. Attention: Parley's kernel (kernels.py) where it runs, else
        one batched product over spans of whole tiles where that proves so on this
        machine, else each row over its own keys. Linear layers held in GGUF blocks
        (int4) run on Parley's kernels; the others on oneDNN's with prepacked weights
        (in bf16 when that is the form served), with small steps padded to row counts
        that prove so, else the default kernels padded the same way. Returns how, for
        the log and stats."""
        shapes = invariance.served_shapes(self.model)
        low = torch.bfloat16 if self.weights == "bf16" else None
        if next(self.model.parameters()).device.type != "cpu":
            invariance.install_ragged_attention(self.model)
            if low is not None:
                invariance.install_linears(self.model, invariance.cast_maker(low))
            return "per-row attention only (not checked on this device)"
        _, kv_heads, head_dim, dtype = _cache_shape(self.model)
        teams = {1, self.threads}
        if dtype == torch.float32 and head_dim % 8 == 0 and head_dim <= 256 and kernels.available():
            invariance.install_ragged_attention(self.model, kernel=True)
            attention = "Parley's decode attention kernel"
            if kernels.install_norms(self.model):
                attention += " and RMSNorm kernel"
        else:
            groups = _attention_heads(self.model) // kv_heads
            spans = invariance.spans_are_invariant(kv_heads, groups, head_dim, self.max_batch_size, teams)
            invariance.install_ragged_attention(self.model, spans=spans)
            attention = "attention over whole-tile spans" if spans else "per-row attention"
        in_blocks = _block_layers(self.model)
        if not shapes:
            if not in_blocks:
                return f"{attention} (no float linear layers)"
            self._choose_parallel_rows(None, None)
            return f"{_blocks_text(in_blocks)}, {attention}, decode steps of {self.parallel_rows}+ rows on {self.threads} threads"
        refused = "bf16 weights need oneDNN kernels that give a row the same result in any batch on this CPU."
        head_make = None
        if invariance.onednn_available():
            make = invariance.onednn_maker(self.max_batch_size, low or torch.float32)
            linears = "oneDNN fp32 linears with prepacked weights"
            if low is not None:
                # The vocabulary head stays fp32: rounding the logits to bf16 flips near
                # ties (docs/performance.md, "bf16").
                head_make = invariance.onednn_maker(self.max_batch_size, torch.float32)
                linears = "oneDNN bf16 linears (fp32 vocabulary head) with prepacked weights"
        elif low is not None:
            raise ValueError(refused)
        else:
            make, linears = invariance.default_linear, "default linears"
        safe = self._safe_counts(teams, make, head_make)
        plan = invariance.plan_for(safe, self.max_batch_size, self._threads_for)
        if plan is None and make is not invariance.default_linear:
            if low is not None:
                raise ValueError(refused)
            make, linears = invariance.default_linear, "default linears"
            safe = self._safe_counts(teams, make, None)
            plan = invariance.plan_for(safe, self.max_batch_size, self._threads_for)
        if plan is None:
            logger.warning("No batch-invariant kernels on this CPU: replies may depend on what shares a step.")
            return "none found"
        invariance.install_linears(self.model, make, plan, head_make)
        self._choose_parallel_rows(safe, plan)
        if invariance.needs_padding(plan) or make is invariance.default_linear:
            self.row_padding = plan
            linears += f", small steps padded ({_padding_text(plan)})"
        if in_blocks:
            linears = f"{_blocks_text(in_blocks)}; other layers: {linears}"
        return f"{linears}, {attention}, decode steps of {self.parallel_rows}+ rows on {self.threads} threads"

    def _safe_counts(self, teams: set[int], make: Any, head_make: Any) -> dict[int, set[int]]:
        """Row counts safe on each thread count for every layer as it will be served."""
        if head_make is None:
            shapes = invariance.served_shapes(self.model)
            return invariance.safe_counts(shapes, self.max_batch_size, teams, self.threads, make)
        body = invariance.served_shapes(self.model, head=False)
        head = invariance.served_shapes(self.model) - body
        safe = invariance.safe_counts(body, self.max_batch_size, teams, self.threads, make)
        for team, counts in invariance.safe_counts(head, self.max_batch_size, teams, self.threads, head_make).items():
            safe[team] &= counts
        return safe

    def _choose_parallel_rows(self, safe: dict[int, set[int]] | None, plan: dict[int, int] | None) -> None:
        """Unless the caller chose, time one row through every linear layer on one thread
        and on all of them, and run small decode steps on all threads where that is
        clearly faster (it is on some CPUs and not on others). ``plan`` is changed in
        place to the padding those threads need; the rows stay invariant either way,
        since ``safe`` covers both. Without float linear layers (``safe`` None) only the
        block kernels run, which are the same on any number of threads."""
        if self._parallel_rows_fixed or self.threads == 1:
            return
        layers = [m for m in self.model.modules() if isinstance(m, (torch.nn.Linear, BlockLinear))]
        inputs = {layer.in_features: torch.randn(1, layer.in_features) for layer in layers}
        seconds = {}
        previous = torch.get_num_threads()
        try:
            with torch.inference_mode():
                for team in (1, self.threads):
                    torch.set_num_threads(team)
                    runs = []
                    for _ in range(3):
                        started = time.perf_counter()
                        for layer in layers:
                            layer(inputs[layer.in_features])
                        runs.append(time.perf_counter() - started)
                    seconds[team] = min(runs)
        finally:
            torch.set_num_threads(previous)
        self.row_timing_ms = {team: round(value * 1000, 1) for team, value in seconds.items()}
        if seconds[self.threads] < 0.9 * seconds[1]:
            if safe is None or plan is None:
                self.parallel_rows = 1
                return
            wider = invariance.plan_for(safe, self.max_batch_size, lambda rows: self.threads)
            if wider is not None:
                self.parallel_rows = 1
                plan.clear()
                plan.update(wider)

    def _warm_up(self) -> None:
        """Run a short prefill and a few batched decode steps so lazy setup happens now."""
        cache = self._new_cache(2)
        prompt = [t % self.vocab_size for t in range(1, 33)]
        with self._model_lock:
            for _ in range(2):
                row = cache.add_empty_row()
                single = self._new_cache(1)
                single.add_empty_row()
                self._forward(single, [prompt], [None], prefill=True)
                cache.lengths.pop(row)
                cache.add_row(single, 0)
            for _ in range(3):
                self._forward(cache, [[1], [2]], [None, None])


def in_own_thread(work: Callable[..., T], *args: Any) -> T:
    """Run ``work(*args)`` on a fresh thread and wait for it.

    Torch's CPU kernels run on OpenMP, which keeps a team of worker threads for every
    thread that has started parallel work. Once there are more such workers than cores,
    libgomp's workers stop spin-waiting between parallel regions, and every one of a
    step's ~1,500 small kernels pays for waking them: a 16-row int8 decode step took
    ~40 ms instead of ~29 ms on this project's 2-core CPU (docs/performance.md). So
    the engine's torch work happens either on its model thread or on a thread that
    ends (and takes its OpenMP team with it) -- never on the caller's thread.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-torch-setup") as pool:
        return pool.submit(work, *args).result()


def generate_text(engine: Engine, request: GenerationRequest, timeout: float | None = None) -> tuple[str, FinishEvent]:
    """Submit ``request`` and block until it finishes; return ``(text, finish)``."""
    parts: list[str] = []
    finished: list[FinishEvent] = []
    done = threading.Event()

    def collect(event: EngineEvent) -> None:
        if isinstance(event, TokenEvent):
            parts.append(event.text)
        else:
            finished.append(event)
            done.set()

    engine.submit(request, collect)
    if not done.wait(timeout):
        engine.cancel(request.request_id)
        done.wait()
    return "".join(parts), finished[0]


def _elapsed(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, end - start)


def _block_layers(model: Any) -> list[BlockLinear]:
    return [module for module in model.modules() if isinstance(module, BlockLinear)]


def _blocks_text(layers: list[BlockLinear]) -> str:
    kinds = Counter(layer.kind.upper() for layer in layers)
    return "Parley's AVX2 block kernels (" + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) + ")"


def _padding_text(plan: dict[int, int]) -> str:
    return ", ".join(f"{rows} to {target}" for rows, target in plan.items() if target != rows) or "none"


def _text_config(model: Any) -> Any:
    return model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config


def _attention_heads(model: Any) -> int:
    return int(_text_config(model).num_attention_heads)


def _cache_shape(model: Any) -> tuple[int, int, int, torch.dtype]:
    config = _text_config(model)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    dtype = model.get_input_embeddings().weight.dtype
    return config.num_hidden_layers, kv_heads, head_dim, dtype


def _eos_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    candidates = [getattr(tokenizer, "eos_token_id", None)]
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        candidates.append(generation_config.eos_token_id)
    for candidate in candidates:
        if isinstance(candidate, int):
            ids.add(candidate)
        elif isinstance(candidate, (list, tuple)):
            ids.update(int(c) for c in candidate)
    return frozenset(ids)
