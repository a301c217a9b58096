"""Load test: many people holding conversations open and chatting at once.

    python -m bench.load --url http://127.0.0.1:8000 --sockets 500 --streams 100
    python -m bench.load --start synthetic --sockets 500 --streams 100   # starts its own server
    python -m bench.load --start bundled --sockets 16 --streams 16 --max-tokens 64
    python -m bench.load --start bundled --burst 24                      # fair use, see below

Simulated users sign up over HTTP, open one websocket per conversation (the
``websockets`` library), and ``--streams`` of those conversations send a message at
the same moment. It reports the sockets held, replies completed, first-token latency
(p50/p95, from send to the first streamed text), delivered tokens/s and every error,
as a table and one JSON line. ``--start`` runs daphne on a fresh SQLite database with
the synthetic backend (filler text at a fixed pace, measuring the web tier alone) or
the bundled model. Requests go to loopback only and the run is bounded in time.

``--burst N`` measures fair use instead: other people's first-token time in chat, one
chat at a time, first on an idle server and then while one API key fires N long
streaming completions at once (``--burst-tokens`` each). It reports both medians, their
ratio (the target is at most 2) and how many of the burst were admitted or refused
(429: the key's owner already runs ``INFERENCE_MAX_STREAMS_PER_USER`` generations).
``--streams-per-user`` sets that cap on the server it starts (lift it to see the
burst without fair use). With ``--url``, pass ``--api-key`` (the burst's key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
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


# Many simulated people chat from one address and run many replies each: the limits
# that keep real people fair would refuse the load test itself.
LOAD_LIMITS = {
    "CHAT_MAX_CONCURRENT_STREAMS": "100",
    "INFERENCE_MAX_STREAMS_PER_USER": "100",
    "INFERENCE_MAX_QUEUED_REQUESTS": "10000",
}


@contextmanager
def local_server(backend: str, tokens_per_second: float, **overrides: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A throwaway Parley on loopback: fresh SQLite, the chosen backend; its URL and environment."""
    workdir = Path(tempfile.mkdtemp(prefix="parley-load-"))
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "PARLEY_STATIC_ROOT": str(workdir / "static"),
        "INFERENCE_MODEL": "bundled",
        "INFERENCE_BACKEND": "synthetic" if backend == "synthetic" else "transformers",
        "INFERENCE_SYNTHETIC_TOKENS_PER_SECOND": str(tokens_per_second),
        "CHAT_MESSAGES_PER_MINUTE": "1000",
        "PARLEY_SIGNUPS_PER_HOUR": "100000",
        "PARLEY_SECRET_KEY": os.environ.get("PARLEY_SECRET_KEY") or secrets.token_urlsafe(50),
        "PARLEY_LOG_LEVEL": "WARNING",
        **overrides,
    }
    manage(env, "prepare_model")
    url, server = start_site(workdir, env)
    try:
        yield url, env
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


# -- Fair use: a burst of long API streams from one key ------------------------------


class BurstStream(threading.Thread):
    """One long streaming completion from the burst's key, read until told to stop."""

    def __init__(self, url: str, key: str, *, model: str, max_tokens: int) -> None:
        super().__init__(daemon=True)
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "Write a very long story about the sea."}],
            "max_tokens": max_tokens,
            "temperature": 1.0,
            "stream": True,
        }
        self.request = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        self.status: int | None = None
        self.writing = threading.Event()  # refused, or its first text arrived
        self.stopping = False

    def run(self) -> None:
        try:
            with urllib.request.urlopen(self.request, timeout=600) as response:
                self.status = response.status
                for line in response:
                    if b'"content":"' in line and b'"content":""' not in line:
                        self.writing.set()
                    if self.stopping:
                        return
        except urllib.error.HTTPError as error:
            self.status = error.code
        except OSError as error:
            self.status = -1
            print("burst stream failed:", error)
        finally:
            self.writing.set()


async def first_token_alone(browser: Browser, url: str, model: str, timeout: float) -> float:
    """One chat turn in a new conversation: seconds from send to its first streamed text."""
    conversation_id = await asyncio.to_thread(browser.new_chat, model_name=model, max_tokens="32")
    socket = await ChatSocket(browser, url, conversation_id).__aenter__()
    try:
        await socket.send("Say hello in one sentence.")
        await socket.until_finished(timeout=timeout)
    finally:
        await socket.__aexit__(None, None, None)
    assert socket.first_delta_at is not None and socket.sent_at is not None, "the reply streamed no text"
    return socket.first_delta_at - socket.sent_at


