"""`VLLMLM`: the `LM` interface on a vLLM engine (GPUs; large models and big evaluation sets).

Optional extra: ``pip install 'adaptlab[vllm]'`` (needs a CUDA GPU). Scoring asks vLLM for
``prompt_logprobs`` of ``context + continuation`` token ids with ``max_tokens=1`` and sums the
continuation's log-probabilities; vLLM's automatic prefix caching shares few-shot prefixes across
requests, the same idea as `HFLM`'s shared-prefix cache. Tokenisation matches `HFLM` (trailing
whitespace of the context moves into the continuation, contexts cut from the left to fit), so the
two backends score the same token sequences. Generation is greedy (``temperature=0``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from adaptlab.errors import ModelError
from adaptlab.lm.base import ContinuationScores, LoglikelihoodRequest, Usage, no_kept_prefix

log = logging.getLogger(__name__)


def vllm_unavailable_reason() -> str | None:
    """Why the vLLM backend cannot run here (None when it can)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install 'adaptlab[vllm]')"
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "vllm needs a CUDA GPU and none is available"
    return None


def continuation_logprob(prompt_logprobs: Sequence[Mapping[int, Any] | None], token_ids: Sequence[int],
                         start: int) -> float:
    """Sum of log p(token_ids[i]) for i >= ``start`` from vLLM's per-position ``prompt_logprobs``.

    ``prompt_logprobs[i]`` maps token ids to objects with a ``logprob`` attribute (vLLM's ``Logprob``)
    or to floats; position 0 is ``None`` (nothing predicts the first token).
    """
    if start < 1:
        raise ValueError("the continuation must follow at least one context token")
    total = 0.0
    for i in range(start, len(token_ids)):
        entry = prompt_logprobs[i]
        if entry is None or token_ids[i] not in entry:
            raise ModelError(f"vLLM returned no log-probability for prompt position {i}",
                             hint="request prompt_logprobs=0 (the scored token is always included)")
        value = entry[token_ids[i]]
        total += float(getattr(value, "logprob", value))
    return total


class VLLMLM:
    """An `LM` over ``vllm.LLM`` (one engine per process; batching and scheduling are vLLM's)."""

    def __init__(self, model: str, *, dtype: str = "auto", max_length: int | None = None,
                 trust_remote_code: bool = False, gpu_memory_utilization: float = 0.85,
                 engine: Any = None, name: str | None = None) -> None:
        if engine is None:
            reason = vllm_unavailable_reason()
            if reason:
                raise ModelError(f"the vllm backend is unavailable: {reason}", field="backend",
                                 hint="use --backend hf on this machine")
            from vllm import LLM

            engine = LLM(model=model, dtype=dtype, trust_remote_code=trust_remote_code,
                         enable_prefix_caching=True, gpu_memory_utilization=gpu_memory_utilization,
                         max_model_len=max_length)
        self.engine = engine
        self.tokenizer = engine.get_tokenizer()
        self.name = name or model
        self.usage = Usage()
        self.n_params: int | None = _engine_params(engine)
        config = getattr(getattr(engine, "llm_engine", None), "model_config", None)
        self.max_length = int(max_length or getattr(config, "max_model_len", 0) or 2048)

    keep_prefix = staticmethod(no_kept_prefix)
    """vLLM's automatic prefix caching is always on inside the engine: nothing to switch."""

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _sequences(self, requests: Sequence[LoglikelihoodRequest]) -> list[tuple[int, int, list[int], int, int]]:
        """(request, continuation, ids, start, n_ctx) for every continuation (HFLM's tokenisation)."""
        bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        out = []
        for i, r in enumerate(requests):
            ctx = r.context.rstrip()
            moved = r.context[len(ctx):]
            ctx_ids = self._encode(ctx) or [bos]
            for j, c in enumerate(r.continuations):
                cont = self._encode(moved + c)
                room = self.max_length - len(cont)
                ids = ctx_ids[-room:] + cont if room > 0 else ctx_ids[-1:] + cont
                out.append((i, j, ids, len(ids) - len(cont), min(len(ctx_ids), max(room, 1))))
        return out

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], *,
                      progress: bool = False) -> list[ContinuationScores]:
        from vllm import SamplingParams

        t0 = time.perf_counter()
        seqs = self._sequences(requests)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        prompts = [{"prompt_token_ids": ids} for _, _, ids, _, _ in seqs]
        outputs = self.engine.generate(prompts, params, use_tqdm=progress)
        scores = [[0.0] * len(r.continuations) for r in requests]
        counts = [[0] * len(r.continuations) for r in requests]
        ctx_len = [0] * len(requests)
        for (i, j, ids, start, n_ctx), out in zip(seqs, outputs):
            scores[i][j] = continuation_logprob(out.prompt_logprobs, ids, start)
            counts[i][j] = len(ids) - start
            ctx_len[i] = n_ctx
        tokens = sum(len(s[2]) for s in seqs)
        self.usage.add(Usage(requests=len(requests), prompt_tokens=tokens, computed_tokens=tokens,
                             seconds=time.perf_counter() - t0))
        return [ContinuationScores(tuple(s), tuple(c), n) for s, c, n in zip(scores, counts, ctx_len)]

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 progress: bool = False) -> list[str]:
        from vllm import SamplingParams

        t0 = time.perf_counter()
        params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0, stop=[s for s in stop if s] or None)
        outputs = self.engine.generate(list(prompts), params, use_tqdm=progress)
        texts = [o.outputs[0].text for o in outputs]
        gen = sum(len(o.outputs[0].token_ids) for o in outputs)
        prompt = sum(len(o.prompt_token_ids or []) for o in outputs)
        self.usage.add(Usage(requests=len(prompts), prompt_tokens=prompt, computed_tokens=prompt + gen,
                             generated_tokens=gen, seconds=time.perf_counter() - t0))
        return texts


def _engine_params(engine: Any) -> int | None:
    """Parameters of the engine's model where vLLM exposes it (None otherwise)."""
    try:
        model = engine.llm_engine.model_executor.driver_worker.model_runner.model
        return int(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001 - vLLM's internals differ between versions; FLOPs are then unknown
        return None
