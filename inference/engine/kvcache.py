"""KV caches the scheduler manages itself: a ragged batch cache and an LRU prefix cache.

``RaggedKVCache`` is handed to a transformers decoder as ``past_key_values``. It keeps
one preallocated key and one value tensor per layer, shaped
``[rows, kv_heads, capacity, head_dim]``; row ``i`` holds its own ``lengths[i]`` tokens
at positions ``0..lengths[i]-1``. A decode step writes each row's new key/value at that
row's own length (no concatenation, no re-padding) and the scheduler passes a 4-D
attention mask and per-row ``position_ids`` so rows of different lengths share one
forward pass. Rows leave by swapping the last row into their slot.

``PrefixCache`` keeps the KV of a conversation's last turn, keyed by the request's
``cache_key``, bounded in bytes, least recently used evicted first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from .invariance import SPAN

# Buffers grow in whole spans of decode attention (invariance.SPAN), so its view can
# widen a row to the rounded span.
_ROUND = SPAN


def _round_up(value: int, step: int = _ROUND) -> int:
    return max(step, -(-value // step) * step)


class RaggedKVCache:
    """Per-layer key/value buffers for rows of different lengths.

    Before each forward the scheduler calls :meth:`begin_decode` (one new token per
    row) or :meth:`begin_prefill` (a chunk for a single-row cache); the model then
    calls :meth:`update` once per layer; :meth:`commit` advances the lengths.
    """

    is_compileable = False

    def __init__(
        self,
        *,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        max_rows: int,
        max_length: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.num_layers = num_layers
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.max_rows = max_rows
        self.max_length = max_length
        self.lengths: list[int] = []
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._row_capacity = 0
        self._capacity = 0
        self._write_index = torch.zeros(0, dtype=torch.long, device=self.device)
        self._prefill: tuple[int, int] | None = None
        self._view_length = 0
        self._pending = 0

    # -- size -----------------------------------------------------------------

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def _reallocate(self, row_capacity: int, capacity: int) -> None:
        keep_rows = min(self.rows, row_capacity)
        keep_len = min(self._capacity, capacity)
        shape = (row_capacity, self.kv_heads, capacity, self.head_dim)
        for store in (self.keys, self.values):
            for layer, old in enumerate(store):
                # Write every element once: the kept part is copied, the rest zeroed
                # (masked positions must hold finite numbers, or 0 * NaN spoils a row).
                new = torch.empty(shape, dtype=self.dtype, device=self.device)
                new[:keep_rows, :, :keep_len] = old[:keep_rows, :, :keep_len]
                new[:keep_rows, :, keep_len:] = 0
                new[keep_rows:] = 0
                store[layer] = new
            if not store:
                store.extend(torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.num_layers))
        self._row_capacity = row_capacity
        self._capacity = capacity

    def _ensure(self, rows: int, length: int) -> None:
        if length > self.max_length:
            raise ValueError(f"The KV cache cannot hold {length} tokens (limit {self.max_length}).")
        row_capacity, capacity = self._row_capacity, self._capacity
        if rows > row_capacity:
            row_capacity = min(self.max_rows, max(rows, 2 * row_capacity, 1))
        if length > capacity:
            capacity = min(_round_up(self.max_length), _round_up(max(length, capacity * 3 // 2)))
        if (row_capacity, capacity) != (self._row_capacity, self._capacity):
            self._reallocate(row_capacity, capacity)

    def maybe_shrink(self) -> None:
        """Give memory back when rows left or the longest row is much shorter than the buffer."""
        if not self.lengths:
            self.keys, self.values = [], []
            self._row_capacity = self._capacity = 0
            return
        wanted = _round_up(max(self.lengths) * 3 // 2)
        if wanted * 2 <= self._capacity or self.rows * 2 < self._row_capacity // 2:
            self._reallocate(max(self.rows, self._row_capacity // 2), min(self._capacity, wanted))

    # -- rows -----------------------------------------------------------------

    def add_row(self, source: RaggedKVCache, source_row: int = 0) -> int:
        """Copy one row of ``source`` into a new last row; return its index."""
        length = source.lengths[source_row]
        self._ensure(self.rows + 1, length + 1)
        row = self.rows
        for layer in range(self.num_layers):
            self.keys[layer][row, :, :length] = source.keys[layer][source_row, :, :length]
            self.values[layer][row, :, :length] = source.values[layer][source_row, :, :length]
        self.lengths.append(length)
        return row

    def add_empty_row(self) -> int:
        self._ensure(self.rows + 1, 1)
        self.lengths.append(0)
        return self.rows - 1

    def remove_row(self, row: int) -> int | None:
        """Drop ``row`` by moving the last row into it; return the moved row's old index."""
        last = self.rows - 1
        moved = None
        if row != last:
            length = self.lengths[last]
            for layer in range(self.num_layers):
                self.keys[layer][row, :, :length] = self.keys[layer][last, :, :length]
                self.values[layer][row, :, :length] = self.values[layer][last, :, :length]
            self.lengths[row] = length
            moved = last
        self.lengths.pop()
        return moved

    def load_prefix(self, row: int, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Fill ``row`` with stored ``(key, value)`` tensors ``[kv_heads, n, head_dim]``."""
        length = layers[0][0].shape[1]
        self._ensure(self.rows, length + 1)
        for layer, (key, value) in enumerate(layers):
            self.keys[layer][row, :, :length] = key
            self.values[layer][row, :, :length] = value
        self.lengths[row] = length

    def export_row(self, row: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copies of the first ``length`` positions of ``row``, per layer."""
        return [
            (self.keys[layer][row, :, :length].clone(), self.values[layer][row, :, :length].clone())
            for layer in range(self.num_layers)
        ]

    # -- one forward pass -----------------------------------------------------

    def begin_decode(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepare for one new token per row; return ``(position_ids, attention_mask)``."""
        rows = self.rows
        self._ensure(rows, max(self.lengths) + 1)
        positions = torch.tensor(self.lengths, dtype=torch.long)
        # Flat row indices into a layer buffer viewed as [rows * heads * capacity, head_dim]:
        # index_copy_ of whole head_dim rows is far cheaper than advanced-index assignment.
        heads = torch.arange(self.kv_heads)
        slots = (torch.arange(rows)[:, None] * self.kv_heads + heads[None, :]) * self._capacity
        self._write_index = (slots + positions[:, None]).flatten().to(self.device)
        self._prefill = None
        self._view_length = max(self.lengths) + 1
        self._pending = 1
        allowed = torch.arange(self._view_length)[None, :] <= positions[:, None]
        return positions[:, None], self._additive_mask(allowed[:, None, None, :])

    def begin_prefill(self, row: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepare for ``count`` new tokens on one row (a batch of one)."""
        start = self.lengths[row]
        self._ensure(self.rows, start + count)
        self._prefill = (row, start)
        self._view_length = start + count
        self._pending = count
        positions = torch.arange(start, start + count)
        allowed = torch.arange(self._view_length)[None, :] <= positions[:, None]
        return positions[None, :], self._additive_mask(allowed[None, None, :, :])

    def _additive_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(allowed.shape, dtype=self.dtype)
        return mask.masked_fill_(~allowed, torch.finfo(self.dtype).min).to(self.device)

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        cache_kwargs: dict | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self._prefill is not None:
            row, start = self._prefill
            end = start + key_states.shape[2]
            keys[row, :, start:end] = key_states[0]
            values[row, :, start:end] = value_states[0]
            return keys[row : row + 1, :, :end], values[row : row + 1, :, :end]
        flat = (-1, self.head_dim)
        keys.view(flat).index_copy_(0, self._write_index, key_states.reshape(flat))
        values.view(flat).index_copy_(0, self._write_index, value_states.reshape(flat))
        rows = self.rows
        return keys[:rows, :, : self._view_length], values[:rows, :, : self._view_length]

    def commit(self) -> None:
        """Advance the lengths after a successful forward pass."""
        if self._prefill is not None:
            self.lengths[self._prefill[0]] += self._pending
        else:
            self.lengths = [length + 1 for length in self.lengths]
        self._prefill = None
        self._pending = 0

    # Methods transformers may ask a cache for.
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return max(self.lengths, default=0)

    def __len__(self) -> int:
        return self.num_layers


@dataclass
class PrefixEntry:
    tokens: list[int]
    adapter: str | None
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    nbytes: int


def common_prefix_length(a: list[int], b: list[int]) -> int:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


class PrefixCache:
    """KV of past turns by ``cache_key``, at most ``capacity_bytes``, LRU eviction."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[str, PrefixEntry] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(
        self,
        key: str,
        tokens: list[int],
        adapter: str | None,
        layers: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> bool:
        self.discard(key)
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if nbytes > self.capacity_bytes or not tokens:
            return False
        while self.nbytes + nbytes > self.capacity_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= evicted.nbytes
        self._entries[key] = PrefixEntry(list(tokens), adapter, layers, nbytes)
        self.nbytes += nbytes
        return True

    def discard(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.nbytes -= entry.nbytes

    def lookup(
        self, key: str, prompt: list[int], adapter: str | None
    ) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]]] | None:
        """The reusable KV for ``prompt``: ``(n_tokens, layers sliced to n_tokens)``.

        At least one prompt token is always left to prefill, since its logits give the
        first new token.
        """
        entry = self._entries.get(key)
        if entry is None or entry.adapter != adapter:
            return None
        self._entries.move_to_end(key)
        reuse = min(common_prefix_length(entry.tokens, prompt), len(prompt) - 1)
        if reuse <= 0:
            return None
        return reuse, [(k[:, :reuse], v[:, :reuse]) for k, v in entry.layers]
