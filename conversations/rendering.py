"""Markdown to safe HTML for messages: rendered once on the server, then sanitized.

Math (``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``) becomes MathML here, on the
server: browsers draw it without a script, so it fits the content security policy. Each
formula keeps its LaTeX in a MathML ``<annotation>``, which the page's copy handler puts
back in place of the drawn formula (static/js/chat.js).
"""

from __future__ import annotations

import html
import logging
from functools import lru_cache
from typing import Any

import nh3
from latex2mathml.converter import convert as latex_to_mathml
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.texmath import texmath_plugin
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
# MathML as latex2mathml writes it: presentation elements only (no maction, no href).
MATHML_TAGS = {
    "math", "semantics", "annotation", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msup", "msub",
    "msubsup", "mfrac", "msqrt", "mroot", "mover", "munder", "munderover", "mtable", "mtr", "mtd", "mstyle",
    "menclose", "mpadded", "mphantom", "merror", "mmultiscripts", "mprescripts", "none",
}  # fmt: skip
MATHML_ATTRIBUTES = {
    "math": {"display"},
    "annotation": {"encoding"},
    "mo": {"stretchy", "fence", "separator", "lspace", "rspace", "form", "minsize", "maxsize", "largeop",
           "movablelimits", "accent", "symmetric"},
    "mi": {"mathvariant"},
    "mstyle": {"displaystyle", "scriptlevel", "mathvariant", "mathsize"},
    "mspace": {"width", "height", "depth"},
    "mpadded": {"width", "height", "depth", "lspace", "voffset"},
    "mtable": {"columnalign", "rowspacing", "columnspacing", "columnlines", "rowlines", "frame"},
    "mtr": {"columnalign"},
    "mtd": {"columnalign", "columnspan", "rowspan"},
    "mfrac": {"linethickness"},
    "menclose": {"notation"},
    "mover": {"accent"},
    "munder": {"accentunder"},
    "munderover": {"accent", "accentunder"},
}  # fmt: skip
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title"},
    "code": {"class"},
    "span": {"class"},
    "th": {"align"},
    "td": {"align"},
    **MATHML_ATTRIBUTES,
}
logger = logging.getLogger(__name__)


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


def math_html(latex: str, *, display: bool) -> str:
    """MathML for ``latex`` with the source kept as its annotation; LaTeX the converter
    cannot read is shown as the source, in code."""
    try:
        converted = latex_to_mathml(latex, display="block" if display else "inline")
    except Exception:  # latex2mathml raises many kinds for bad input; the text is still worth showing
        logger.debug("Could not convert %r to MathML", latex, exc_info=True)
        fence = ("$$", "$$") if display else ("$", "$")
        return f'<code class="math-source">{html.escape(fence[0] + latex + fence[1])}</code>'
    inner = converted[converted.index(">") + 1 : converted.rindex("</math>")]
    mode = "block" if display else "inline"
    source = html.escape(latex.strip())
    return (
        f'<math display="{mode}"><semantics><mrow>{inner}</mrow>'
        f'<annotation encoding="application/x-tex">{source}</annotation></semantics></math>'
    )


def _math_rule(display: bool) -> Any:
    def render(renderer: Any, tokens: Any, index: int, options: Any, env: Any) -> str:
        return math_html(tokens[index].content, display=display) + ("\n" if display else "")

    return render


@lru_cache(maxsize=1)
def markdown_parser() -> MarkdownIt:
    """The one Markdown parser of messages (finished replies and streaming ones alike)."""
    # Raw HTML in the source is shown as text, never passed through. Dollars follow pandoc's
    # rule (no space inside the delimiters, no digit after the closing one), so "$5 and $10"
    # stays text. A $$ block ends at a blank line, like every other block, so that a block a
    # streaming reply has finished (conversations/streaming.py) cannot become math later.
    options = {"html": False, "linkify": False, "highlight": _highlight}
    md = MarkdownIt("commonmark", options).enable("table").enable("strikethrough")
    md.use(
        dollarmath_plugin,
        allow_space=False,
        allow_digits=False,
        double_inline=True,
        allow_labels=False,
        allow_blank_lines=False,
    )
    md.use(texmath_plugin, delimiters="brackets")
    for name in ("math_inline",):
        md.add_render_rule(name, _math_rule(display=False))
    for name in ("math_inline_double", "math_block", "math_block_label", "math_block_eqno"):
        md.add_render_rule(name, _math_rule(display=True))
    return md


def render_markdown(text: str) -> str:
    """Return sanitized HTML for ``text``: code highlighted, each block with a copy button.

    The button is added after sanitizing: nh3 has escaped every ``<pre>`` the text
    itself contained, so only real code blocks match.
    """
    html = markdown_parser().render(text)
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS | MATHML_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return clean.replace("<pre>", CODE_COPY_BUTTON).replace("</pre>", "</pre></div>")
