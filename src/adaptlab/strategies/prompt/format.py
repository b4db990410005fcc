"""Prompt building: instruction + optional demonstrations + query input, as plain text or chat.

Plain format::

    {instruction}\\n\\n{input_prefix}{demo_input}\\n{answer_prefix} {demo_output}\\n\\n...{input_prefix}{query_input}\\n{answer_prefix}

and the label verbalizer is scored as the continuation ``" " + verbalizer`` (a leading space whenever
the context does not already end in whitespace, e.g. with an empty answer prefix).

Chat format renders the same pieces through the tokenizer's chat template
(``tokenizer.apply_chat_template``): the instruction is the system message (``instruction_role=
"system"``) or the start of the first user message (``"user"``); demonstrations are user/assistant
turn pairs (``chat_demos="turns"``, the assistant answering ``"{answer_prefix} {output}"``) or are
inlined as plain-format text inside the user message (``"inline"``). The context ends after the
assistant-turn start (``add_generation_prompt=True``) followed by the answer prefix, so the scored
continuation is again ``" " + verbalizer`` (just ``verbalizer`` when the answer prefix is empty).

The prompt strategies' ``format`` option defaults to ``auto`` (`resolve_style`): chat when the LM's tokenizer has a
chat template, else plain. It is resolved when a prompt is fitted, so a saved `PromptFormat` is always plain or
chat.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from adaptlab.errors import ConfigError

Style = Literal["plain", "chat"]
FormatChoice = Literal["auto", "plain", "chat"]
"""A ``format`` option: a `Style`, or ``auto`` (resolved by `resolve_style`)."""


def resolve_style(choice: str, tokenizer: Any) -> Style:
    """The `Style` a ``format`` option means for an LM with ``tokenizer``: ``auto`` is ``chat`` when the tokenizer
    has a chat template (``chat_template`` set and ``apply_chat_template``), else ``plain``; plain/chat as given."""
    if choice != "auto":
        return choice  # type: ignore[return-value]  # PromptFormat rejects anything but plain/chat
    has_template = bool(getattr(tokenizer, "chat_template", None)) and hasattr(tokenizer, "apply_chat_template")
    return "chat" if tokenizer is not None and has_template else "plain"


@dataclass(frozen=True)
class Demo:
    """A demonstration: the rendered input text and its output (label key or target text)."""

    id: str
    input: str
    output: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class PromptFormat:
    """How a prompt is laid out. All strings are used verbatim."""

    instruction: str
    """Task instruction placed first (plain) or as the system/user text (chat). May be empty."""
    style: Style = "plain"
    """``plain``: a text prompt; ``chat``: rendered with the tokenizer's chat template."""
    answer_prefix: str = "Answer:"
    """Text after each input that the answer follows (``Answer:``, ``Label:``, ``Sentiment:``...)."""
    input_prefix: str = ""
    """Text before each input (``""``, ``"Input: "``, ``"Review: "``...)."""
    separator: str = "\n\n"
    """Between the instruction and each demonstration block (plain and inline-chat)."""
    instruction_role: Literal["system", "user"] = "system"
    """Chat only: the instruction as the system message or prepended to the first user message."""
    chat_demos: Literal["turns", "inline"] = "turns"
    """Chat only: demonstrations as user/assistant turns, or inlined as text in the user message."""

    def __post_init__(self) -> None:
        if self.style not in ("plain", "chat"):
            raise ConfigError(f"format must be 'plain' or 'chat', not {self.style!r}", field="format")
        if self.instruction_role not in ("system", "user"):
            raise ConfigError("instruction_role must be 'system' or 'user'", field="instruction_role")
        if self.chat_demos not in ("turns", "inline"):
            raise ConfigError("chat_demos must be 'turns' or 'inline'", field="chat_demos")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PromptFormat":
        return cls(**dict(data))

    # -- pieces ------------------------------------------------------------------------------------
    def block(self, text: str) -> str:
        """A query block without its answer: ``{input_prefix}{text}\\n{answer_prefix}``."""
        head = f"{self.input_prefix}{text}"
        return f"{head}\n{self.answer_prefix}" if self.answer_prefix else f"{head}\n"

    def demo_block(self, text: str, output: str) -> str:
        """A demonstration block: the query block followed by its answer."""
        return self.block(text) + continuation(self.block(text), output)

    def plain_body(self, query: str, outputs: Sequence[tuple[str, str]]) -> str:
        """Demonstrations and the query as plain text (no instruction)."""
        parts = [self.demo_block(t, o) for t, o in outputs]
        parts.append(self.block(query))
        return self.separator.join(parts)


