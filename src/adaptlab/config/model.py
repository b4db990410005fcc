"""The one config system: a pydantic base model whose errors are one line naming file, line and key.

Every config adaptlab reads (task, experiment, each strategy's options, API options, scenario, training
arguments) is a `ConfigModel`: unknown keys are forbidden and answered with the closest valid key (field
names and their ``aliases``), field docstrings are the documentation (``adaptlab`` generates its YAML
reference from them), and a bad value raises `ConfigError` instead of pydantic's multi-line dump.
Validators raise `Invalid` to name a sub-field and give a hint.
"""

from __future__ import annotations

import contextvars
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from adaptlab.config.yaml import KeyLines, line_of, read_yaml
from adaptlab.errors import AdaptlabError, ConfigError, closest

M = TypeVar("M", bound=BaseModel)

# pydantic calls an overridden __init__ for nested models too; only the outermost converts errors
_VALIDATING: contextvars.ContextVar[bool] = contextvars.ContextVar("adaptlab_validating", default=False)


class Invalid(ValueError):
    """A validation failure that knows its field (relative to the model validated) and a hint."""

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field, self.hint = message, field, hint


class ConfigModel(BaseModel):
    """Base of every config: unknown keys forbidden, field docstrings as descriptions, and construction
    from Python raising `ConfigError` (one line) rather than pydantic's `ValidationError`."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, use_attribute_docstrings=True,
                              validate_default=False)

    key_aliases: ClassVar[Mapping[str, str]] = {}
    """Names users reach for -> the key adaptlab calls it (``api_base`` -> ``base_url``), for did-you-mean."""
    key_noun: ClassVar[str] = "key"
    """What an unknown key of this config is called in errors (``unknown lora option 'rnk'``)."""

    def __init__(self, **data: Any) -> None:
        if _VALIDATING.get():  # nested inside another model's validation: let the outer one report
            super().__init__(**data)
            return
        token = _VALIDATING.set(True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self)) from None
        finally:
            _VALIDATING.reset(token)

    @classmethod
    def parse(cls: type[M], data: Mapping[str, Any] | None, *, file: str | Path | None = None,
              line: int | None = None) -> M:
        """The config from a mapping; errors name ``file``/``line`` (of the mapping) when given."""
        token = _VALIDATING.set(True)
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            err = config_error(exc, cls)
            err.file = str(file) if file is not None else err.file
            err.line = err.line if err.line is not None else line
            raise ConfigError(err.message, file=err.file, line=err.line, field=err.field, hint=err.hint) from None
        finally:
            _VALIDATING.reset(token)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-ready values."""
        return self.model_dump(mode="json")

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Field name -> documentation (for help texts and the generated reference)."""
        return {name: (info.description or "") for name, info in cls.model_fields.items()}


def suggestion(key: str, valid: Iterable[str], aliases: Mapping[str, str] | None = None) -> str:
    """'did you mean ...?' for an unknown key, from the valid names and the names users reach for."""
    valid = sorted(valid)
    if aliases and key in aliases:
        return f"did you mean '{aliases[key]}'?"
    guess = closest(key, [*valid, *(aliases or {})])
    if guess is not None:
        return f"did you mean '{(aliases or {}).get(guess, guess)}'?"
    return "valid: " + ", ".join(valid)


def unknown_key(key: str, model: type[BaseModel] | Iterable[str], *, file: str | Path | None = None,
                line: int | None = None, what: str = "key") -> ConfigError:
    """A ConfigError for an unknown key that suggests the closest valid one (aliases included)."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        valid: Iterable[str] = [k for k in model.model_fields if k != "source"]
        aliases = getattr(model, "key_aliases", {})
        what = getattr(model, "key_noun", what) if what == "key" else what
    else:
        valid, aliases = model, {}
    return ConfigError(f"unknown {what} '{key}'", file=file, line=line, field=key,
                       hint=suggestion(key, valid, aliases))


