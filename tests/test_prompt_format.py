"""Prompt rendering: exact plain strings, the chat-template path, answer extraction."""

from __future__ import annotations

import pytest

from adaptlab.errors import ConfigError
from adaptlab.strategies.prompt.format import (PromptFormat, content_free_input, continuation,
                                               extract_answer, render_prompt, render_template)
from fakes import chatml_tokenizer

DEMOS = [("a good film", "positive"), ("bad acting", "negative")]


@pytest.fixture(scope="module")
def chat_tokenizer():
    return chatml_tokenizer()


def test_plain_few_shot_exact():
    fmt = PromptFormat(instruction="Classify the sentiment.")
    ctx = render_prompt(fmt, "so bad", DEMOS)
    assert ctx == ("Classify the sentiment.\n\n"
                   "a good film\nAnswer: positive\n\n"
                   "bad acting\nAnswer: negative\n\n"
                   "so bad\nAnswer:")
    assert continuation(ctx, "negative") == " negative"


def test_plain_zero_shot_prefixes_and_no_instruction():
    fmt = PromptFormat(instruction="", answer_prefix="Sentiment:", input_prefix="Review: ")
    assert render_prompt(fmt, "fine") == "Review: fine\nSentiment:"
    fmt = PromptFormat(instruction="Do it.", answer_prefix="")
    ctx = render_prompt(fmt, "x", [("y", "positive")])
    assert ctx == "Do it.\n\ny\npositive\n\nx\n"
    # the context ends in a newline: the verbalizer is scored without a leading space
    assert continuation(ctx, "positive") == "positive"


def test_chat_turns_system_instruction(chat_tokenizer):
    fmt = PromptFormat(instruction="Classify the sentiment.", style="chat")
    ctx = render_prompt(fmt, "so bad", DEMOS[:1], tokenizer=chat_tokenizer)
    assert ctx == ("<|im_start|>system\nClassify the sentiment.<|im_end|>\n"
                   "<|im_start|>user\na good film<|im_end|>\n"
                   "<|im_start|>assistant\nAnswer: positive<|im_end|>\n"
                   "<|im_start|>user\nso bad<|im_end|>\n"
                   "<|im_start|>assistant\nAnswer:")


def test_chat_inline_user_instruction(chat_tokenizer):
    fmt = PromptFormat(instruction="Classify.", style="chat", instruction_role="user",
                       chat_demos="inline", answer_prefix="")
    ctx = render_prompt(fmt, "so bad", DEMOS[:1], tokenizer=chat_tokenizer)
    assert ctx == ("<|im_start|>user\nClassify.\n\na good film\npositive\n\nso bad<|im_end|>\n"
                   "<|im_start|>assistant\n")
    assert continuation(ctx, "negative") == "negative"


def test_chat_needs_tokenizer():
    with pytest.raises(ConfigError, match="chat"):
        render_prompt(PromptFormat(instruction="x", style="chat"), "q")
    with pytest.raises(ConfigError):
        PromptFormat(instruction="x", style="markdown")  # type: ignore[arg-type]


@pytest.mark.parametrize("raw, expected", [
    (" Hallo Welt\nmore text", "Hallo Welt"),
    ("\n\n  Answer: Bonjour  \n", "Bonjour"),
    ('"yes"', "yes"),
    ("The answer is: 42", "42"),
    ("Translation: Ein Hund.", "Ein Hund."),
    ("", ""),
])
def test_extract_answer(raw, expected):
    assert extract_answer(raw) == expected


def test_extract_answer_custom_prefix():
    assert extract_answer("German: Ein Hund", "German:") == "Ein Hund"


def test_templates_and_content_free():
    tpl = "Premise: {{ premise }}\nHypothesis: {{ hypothesis }}"
    assert render_template(tpl, {"premise": "a", "hypothesis": "b"}) == "Premise: a\nHypothesis: b"
    assert content_free_input(tpl, "N/A") == "Premise: N/A\nHypothesis: N/A"
    assert content_free_input("{{ text }}", "") == ""
    assert content_free_input("constant", "[MASK]") == "[MASK]"


@pytest.mark.integration
def test_chat_template_of_the_default_model():
    from adaptlab.models import load_tokenizer

    tok = load_tokenizer()
    fmt = PromptFormat(instruction="Classify the sentiment.", style="chat")
    ctx = render_prompt(fmt, "so bad", DEMOS, tokenizer=tok)
    assert ctx.endswith("<|im_start|>assistant\nAnswer:")
    assert ctx.count("<|im_start|>user") == 3 and "Answer: negative<|im_end|>" in ctx
    assert ctx.index("Classify the sentiment.") < ctx.index("a good film")
