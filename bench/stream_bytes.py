"""Bytes a browser receives for one streaming reply, on a server of this checkout or another.

    python -m bench.stream_bytes                     # this checkout
    python -m bench.stream_bytes --root /tmp/parley-before --label before
    python -m bench.stream_bytes --tokens-per-second 30 --json

It starts daphne from ``--root`` (a checkout of Parley; default this one) on a fresh SQLite
database with the synthetic engine writing a fixed sample reply (5 characters a token, at
``--tokens-per-second``), signs up over HTTP, and for each sample (prose; Markdown with a
list, a table and a little code; one long code block) sends one message on the conversation's websocket and counts
every frame received until the reply's finished fragment: frames, bytes (UTF-8), and the
bytes of that last fragment, which is the same whatever the streaming protocol. Compare two
checkouts (a ``git worktree`` of the commit before a change) to see what a change costs;
results go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

from bench.client import Browser
from bench.server import ROOT, start_site, synthetic_site_env

PROSE = (
    "Rivers shape the land slowly. Over thousands of years, water carries sand and stones "
    "downstream, cutting valleys and building plains where it slows down. Floods spread rich "
    "soil across the fields, which is why so many towns grew up along their banks. "
) * 8
MARKDOWN = (
    "## How to bake bread\n\nYou need only a few things:\n\n- 500 g flour\n- 350 ml water\n"
    "- 10 g salt\n- 5 g yeast\n\n| Step | Time |\n|---|---|\n| Mix | 10 min |\n| Rise | 2 h |\n"
    "| Bake | 40 min |\n\n```python\ndef knead(dough, minutes=10):\n    for minute in range(minutes):\n"
    "        dough.fold()\n    return dough\n```\n\n"
    + "Let the loaf cool before cutting it, or the crumb turns gummy. " * 14
)
CODE = "Here is the module:\n\n```python\n" + "".join(
    f"def step_{n}(values: list[int]) -> list[int]:\n    return [value * {n} for value in values if value > {n}]\n\n"
    for n in range(16)
) + "```\n"
SAMPLES = {"prose": PROSE, "markdown": MARKDOWN, "code": CODE}
FINISHED = re.compile(r'<article class="msg msg-assistant[^"]*" id="m-[0-9a-f-]+" data-status="complete" hx-swap-oob="true">')


def start(root: Path, workdir: Path, text: str, tokens_per_second: float) -> tuple[str, subprocess.Popen[bytes]]:
    return start_site(workdir, synthetic_site_env(workdir, text, tokens_per_second), root=root)


async def one_reply(url: str) -> dict[str, float]:
    browser = Browser(url)
    browser.sign_up(f"bytes{secrets.token_hex(4)}")
    conversation_id = browser.new_chat()
    headers = {"Cookie": f"sessionid={browser.cookie('sessionid')}", "Origin": url}
    async with connect(url.replace("http://", "ws://") + f"/ws/c/{conversation_id}/", additional_headers=headers) as socket:
        await socket.send(json.dumps({"action": "send", "message": "Tell me about it."}))
        frames, total, started = 0, 0, time.monotonic()
        while True:
            frame = str(await asyncio.wait_for(socket.recv(), 60))
            frames, total = frames + 1, total + len(frame.encode())
            if FINISHED.search(frame):
                return {"frames": frames, "bytes": total, "final_bytes": len(frame.encode()), "seconds": time.monotonic() - started}


def measure(root: Path, tokens_per_second: float) -> dict[str, dict[str, float]]:
    results = {}
    for name, text in SAMPLES.items():
        with tempfile.TemporaryDirectory() as workdir:
            url, process = start(root, Path(workdir), text, tokens_per_second)
            try:
                results[name] = {"chars": len(text), "tokens": -(-len(text) // 5), **asyncio.run(one_reply(url))}
            finally:
                process.terminate()
                process.wait(timeout=20)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the Parley checkout whose server to measure")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--tokens-per-second", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = parser.parse_args()
    results = measure(args.root.resolve(), args.tokens_per_second)
    if args.json:
        print(json.dumps({"label": args.label, "tokens_per_second": args.tokens_per_second, "results": results}))
        return
    print(f"{args.label}: synthetic engine, {args.tokens_per_second:g} tokens/s, 5 characters a token")
    print(f"{'sample':<10}{'chars':>7}{'tokens':>8}{'frames':>8}{'bytes':>9}{'bytes/token':>13}{'final':>8}")
    for name, row in results.items():
        per_token = row["bytes"] / row["tokens"]
        print(f"{name:<10}{row['chars']:>7}{row['tokens']:>8}{row['frames']:>8}{row['bytes']:>9}{per_token:>13.1f}{row['final_bytes']:>8}")


if __name__ == "__main__":
    main()
