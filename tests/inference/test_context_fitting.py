"""Fitting a conversation into the model's context window."""

from __future__ import annotations

import pytest

from inference.engine.prompt import PromptTooLongError, fit_prompt, render_ids
from tests.tiny_model import build_byte_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_byte_tokenizer()


def turns(count: int, size: int = 40) -> list[dict[str, str]]:
    messages = []
    for index in range(count):
        messages.append({"role": "user", "content": f"question {index} " + "q" * size})
        messages.append({"role": "assistant", "content": f"answer {index} " + "a" * size})
    return messages


def test_everything_is_kept_when_it_fits(tokenizer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *turns(2), {"role": "user", "content": "last"}]
    fitted = fit_prompt(tokenizer, messages, context_length=2048, max_new_tokens=100)
    assert fitted.dropped_messages == 0
    assert fitted.prompt_ids == render_ids(tokenizer, messages)
    assert fitted.max_new_tokens == 100


def test_it_keeps_the_system_prompt_and_drops_the_oldest_turns(tokenizer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *turns(10), {"role": "user", "content": "last question"}]
    fitted = fit_prompt(tokenizer, messages, context_length=600, max_new_tokens=200)
    assert fitted.messages[0] == messages[0]
    assert fitted.messages[-1]["content"] == "last question"
    assert fitted.messages[1]["role"] == "user", "never starts with an orphaned reply"
    assert fitted.dropped_messages > 0 and fitted.dropped_messages % 2 == 0
    assert len(fitted.prompt_ids) <= 600 - 200, "room is reserved for the reply"
    # The newest turns are the ones kept, in order.
    assert fitted.messages[1:] == messages[1 + fitted.dropped_messages :]


def test_it_keeps_as_much_history_as_fits(tokenizer) -> None:
    messages = [*turns(10), {"role": "user", "content": "last"}]
    fitted = fit_prompt(tokenizer, messages, context_length=700, max_new_tokens=100)
    one_more = messages[fitted.dropped_messages - 2 :]
    assert len(render_ids(tokenizer, one_more)) > 600, "keeping one more turn would not have fit"


def test_a_message_too_long_for_the_window_is_refused_with_a_reason(tokenizer) -> None:
    messages = [{"role": "user", "content": "x" * 1000}]
    with pytest.raises(PromptTooLongError, match="too long for this model"):
        fit_prompt(tokenizer, messages, context_length=512, max_new_tokens=64)


def test_the_reply_budget_shrinks_to_what_is_left(tokenizer) -> None:
    messages = [{"role": "user", "content": "y" * 200}]
    fitted = fit_prompt(tokenizer, messages, context_length=512, max_new_tokens=4000)
    assert fitted.max_new_tokens == 512 - len(fitted.prompt_ids)


class CountingTokenizer:
    """The byte tokenizer, counting the tokens of every template render; with
    ``misjudge`` it reports every text as empty, so the estimates are all wrong."""

    def __init__(self, tokenizer, misjudge: bool = False) -> None:
        self.inner, self.misjudge, self.rendered = tokenizer, misjudge, []
        self.chat_template = tokenizer.chat_template

    def apply_chat_template(self, messages, **kwargs):
        ids = self.inner.apply_chat_template(messages, **kwargs)
        self.rendered.append(len(ids))
        return ids

    def __call__(self, texts, **kwargs):
        return {"input_ids": [[] for _ in texts]} if self.misjudge else self.inner(texts, **kwargs)


def test_a_long_history_costs_a_few_renders_of_what_is_kept(tokenizer) -> None:
    counting = CountingTokenizer(tokenizer)
    messages = [{"role": "system", "content": "Be brief."}, *turns(10_000, size=0), {"role": "user", "content": "?"}]
    fitted = fit_prompt(counting, messages, context_length=2048, max_new_tokens=512)
    assert fitted.dropped_messages > 19_000
    assert len(render_ids(tokenizer, messages[:1] + messages[fitted.dropped_messages - 1 :])) > 2048 - 512
    assert len(counting.rendered) <= 6, "a probe of three tiny renders, the newest turn, the guess and its check"
    assert max(counting.rendered) <= 2048, "what fits and one turn more, never the whole history"


def test_misjudged_estimates_still_find_as_much_history_as_fits(tokenizer) -> None:
    messages = [*turns(300, size=30), {"role": "user", "content": "last"}]
    exact = fit_prompt(tokenizer, messages, context_length=1024, max_new_tokens=100)
    misjudged = CountingTokenizer(tokenizer, misjudge=True)
    assert fit_prompt(misjudged, messages, context_length=1024, max_new_tokens=100) == exact
    assert len(misjudged.rendered) <= 3 + 2 + 10, "two guesses, then a bisection of 300 turns"
