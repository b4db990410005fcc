"""`run_finetune`: load a task, fine-tune, save the artifact, evaluate, write metrics and a model card.

Output folder::

    adapted.json + adapter/ | model/ | merged/ | probe.safetensors   the artifact (load_adapted)
    config.json      the resolved configuration (reproduces the run)
    metrics.json     the evaluation, same schema as `adaptlab prompt`
    README.md        model card
    train_log.jsonl  loss and dev history
    checkpoints/     resumable checkpoints while training (removed after success unless kept)

Runnable as a module for multi-process training without the CLI::

    accelerate launch --multi_gpu --num_processes 2 -m adaptlab.finetuning.run TASK --method lora ...
    (accelerate 1.15's ``--cpu --num_processes 2`` starts one process; see docs/finetuning.md)
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import adaptlab
from adaptlab.adapted import write_json_atomic
from adaptlab.errors import AdaptlabError, ConfigError, DataError
from adaptlab.finetuning.checkpoint import list_checkpoints
from adaptlab.finetuning.configs import DEFAULT_MODEL, EmbeddingProbeConfig, build_configs

if TYPE_CHECKING:
    from adaptlab.data import Example
    from adaptlab.evaluate import EvalResult
    from adaptlab.tasks import Task

log = logging.getLogger(__name__)

ARTIFACT_PARTS = ("adapted.json", "adapter", "model", "merged", "probe.safetensors")


def _artifact_bytes(out: Path) -> int:
    from adaptlab.costs import dir_bytes

    total = 0
    for name in ARTIFACT_PARTS:
        p = out / name
        total += dir_bytes(p) if p.is_dir() else (p.stat().st_size if p.is_file() else 0)
    return total


def run_finetune(task: "str | Path | Task", model_name: str = DEFAULT_MODEL, method: str = "lora", *,
                 n_train: int | None = 256, epochs: int = 3, out_dir: str | Path, seed: int = 0,
                 options: Mapping[str, Any] | None = None, prompt: Mapping[str, Any] | None = None,
                 split: str = "test", limit: int | None = None, merge: bool = False, resume: bool = False,
                 progress: bool = True, keep_checkpoints: bool = False, trust_remote_code: bool = False,
                 allow_pickle: bool = False) -> "EvalResult | None":
    """Fine-tune ``model_name`` on ``task`` with ``method`` and evaluate it on ``split``.

    ``n_train``: training examples (a seeded, label-stratified nested subset; None: all).
    ``options``: method and training fields (`LoraConfig`, `TrainArgs`, ...; unknown keys fail).
    ``prompt``: `ZeroShotConfig` options of the prompt format trained on (same as `adaptlab prompt`).
    ``limit``: evaluate a seeded subset of that many examples. ``merge``: also write ``merged/``.
    ``resume``: continue from the newest checkpoint in ``out_dir``. ``trust_remote_code`` /
    ``allow_pickle``: let `load_model` run a model folder's own code / read pickle weights (trusted
    sources only; both off by default). Returns the `EvalResult`
    (None on non-main processes of a multi-process run, which only train).
    """
    from adaptlab.adapted import prepare_output_dir
    from adaptlab.data import absent_labels, check_examples, load_splits, nested_subsets
    from adaptlab.prompting.artifact import seeded_sample
    from adaptlab.tasks import load_task

    if not isinstance(task, (str, Path)):
        task_obj = task
    else:
        task_obj = load_task(task)
    opts = dict(options or {})
    opts.setdefault("seed", seed)
    if method != "embedding_probe":
        opts.setdefault("epochs", epochs)
        opts.setdefault("progress", progress)
    cfg, args = build_configs(method, opts)
    if merge and method in ("prompt_tuning", "embedding_probe"):
        raise ConfigError(f"{method} cannot be merged into model weights", field="merge")
    out = Path(out_dir)
    if not resume and list_checkpoints(out / "checkpoints"):
        raise ConfigError(f"{out} holds checkpoints of an earlier run", field="out_dir",
                          hint="pass resume=True (--resume) to continue it, or choose another folder")

    if method != "embedding_probe":
        from adaptlab.models import check_model_name

        check_model_name(model_name)  # a wrong name fails now, not after reading the data
    prepare_output_dir(out)
    splits = load_splits(task_obj, seed=seed)
    train_file = task_obj.resolve_path(task_obj.data.train.path) if (
        task_obj.data.train is not None and task_obj.data.train.path) else task_obj.source
    if not splits.train:
        raise DataError("fine-tuning needs training examples and the task has none", file=task_obj.source,
                        field="data.train")
    if n_train is not None and n_train > len(splits.train):
        carved = (f" ({len(splits.dev)} went to the carved dev split)"
                  if task_obj.data.dev is None and splits.dev else "")
        raise DataError(f"n_train {n_train} is larger than the {len(splits.train)} training examples{carved}",
                        file=train_file, field="n_train", hint=f"use --n-train {len(splits.train)} or less")
    check_examples(task_obj, splits.train, "train")
    check_examples(task_obj, splits.dev, "dev")
    absent = absent_labels(task_obj, splits.train)
    if absent:
        raise DataError(f"label '{absent[0]}' has no training examples" + (
            f" (nor {', '.join(absent[1:])})" if len(absent) > 1 else ""), file=train_file, field="labels",
            hint="a fine-tuned model cannot learn a class it never sees: add examples or remove the label")
    label_of = task_obj.label_of if task_obj.type == "classification" else None
    train = (nested_subsets(splits.train, [n_train], seed=seed, label_of=label_of)[n_train]
             if n_train is not None else list(splits.train))
    missing = absent_labels(task_obj, train)
    if missing:
        log.warning("the %d-example training subset has no example of %d label(s) (%s); a larger n_train "
                    "covers every label", len(train), len(missing), ", ".join(missing))
    examples = seeded_sample(splits[split], limit, seed)
    if not examples:
        raise DataError(f"no {split} examples to evaluate", file=task_obj.source, field=f"data.{split}")
    check_examples(task_obj, examples, split, unique_ids=True)  # before training, not after
    return finetune_examples(task_obj, train, splits.dev, examples, model_name, method, cfg=cfg, args=args,
                             out_dir=out, seed=seed, options=options, prompt=prompt, split=split, limit=limit,
                             merge=merge, resume=resume, progress=progress, keep_checkpoints=keep_checkpoints,
                             trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)


def finetune_examples(task: "Task", train: Sequence["Example"], dev: Sequence["Example"],
                      examples: Sequence["Example"], model_name: str, method: str, *, cfg: Any, args: Any,
                      out_dir: str | Path, seed: int = 0, options: Mapping[str, Any] | None = None,
                      prompt: Mapping[str, Any] | None = None, split: str = "test", limit: int | None = None,
                      merge: bool = False, resume: bool = False, progress: bool = True,
                      keep_checkpoints: bool = False, trust_remote_code: bool = False,
                      allow_pickle: bool = False, embedder: Any = None) -> "EvalResult | None":
    """Fine-tune on the given ``train``/``dev`` examples and evaluate on ``examples`` (what
    `run_finetune` does after choosing them; the compare runner calls this with its shared subsets).
    ``cfg``/``args`` come from `build_configs`. ``embedder``: a loaded `Embedder` the embedding probe uses
    instead of loading its own. Writes the artifact, metrics, config and card to ``out_dir``."""
    from adaptlab.evaluate import evaluate, save_metrics

    task_obj, out = task, Path(out_dir)
    log.info("fine-tuning %s with %s on %d %s examples (%d dev)", model_name, method, len(train),
             task_obj.name, len(dev))
    if isinstance(cfg, EmbeddingProbeConfig):
        adapted: Any = cfg.fit(task_obj, train, dev, seed=seed, embedder=embedder)
    else:
        adapted = cfg.fit(task_obj, train, dev, model=model_name, args=args, out_dir=out,
                          resume=resume, prompt=prompt,
                          load_options={"trust_remote_code": trust_remote_code, "allow_pickle": allow_pickle})
        if not adapted.is_main_process:
            return None
    if isinstance(cfg, EmbeddingProbeConfig):
        adapted.save(out)
    else:
        adapted.save(out, merge=merge)
    artifact_bytes = _artifact_bytes(out)
    if isinstance(cfg, EmbeddingProbeConfig):
        adapted.fit_info["artifact_bytes"] = artifact_bytes
    else:
        adapted.train_cost["artifact_bytes"] = artifact_bytes

    result = evaluate(adapted, adapted.as_lm(), task_obj, examples, seed=seed, progress=progress, split=split)
    result.cost["train"]["artifact_bytes"] = artifact_bytes
    doc = result.to_json()
    save_metrics(result, out)
    config = {
        "adaptlab_version": adaptlab.__version__, "task": task_obj.name,
        "task_file": str(task_obj.source) if task_obj.source else None, "model": model_name,
        "method": method, "method_config": cfg.to_dict(),
        "train_args": adapted.train_args if hasattr(adapted, "train_args") else {"seed": seed},
        "prompt": dict(prompt or {}), "n_train": len(train), "n_dev": len(dev), "seed": seed,
        "split": split, "limit": limit, "merge": merge, "options": dict(options or {}),
    }
    write_json_atomic(out / "config.json", config)
    from adaptlab.finetuning.card import model_card

    (out / "README.md").write_text(model_card(config, doc), encoding="utf-8")
    if not keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        shutil.rmtree(out / "best", ignore_errors=True)
    return result


# ----------------------------------------------------------------------------- module entry point
def _parse_options(items: Sequence[str]) -> dict[str, str]:
    opts = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"option '{item}' is not key=value", field="--set")
        key, value = item.split("=", 1)
        opts[key.strip()] = value.strip()
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adaptlab.finetuning.run TASK [--method lora] ...`` (used under accelerate launch)."""
    p = argparse.ArgumentParser(prog="python -m adaptlab.finetuning.run", description=__doc__.splitlines()[0])
    p.add_argument("task", help="task YAML file")
    p.add_argument("--model", "-m", default=DEFAULT_MODEL)
    p.add_argument("--method", default="lora")
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="method or training option, e.g. --set rank=4 --set batch_size=16")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--merge", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--verbose", "-v", action="store_true")
    ns = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run_finetune(ns.task, ns.model, ns.method, n_train=ns.n_train, epochs=ns.epochs, out_dir=ns.out,
                              seed=ns.seed, options=_parse_options(ns.options), split=ns.split, limit=ns.limit,
                              merge=ns.merge, resume=ns.resume, progress=not ns.no_progress,
                              keep_checkpoints=ns.keep_checkpoints)
    except AdaptlabError as e:
        sys.stderr.write(f"error: {e.one_line()}\n")
        return 1
    if result is not None:
        sys.stdout.write(json.dumps({"out": str(ns.out), "metric": result.metric, "train": result.cost["train"]}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
