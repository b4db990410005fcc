"""Benchmark: prompt a large model or tune a small one (issue 15), from finished ``adaptlab compare`` runs.

For each run folder (``experiments/large-vs-small.yaml``, ``experiments/multi30k-en-fr.yaml``) it reads the
stored cells (every seed of every variant is a repeat) and prints and records:

- each arm's best option (prompt the large model, fine-tune the small one, distil, cascade) with its quality
  interval, labels used, $ per 1,000 queries under its model's pricing, one-off and total cost;
- the distillation curve (student quality vs teacher-labelled examples, teacher agreement with gold);
- each cascade cell's chosen threshold, deferral and dev curve;
- generation runs: chrF and BLEU with intervals, tokens read and generated per query;
- the recommendation, what would flip it, and its stability.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_large_vs_small.py runs/large-vs-small runs/multi30k-en-fr \
        --out benchmarks/results/bench_large_vs_small.json

The JSON record (``benchmarks/harness.py``'s ``write_record``) holds the exact command, the machine, the load
average before and after, the settings and, as its summary, ``run_folders``: one entry per run folder with the
figures above. Nothing is timed here, so ``--repeats``/``--warmup`` do not apply (accepted for the harness's common
options; ``--smoke`` changes nothing: a summary takes seconds). Runs are not re-timed: the cells' own measurements
are copied with the machine each run recorded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from harness import add_harness_arguments, command_line, write_record


def _cell(c: Any, sc: Any) -> dict[str, Any]:
    q = c.query_info()
    train = (c.extra.get("cost") or {}).get("train") or {}
    search = c.extra.get("search") or {}
    out = {"variant": c.variant, "strategy": c.strategy, "arm": c.arm, "role": c.extra.get("role"),
           "model": (c.extra.get("cell") or {}).get("model"), "n_train": c.n_train, "seed": c.seed,
           "labels_used": c.labels, "value": c.value, "ci": [c.ci_low, c.ci_high], "n_test": c.n_test,
           "train_seconds": c.train_seconds, "train_usd": c.train_cost(sc), "usd_per_1k": 1000 * c.query_cost(sc),
           "latency_p50_s": q.get("latency_p50_s"), "throughput_qps": q.get("throughput_qps"),
           "prompt_tokens": q.get("prompt_tokens"), "api_input_tokens": q.get("api_input_tokens"),
           "api_output_tokens": q.get("api_output_tokens"), "hardware_seconds": q.get("hardware_seconds"),
           "deferred_fraction": q.get("deferred_fraction"), "teacher_api_input_tokens": train.get("api_input_tokens"),
           "teacher_api_output_tokens": train.get("api_output_tokens"), "teacher_cached": train.get("teacher_cached")}
    if search.get("kind") in ("distill", "cascade"):
        out["search"] = {k: v for k, v in search.items() if k != "curve"}
        if search.get("kind") == "cascade":
            out["cascade_curve"] = search.get("curve")
    for name in ("chrf", "bleu"):
        if isinstance(c.report.get(name), dict):
            out[name] = c.report[name]
    return out


def _generation_scores(store: Any, cells: list[Any]) -> dict[str, dict[str, Any]]:
    """chrF and BLEU with intervals per generation cell, from its stored predictions (runs written before the
    generation report carried both)."""
    from adaptlab.metrics import bootstrap_ci

    out: dict[str, dict[str, Any]] = {}
    for c in cells:
        rows = store.predictions(c.key) if c.ok else []
        if not rows or c.metric not in ("chrf", "bleu"):
            continue
        hyps, refs = [r.pred for r in rows], [r.gold for r in rows]
        out[c.key] = {}
        for name in ("chrf", "bleu"):
            ci = bootstrap_ci(name, hyps, refs, n_resamples=1000, seed=c.seed)
            out[c.key][name] = {"value": ci.estimate, "ci_low": ci.low, "ci_high": ci.high}
    return out


def summarize(run_dir: Path) -> dict[str, Any]:
    """The figures of one run folder under its stored scenario."""
    from adaptlab.analysis import analyze
    from adaptlab.experiment.store import RunStore
    from adaptlab.recommend import recommend, scenario_with
    from adaptlab.report.arms import distill_points

    store = RunStore(run_dir, create=False)
    try:
        experiment = store.experiment() or {}
        cells = store.cells()
        sc = scenario_with(experiment.get("scenario"), {})
        analysis = analyze(cells, store.predictions, sc)
        rec = recommend(analysis, sc)
        scores = _generation_scores(store, cells)
        rows = []
        for c in cells:
            row = _cell(c, sc)
            row.update(scores.get(c.key, {}))
            rows.append(row)
        return {"run": str(run_dir), "experiment": experiment.get("name"), "models": experiment.get("models"),
                "environment": store.environment(), "scenario": sc.model_dump(), "cells": rows,
                "options": rec.options, "decision": rec.decision, "choice": rec.choice, "headline": rec.headline,
                "reasons": rec.reasons, "would_change": rec.would_change, "stability": rec.stability,
                "stability_replicates": rec.stability_replicates,
                "distill_curve": [vars(p) for p in distill_points(analysis.cells)]}
    finally:
        store.close()


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders of `adaptlab compare`")
    add_harness_arguments(ap, "bench_large_vs_small.json")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    results = [summarize(r) for r in args.runs]
    for r in results:
        print(f"== {r['experiment']} ({len(r['cells'])} cells): {r['decision']} {r['choice']} "
              f"(stability {_fmt(r['stability'], '.2f')})")
        for o in r["options"]:
            print(f"  {o['arm']:<9} {o['variant']:<32} {_fmt(o['mean'])} [{_fmt(o['low'])}, {_fmt(o['high'])}] "
                  f"labels {_fmt(o['labels'], '.0f')}  ${_fmt(o['usd_per_1k'], '.4f')}/1k  ({o['price']})")
        for p in r["distill_curve"]:
            print(f"  distill {p['setup']} pool={p['pool']}: {_fmt(p['mean'])} ({p['seeds']} seeds), "
                  f"teacher agreement {_fmt(p['teacher_agreement'])}")
        for c in r["cells"]:
            if "chrf" in c:
                print(f"  {c['variant']}: chrF {_fmt(c['chrf']['value'], '.1f')} [{_fmt(c['chrf']['ci_low'], '.1f')}, "
                      f"{_fmt(c['chrf']['ci_high'], '.1f')}], BLEU {_fmt(c['bleu']['value'], '.1f')}")
            if c.get("deferred_fraction") is not None:
                print(f"  {c['variant']} seed {c['seed']}: deferred {_fmt(c['deferred_fraction'], '.2f')}, "
                      f"{_fmt(c['value'])}, threshold {_fmt((c.get('search') or {}).get('threshold'))}")
        for w in r["would_change"]:
            print(f"  would change: {w}")
    write_record("bench_large_vs_small", args.out, {"run_folders": results}, vars(args),
                 command=command_line(__file__, argv), load_before=load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
