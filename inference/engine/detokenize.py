"""Turning generated token ids into safe text deltas, with stop strings.

``IncrementalDetokenizer`` decodes a sliding window of recent tokens and only releases
text once it no longer ends in an incomplete multibyte character (U+FFFD), so deltas
are always valid text and join up to ``tokenizer.decode`` of the whole sequence (the
window keeps a few earlier tokens so tokenizers that add or drop a leading space see
the same context as a full decode).

``StopFilter`` finds stop strings across token boundaries: text that could be the
start of a stop string is held back until it is clearly not one.

``TokenPieces`` gives each token on its own: its exact bytes and a text for it, which
log probabilities report per token whatever the detokenizer held back.
"""

from __future__ import annotations

import re
from typing import Any

_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, prompt_tail: list[int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = list(prompt_tail or [])[-_CONTEXT_TOKENS:]
        self.prefix_offset = 0
        self.read_offset = len(self.tokens)
        self._prompt_len = len(self.tokens)
        self.emitted = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        """Add one token; return the new text it completes (possibly empty)."""
        self.tokens.append(token_id)
        prefix_text = self._decode(self.tokens[self.prefix_offset : self.read_offset])
        full_text = self._decode(self.tokens[self.prefix_offset :])
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            delta = full_text[len(prefix_text) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.tokens)
            self.emitted += delta
            return delta
        return ""

    def flush(self) -> str:
        """At the end: whatever a full decode has beyond what was already released."""
        full_text = self._decode(self.tokens[self._prompt_len :])
        if full_text.startswith(self.emitted) and len(full_text) > len(self.emitted):
            delta = full_text[len(self.emitted) :]
            self.emitted = full_text
            return delta
        return ""


class StopFilter:
    """Holds back text that might begin a stop string; reports when one completes."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(stop for stop in stops if stop)
        self.text = ""
        self.released = 0
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Add generated text; return the part that is safe to show now."""
        if self.stopped or not delta:
            return ""
        searched_from = len(self.text)
        self.text += delta
        cut = self._find_stop(searched_from)
        if cut is not None:
            self.stopped = True
            return self._release(cut)
        return self._release(len(self.text) - self._held_back())

    def finish(self) -> str:
        """No more text is coming: release what was held back."""
        if self.stopped:
            return ""
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        if end <= self.released:
            return ""
        out = self.text[self.released : end]
        self.released = end
        return out

    def _find_stop(self, searched_from: int) -> int | None:
        found = None
        for stop in self.stops:
            index = self.text.find(stop, max(0, searched_from - len(stop) + 1))
            if index != -1 and (found is None or index < found):
                found = index
        return found

    def _held_back(self) -> int:
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, character to byte: printable bytes stand for
    themselves, the others for the characters from U+0100 on, in order."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)}
    alphabet: dict[str, int] = {}
    shifted = 0
    for byte in range(256):
        if byte in printable:
            alphabet[chr(byte)] = byte
        else:
            alphabet[chr(256 + shifted)] = byte
            shifted += 1
    return alphabet


_BYTE_LEVEL = _byte_level_alphabet()
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class TokenPieces:
    """Each token's text and exact bytes (looked up once per id).

    A byte-level BPE token (GPT-2, SmolLM, Llama 3) spells its bytes in GPT-2's
    alphabet; a sentencepiece token writes a space as ``\u2581`` and a lone byte as
    ``<0xNN>``; added and special tokens are their names. A piece that is not whole UTF-8
    (part of a character split across tokens) reads as ``\\xNN`` escapes, as OpenAI's
    log probabilities show it.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._named = {int(token_id) for token_id in getattr(tokenizer, "added_tokens_decoder", {})}
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_level = type(decoder).__name__ == "ByteLevel"
        self._known: dict[int, tuple[str, bytes]] = {}

    def get(self, token_id: int) -> tuple[str, bytes]:
        """``(text, bytes)`` of one token."""
        found = self._known.get(token_id)
        if found is None:
            found = self._known[token_id] = self._look_up(token_id)
        return found

    def _look_up(self, token_id: int) -> tuple[str, bytes]:
        name = self.tokenizer.convert_ids_to_tokens(token_id) or ""
        if token_id in self._named:
            return name, name.encode()
        piece = self._bytes(name)
        return piece.decode("utf-8", errors="backslashreplace"), piece

    def _bytes(self, name: str) -> bytes:
        if self._byte_level and all(char in _BYTE_LEVEL for char in name):
            return bytes(_BYTE_LEVEL[char] for char in name)
        lone_byte = _BYTE_TOKEN.fullmatch(name)
        if lone_byte:
            return bytes([int(lone_byte.group(1), 16)])
        return name.replace("\u2581", " ").encode()
