"""Reading a YAML config file: its data and the line of every key (for one-line errors).

One loader for every config file adaptlab reads (tasks, experiments). It follows YAML 1.2 where YAML 1.1
surprises: only ``true``/``false`` are booleans (verbalizers such as ``yes``/``no``/``on`` stay strings), and
``1e-3`` is a number. Duplicate keys are an error naming their line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from adaptlab.errors import ConfigError

KeyLines = dict[tuple[str, ...], int]
"""The 1-based line of each key path in a file: ``{("strategies", "0", "options"): 12}``."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: booleans are true/false only; exponent floats need no dot."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_scalar(text: str) -> Any:
    """A command-line value read as YAML (``8`` -> 8, ``1e-3`` -> 0.001, ``[a, b]`` -> a list, ``null`` -> None);
    text that is not valid YAML stays a string."""
    if not text.strip():
        return ""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError:
        return text


def _key_lines(node: yaml.Node, path: tuple[str, ...], out: KeyLines, file: Path) -> None:
    """Record the 1-based line of every mapping key and list item; reject duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                raise ConfigError(f"duplicate key '{name}'", file=file, line=key.start_mark.line + 1, field=name)
            seen.add(name)
            out[path + (name,)] = key.start_mark.line + 1
            _key_lines(value, path + (name,), out, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (str(i),)] = item.start_mark.line + 1
            _key_lines(item, path + (str(i),), out, file)


def read_yaml(path: Path) -> tuple[Any, KeyLines]:
    """A YAML file's data and the line of each key path; unreadable or invalid files raise `ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=path) from None
    except IsADirectoryError:
        raise ConfigError("is a folder, not a YAML file", file=path) from None
    except UnicodeDecodeError:
        raise ConfigError("not a text file (cannot decode it as UTF-8)", file=path,
                          hint="a config file is YAML text; for a data file, start with `adaptlab init DATA`") from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror or exc}", file=path) from None
    loader = None
    try:
        loader = _Loader(text)  # rejects control characters (a ReaderError) already here
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        if isinstance(exc, yaml.reader.ReaderError):  # position is a character offset
            problem = f"character {exc.character!r} is not allowed in YAML"
            line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"invalid YAML: {problem}", file=path, line=line) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", file=path) from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: KeyLines = {}
    if node is not None:
        _key_lines(node, (), lines, path)
    return data, lines


def line_of(lines: KeyLines, loc: tuple[str, ...]) -> int | None:
    """The line of ``loc`` or of its closest enclosing key."""
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
