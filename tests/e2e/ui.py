"""Helpers for the browser tests of the chat's look and feel (issue 15): a Parley server on
the synthetic engine (scripted text at a set pace, no model), and a WCAG contrast check
run inside the page."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.conftest import ROOT, server_env, start_server

_names = itertools.count()


def synthetic_server(tmp: Path, text: str = "", tokens_per_second: float = 40, **extra: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (url, env) of a server whose replies are ``text`` cut in 5-character pieces,
    once: a new chat's token limit is the number of pieces (the engine would repeat them)."""
    if text:
        extra.setdefault("INFERENCE_DEFAULT_MAX_TOKENS", str(-(-len(text) // 5)))
    env = server_env(
        tmp,
        INFERENCE_BACKEND="synthetic",
        INFERENCE_SYNTHETIC_TEXT=text,
        INFERENCE_SYNTHETIC_TOKENS_PER_SECOND=str(tokens_per_second),
        **extra,
    )
    url, process = start_server(tmp, env)
    yield url, env
    process.terminate()
    process.wait(timeout=20)


def manage_shell(env: dict[str, str], code: str) -> str:
    """Run ``code`` in ``manage.py shell`` against the server's database; its output."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def new_user(page, base_url: str) -> str:
    """Sign up a fresh user in ``page``; their username."""
    name = f"ui{next(_names)}x{int(time.time() * 1000) % 10**8}"
    page.goto(f"{base_url}/accounts/signup/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill("a long pass phrase 42")
    page.get_by_label("Password confirmation").fill("a long pass phrase 42")
    page.get_by_role("button", name="Sign up").click()
    page.locator(".app").wait_for()
    return name


# Every visible piece of text under ROOT: its colour against the background it is drawn on
# (the nearest ancestor with an opaque one; SVG text by its fill), and the WCAG 2 contrast
# ratio. Returns those under 4.5:1 (3:1 for large text). Disabled controls are exempt, as in
# WCAG; so are the syntax-highlighted code blocks, whose colours are Pygments' github-dark.
CONTRAST_JS = """(root) => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const over = (top, under) => { const a = top[3]; return [0, 1, 2].map(i => top[i] * a + under[i] * (1 - a)).concat([1]); };
  function background(el) {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let colour = [255, 255, 255, 1];
    if (layers.length && layers[layers.length - 1][3] >= 1) colour = layers.pop();
    while (layers.length) colour = over(layers.pop(), colour);
    return colour;
  }
  const failures = []; let checked = 0;
  const scope = document.querySelector(root) || document.body;
  for (const el of scope.querySelectorAll("*")) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    if (el.closest(".visually-hidden, pre, [disabled], option, script, style, title")) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.display === "none") continue;
    let faded = false; for (let n = el; n; n = n.parentElement) if (parseFloat(getComputedStyle(n).opacity) < 1) faded = true;
    if (faded) continue;
    const svg = el instanceof SVGElement;
    const fg = parse(svg ? style.fill : style.color); if (!fg) continue;
    const bg = background(svg ? el.ownerSVGElement || el : el);
    const text = over(fg, bg);
    const [a, b] = [lum(text), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    checked += 1;
    if (ratio < need) failures.push(`${el.tagName.toLowerCase()}.${el.className && el.className.baseVal !== undefined ? el.className.baseVal : el.className} "${el.textContent.trim().slice(0, 40)}" ${style.color}/${svg ? style.fill : ""} on rgb(${bg.slice(0, 3).map(Math.round)}) = ${ratio.toFixed(2)} < ${need}`);
  }
  return {checked, failures};
}"""


def contrast_failures(page, root: str = "body") -> list[str]:
    result = page.evaluate(CONTRAST_JS, root)
    assert result["checked"] > 5, f"the contrast check found almost no text under {root}"
    return list(result["failures"])


def background_luminance(page, selector: str = "body") -> float:
    """0 (black) to 1 (white): the relative luminance of ``selector``'s background colour."""
    return float(
        page.locator(selector).first.evaluate(
            """el => { const p = getComputedStyle(el).backgroundColor.match(/[\\d.]+/g).map(Number);
                 const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
                 return 0.2126 * f(p[0]) + 0.7152 * f(p[1]) + 0.0722 * f(p[2]); }"""
        )
    )
