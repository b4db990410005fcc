"""Local Hugging Face backend: batched log-likelihood scoring with a shared-prefix KV cache, greedy generation.

A few-shot prompt is instruction + demonstrations + query; everything before the query is the same for
every request. :class:`HFLM` finds that shared prefix (the longest common token prefix of all contexts in a
call, optionally refined into groups that share a longer one), runs it through the model ONCE, and scores
the per-query suffixes in right-padded, length-sorted batches against the cached keys/values. All label
verbalizers of a query are scored together: single-token labels need one row (the next-token distribution
at the last context position), multi-token labels one row each. ``prefix_cache=False`` scores every full
sequence on its own with the same token ids, rows and batching (the lm-evaluation-harness way), so both
paths give the same numbers up to float rounding.

Contexts and continuations are tokenized separately without special tokens (trailing whitespace of the
context moves to the continuation) and concatenated. Only the hidden states at the positions that are
read go through the output layer, so full-vocabulary logits are never built for a whole sequence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adaptlab.errors import DataError
from adaptlab.lm.base import ContinuationScores, LoglikelihoodRequest, Usage
from adaptlab.lm.prefix import cache_kwarg, lcp, plan_groups, prefix_cache_from

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from adaptlab.models.loading import LoadedModel

log = logging.getLogger(__name__)

_HEAD_CHUNK = 512
"""Positions per output-layer call (bounds the full-vocabulary logits held at once)."""
_SCALED_LOGITS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
"""Config fields of models whose logits are not just ``lm_head(hidden)``: those use the full forward."""


@dataclass
class ScoringStats:
    """What the last :meth:`HFLM.loglikelihood` call did (for cost reports)."""

    requests: int = 0
    rows: int = 0
    """Sequences run (one per request for single-token labels, one per multi-token label)."""
    batches: int = 0
    cached: bool = False
    prefix_tokens: int = 0
    """Tokens of the prefix shared by every request (computed once)."""
    groups: int = 0
    """Prefix groups (1: one shared prefix; more when requests share longer, different prefixes)."""
    group_prefix_tokens: int = 0
    """Tokens of group prefixes beyond the shared prefix (each computed once)."""
    naive_tokens: int = 0
    """Context + continuation tokens as submitted (what a naive engine would compute)."""
    computed_tokens: int = 0
    """Tokens actually run through the model (padding excluded)."""
    pad_tokens: int = 0
    truncated: int = 0
    """Requests whose context was cut from the left to fit the model."""
    seconds: float = 0.0


@dataclass
class _Row:
    """One sequence to run: ``ids`` = context + all but the last token of one continuation."""

    req: int
    ids: list[int]
    ctx_len: int
    reads: list[tuple[int, int, list[int]]] = field(default_factory=list)
    """(continuation index, first position, target ids): log p(target[k]) is read at position first + k."""


class HFLM:
    """The :class:`~adaptlab.lm.base.LM` protocol on a local Hugging Face causal LM.

    ``prefix_cache``: reuse the keys/values of the prompt prefix shared by the requests of a call (same
    results as ``False``, several times faster for few-shot prompts). ``batch_size``: rows per forward.
    ``device``: where inputs go (the model is moved there if needed; default: the model's device).
    ``max_length``: context limit in tokens (default: the model's ``max_position_embeddings``); longer
    contexts are cut from the left with a warning. ``group_prefixes``: also share longer prefixes within
    groups of requests (e.g. kNN demonstrations that coincide) when that saves work.

    `keep_prefix` (a context manager) keeps the shared prefix's keys/values between calls, as a serving
    engine's prefix cache does (vLLM automatic prefix caching, llama.cpp ``cache_prompt``): a later call
    computes only what its prefix does not share with the kept one. Off by default.

    ``usage`` accumulates over calls; ``last_stats`` (:class:`ScoringStats`) describes the last
    ``loglikelihood`` call (shared prefix, groups, rows, tokens computed). Each call switches the model to
    eval mode and restores its previous mode afterwards.
    """

    def __init__(self, model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", *,
                 name: str = "hf", batch_size: int = 32, prefix_cache: bool = True,
                 device: "str | torch.device | None" = None, max_length: int | None = None,
                 group_prefixes: bool = True) -> None:
        import torch
        from transformers import DynamicCache

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.usage = Usage()
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.group_prefixes = group_prefixes
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if any(p.device != self.device for p in model.parameters()):  # one device for every weight (a soft
            self.model = model.to(self.device)                          # prompt may sit apart from its model)
        config = model.config
        limit = max_length or getattr(config, "max_position_embeddings", None) or 2048
        self.max_length = int(limit)
        sliding = any(DynamicCache(config=config).is_sliding) if hasattr(config, "num_hidden_layers") else True
        self.prefix_cache = prefix_cache and not sliding
        if prefix_cache and sliding:
            log.info("%s has sliding-window attention: prefix caching disabled", name)
        self._decoder, self._head = self._split_model()
        self._cache_kw = cache_kwarg((self._decoder or self.model).forward)
        ids = [tokenizer.bos_token_id, tokenizer.eos_token_id]
        self._empty_context = [next(i for i in ids if i is not None)] if any(i is not None for i in ids) else [0]
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._empty_context[0]
        self.n_params: int | None = sum(p.numel() for p in model.parameters())
        """Parameters of one forward (a fine-tuned model's owner sets its base model's count)."""
        self.last_stats = ScoringStats()
        self._keep = False
        self._kept: tuple[list[int], list[tuple[Any, Any]]] | None = None

    @contextmanager
    def keep_prefix(self) -> Iterator[bool]:
        """While active, reuse the previous call's shared prefix where the next call's starts the same
        (yields False, and changes nothing, when prefix caching is off). The kept cache is dropped on exit."""
        if not self.prefix_cache:
            yield False
            return
        self._keep, self._kept = True, None
        try:
            yield True
        finally:
            self._keep, self._kept = False, None

    @classmethod
    def from_loaded(cls, loaded: "LoadedModel", **kw: Any) -> "HFLM":
        """An HFLM on a :class:`adaptlab.models.LoadedModel` (name and device taken from it)."""
        kw.setdefault("name", loaded.name)
        kw.setdefault("device", loaded.device)
        return cls(loaded.model, loaded.tokenizer, **kw)

    def _split_model(self) -> tuple[Any, Any]:
        """(decoder, output layer), or (None, None) to run the full model and read its logits."""
        if any(getattr(self.model.config, k, None) for k in _SCALED_LOGITS):
            return None, None
        try:
            decoder, head = self.model.get_decoder(), self.model.get_output_embeddings()
        except (AttributeError, NotImplementedError, ValueError):
            return None, None
        if decoder is None or head is None or decoder is self.model:
            return None, None
        return decoder, head

    # ------------------------------------------------------------------ model calls

    @contextmanager
    def _inference(self) -> Iterator[None]:
        """``torch.inference_mode`` with the model in eval mode (its previous mode restored afterwards)."""
        import torch

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.model.train(was_training)

    def _hidden(self, ids: "torch.Tensor", mask: "torch.Tensor | None", pos: "torch.Tensor",
                cache: Any) -> "torch.Tensor":
        """Last hidden states (or full logits when the model cannot be split), shape (batch, seq, *)."""
        kw = dict(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=cache is not None)
        kw[self._cache_kw] = cache
        if self._decoder is None:
            return self.model(**kw).logits
        return self._decoder(**kw).last_hidden_state

    def _logprobs(self, hidden: "torch.Tensor") -> "torch.Tensor":
        """Float32 log-softmax over the vocabulary for (n, hidden) states, in chunks."""
        import torch

        out = []
        for i in range(0, hidden.shape[0], _HEAD_CHUNK):
            h = hidden[i:i + _HEAD_CHUNK]
            logits = h if self._head is None else self._head(h)
            out.append(torch.log_softmax(logits.float(), dim=-1))
        return torch.cat(out)

    def _run_prefix(self, ids: list[int], base: list[tuple[Any, Any]] | None) -> list[tuple[Any, Any]]:
        """Keys/values (batch 1) of ``base`` + ``ids``."""
        import torch
        from transformers import DynamicCache

        past = base[0][0].shape[-2] if base else 0
        cache = prefix_cache_from(self.model, base) if base else DynamicCache(config=self.model.config)
        x = torch.tensor([ids], device=self.device)
        pos = torch.arange(past, past + len(ids), device=self.device)[None]
        self._hidden(x, None, pos, cache)
        if not base:
            return [(layer.keys, layer.values) for layer in cache.layers]
        return [(torch.cat([layer.keys, layer.new_keys], -2), torch.cat([layer.values, layer.new_values], -2))
                for layer in cache.layers]

    def _shared_kv(self, ids: list[int]) -> tuple[list[tuple[Any, Any]], int]:
        """Keys/values of ``ids`` and how many tokens were computed for them: all of them, or with
        `keep_prefix` active only those after the longest common prefix with the kept ids."""
        kept = self._kept if self._keep else None
        reuse = lcp(kept[0], ids) if kept else 0
        if kept and reuse:
            drop = len(kept[0]) - reuse  # kept keys may hold extra leading positions (a soft prompt)
            kv = [(k[..., :k.shape[-2] - drop, :], v[..., :v.shape[-2] - drop, :]) for k, v in kept[1]]
            if reuse < len(ids):
                kv = self._run_prefix(ids[reuse:], kv)
        else:
            reuse, kv = 0, self._run_prefix(ids, None)
        if self._keep:
            self._kept = (list(ids), kv)
        return kv, len(ids) - reuse

    def _run_rows(self, rows: list[_Row], start: int, kv: list[tuple[Any, Any]] | None,
                  scores: list[list[float]], tick: Any) -> None:
        """Score ``rows`` (their ids from ``start`` on) against the cached prefix ``kv`` of ``start`` tokens."""
        import torch

        rows = sorted(rows, key=lambda r: -len(r.ids))
        for b0 in range(0, len(rows), self.batch_size):
            batch = rows[b0:b0 + self.batch_size]
            width = len(batch[0].ids) - start
            # Right padding under causal attention: no real position ever sees a pad, so no mask is needed
            # (as in lm-evaluation-harness); the causal mask alone lets SDPA take its fastest kernels.
            ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
            positions: dict[tuple[int, int], int] = {}
            gather: list[tuple[int, int, int, int]] = []  # (request, continuation, position slot, target)
            for b, row in enumerate(batch):
                n = len(row.ids) - start
                ids[b, :n] = torch.tensor(row.ids[start:])
                for j, first, targets in row.reads:
                    for k, t in enumerate(targets):
                        slot = positions.setdefault((b, first - start + k), len(positions))
                        gather.append((row.req, j, slot, t))
            pos = torch.arange(start, start + width)[None].expand(len(batch), -1)
            cache = prefix_cache_from(self.model, kv) if kv else None
            hidden = self._hidden(ids.to(self.device), None, pos.to(self.device), cache)
            del cache
            where = torch.tensor(list(positions), dtype=torch.long, device=self.device).reshape(-1, 2)
            logp = self._logprobs(hidden[where[:, 0], where[:, 1]])
            slots = torch.tensor([g[2] for g in gather], device=self.device)
            targets = torch.tensor([g[3] for g in gather], device=self.device)
            values = logp[slots, targets].tolist()
            for (req, j, _, _), v in zip(gather, values):
                scores[req][j] += v
            real = sum(len(r.ids) - start for r in batch)
            self.last_stats.batches += 1
            self.last_stats.computed_tokens += real
            self.last_stats.pad_tokens += len(batch) * width - real
            tick(len(batch))

    # ------------------------------------------------------------------ public API

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` (no special tokens)."""
        return len(self._encode(text))

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _prepare(self, requests: Sequence[LoglikelihoodRequest]) -> tuple[list[list[int]], list[list[list[int]]]]:
        """Token ids of each context and its continuations (whitespace moved, left-truncated to fit)."""
        memo: dict[str, list[int]] = {}

        def enc(text: str) -> list[int]:
            if text not in memo:
                memo[text] = self._encode(text)
            return memo[text]

        contexts, conts = [], []
        for i, r in enumerate(requests):
            ctx = r.context.rstrip()
            moved = r.context[len(ctx):]
            ctx_ids = enc(ctx) or list(self._empty_context)
            cont_ids = [enc(moved + c) for c in r.continuations]
            longest = max(len(c) for c in cont_ids)
            room = self.max_length - max(longest - 1, 0)
            if room < 1:
                raise DataError(f"a continuation of request {i} has {longest} tokens; the model takes "
                                f"{self.max_length}", field="continuations", hint="shorten the continuation")
            if len(ctx_ids) > room:
                ctx_ids = ctx_ids[-room:]
                self.last_stats.truncated += 1
            contexts.append(ctx_ids)
            conts.append(cont_ids)
        if self.last_stats.truncated:
            log.warning("%d contexts were cut from the left to fit %d tokens", self.last_stats.truncated,
                        self.max_length)
        return contexts, conts

    @staticmethod
    def _rows(req: int, ctx: list[int], conts: list[list[int]]) -> list[_Row]:
        """The fewest rows that score every continuation of one request."""
        multi = [(j, c) for j, c in enumerate(conts) if len(c) > 1]
        rows = [_Row(req, ctx + c[:-1], len(ctx), [(j, len(ctx) - 1, c)]) for j, c in multi]
        if not rows:
            rows = [_Row(req, list(ctx), len(ctx))]
        for j, c in enumerate(conts):
            if len(c) == 1:
                rows[0].reads.append((j, len(ctx) - 1, c))
        return rows

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], *,
                      progress: bool = False) -> list[ContinuationScores]:
        """log p(continuation | context) for every continuation of every request, in request order."""
        start_time = time.perf_counter()
        self.last_stats = stats = ScoringStats(requests=len(requests), cached=self.prefix_cache)
        if not requests:
            return []
        contexts, conts = self._prepare(requests)
        rows = [self._rows(i, c, k) for i, (c, k) in enumerate(zip(contexts, conts))]
        stats.rows = sum(len(r) for r in rows)
        stats.naive_tokens = sum(len(c) * len(k) + sum(map(len, k)) for c, k in zip(contexts, conts))
        scores = [[0.0] * len(k) for k in conts]
        with self._inference(), _progress(progress, stats.rows, "scoring") as tick:
            if self.prefix_cache:
                shared, groups = plan_groups(contexts, grouping=self.group_prefixes)
                stats.prefix_tokens, stats.groups = shared, len(groups)
                base, computed = self._shared_kv(contexts[0][:shared]) if shared else (None, 0)
                stats.computed_tokens += computed
                for plen, members in groups:
                    kv = base
                    if plen > shared:
                        kv = self._run_prefix(contexts[members[0]][shared:plen], base)
                        stats.group_prefix_tokens += plen - shared
                        stats.computed_tokens += plen - shared
                    self._run_rows([r for i in members for r in rows[i]], plen, kv, scores, tick)
                    del kv
            else:
                self._run_rows([r for rs in rows for r in rs], 0, None, scores, tick)
        stats.seconds = time.perf_counter() - start_time
        self.usage.add(Usage(requests=len(requests), prompt_tokens=stats.naive_tokens,
                             computed_tokens=stats.computed_tokens, seconds=stats.seconds,
                             extra={"pad_tokens": float(stats.pad_tokens)}))
        return [ContinuationScores(logprobs=tuple(s), token_counts=tuple(len(c) for c in k), prompt_tokens=len(ctx))
                for s, k, ctx in zip(scores, conts, contexts)]

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 progress: bool = False) -> list[str]:
        """Greedy-decode each prompt (batched, left-padded); the text is cut before the first stop string."""
        import torch
        from transformers import DynamicCache

        start_time = time.perf_counter()
        room = max(self.max_length - max_new_tokens, 1)
        encoded = [(self._encode(p) or list(self._empty_context))[-room:] for p in prompts]
        eos = self._eos_ids()
        outputs: list[str] = [""] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        computed = generated = 0
        with self._inference(), _progress(progress, len(prompts), "generating") as tick:
            for b0 in range(0, len(order), self.batch_size):
                idx = order[b0:b0 + self.batch_size]
                width = len(encoded[idx[0]])
                ids = torch.full((len(idx), width), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for b, i in enumerate(idx):
                    ids[b, width - len(encoded[i]):] = torch.tensor(encoded[i])
                    mask[b, width - len(encoded[i]):] = 1
                computed += sum(len(encoded[i]) for i in idx)
                ids, mask = ids.to(self.device), mask.to(self.device)
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                cache = DynamicCache(config=self.model.config)
                new: list[list[int]] = [[] for _ in idx]
                done = [max_new_tokens <= 0] * len(idx)
                while not all(done):
                    hidden = self._hidden(ids, mask, pos, cache)[:, -1]
                    nxt = (hidden if self._head is None else self._head(hidden)).argmax(-1)
                    for b, t in enumerate(nxt.tolist()):
                        if done[b]:
                            continue
                        new[b].append(t)
                        text = self.tokenizer.decode(new[b], skip_special_tokens=True)
                        done[b] = t in eos or len(new[b]) >= max_new_tokens or any(s in text for s in stop if s)
                    ids, pos = nxt[:, None], pos[:, -1:] + 1
                    mask = torch.cat([mask, mask.new_ones((len(idx), 1))], dim=-1)
                for b, i in enumerate(idx):
                    generated += len(new[b])
                    toks = new[b][:-1] if new[b] and new[b][-1] in eos else new[b]
                    outputs[i] = _cut(self.tokenizer.decode(toks, skip_special_tokens=True), stop)
                tick(len(idx))
        self.usage.add(Usage(requests=len(prompts), prompt_tokens=computed, computed_tokens=computed + generated,
                             generated_tokens=generated, seconds=time.perf_counter() - start_time))
        return outputs

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None)
        ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
        return {i for i in ids if i is not None}


def _cut(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cut = min((text.find(s) for s in stop if s and s in text), default=len(text))
    return text[:cut]


@contextmanager
def _progress(enabled: bool, total: int, what: str) -> Iterator[Any]:
    """A rich progress bar with ETA; yields ``tick(n)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)
