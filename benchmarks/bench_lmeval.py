"""Benchmark: adaptlab's prompt scoring vs lm-evaluation-harness on SST-2, same contexts, model and threads.

lm-evaluation-harness builds the task (``benchmarks/lmeval_sst2/sst2.yaml``: the shared SST-2 files read in
place, template ``{{sentence}}\\nQuestion: Is this sentence positive or negative?\\nAnswer:``, choices
``negative``/``positive``, the ``first_n`` few-shot sampler over a seeded shuffle of the training split,
so every document gets the same k demonstrations). Its contexts and continuations (`` negative``/
`` positive``) are written to a temporary file and scored by both sides, each in its own subprocess (so
each peak RSS is its own), alternating sides, ``--repeats`` times per shot count:

* **lm-eval**: ``lm_eval.evaluator.evaluate`` with its ``hf`` model on the converted default model folder
  (``adaptlab.models.ensure_converted()``), building the requests itself; its ``loglikelihood`` call is
  timed (the scoring) and so is the whole ``evaluate`` call. The worker checks that it built the same
  contexts.
* **adaptlab**: ``HFLM.loglikelihood`` (shared-prefix KV cache) on the same context strings.

Each side runs at its fastest batch size on this machine: a sweep (``--batch-sizes``, lm-eval also
``auto``, which probes from its ``max_batch_size`` of 64 down) scores ``--sweep-n`` examples once per batch
size (after one warm-up), and the fastest is used for the timed runs. Both sides use the same dtype and
thread count. The harness (``harness.py``) runs a warm-up per side, then ``--repeats`` alternated runs, and
keeps every one. Prints examples/second (median of the repeats), the speed-up, each side's accuracy
(lm-eval's own ``acc`` beside adaptlab's), the share of identical predictions, the largest log-likelihood
difference, peak RSS and model-load seconds. Token counts are what each side ran: lm-eval's positions
are counted inside its ``_model_call`` (the batch padded to its longest row; full-vocabulary logits at
every position), adaptlab's from its scoring stats (real tokens, padding, shared prefix computed once;
logits only at the scored positions).

FLOPs per cell: ``2 x N x positions`` run through the body (``N`` non-embedding parameters) plus
``2 x hidden x vocab`` per position whose logits are computed. MFU divides that by the peak measured in
the same worker (``_hw.shape_peak`` at the model's layer shapes); a value above 1 fails the script.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_lmeval.py --n 64 --threads 1

Needs lm-evaluation-harness (``.venv/bin/pip install lm-eval``); the script installs nothing and exits 2
without it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Harness, add_harness_arguments, command_line, log, median, thread_env

REPO = Path(__file__).resolve().parents[1]
TASK_DIR = Path(__file__).resolve().parent / "lmeval_sst2"
TASK = "adaptlab_sst2"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "sst2"
SIDES = ("lmeval", "adaptlab")
LMEVAL_FEWSHOT_SEED = 1234
"""lm-eval's default ``fewshot_random_seed`` (the ``first_n`` sampler does not use it)."""


def _contexts_hash(contexts: list[str]) -> str:
    return hashlib.sha256("\x00".join(contexts).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- lm-eval task
def load_lmeval_task(data: Path, shots: int, fewshot_seed: int) -> tuple[object, object]:
    """(TaskManager, the loaded ``adaptlab_sst2`` task) configured for ``shots`` demonstrations."""
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(TASK_DIR), include_defaults=False,
                     metadata={"data_dir": str(data), "fewshot_seed": fewshot_seed})
    loaded = tm.load([TASK])
    task = loaded["tasks"][TASK]
    task.set_config(key="num_fewshot", value=shots)
    task.set_fewshot_seed(seed=LMEVAL_FEWSHOT_SEED)
    return loaded, task


def build_requests(data: Path, shots: int, n: int, fewshot_seed: int) -> list[dict]:
    """lm-eval's requests for the first ``n`` test documents: doc id, label, context, continuations."""
    _, task = load_lmeval_task(data, shots, fewshot_seed)
    task.build_all_requests(limit=n, rank=0, world_size=1)
    docs: dict[int, dict] = {}
    for inst in sorted(task.instances, key=lambda i: (i.doc_id, i.idx)):
        ctx, cont = inst.args
        row = docs.setdefault(inst.doc_id, {"doc_id": inst.doc_id, "label": int(inst.doc["label"]),
                                            "context": ctx, "continuations": []})
        if row["context"] != ctx:
            raise RuntimeError(f"document {inst.doc_id} has different contexts per choice")
        row["continuations"].append(cont)
    return [docs[k] for k in sorted(docs)]