async def first_tokens(people: list[Browser], url: str, model: str, rounds: int, timeout: float) -> list[float]:
    return [await first_token_alone(person, url, model, timeout) for _ in range(rounds) for person in people]


async def run_burst(
    url: str, key: str, *, burst: int, burst_tokens: int, people: int, model: str, timeout: float
) -> dict[str, object]:
    """1. Sign other people up. 2. Their first-token times on the idle server (after a
    warm-up turn). 3. The burst: wait until every stream writes or is refused (30 s at
    most: some may wait behind the batch). 4. Their first-token times again while it
    runs. 5. Stop the burst."""
    others = [Browser(url) for _ in range(people)]
    stamp = int(time.time() * 1000) % 10**8
    await asyncio.gather(*(asyncio.to_thread(b.sign_up, f"other{i}x{stamp}") for i, b in enumerate(others)))
    await first_token_alone(others[0], url, model, timeout)
    idle = await first_tokens(others, url, model, 2, timeout)
    streams = [BurstStream(url, key, model=model, max_tokens=burst_tokens) for _ in range(burst)]
    for stream in streams:
        stream.start()
    # Every stream writing or refused; beyond the batch, some wait in the queue instead.
    settle = time.monotonic() + 30
    await asyncio.gather(*(asyncio.to_thread(s.writing.wait, max(0, settle - time.monotonic())) for s in streams))
    admitted = sum(1 for stream in streams if stream.status == 200)
    queued = sum(1 for stream in streams if not stream.writing.is_set())
    loaded = await first_tokens(others, url, model, 2, timeout)
    still_writing = sum(1 for stream in streams if stream.status == 200 and stream.is_alive())
    for stream in streams:
        stream.stopping = True
    return {
        "burst": burst,
        "admitted": admitted,
        "queued_behind_the_batch": queued,
        "refused_429": sum(1 for stream in streams if stream.status == 429),
        "refused_503": sum(1 for stream in streams if stream.status == 503),
        "still_writing_after": still_writing,
        "idle_first_token_p50_s": round(statistics.median(idle), 3),
        "burst_first_token_p50_s": round(statistics.median(loaded), 3),
        "burst_first_token_max_s": round(max(loaded), 3),
        "ratio_p50": round(statistics.median(loaded) / statistics.median(idle), 2),
        "ratio_max_to_idle_p50": round(max(loaded) / statistics.median(idle), 2),
    }


def report_burst(summary: dict[str, object], label: str) -> None:
    print(f"\nParley fair-use burst: {label}")
    for key, value in summary.items():
        print(f"{key:<28}{value!s:>14}")
    print(json.dumps({"bench": "load-burst", "label": label, **summary}))


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
    parser.add_argument("--burst", type=int, default=0, help="fair use: N long API streams from one key")
    parser.add_argument("--burst-tokens", type=int, default=1024, help="max_tokens of each burst stream")
    parser.add_argument("--people", type=int, default=3, help="fair use: other people measured")
    parser.add_argument("--streams-per-user", help="fair use: INFERENCE_MAX_STREAMS_PER_USER of the started server")
    parser.add_argument("--api-key", help="fair use with --url: the burst's key")
    args = parser.parse_args()
    if args.burst:
        burst_main(args)
        return
    label = f"{args.sockets} sockets, {args.streams} streams, " + (args.url or f"{args.start} backend")

    async def go(url: str) -> Result:
        return await run(url, args.sockets, args.streams, args.max_tokens, args.model, args.timeout)

    if args.url:
        result = asyncio.run(go(args.url))
    else:
        with local_server(args.start, args.tokens_per_second, **LOAD_LIMITS) as (url, _):
            result = asyncio.run(go(url))
    report(result, label)


def burst_main(args: argparse.Namespace) -> None:
    cap = {"INFERENCE_MAX_STREAMS_PER_USER": args.streams_per_user} if args.streams_per_user else {}
    label = f"{args.burst} streams of up to {args.burst_tokens} tokens from one key, " + (
        args.url or f"{args.start} backend, per-user cap {args.streams_per_user or 'default'}"
    )

    def go(url: str, key: str) -> dict[str, object]:
        options = {"burst_tokens": args.burst_tokens, "people": args.people, "model": args.model}
        return asyncio.run(run_burst(url, key, burst=args.burst, timeout=args.timeout, **options))

    if args.url:
        summary = go(args.url, args.api_key)
    else:
        with local_server(args.start, args.tokens_per_second, **cap) as (url, env):
            Browser(url).sign_up("burst")
            summary = go(url, manage(env, "create_api_key", "burst").strip())
    report_burst(summary, label)


if __name__ == "__main__":
    main()
