"""Markdown to safe HTML for messages: rendered once on the server, then sanitized."""

from __future__ import annotations

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "strong",
    "em",
    "del",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "span",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "span": {"class"}, "th": {"align"}, "td": {"align"}}


# Longer code blocks are shown plain: highlighting is for reading, not worth the time there.
HIGHLIGHT_MAX_CHARS = 20_000
CODE_COPY_BUTTON = '<div class="code-block"><button type="button" class="code-copy" data-copy-code>Copy</button><pre>'


def _highlight(code: str, language: str, attrs: str) -> str:
    """Pygments token spans for a fenced block with a known language; "" leaves it plain."""
    if not language or len(code) > HIGHLIGHT_MAX_CHARS:
        return ""
    try:
        lexer = get_lexer_by_name(language.split()[0], stripnl=False, ensurenl=False)
    except ClassNotFound:
        return ""
    return str(highlight(code, lexer, HtmlFormatter(nowrap=True)))


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # Raw HTML in the source is shown as text, never passed through.
    options = {"html": False, "linkify": False, "highlight": _highlight}
    return MarkdownIt("commonmark", options).enable("table").enable("strikethrough")


def render_markdown(text: str) -> str:
    """Return sanitized HTML for ``text``: code highlighted, each block with a copy button.

    The button is added after sanitizing: nh3 has escaped every ``<pre>`` the text
    itself contained, so only real code blocks match.
    """
    html = _markdown().render(text)
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return clean.replace("<pre>", CODE_COPY_BUTTON).replace("</pre>", "</pre></div>")
