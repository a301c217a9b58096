"""Load test: many people holding conversations open and chatting at once.

    python -m bench.load --url http://127.0.0.1:8000 --sockets 500 --streams 100
    python -m bench.load --start synthetic --sockets 500 --streams 100   # starts its own server
    python -m bench.load --start bundled --sockets 16 --streams 16 --max-tokens 64

Simulated users sign up over HTTP, open one websocket per conversation (the
``websockets`` library), and ``--streams`` of those conversations send a message at
the same moment. It reports the sockets held, replies completed, first-token latency
(p50/p95, from send to the first streamed text), delivered tokens/s and every error,
as a table and one JSON line. ``--start`` runs daphne on a fresh SQLite database with
the synthetic backend (filler text at a fixed pace, measuring the web tier alone) or
the bundled model. Requests go to loopback only and the run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.client import Browser, ChatSocket
from bench.server import manage, start_site

ROOT = Path(__file__).resolve().parent.parent
CONVERSATIONS_PER_USER = 10


@dataclass
class Result:
    sockets_wanted: int
    streams_wanted: int
    sockets_held: int = 0
    completed: int = 0
    first_token: list[float] = field(default_factory=list)
    tokens: int = 0
    stream_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "sockets_held": self.sockets_held,
            "sockets_wanted": self.sockets_wanted,
            "replies_completed": self.completed,
            "streams_wanted": self.streams_wanted,
            "first_token_p50_s": round(percentile(self.first_token, 50), 3),
            "first_token_p95_s": round(percentile(self.first_token, 95), 3),
            "delivered_tokens_per_s": round(self.tokens / self.stream_seconds, 1) if self.stream_seconds else 0.0,
            "errors": len(self.errors),
        }


def percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@contextmanager
def local_server(backend: str, tokens_per_second: float) -> Iterator[str]:
    """A throwaway Parley on loopback: fresh SQLite, the chosen backend."""
    workdir = Path(tempfile.mkdtemp(prefix="parley-load-"))
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "PARLEY_STATIC_ROOT": str(workdir / "static"),
        "INFERENCE_MODEL": "bundled",
        "INFERENCE_BACKEND": "synthetic" if backend == "synthetic" else "transformers",
        "INFERENCE_SYNTHETIC_TOKENS_PER_SECOND": str(tokens_per_second),
        "CHAT_MESSAGES_PER_MINUTE": "1000",
        "CHAT_MAX_CONCURRENT_STREAMS": "100",
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    manage(env, "prepare_model")
    url, server = start_site(workdir, env)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


async def prepare(url: str, users: int, per_user: int, max_tokens: int, model: str) -> list[tuple[Browser, str]]:
    """Sign users up and create their conversations (in threads: plain HTTP)."""

    def one(index: int) -> list[tuple[Browser, str]]:
        browser = Browser(url)
        browser.sign_up(f"load{index}x{int(time.time() * 1000) % 10**8}")
        return [(browser, browser.new_chat(model_name=model, max_tokens=str(max_tokens))) for _ in range(per_user)]

    batches = await asyncio.gather(*(asyncio.to_thread(one, index) for index in range(users)))
    return [chat for batch in batches for chat in batch]


async def hold(chat: tuple[Browser, str], url: str, result: Result, opened: list[ChatSocket]) -> None:
    browser, conversation_id = chat
    socket = ChatSocket(browser, url, conversation_id)
    try:
        await socket.__aenter__()
    except Exception as exc:
        result.errors.append(f"connect: {exc!r}")
        return
    opened.append(socket)


async def stream(socket: ChatSocket, result: Result, timeout: float) -> None:
    try:
        await socket.send("Tell me about the sea in a few sentences.")
        message_id = await socket.until_finished(timeout=timeout)
    except Exception as exc:
        result.errors.append(f"stream: {exc!r}")
        return
    if socket.finished[message_id] != "complete":
        result.errors.append(f"reply ended {socket.finished[message_id]}")
        return
    result.completed += 1
    result.tokens += socket.deltas
    if socket.first_delta_at is not None and socket.sent_at is not None:
        result.first_token.append(socket.first_delta_at - socket.sent_at)


async def run(url: str, sockets: int, streams: int, max_tokens: int, model: str, timeout: float) -> Result:
    result = Result(sockets_wanted=sockets, streams_wanted=streams)
    users = max(1, -(-sockets // CONVERSATIONS_PER_USER))
    chats = (await prepare(url, users, CONVERSATIONS_PER_USER, max_tokens, model))[:sockets]
    opened: list[ChatSocket] = []
    for start in range(0, len(chats), 50):  # open in waves, as people arrive
        await asyncio.gather(*(hold(chat, url, result, opened) for chat in chats[start : start + 50]))
    result.sockets_held = sum(1 for socket in opened if socket.socket.state.name == "OPEN")
    if opened:  # one reply first, in a chat of its own, so timing excludes loading the model
        browser = opened[-1].browser
        conversation_id = await asyncio.to_thread(browser.new_chat, model_name=model, max_tokens=str(max_tokens))
        warm = ChatSocket(browser, url, conversation_id)
        await stream(await warm.__aenter__(), Result(0, 0), timeout)
        await warm.__aexit__(None, None, None)
    began = time.monotonic()
    await asyncio.gather(*(stream(socket, result, timeout) for socket in opened[:streams]))
    result.stream_seconds = time.monotonic() - began
    result.sockets_held = min(result.sockets_held, sum(1 for s in opened if s.socket.state.name == "OPEN"))
    await asyncio.gather(*(socket.__aexit__(None, None, None) for socket in opened), return_exceptions=True)
    return result


def report(result: Result, label: str) -> None:
    summary = result.summary()
    print(f"\nParley load test: {label}")
    print(f"{'figure':<28}{'value':>14}")
    for key, value in summary.items():
        print(f"{key:<28}{value!s:>14}")
    for error in result.errors[:10]:
        print("error:", error)
    print(json.dumps({"bench": "load", "label": label, **summary}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running Parley (default: start one with --start)")
    parser.add_argument("--start", choices=["synthetic", "bundled"], default="synthetic")
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--tokens-per-second", type=float, default=20.0, help="synthetic pace per stream")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one reply may take")
    args = parser.parse_args()
    label = f"{args.sockets} sockets, {args.streams} streams, " + (args.url or f"{args.start} backend")

    async def go(url: str) -> Result:
        return await run(url, args.sockets, args.streams, args.max_tokens, args.model, args.timeout)

    if args.url:
        result = asyncio.run(go(args.url))
    else:
        with local_server(args.start, args.tokens_per_second) as url:
            result = asyncio.run(go(url))
    report(result, label)


if __name__ == "__main__":
    main()
