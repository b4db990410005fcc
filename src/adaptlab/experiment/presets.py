"""Default experiments for a task (``adaptlab compare TASK.yaml --preset quick|standard|thorough``).

A preset is sized to the task's data (training sizes never above the training rows, demonstrations never above
them either, a test sample capped for speed) and the machine (``quick`` without a GPU, ``standard`` with one,
when no preset is named). It is written into the run folder as ``experiment.yaml``, an ordinary experiment file
the user can edit and rerun with ``adaptlab compare RUN/experiment.yaml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from adaptlab.data.task import Task
from adaptlab.errors import ConfigError, closest

PRESETS = ("quick", "standard", "thorough")


@dataclass(frozen=True)
class PresetShape:
    """What a preset spends: seeds, test examples, training sizes, and which strategies."""

    seeds: tuple[int, ...]
    limit: int | None
    sizes: tuple[int, ...]
    prompts: tuple[str, ...]
    finetunes: tuple[str, ...]
    lora_sizes: int
    """How many of the largest training sizes (at most ``lora_cap``) LoRA runs at."""
    lora_cap: int | None
    note: str


SHAPES = {
    "quick": PresetShape((0,), 150, (16, 64, 128), ("zero_shot", "few_shot"), ("embedding_probe", "lora"), 1, 128,
                         "minutes on a laptop CPU: one seed, 150 test examples, LoRA at one size"),
    "standard": PresetShape((0, 1), 300, (16, 64, 256, 1024), ("zero_shot", "few_shot", "calibrate", "knn"),
                            ("embedding_probe", "lora"), 2, 1024,
                            "two seeds, 300 test examples, kNN prompting, LoRA at the two largest sizes"),
    "thorough": PresetShape((0, 1, 2), None, (16, 64, 256, 1024, 4096),
                            ("zero_shot", "few_shot", "calibrate", "knn", "prompt_search"),
                            ("embedding_probe", "lora", "ia3"), 4, None,
                            "three seeds, every test example, prompt search, LoRA and IA3 at every size"),
}


def default_preset() -> str:
    """``standard`` where a CUDA GPU is visible, else ``quick``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return "quick"
    return "standard" if Path("/dev/nvidia0").exists() else "quick"


def check_preset(name: str) -> str:
    if name not in PRESETS:
        guess = closest(name, PRESETS)
        raise ConfigError(f"unknown preset '{name}'", field="--preset",
                          hint=f"did you mean '{guess}'?" if guess else "use quick, standard or thorough")
    return name


def _sizes(shape: PresetShape, n_train: int) -> list[int | str]:
    """The preset's sizes below the training rows, and ``all`` when every row is not much more (at most twice the
    preset's largest size; thorough: always)."""
    sizes: list[int | str] = [s for s in shape.sizes if s < n_train]
    if n_train > 0 and (n_train <= 2 * max(shape.sizes) or shape is SHAPES["thorough"]):
        sizes.append("all")
    return sizes


def preset_yaml(task: Task, task_file: Path, n_train: int, preset: str) -> str:
    """The experiment YAML of ``preset`` for ``task`` (``n_train`` training rows after carving)."""
    shape = SHAPES[check_preset(preset)]
    classification = task.type == "classification"
    n_classes = len(task.labels)
    sizes = _sizes(shape, n_train)
    k = min(8 if classification else 4, n_train)
    if classification:
        k = min(max(k, n_classes), n_train)
    lines = [f"# `adaptlab compare` preset '{preset}' for {task.name}: {shape.note}.",
             "# Edit it and rerun: adaptlab compare THIS_FILE --out RUN_DIR",
             f"name: {task.name}-{preset}",
             f"task: {task_file.resolve()}",
             f"train_sizes: [{', '.join(map(str, sizes))}]" + f"      # the task has {n_train} training rows",
             f"seeds: [{', '.join(map(str, shape.seeds))}]",
             f"limit: {shape.limit if shape.limit is not None else 'null'}" + "                 # test examples (one "
             "seeded sample shared by every cell)",
             "epochs: 3",
             "strategies:"]
    selection = "balanced" if classification else "random"
    for name in shape.prompts:
        if name == "zero_shot":
            lines.append("  - zero_shot")
        elif k == 0:
            continue
        elif name == "few_shot":
            lines += ["  - name: few_shot", f"    options: {{k: {k}, selection: {selection}}}"]
        elif name == "calibrate" and classification:
            lines += ["  - name: calibrate", f"    options: {{k: {k}, selection: balanced}}"]
        elif name == "knn":
            lines += ["  - name: few_shot", "    label: knn", f"    options: {{k: {k}, selection: knn}}"]
        elif name == "prompt_search":
            lines += ["  - name: prompt_search", f"    options: {{k: {min(4, k)}, max_candidates: 8, max_dev: 100}}"]
    numeric = [int(s) for s in sizes if s != "all"] + ([n_train] if "all" in sizes else [])
    capped = [s for s in numeric if shape.lora_cap is None or s <= shape.lora_cap] or numeric[:1]
    largest = ["all" if s == n_train else s for s in capped[-shape.lora_sizes:]]
    for name in shape.finetunes:
        if name == "embedding_probe":
            if classification:
                lines.append("  - embedding_probe")
            continue
        if not largest:
            continue
        lines += [f"  - name: {name}", f"    label: {name}", f"    train_sizes: [{', '.join(map(str, largest))}]",
                  "    options: {eval_limit: 32}   # dev examples scored per evaluation (labels read)"]
    lines += ["scenario:                      # the situation the recommendation is for: edit it",
              "  queries_per_month: 100000",
              "  price_per_hour: 0.10         # $ per hour of the machine that serves and trains",
              "  months: 12"]
    return "\n".join(lines) + "\n"
