"""Math in replies: the four usual delimiters become MathML on the server, with the LaTeX kept
as an annotation; prices and code stay text; nothing in a formula gets past the sanitizer."""

from __future__ import annotations

import re

import pytest

from conversations.rendering import ALLOWED_ATTRIBUTES, ALLOWED_TAGS, MATHML_TAGS, render_markdown

ANNOTATION = '<annotation encoding="application/x-tex">{}</annotation>'


@pytest.mark.parametrize(
    ("source", "display", "latex"),
    [
        ("Area is $\\pi r^2$ here.", "inline", "\\pi r^2"),
        ("Inline \\(a+b\\) too.", "inline", "a+b"),
        ("$$\\frac{1}{2}$$", "block", "\\frac{1}{2}"),
        ("\\[\\sqrt{x}\\]", "block", "\\sqrt{x}"),
        ("Then\n\n$$\nE = mc^2\n$$\n\nend.", "block", "E = mc^2"),
    ],
)
def test_each_delimiter_renders_mathml_with_its_source(source: str, display: str, latex: str) -> None:
    html = render_markdown(source)
    assert f'<math display="{display}">' in html
    assert ANNOTATION.format(latex) in html
    assert "$" not in re.sub(r"<annotation.*?</annotation>", "", html)


def test_a_fraction_is_drawn_as_one() -> None:
    html = render_markdown("$\\frac{a}{b}$")
    assert re.search(r"<mfrac><mrow><mi>a</mi></mrow><mrow><mi>b</mi></mrow></mfrac>", html)


def test_prices_and_code_stay_text() -> None:
    assert "<math" not in render_markdown("It costs $5 and $10 today.")
    assert "<math" not in render_markdown("A $ sign alone, and $ spaced $.")
    html = render_markdown("Run `echo $HOME$` or\n\n```sh\nprice=$x$\n```")
    assert "<math" not in html and "$HOME$" in html and "price" in html


def test_nothing_in_a_formula_escapes_the_sanitizer() -> None:
    hostile = [
        "$\\text{<script>alert(1)</script>}$",
        "$x</annotation></semantics></math><img src=x onerror=alert(1)>$",
        "$$\\href{javascript:alert(1)}{x}$$",
        '$\\style{color:red}{x}$ <math><maction actiontype="statusline"><mi href="javascript:x">y</mi></maction></math>',
    ]
    allowed = ALLOWED_TAGS | MATHML_TAGS | {"div", "button"}
    for source in hostile:
        html = render_markdown(source)
        tags = set(re.findall(r"<([a-zA-Z][\w-]*)", html))
        assert tags <= allowed, (source, tags - allowed)
        for tag, attributes in re.findall(r"<([a-zA-Z][\w-]*)((?:\s[^>]*)?)>", html):
            names = set(re.findall(r"\s([\w-]+)=", attributes))
            assert names <= ALLOWED_ATTRIBUTES.get(tag, set()), (source, tag, names)
            assert "javascript" not in attributes


def test_latex_the_converter_cannot_read_is_shown_as_its_source() -> None:
    html = render_markdown("Broken: $\\begin{nothing}$ end")
    assert "<math" in html or '<code class="math-source">$\\begin{nothing}$</code>' in html
