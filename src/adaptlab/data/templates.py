"""Prompt templates: Jinja2 over an example's fields, sandboxed, without autoescape (this is prompt text).

A field the template names but the example lacks renders as an empty string; every command that spends
compute checks the fields first (`adaptlab.data.validate.check_templates`), so that never goes unnoticed.
"""

from __future__ import annotations

import functools
import typing
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from adaptlab.config import Invalid
from adaptlab.data.example import RAW_INPUT_FIELD, Example
from adaptlab.errors import DataError

if typing.TYPE_CHECKING:
    import jinja2


@functools.cache
def template_environment() -> jinja2.Environment:
    """The sandboxed Jinja2 environment for prompt templates (no autoescape, lenient undefined)."""
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


@functools.lru_cache(maxsize=512)
def compile_template(text: str) -> jinja2.Template:
    """The compiled template (cached); a syntax error raises `Invalid` (a ValueError)."""
    import jinja2

    try:
        return template_environment().from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise Invalid(f"invalid Jinja2 template: {exc.message} (template line {exc.lineno})") from None


def template_fields(text: str) -> set[str]:
    """Names of the example fields a template refers to."""
    from jinja2 import meta

    return set(meta.find_undeclared_variables(template_environment().parse(text)))


def render(template: str, fields: Mapping[str, Any], *, what: str = "input", where: Example | None = None) -> str:
    """``template`` over ``fields``; a failing template (a sandboxed call, a bad filter) raises one `DataError`
    naming the example (``where``) and the template (``what``), the same wherever a template is rendered."""
    import jinja2

    try:
        return compile_template(template).render(dict(fields))
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        name = f" for example {where.id}" if where is not None else ""
        raise DataError(f"cannot render the {what} template{name}: {exc}",
                        file=where.source if where is not None else None,
                        line=where.line if where is not None else None, field=what) from None


def render_input(template: str, example: Example) -> str:
    """An example's input: `RAW_INPUT_FIELD` verbatim if present, else ``template`` over its fields
    (as `Task.render_input` does; artifacts render inputs without the task file)."""
    if RAW_INPUT_FIELD in example.fields:
        return str(example.fields[RAW_INPUT_FIELD])
    return render(template, example.fields, what="input", where=example)


def recording_template(text: str, sink: list[str]) -> jinja2.Template:
    """The template compiled so that printing a missing field records its name in ``sink`` (``{% if title %}``
    only tests it and records nothing)."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    class Recording(jinja2.Undefined):
        def __str__(self) -> str:
            sink.append(self._undefined_name or "?")
            return ""

    env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True, undefined=Recording)
    return env.from_string(text)


def missing_fields(template: str, examples: Sequence[Example], *, what: str = "input") -> tuple[Counter[str], dict[str, Example]]:
    """For each field ``template`` prints but examples lack: how many examples lack it, and the first one. A row
    the template cannot render raises `DataError` naming it."""
    sink: list[str] = []
    tpl = recording_template(template, sink)
    missing: Counter[str] = Counter()
    first: dict[str, Example] = {}
    for ex in examples:
        sink.clear()
        try:
            tpl.render(dict(ex.fields))
        except Exception as exc:  # noqa: BLE001 - a template error on this row's values
            raise DataError(f"cannot render the {what} template for example {ex.id}: {exc}",
                            file=ex.source, line=ex.line, field=what) from None
        for name in dict.fromkeys(sink):
            missing[name] += 1
            first.setdefault(name, ex)
    return missing, first
