"""docs/reference.md: every YAML key (task, experiment, strategy options, scenario), from the config models' own
field docs. ``python -m adaptlab.cli.reference > docs/reference.md`` regenerates it; a test fails when it is
stale."""

from __future__ import annotations

import enum
import sys
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

INTRO = """# YAML reference

Every key adaptlab reads, generated from the config models' own documentation
(`python -m adaptlab.cli.reference > docs/reference.md`; `tests/test_reference.py` fails when this file is stale).
Unknown keys are an error that names the closest valid key. Paths are relative to the file that names them.
"""


def _type(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else "")
    if origin in (list, tuple):
        inner = _type(args[0]) if args else "any"
        return f"list of {inner}"
    if origin is dict:
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping (below)"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " \\| ".join(str(m.value) for m in tp)
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _default(info: Any) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
        if isinstance(value, BaseModel):
            return "(below)"
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return f"`{value}`" if isinstance(value, str) and value else str(value) if value != "" else '""'


def model_table(model: type[BaseModel], *, skip: tuple[str, ...] = ("source",)) -> list[str]:
    """A Markdown table of a config model's keys."""
    lines = ["| key | type | default | what it is |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        doc = " ".join((info.description or "").split()).replace("|", "\\|")
        lines.append(f"| `{name}` | {_type(info.annotation)} | {_default(info)} | {doc} |")
    return lines


def _section(title: str, model: type[BaseModel], text: str = "", **kw: Any) -> list[str]:
    doc = " ".join((model.__doc__ or "").split())
    return ["", f"## {title}", "", *( [text, ""] if text else []), doc, "", *model_table(model, **kw)]


def reference_markdown() -> str:
    """The whole reference."""
    from adaptlab.data.task import DataSpec, SourceSpec, Task
    from adaptlab.experiment.config import ExecutorConfig, ExperimentConfig
    from adaptlab.experiment.entries import StrategyEntry
    from adaptlab.models.spec import ApiOptions
    from adaptlab.results import Scenario
    from adaptlab.strategies import get_strategy, strategy_names
    from adaptlab.strategies.finetune.train_args import TrainSettings

    out = [INTRO.rstrip()]
    out += _section("Task file", Task, "A task YAML (`adaptlab init DATA` writes one).")
    out += _section("`data:`", DataSpec, "Per-split sources and the read options every split shares.")
    out += _section("A split's source (`data.train`, `data.dev`, `data.test`)", SourceSpec,
                    "A path (`train: train.csv`) or a mapping with these keys; read options here override "
                    "`data:`'s for this split.")
    out += _section("Experiment file", ExperimentConfig, "An experiment YAML (`adaptlab compare EXP.yaml`).")
    out += _section("`strategies:` entries", StrategyEntry)
    out += _section("`scenario:`", Scenario)
    out += _section("`api:`", ApiOptions)
    out += _section("`executor:`", ExecutorConfig)
    out += ["", "## Strategy options (`options:` of a strategy entry)", "",
            "Each strategy's own options; a list value expands into a grid. Gradient-trained methods also take "
            "every training option (next section)."]
    training = set(TrainSettings.model_fields)
    for name in strategy_names():
        info = get_strategy(name)
        if not info.config.__module__.startswith("adaptlab."):
            continue  # a plugin registered in this process (its own file documents it)
        doc = " ".join((info.config.__doc__ or "").split())
        out += ["", f"### `{name}` ({info.family})", "", doc, ""]
        own = tuple(k for k in info.config.model_fields if k in training)
        if len(info.config.model_fields) == len(own):
            out.append("Only the training options.")
            continue
        out += model_table(info.config, skip=own)
    out += _section("Training options (LoRA, IA3, prompt tuning, full)", TrainSettings)
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover - the docs build
    sys.stdout.write(reference_markdown())