def continuation(context: str, verbalizer: str) -> str:
    """The scored continuation: ``" " + verbalizer`` unless ``context`` ends in whitespace."""
    if not context or context[-1].isspace():
        return verbalizer
    return " " + verbalizer


def render_prompt(
    fmt: PromptFormat,
    query: str,
    demos: Sequence[tuple[str, str]] = (),
    *,
    tokenizer: Any = None,
) -> str:
    """The context string for ``query`` given ``demos`` as ``(input_text, output_text)`` pairs.

    ``output_text`` is what the demonstration answers (the verbalizer for classification). Chat style
    needs ``tokenizer`` (anything with ``apply_chat_template``).
    """
    if fmt.style == "plain":
        body = fmt.plain_body(query, demos)
        return f"{fmt.instruction}{fmt.separator}{body}" if fmt.instruction else body
    if tokenizer is None or not hasattr(tokenizer, "apply_chat_template"):
        raise ConfigError("the chat format needs a tokenizer with a chat template",
                          field="format", hint="use format: plain, or an LM that exposes .tokenizer")
    return _render_chat(fmt, query, demos, tokenizer)


def _render_chat(fmt: PromptFormat, query: str, demos: Sequence[tuple[str, str]],
                 tokenizer: Any) -> str:
    messages: list[dict[str, str]] = []
    user_lead = ""
    if fmt.instruction:
        if fmt.instruction_role == "system":
            messages.append({"role": "system", "content": fmt.instruction})
        else:
            user_lead = fmt.instruction + fmt.separator
    if fmt.chat_demos == "inline" or not demos:
        parts = [fmt.demo_block(t, o) for t, o in demos]
        parts.append(f"{fmt.input_prefix}{query}")
        messages.append({"role": "user", "content": user_lead + fmt.separator.join(parts)})
    else:
        for i, (text, output) in enumerate(demos):
            lead = user_lead if i == 0 else ""
            messages.append({"role": "user", "content": f"{lead}{fmt.input_prefix}{text}"})
            messages.append({"role": "assistant", "content": _answer(fmt, output)})
        messages.append({"role": "user", "content": f"{fmt.input_prefix}{query}"})
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # missing/invalid template: a user-facing configuration problem
        raise ConfigError(f"cannot apply the tokenizer's chat template: {e}", field="format",
                          hint="use format: plain for models without a chat template") from None
    return text + fmt.answer_prefix


def _answer(fmt: PromptFormat, output: str) -> str:
    return f"{fmt.answer_prefix} {output}" if fmt.answer_prefix else output


# -- generation answers ------------------------------------------------------------------------------
_PREFIX_RE = re.compile(r"^\s*(?:the\s+)?(?:answer|output|label|translation|response)\s*(?:is)?\s*[:\-]\s*",
                        re.IGNORECASE)


def stop_strings(fmt: PromptFormat) -> tuple[str, ...]:
    """Stop strings for greedy decoding: the answer ends at a newline (plain) / blank line (chat)."""
    return ("\n",) if fmt.style == "plain" else ("\n\n",)


def extract_answer(text: str, answer_prefix: str = "") -> str:
    """The answer in generated ``text``: first non-empty line, stripped of answer prefixes and quotes."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "").strip()
    if answer_prefix and line.lower().startswith(answer_prefix.lower()):
        line = line[len(answer_prefix):].strip()
    line = _PREFIX_RE.sub("", line, count=1).strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":
        line = line[1:-1].strip()
    return line


# -- input templates -----------------------------------------------------------------------------------
def render_template(template: str, fields: Mapping[str, Any]) -> str:
    """Render a Jinja2 input template over an example's fields exactly as `Task.render_input` does."""
    from adaptlab.data.templates import compile_template

    return compile_template(template).render(dict(fields))


def content_free_input(template: str, content_free: str) -> str:
    """The input with every template field replaced by ``content_free`` (Zhao et al. 2021)."""
    from adaptlab.data.templates import template_fields

    names = template_fields(template)
    if not names:
        return content_free
    try:
        return render_template(template, {n: content_free for n in names})
    except Exception:  # filters that need a structured value: fall back to the bare string
        return content_free
