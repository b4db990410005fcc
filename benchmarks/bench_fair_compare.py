"""Benchmark: the fair comparison (issue 14) from finished ``adaptlab compare`` runs: before/after figures.

For each run folder it reads the stored cells (every seed of every variant is a repeat) and prints and records:

- the best prompt accuracy before (``--before``: the plain-text 8-shot arm of the same run, the grid's best prompt
  before chat, many-shot and kNN) and after (the best prompt-family variant now), with their intervals;
- "a prompt is worth N labels": each fine-tune's crossing of the best prompt, in training labels and in labels
  used (training + every dev label read), and of the *before* prompt;
- break-even in queries and dollars with and without the label price, served batched and one query at a time;
- the recommendation and its stability (share of bootstrap replicates giving the same decision).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_fair_compare.py runs/sst2 runs/agnews \
        --out benchmarks/results/bench_fair_compare.json

The JSON record (``benchmarks/harness.py``'s ``write_record``) holds the exact command, the machine, the load
average before and after, the settings and, as its summary, ``run_folders``: one entry per run folder with the
figures above. Nothing is timed here, so ``--repeats``/``--warmup`` do not apply (accepted for the harness's common
options; ``--smoke`` changes nothing: a summary takes seconds). Runs are not re-timed: the cells' own measurements
(train seconds, latency series, batched throughput) are copied with the machine each run recorded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from harness import add_harness_arguments, command_line, write_record

BEFORE = "few_shot k=8 balanced format=plain"


def _best(best: Any) -> dict[str, Any] | None:
    if best is None:
        return None
    return {"variant": best.variant, "n_train": best.n_train, "labels_used": best.labels, "mean": best.mean,
            "seed_min": best.low, "seed_max": best.high, "seeds": len(best.cells)}


def _interval(analysis: Any, best: Any) -> dict[str, Any] | None:
    iv = analysis.interval(best.variant, best.n_train) if best is not None else None
    return None if iv is None else {"low": iv.low, "high": iv.high, "method": iv.method}


def _crossings(crossovers: list[Any]) -> list[dict[str, Any]]:
    return [{"variant": c.variant, "target": c.target, "target_value": c.target_value,
             "training_labels": c.n, "training_labels_range": [c.n_low, c.n_high],
             "labels_used": c.labels, "labels_used_range": [c.labels_low, c.labels_high],
             "target_labels_used": c.target_labels, "note": c.note} for c in crossovers]


def _break_even(even: Any) -> dict[str, Any] | None:
    if even is None:
        return None
    keys = ("prompt", "finetune", "queries_dollars", "queries_dollars_no_labels", "queries_seconds",
            "prompt_query_dollars", "finetune_query_dollars", "train_dollars", "prompt_train_dollars",
            "label_dollars", "prompt_label_dollars")
    return {k: getattr(even, k) for k in keys}


def _cell(c: Any) -> dict[str, Any]:
    q = c.query_info()
    return {"variant": c.variant, "strategy": c.strategy, "family": c.family, "n_train": c.n_train, "seed": c.seed,
            "labels_used": c.labels, "value": c.value, "n_test": c.n_test, "train_seconds": c.train_seconds,
            "latency_p50_s": q.get("latency_p50_s"), "latency_p50_warm_s": q.get("latency_p50_warm_s"),
            "throughput_qps": q.get("throughput_qps"), "throughput_batch_size": q.get("throughput_batch_size"),
            "peak_memory_bytes": c.peak_memory_bytes}


def summarize(run_dir: Path, before: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The before/after figures of one run folder, its stored scenario with ``overrides`` (None values ignored)."""
    from adaptlab.analysis import analyze
    from adaptlab.analysis.curves import best_of, ok_cells, prompt_worth
    from adaptlab.experiment.store import RunStore
    from adaptlab.recommend import recommend, scenario_with

    store = RunStore(run_dir, create=False)
    try:
        experiment = store.experiment() or {}
        environment = store.environment()
        cells = store.cells()
        out: dict[str, Any] = {"run": str(run_dir), "experiment": experiment.get("name"),
                               "environment": environment, "cells": [_cell(c) for c in cells]}
        base = scenario_with(experiment.get("scenario"), overrides)
        out["scenario"] = base.model_dump()
        for serving in ("batched", "single"):
            scenario = base.model_copy(update={"serving": serving})
            analysis = analyze(cells, store.predictions, scenario)
            rec = recommend(analysis, scenario)
            out[serving] = {"break_even": _break_even(analysis.break_even),
                            "decision": rec.decision, "choice": rec.choice, "headline": rec.headline,
                            "stability": rec.stability, "stability_replicates": rec.stability_replicates}
            if serving == "batched":
                ok = ok_cells(analysis.cells)
                old = [c for c in ok if c.variant == before]
                old_best = best_of(old, "prompt") if old else None
                out["before"] = {**(_best(old_best) or {}), "interval": _interval(analysis, old_best)}
                out["after"] = {**(_best(analysis.best_prompt) or {}),
                                "interval": _interval(analysis, analysis.best_prompt)}
                out["best_finetune"] = {**(_best(analysis.best_finetune) or {}),
                                        "interval": _interval(analysis, analysis.best_finetune)}
                out["worth_after"] = _crossings(analysis.crossovers)
                out["worth_before"] = _crossings(prompt_worth(ok, old_best)) if old_best else []
                out["baseline"] = None if analysis.baseline is None else {
                    "value": analysis.baseline.value, "label": analysis.baseline.label,
                    "flagged": [f"{f.variant} n={f.n_train}: {', '.join(f.why)}" for f in analysis.baseline.flagged]}
                out["format_spread"] = [{"strategy": s.strategy, "n_train": s.n_train, "variants": s.variants,
                                         "values": s.values, "spread": s.spread} for s in analysis.sensitivity
                                        if s.across == "formats"]
                out["assumptions"] = analysis.assumptions
                out["significance"] = None if analysis.significance is None else vars(analysis.significance)
        return out
    finally:
        store.close()


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders of `adaptlab compare`")
    ap.add_argument("--before", default=BEFORE, help="the variant that was the best prompt before")
    ap.add_argument("--prefix-cache", action=argparse.BooleanOptionalAction, default=None,
                    help="override the run's scenario: the serving engine keeps prompt prefixes")
    add_harness_arguments(ap, "bench_fair_compare.json")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    results = [summarize(r, args.before, {"prefix_cache": args.prefix_cache}) for r in args.runs]
    for r in results:
        b, a = r["before"], r["after"]
        print(f"== {r['experiment']} ({len(r['cells'])} cells)")
        print(f"  best prompt before ({b.get('variant')}): {_fmt(b.get('mean'))}; "
              f"after ({a.get('variant')} n={a.get('n_train')}): {_fmt(a.get('mean'))}")
        for tag in ("worth_before", "worth_after"):
            for c in r[tag]:
                print(f"  {tag}: {c['variant']} matches {c['target']} at {_fmt(c['training_labels'], '.0f')} "
                      f"training labels / {_fmt(c['labels_used'], '.0f')} labels used")
        for serving in ("batched", "single"):
            s = r[serving]
            even = s["break_even"] or {}
            print(f"  {serving}: break-even {_fmt(even.get('queries_dollars'), ',.0f')} queries with label price, "
                  f"{_fmt(even.get('queries_dollars_no_labels'), ',.0f')} without; decision {s['decision']} "
                  f"({s['choice']}), stability {_fmt(s['stability'], '.2f')}")
    write_record("bench_fair_compare", args.out, {"run_folders": results}, vars(args),
                 command=command_line(__file__, argv), load_before=load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