# ----------------------------------------------------------------------------- workers
def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _flops(model, positions: int, logit_positions: int, rows: int) -> dict:
    """Model FLOPs of a scoring run and the in-run peak they are divided by (see the module docstring)."""
    from _hw import linear_shapes, mfu, non_embedding_params, shape_peak

    cfg = model.config
    n = non_embedding_params(model)
    flops = 2 * n * positions + 2 * cfg.hidden_size * cfg.vocab_size * logit_positions
    peak = shape_peak(linear_shapes(model), max(rows, 1))
    return {"non_embedding_params": n, "flops": flops, "peak": peak, "_mfu": lambda s: mfu(flops, s, peak["gflops"])}


def worker_adaptlab(ns: argparse.Namespace) -> dict:
    from adaptlab.lm.base import LoglikelihoodRequest
    from adaptlab.lm.hf import HFLM
    from adaptlab.models import load_model

    from _hw import peak_rss_mb, thread_info

    _set_threads(ns.threads)
    rows = json.loads(Path(ns.requests).read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    loaded = load_model(ns.model, dtype=ns.dtype)
    load_s = time.perf_counter() - t0
    rss_load = peak_rss_mb()
    lm = HFLM.from_loaded(loaded, batch_size=int(ns.batch_size))
    requests = [LoglikelihoodRequest(r["context"], tuple(r["continuations"])) for r in rows]
    t0 = time.perf_counter()
    scores = lm.loglikelihood(requests)
    seconds = time.perf_counter() - t0
    st = lm.last_stats
    positions = st.computed_tokens + st.pad_tokens
    logit_positions = sum(len(s.logprobs) for s in scores)  # one scored position per one-token continuation
    f = _flops(loaded.model, positions, logit_positions, positions // max(st.batches, 1))
    return {"load_seconds": load_s, "score_seconds": seconds, "total_seconds": seconds,
            "rss_after_load_mb": rss_load, "peak_rss_mb": peak_rss_mb(),
            "lls": [list(s.logprobs) for s in scores], "acc_reported": None,
            "contexts_hash": _contexts_hash([r["context"] for r in rows]),
            "tokens": {"submitted": st.naive_tokens, "computed": st.computed_tokens, "pad": st.pad_tokens,
                       "positions": positions, "prefix": st.prefix_tokens, "logit_positions": logit_positions},
            "non_embedding_params": f["non_embedding_params"], "flops": f["flops"], "peak": f["peak"],
            "mfu": f["_mfu"](seconds), **thread_info()}


def worker_lmeval(ns: argparse.Namespace) -> dict:
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM as LmEvalHFLM

    from _hw import peak_rss_mb, thread_info

    _set_threads(ns.threads)
    folder = ns.model_folder
    t0 = time.perf_counter()
    bs = ns.batch_size if ns.batch_size == "auto" else int(ns.batch_size)
    lm = LmEvalHFLM(pretrained=str(folder), dtype=ns.dtype, batch_size=bs, device="cpu")
    load_s = time.perf_counter() - t0
    rss_load = peak_rss_mb()
    timed: list[float] = []
    ran = {"positions": 0, "calls": 0, "widest": 0}
    inner, inner_call = lm.loglikelihood, lm._model_call

    def loglikelihood(requests, *a, **kw):  # time lm-eval's scoring call inside evaluate()
        start = time.perf_counter()
        try:
            return inner(requests, *a, **kw)
        finally:
            timed.append(time.perf_counter() - start)

    def model_call(inps, *a, **kw):  # count what lm-eval actually runs (auto's probe batches included)
        ran["positions"] += int(inps.numel())
        ran["calls"] += 1
        ran["widest"] = max(ran["widest"], int(inps.numel()))
        return inner_call(inps, *a, **kw)

    lm.loglikelihood, lm._model_call = loglikelihood, model_call
    task_dict, _ = load_lmeval_task(ns.data, ns.shots, ns.fewshot_seed)
    t0 = time.perf_counter()
    out = evaluator.evaluate(lm=lm, task_dict=task_dict, limit=ns.n, bootstrap_iters=0, log_samples=True)
    total = time.perf_counter() - t0
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    lls = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    contexts = [s["arguments"][0][0] for s in samples]
    acc = out["results"][TASK].get("acc,none")
    f = _flops(lm.model, ran["positions"], ran["positions"], ran["widest"])
    return {"load_seconds": load_s, "score_seconds": sum(timed), "total_seconds": total,
            "rss_after_load_mb": rss_load, "peak_rss_mb": peak_rss_mb(), "lls": lls, "acc_reported": acc,
            "contexts_hash": _contexts_hash(contexts), "batch_size_used": str(lm.batch_size),
            "tokens": {"positions": ran["positions"], "logit_positions": ran["positions"], "calls": ran["calls"]},
            "non_embedding_params": f["non_embedding_params"], "flops": f["flops"], "peak": f["peak"],
            "mfu": f["_mfu"](sum(timed)), **thread_info()}


def run_worker(side: str, shots: int, req_file: Path, ns: argparse.Namespace, batch_size: str, n: int) -> dict:
    """One scoring run of ``side`` in its own process (so its peak RSS is its own; ``--smoke``: in this one)."""
    if ns.smoke:
        wns = argparse.Namespace(**{**vars(ns), "requests": req_file, "shots": shots, "n": n, "batch_size": batch_size})
        t0 = time.perf_counter()
        row = (worker_adaptlab if side == "adaptlab" else worker_lmeval)(wns)
        row.update(process_seconds=time.perf_counter() - t0, batch_size=batch_size, n=n)
        row["eps"] = n / row["score_seconds"]
        return row
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--requests", str(req_file),
           "--shots", str(shots), "--n", str(n), "--worker-batch-size", batch_size, "--threads",
           str(ns.threads), "--dtype", ns.dtype, "--data", str(ns.data), "--fewshot-seed", str(ns.fewshot_seed),
           "--model", ns.model, "--model-folder", str(ns.model_folder)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=thread_env(ns.threads), cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(process_seconds=time.perf_counter() - t0, batch_size=batch_size, n=n)
    row["eps"] = n / row["score_seconds"]
    return row


# ----------------------------------------------------------------------------- comparison
def sweep(side: str, shots: int, ns: argparse.Namespace, tmp: Path) -> dict:
    """Score ``--sweep-n`` examples once per batch size (after one warm-up run); the fastest batch size wins."""
    rows = build_requests(ns.data, shots, ns.sweep_n, ns.fewshot_seed)
    req_file = tmp / f"sweep-{shots}.json"
    req_file.write_text(json.dumps(rows), encoding="utf-8")
    sizes = [b for b in ns.batch_sizes if side == "lmeval" or b != "auto"]
    if not ns.smoke:
        run_worker(side, shots, req_file, ns, sizes[0], len(rows))  # warm-up: file cache, first-import costs
    eps = {}
    for b in sizes:
        eps[b] = run_worker(side, shots, req_file, ns, b, len(rows))["eps"]
        log(f"  sweep {shots}-shot {side:<8} batch {b:>4}: {eps[b]:.2f} ex/s")
    best = max(eps, key=eps.__getitem__)
    return {"n": len(rows), "eps": eps, "best": best}


def summarise(shots: int, rows: list[dict], runs: dict[str, list[dict]]) -> dict:
    """Medians, speed-up, accuracy, agreement and largest |dLL| of the two sides for one shot count."""
    labels = [r["label"] for r in rows]
    n = len(rows)
    out: dict = {"shots": shots, "n": n}
    preds = {}
    for side, rs in runs.items():
        last = rs[-1]
        p = [max(range(len(ll)), key=ll.__getitem__) for ll in last["lls"]]
        preds[side] = p
        out[side] = {"eps": n / median(rs, "score_seconds"), "batch_size": last["batch_size"],
                     "score_seconds": [r["score_seconds"] for r in rs],
                     "total_seconds": [r["total_seconds"] for r in rs],
                     "load_seconds": median(rs, "load_seconds"), "mfu": median(rs, "mfu"),
                     "peak_gflops": statistics.median(r["peak"]["gflops"] for r in rs),
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                     "rss_after_load_mb": max(r["rss_after_load_mb"] for r in rs),
                     "acc": sum(a == y for a, y in zip(p, labels)) / n, "acc_reported": last["acc_reported"],
                     "torch_threads": last["torch_threads"], "tokens": last["tokens"], "flops": last["flops"]}
    if set(runs) == set(SIDES):
        a, b = runs["adaptlab"][-1]["lls"], runs["lmeval"][-1]["lls"]
        out["speedup"] = out["adaptlab"]["eps"] / out["lmeval"]["eps"]
        out["paired_speedups"] = [x["score_seconds"] / y["score_seconds"]
                                  for x, y in zip(runs["lmeval"], runs["adaptlab"])]
        out["agreement"] = sum(x == y for x, y in zip(preds["adaptlab"], preds["lmeval"])) / n
        out["max_abs_dll"] = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
        out["same_contexts"] = runs["adaptlab"][-1]["contexts_hash"] == runs["lmeval"][-1]["contexts_hash"]
        out["flops_ratio"] = out["lmeval"]["flops"] / out["adaptlab"]["flops"]
    return out


def print_summary(s: dict) -> None:
    print(f"\n{s['shots']}-shot, {s['n']} SST-2 test examples")
    print(f"{'side':<9} {'batch':>5} {'ex/s':>8} {'score s (runs)':<24} {'acc':>6} {'acc lm-eval':>11} "
          f"{'MFU':>5} {'peak RSS MB':>11} {'load s':>6}")
    for side in SIDES:
        if side not in s:
            continue
        r = s[side]
        runs = ", ".join(f"{x:.1f}" for x in r["score_seconds"])
        rep = "-" if r["acc_reported"] is None else f"{r['acc_reported']:.4f}"
        print(f"{side:<9} {r['batch_size']:>5} {r['eps']:>8.2f} {'[' + runs + ']':<24} {r['acc']:>6.4f} {rep:>11} "
              f"{r['mfu']:>5.2f} {r['peak_rss_mb']:>11.0f} {r['load_seconds']:>6.1f}")
    if "speedup" in s:
        paired = ", ".join(f"{x:.1f}" for x in s["paired_speedups"])
        print(f"speed-up adaptlab/lm-eval {s['speedup']:.2f}x (paired per repeat: {paired}); "
              f"agreement {s['agreement']:.4f}; max |dLL| {s['max_abs_dll']:.2e}; FLOPs ratio {s['flops_ratio']:.2f}; "
              f"same contexts: {s['same_contexts']}")


GOALS = {0: 2.0, 8: 10.0}
"""Speed-up goals (adaptlab over lm-eval at its fastest batch size) per shot count."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="first N SST-2 test examples (1821 = all)")
    p.add_argument("--shots", type=int, nargs="+", default=[0, 8], help="shot counts to run")
    p.add_argument("--batch-sizes", nargs="+", default=["1", "4", "8", "16", "32", "auto"],
                   help="batch sizes swept per side (auto: lm-eval only)")
    p.add_argument("--sweep-n", type=int, default=16, help="examples scored per batch size in the sweep")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads of both sides")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--model", default="smollm2-135m-instruct", help="adaptlab model name or folder")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with stsa.binary.{train,test}")
    p.add_argument("--fewshot-seed", type=int, default=0, help="shuffle of the training split (demonstrations)")
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--requests", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--worker-batch-size", help=argparse.SUPPRESS)
    p.add_argument("--model-folder", type=Path, help=argparse.SUPPRESS)
    add_harness_arguments(p, "bench_lmeval.json")
    ns = p.parse_args(argv)
    if ns.worker:
        ns.shots, ns.batch_size = ns.shots[0], ns.worker_batch_size
        print(json.dumps((worker_adaptlab if ns.worker == "adaptlab" else worker_lmeval)(ns), default=str))
        return 0
    if importlib.util.find_spec("lm_eval") is None:
        print("lm-evaluation-harness is not installed; install it with:\n"
              f"    {sys.executable} -m pip install lm-eval", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO / "src"))
    import lm_eval

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if ns.smoke:  # the tiny random model, saved where lm-eval can load it
            from adaptlab.models import load_model

            tiny = load_model("tiny-random-llama")
            tiny.model.save_pretrained(tmp / "tiny")
            tiny.tokenizer.save_pretrained(tmp / "tiny")
            ns.model = ns.model_folder = str(tmp / "tiny")
            ns.n, ns.sweep_n, ns.shots, ns.batch_sizes = 4, 2, [2], ["4"]
        else:
            from adaptlab.models import ensure_converted

            ns.model_folder = ensure_converted()  # once, before the workers (they would wait on each other)
        h = Harness("bench_lmeval", ns, {k: v for k, v in vars(ns).items() if k not in ("worker", "requests")})
        h.command = command_line(__file__, argv)
        log(f"lm-eval {lm_eval.__version__}; model {ns.model}; {ns.dtype}; {ns.threads} threads")
        summaries, sweeps = [], {}
        for shots in ns.shots:
            best = {}
            for side in ns.sides:
                sweeps[f"{shots}-shot {side}"] = sw = sweep(side, shots, ns, tmp)
                best[side] = sw["best"]
            rows = build_requests(ns.data, shots, ns.n, ns.fewshot_seed)
            req_file = tmp / f"requests-{shots}.json"
            req_file.write_text(json.dumps(rows), encoding="utf-8")
            runs = h.alternate(f"{shots}-shot", {side: (lambda s=side: run_worker(s, shots, req_file, ns, best[s], len(rows)))
                                                 for side in ns.sides})
            summary = summarise(shots, rows, runs)
            if shots in GOALS and "speedup" in summary:
                summary["goal"] = {"speedup": GOALS[shots], "met": summary["speedup"] >= GOALS[shots]
                                   and (shots != 8 or summary["agreement"] == 1.0)}
            print_summary(summary)
            summaries.append(summary)
        for r in h.runs:  # keep the record small: log-likelihoods only in the summaries' agreement figures
            r.pop("lls", None)
        h.write({"lm_eval": lm_eval.__version__, "sweeps": sweeps, "by_shots": summaries})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