def _submodel(model: type[BaseModel] | None, key: Any) -> type[BaseModel] | None:
    info = model.model_fields.get(str(key)) if model is not None else None
    if info is None:
        return None
    todo = [info.annotation]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
        todo.extend(typing.get_args(t))
    return None


def _owner(model: type[BaseModel], loc: Sequence[str]) -> type[BaseModel] | None:
    """The model that holds the last key of ``loc`` (list indexes skipped)."""
    parent: type[BaseModel] | None = model
    for part in loc:
        if part.isdigit() or parent is None:
            continue
        parent = _submodel(parent, part)
    return parent


_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
               "list": "a list", "tuple": "a list", "dict": "a mapping of keys", "model": "a mapping of keys"}


def _message(err: Mapping[str, Any]) -> str:
    """Pydantic's message in adaptlab's words."""
    kind, value = err["type"], err.get("input")
    shown = repr(value) if len(repr(value)) <= 40 else f"a {type(value).__name__}"
    for prefix, name in _TYPE_NAMES.items():
        if kind.startswith(prefix + "_") and kind.endswith(("_type", "_parsing")):
            return f"must be {name}, not {shown}"
    if kind == "literal_error":
        expected = (err.get("ctx") or {}).get("expected", "")
        return f"must be one of {expected.replace(' or ', ', ')}, not {shown}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        ctx = err.get("ctx") or {}
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()), "")
        return f"must be {op} {bound}, not {shown}"
    if kind == "missing":
        return f"missing required key '{err['loc'][-1]}'" if err["loc"] else "missing required key"
    return str(err["msg"]).removeprefix("Value error, ")


def config_error(exc: ValidationError, model: type[BaseModel], *, file: str | Path | None = None,
                 lines: KeyLines | None = None) -> ConfigError:
    """One ConfigError (file, line, field, hint) from pydantic's errors; unknown keys first."""
    errs = exc.errors()
    err = next((e for e in errs if e["type"] == "extra_forbidden"), errs[0])
    loc = tuple(str(p) for p in err["loc"])
    lines = lines or {}
    if err["type"] == "extra_forbidden":
        owner = _owner(model, loc[:-1])
        return unknown_key(loc[-1], owner if owner is not None else [], file=file, line=line_of(lines, loc))
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, Invalid):
        if cause.field:
            loc = loc + tuple(cause.field.split("."))
        message, hint = cause.message, cause.hint
    elif isinstance(cause, AdaptlabError):
        if cause.field:
            loc = loc + tuple(cause.field.split("."))
        message, hint = cause.message, cause.hint
    else:
        message, hint = _message(err), None
    return ConfigError(message, file=file, line=line_of(lines, loc), field=".".join(loc) or None, hint=hint)


def load_yaml_model(path: str | Path, model: type[M], *, what: str, keys: str) -> tuple[M, KeyLines]:
    """Validate the YAML mapping in ``path`` as ``model`` (its ``source`` set to the file's resolved path);
    errors become one-line `ConfigError`s naming file:line [key]."""
    path = Path(path)
    data, lines = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file must be a mapping of keys ({keys})", file=path)
    if "source" in data:
        raise unknown_key("source", model, file=path, line=lines.get(("source",)))
    token = _VALIDATING.set(True)
    try:
        return model.model_validate({**data, "source": path.resolve()}), lines
    except ValidationError as exc:
        raise config_error(exc, model, file=path, lines=lines) from None
    finally:
        _VALIDATING.reset(token)


def load_package_file(folder: str, name: str, known: Sequence[str], filename: str,
                      loader: Callable[[Path], M]) -> M:
    """``loader`` on the package file ``adaptlab/<folder>/<filename>`` for a built-in ``name``."""
    if name not in known:
        raise unknown_key(name, known, what=f"built-in {Path(filename).stem}")
    with resources.as_file(resources.files("adaptlab") / folder / filename) as path:
        return loader(path)
