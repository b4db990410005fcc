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

Both sides use the same batch size, dtype and ``torch.set_num_threads``. Prints examples/second (median of
the repeats), the speed-up, each side's accuracy (lm-eval's own ``acc`` beside adaptlab's), the share of
identical predictions, the largest log-likelihood difference, peak RSS and model-load seconds.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_lmeval.py --n 200 --repeats 3 --threads 2
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_lmeval.py --n 1821 --repeats 1 --threads 2

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

REPO = Path(__file__).resolve().parents[1]
TASK_DIR = Path(__file__).resolve().parent / "lmeval_sst2"
TASK = "adaptlab_sst2"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "sst2"
SIDES = ("lmeval", "adaptlab")
LMEVAL_FEWSHOT_SEED = 1234
"""lm-eval's default ``fewshot_random_seed`` (the ``first_n`` sampler does not use it)."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def worker_adaptlab(ns: argparse.Namespace) -> dict:
    from adaptlab.lm.base import LoglikelihoodRequest
    from adaptlab.lm.hf import HFLM
    from adaptlab.models import load_model

    from _hw import peak_rss_mb, thread_info

    _set_threads(ns.threads)
    rows = json.loads(Path(ns.requests).read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    loaded = load_model("smollm2-135m-instruct", dtype=ns.dtype)
    load_s = time.perf_counter() - t0
    rss_load = peak_rss_mb()
    lm = HFLM.from_loaded(loaded, batch_size=ns.batch_size)
    requests = [LoglikelihoodRequest(r["context"], tuple(r["continuations"])) for r in rows]
    t0 = time.perf_counter()
    scores = lm.loglikelihood(requests)
    seconds = time.perf_counter() - t0
    st = lm.last_stats
    return {"side": "adaptlab", "load_seconds": load_s, "score_seconds": seconds, "total_seconds": seconds,
            "rss_after_load_mb": rss_load, "peak_rss_mb": peak_rss_mb(),
            "lls": [list(s.logprobs) for s in scores], "acc_reported": None,
            "contexts_hash": _contexts_hash([r["context"] for r in rows]),
            "tokens": {"naive": st.naive_tokens, "computed": st.computed_tokens, "prefix": st.prefix_tokens,
                       "pad": st.pad_tokens}, **thread_info()}


def worker_lmeval(ns: argparse.Namespace) -> dict:
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM as LmEvalHFLM

    from adaptlab.models import ensure_converted

    from _hw import peak_rss_mb, thread_info

    _set_threads(ns.threads)
    folder = ensure_converted()
    t0 = time.perf_counter()
    lm = LmEvalHFLM(pretrained=str(folder), dtype=ns.dtype, batch_size=ns.batch_size, device="cpu")
    load_s = time.perf_counter() - t0
    rss_load = peak_rss_mb()
    timed: list[float] = []
    inner = lm.loglikelihood

    def loglikelihood(requests, *a, **kw):  # time lm-eval's scoring call inside evaluate()
        start = time.perf_counter()
        try:
            return inner(requests, *a, **kw)
        finally:
            timed.append(time.perf_counter() - start)

    lm.loglikelihood = loglikelihood
    task_dict, _ = load_lmeval_task(ns.data, ns.shots, ns.fewshot_seed)
    t0 = time.perf_counter()
    out = evaluator.evaluate(lm=lm, task_dict=task_dict, limit=ns.n, bootstrap_iters=0, log_samples=True)
    total = time.perf_counter() - t0
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    lls = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    contexts = [s["arguments"][0][0] for s in samples]
    acc = out["results"][TASK].get("acc,none")
    return {"side": "lmeval", "load_seconds": load_s, "score_seconds": sum(timed), "total_seconds": total,
            "rss_after_load_mb": rss_load, "peak_rss_mb": peak_rss_mb(), "lls": lls, "acc_reported": acc,
            "contexts_hash": _contexts_hash(contexts), **thread_info()}


def run_worker(side: str, shots: int, req_file: Path, ns: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(Path(__file__).parent)]),
               OMP_NUM_THREADS=str(ns.threads), MKL_NUM_THREADS=str(ns.threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--requests", str(req_file),
           "--shots", str(shots), "--n", str(ns.n), "--batch-size", str(ns.batch_size), "--threads",
           str(ns.threads), "--dtype", ns.dtype, "--data", str(ns.data), "--fewshot-seed", str(ns.fewshot_seed)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["process_seconds"] = time.perf_counter() - t0
    return row


# ----------------------------------------------------------------------------- comparison
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
        sec = statistics.median(r["score_seconds"] for r in rs)
        out[side] = {"eps": n / sec, "score_seconds": [r["score_seconds"] for r in rs],
                     "total_seconds": [r["total_seconds"] for r in rs],
                     "load_seconds": statistics.median(r["load_seconds"] for r in rs),
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                     "rss_after_load_mb": max(r["rss_after_load_mb"] for r in rs),
                     "acc": sum(a == y for a, y in zip(p, labels)) / n, "acc_reported": last["acc_reported"],
                     "torch_threads": last["torch_threads"], "tokens": last.get("tokens")}
    if set(runs) == set(SIDES):
        a, b = runs["adaptlab"][-1]["lls"], runs["lmeval"][-1]["lls"]
        out["speedup"] = out["adaptlab"]["eps"] / out["lmeval"]["eps"]
        out["paired_speedups"] = [x["score_seconds"] / y["score_seconds"]
                                  for x, y in zip(runs["lmeval"], runs["adaptlab"])]
        out["agreement"] = sum(x == y for x, y in zip(preds["adaptlab"], preds["lmeval"])) / n
        out["max_abs_dll"] = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
        out["same_contexts"] = runs["adaptlab"][-1]["contexts_hash"] == runs["lmeval"][-1]["contexts_hash"]
    return out


def print_summary(s: dict) -> None:
    print(f"\n{s['shots']}-shot, {s['n']} SST-2 test examples")
    print(f"{'side':<9} {'ex/s':>8} {'score s (runs)':<28} {'acc':>6} {'acc lm-eval':>11} {'peak RSS MB':>11} "
          f"{'RSS loaded':>10} {'load s':>6} {'threads':>7}")
    for side in SIDES:
        if side not in s:
            continue
        r = s[side]
        runs = ", ".join(f"{x:.1f}" for x in r["score_seconds"])
        rep = "-" if r["acc_reported"] is None else f"{r['acc_reported']:.4f}"
        print(f"{side:<9} {r['eps']:>8.2f} {'[' + runs + ']':<28} {r['acc']:>6.4f} {rep:>11} "
              f"{r['peak_rss_mb']:>11.0f} {r['rss_after_load_mb']:>10.0f} {r['load_seconds']:>6.1f} "
              f"{r['torch_threads']:>7}")
    if "speedup" in s:
        paired = ", ".join(f"{x:.1f}" for x in s["paired_speedups"])
        print(f"speed-up adaptlab/lm-eval {s['speedup']:.2f}x (paired per repeat: {paired}); "
              f"agreement {s['agreement']:.4f}; max |dLL| {s['max_abs_dll']:.2e}; "
              f"same contexts: {s['same_contexts']}; adaptlab tokens {s['adaptlab']['tokens']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="first N SST-2 test examples (1821 = all)")
    p.add_argument("--shots", type=int, nargs="+", default=[0, 8], help="shot counts to run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side (median reported)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of both sides")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads of both sides")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with stsa.binary.{train,test}")
    p.add_argument("--fewshot-seed", type=int, default=0, help="shuffle of the training split (demonstrations)")
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_lmeval.json")
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--requests", type=Path, help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.worker:
        ns.shots = ns.shots[0]
        print(json.dumps((worker_adaptlab if ns.worker == "adaptlab" else worker_lmeval)(ns)))
        return 0
    if importlib.util.find_spec("lm_eval") is None:
        print("lm-evaluation-harness is not installed; install it with:\n"
              f"    {sys.executable} -m pip install lm-eval", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO / "src"))
    from adaptlab.models import ensure_converted

    folder = ensure_converted()  # once, before the workers (they would wait on each other's conversion)
    import lm_eval

    print(f"lm-eval {lm_eval.__version__}; model folder {folder}; {ns.dtype}; batch {ns.batch_size}; "
          f"{ns.threads} threads; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"median of {ns.repeats}")
    results: dict = {"n": ns.n, "batch_size": ns.batch_size, "threads": ns.threads, "dtype": ns.dtype,
                     "lm_eval": lm_eval.__version__, "fewshot_seed": ns.fewshot_seed, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for shots in ns.shots:
            rows = build_requests(ns.data, shots, ns.n, ns.fewshot_seed)
            req_file = Path(tmp) / f"requests-{shots}.json"
            req_file.write_text(json.dumps(rows), encoding="utf-8")
            runs: dict[str, list[dict]] = {side: [] for side in ns.sides}
            for rep in range(ns.repeats):
                for side in (ns.sides if rep % 2 == 0 else list(reversed(ns.sides))):
                    r = run_worker(side, shots, req_file, ns)
                    runs[side].append(r)
                    _log(f"  {shots}-shot {side:<8} run {rep + 1}: score {r['score_seconds']:.1f} s, "
                         f"total {r['total_seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
                         f"load average {os.getloadavg()[0]:.1f}")
            summary = summarise(shots, rows, runs)
            if "same_contexts" in summary and not summary["same_contexts"]:
                _log("WARNING: lm-eval built different contexts from the ones adaptlab scored")
            print_summary(summary)
            results["runs"].append(summary)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
