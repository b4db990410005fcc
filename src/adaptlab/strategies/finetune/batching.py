"""Training data: (context, answer) pairs -> token ids with an answer-only loss mask, batches.

* `encode_pair` tokenises exactly like the scoring path (`adaptlab.lm.hf.HFLM`), so training
  maximises the very log-likelihood the evaluator later scores.
* `collate` pads each batch only to its own longest sequence (dynamic padding); padded positions
  and context tokens carry label ``-100`` (ignored by the loss). Left padding puts every answer in
  the last columns, so the output layer runs on the answer positions only (`answer_window`): with
  short answers and a large vocabulary this is most of a small model's training compute.
* `LengthGroupedBatches` shuffles with a seed per epoch, then sorts within "megabatches" of
  ``50 x batch_size`` examples so each batch holds similar lengths (little padding) while the order
  stays random. Batches are split across processes; the plan is a pure function of
  ``(seed, epoch)``, so resuming only needs the epoch and the batch position.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
MEGABATCH_MULT = 50


@dataclass(frozen=True)
class Pair:
    """One training example as text: the prompt the model sees and the answer it must produce."""

    context: str
    answer: str


@dataclass(frozen=True)
class Encoded:
    """Token ids of context + answer and the per-token labels (``-100`` outside the answer)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_answer_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def encode_pair(tokenizer: Any, context: str, answer: str, *, max_length: int,
                eos: bool = False) -> Encoded:
    """Tokenise one pair exactly as `adaptlab.lm.hf.HFLM` scores it; long contexts are cut from the left.

    Like HFLM: no special tokens; trailing whitespace of the context moves to the answer; context and
    answer are encoded separately and concatenated; an empty context becomes the BOS (else EOS) token.
    ``eos`` appends the end-of-sequence token to the answer (generation tasks: the model learns to stop).
    """
    return _encode_pair(tokenizer, context, answer, max_length=max_length, eos=eos)[0]


def _encode_pair(tokenizer: Any, context: str, answer: str, *, max_length: int,
                 eos: bool) -> tuple[Encoded, bool]:
    """`encode_pair` and whether tokens had to be cut to fit ``max_length``."""
    ctx = context.rstrip()
    moved = context[len(ctx):]
    ctx_ids = _encode(tokenizer, ctx) or _empty_context(tokenizer)
    ans = _encode(tokenizer, moved + answer)
    if eos and tokenizer.eos_token_id is not None:
        ans = ans + [int(tokenizer.eos_token_id)]
    if not ans:
        raise ValueError(f"empty answer after tokenisation for context ending {context[-40:]!r}")
    cut = len(ctx_ids) + len(ans) > max_length
    ans = ans[:max_length - 1]
    keep = max_length - len(ans)
    ctx_ids = ctx_ids[-keep:]
    return Encoded(tuple(ctx_ids + ans), tuple([IGNORE_INDEX] * len(ctx_ids) + ans)), cut


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _empty_context(tokenizer: Any) -> list[int]:
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return [int(tid)]
    return [0]


def encode_pairs(tokenizer: Any, pairs: Sequence[Pair], *, max_length: int,
                 eos: bool = False) -> list[Encoded]:
    """`encode_pair` over a list; logs a warning saying how many texts were cut to ``max_length``."""
    out, cut = [], 0
    for p in pairs:
        enc, was_cut = _encode_pair(tokenizer, p.context, p.answer, max_length=max_length, eos=eos)
        out.append(enc)
        cut += was_cut
    if cut:
        log.warning("%d of %d texts exceed max_length=%d tokens and were cut from the left "
                    "(the answer is kept); raise max_length to keep them whole", cut, len(out), max_length)
    return out


def collate(batch: Sequence[Encoded], pad_id: int, *, left: bool = False) -> dict[str, "torch.Tensor"]:
    """Pad to the longest sequence of this batch: input_ids, attention_mask, labels, position_ids.

    ``left=True`` pads on the left so every answer ends in the last column (the loss then needs the
    logits of the last few positions only); ``position_ids`` count real tokens from 0 either way.
    """
    import torch

    width = max(len(e) for e in batch)
    ids = torch.full((len(batch), width), int(pad_id), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e)
        cols = slice(width - n, width) if left else slice(0, n)
        ids[i, cols] = torch.tensor(e.input_ids)
        labels[i, cols] = torch.tensor(e.labels)
        mask[i, cols] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "position_ids": positions}


def answer_window(labels: "torch.Tensor") -> int:
    """Columns from the first answer label to the end (left-padded batch): logits needed = this + 1."""
    import torch

    cols = torch.nonzero((labels != IGNORE_INDEX).any(dim=0)).flatten()
    return int(labels.shape[1] - cols[0]) if len(cols) else 1


class LengthGroupedBatches:
    """Seeded per-epoch batch plan; optional length grouping; split evenly across processes.

    Every process gets the same number of batches (the plan wraps around to fill the last round),
    which DDP needs to keep processes in lock-step.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0,
                 group_by_length: bool = True, num_processes: int = 1, process_index: int = 0) -> None:
        if not lengths:
            raise ValueError("no training examples")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.num_processes = num_processes
        self.process_index = process_index

    def global_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` (every process's), in order."""
        import torch

        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        bs = self.batch_size
        if not self.group_by_length:
            batches = [order[i:i + bs] for i in range(0, len(order), bs)]
        else:
            mega = bs * MEGABATCH_MULT
            batches = []
            for start in range(0, len(order), mega):
                chunk = sorted(order[start:start + mega], key=lambda i: -self.lengths[i])
                batches.extend(chunk[i:i + bs] for i in range(0, len(chunk), bs))
            # random batch order, but the longest batch first: out-of-memory shows up at step 1
            perm = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[i] for i in perm]
            longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
            batches.insert(0, batches.pop(longest))
        rem = len(batches) % self.num_processes
        if rem:
            batches.extend(batches[:self.num_processes - rem])
        return batches

    def epoch(self, epoch: int) -> list[list[int]]:
        """This process's batches for ``epoch``."""
        return self.global_batches(epoch)[self.process_index::self.num_processes]

    def __len__(self) -> int:
        n = -(-len(self.lengths) // self.batch_size)
        return -(-n // self.num_processes)


def padding_ratio(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Fraction of padded positions over a batch plan (0 = no padding)."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - real / padded if padded else 0.0
