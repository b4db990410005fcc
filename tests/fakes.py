"""Honest test doubles: a scripted LM and a keyword embedder, deterministic and fully specified.

`ScriptedLM` implements the `adaptlab.lm.base.LM` protocol with explicit rules, so tests of the
prompting and evaluation bookkeeping can hand-compute every expected number:

* The *query segment* is the context after its last ``"\\n\\n"`` (in the plain format: the query's
  input and answer prefix; demonstrations and instruction come before it).
* For a continuation whose stripped text is a known label word ``c``:
  ``p(c) = bias[c] * (1 + strength * hits_c) / Z`` where ``hits_c`` counts ``c``'s keywords among the
  query segment's words (runs of letters) and ``Z`` normalises over the known label words; the logprob is ``log p(c)``.
  With ``good_prefix`` set, contexts not ending in it get no keyword evidence (``hits = 0``) but a
  deterministic per-context tie-breaking jitter instead, so they predict at about chance.
* Unknown continuations get ``-20 - (crc32 % 100) / 10``.
* A token is a whitespace-separated word (``count_tokens``), continuations count one token per word.
"""

from __future__ import annotations

import math
import re
import time
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from adaptlab.data import Example
from adaptlab.lm.base import ContinuationScores, LoglikelihoodRequest, Usage, no_kept_prefix


class ScriptedLM:
    """A deterministic rule-based LM (see module docstring)."""

    def __init__(self, keywords: Mapping[str, Sequence[str]], *, bias: Mapping[str, float] | None = None,
                 strength: float = 2.0, good_prefix: str | None = None,
                 generations: Mapping[str, str] | None = None, name: str = "scripted",
                 tokenizer: object | None = None, n_params: int = 1000) -> None:
        self.name = name
        self.usage = Usage()
        self.keywords = {k: [w.lower() for w in v] for k, v in keywords.items()}
        self.bias = dict(bias or {k: 1.0 for k in keywords})
        self.strength = strength
        self.good_prefix = good_prefix
        self.generations = dict(generations or {})
        self.n_params = n_params
        self.max_length: int | None = 2048
        self.calls: list[int] = []
        """Number of requests in each loglikelihood call."""
        if tokenizer is not None:
            self.tokenizer = tokenizer

    @staticmethod
    def segment(context: str) -> str:
        return context.rsplit("\n\n", 1)[-1]

    def label_probs(self, context: str) -> dict[str, float]:
        """The rule's distribution over the known label words for ``context``."""
        words = re.findall(r"[a-z]+", self.segment(context).lower())
        evidence = self.good_prefix is None or context.rstrip().endswith(self.good_prefix)
        raw = {}
        for label, kws in self.keywords.items():
            hits = sum(words.count(k) for k in kws) if evidence else 0
            jitter = 0.0 if evidence else (zlib.crc32((label + context).encode()) % 1000) / 1e4
            raw[label] = self.bias[label] * (1.0 + self.strength * hits + jitter)
        z = sum(raw.values())
        return {k: v / z for k, v in raw.items()}

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], *,
                      progress: bool = False) -> list[ContinuationScores]:
        t0 = time.perf_counter()
        self.calls.append(len(requests))
        out = []
        tokens = 0
        for r in requests:
            probs = self.label_probs(r.context)
            lps = []
            for c in r.continuations:
                key = c.strip()
                lps.append(math.log(probs[key]) if key in probs
                           else -20.0 - (zlib.crc32(c.encode()) % 100) / 10)
            counts = tuple(max(len(c.split()), 1) for c in r.continuations)
            ctx_tokens = self.count_tokens(r.context)
            tokens += ctx_tokens + sum(counts)
            out.append(ContinuationScores(tuple(lps), counts, ctx_tokens))
        self.usage.add(Usage(requests=len(requests), prompt_tokens=tokens, computed_tokens=tokens,
                             seconds=time.perf_counter() - t0))
        return out

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 progress: bool = False) -> list[str]:
        """The output of the first ``generations`` keyword found in the query segment, else ``" ?"``."""
        outs = []
        for p in prompts:
            seg = self.segment(p).lower()
            text = next((v for k, v in self.generations.items() if k.lower() in seg), " ?")
            cut = min((text.find(s) for s in stop if s and s in text), default=len(text))
            outs.append(text[:cut])
        n = sum(self.count_tokens(p) for p in prompts)
        g = sum(self.count_tokens(o) for o in outs)
        self.usage.add(Usage(requests=len(prompts), prompt_tokens=n, computed_tokens=n + g,
                             generated_tokens=g))
        return outs

    keep_prefix = staticmethod(no_kept_prefix)
    """Scripted scoring keeps nothing between calls."""

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class KeywordEmbedder:
    """Embeds a text as the L2-normalised counts of a fixed vocabulary (plus a constant bias dim)."""

    def __init__(self, vocab: Sequence[str], name: str = "keywords") -> None:
        self.vocab = [w.lower() for w in vocab]
        self.name = name
        self.dim = len(self.vocab) + 1
        self.calls = 0

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            words = t.lower().split()
            out[i, :-1] = [words.count(w) for w in self.vocab]
            out[i, -1] = 0.1
        return out / np.linalg.norm(out, axis=1, keepdims=True)


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def chatml_tokenizer():
    """A real (tiny, word-level) fast tokenizer carrying a ChatML chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", chat_template=CHATML)


def make_examples(rows: Sequence[tuple[str, str]], split: str = "train") -> list[Example]:
    """Examples with fields ``text`` and ``label`` from ``(text, label)`` pairs."""
    return [Example(id=f"{split}:{i + 1}", fields={"text": t, "label": lab}, source=f"{split}.jsonl",
                    line=i + 1) for i, (t, lab) in enumerate(rows)]


def sentiment_task(**overrides: object):
    """A small binary sentiment task (labels 0/1 -> negative/positive), data paths unused."""
    from adaptlab.data import Task

    spec = dict(name="toy", type="classification", instruction="Classify the sentiment.",
                data={"train": {"path": "train.jsonl"}}, input="{{ text }}",
                labels={"0": "negative", "1": "positive"}, metric="accuracy")
    spec.update(overrides)
    return Task(**spec)


SENTIMENT_KEYWORDS = {"positive": ["good", "great", "fun"], "negative": ["bad", "awful", "dull"]}

TRAIN_ROWS = [
    ("a good film", "1"), ("bad acting", "0"), ("great fun", "1"), ("awful plot", "0"),
    ("good and great", "1"), ("dull and bad", "0"), ("fun cast", "1"), ("awful dull mess", "0"),
    ("great score", "1"), ("bad ending", "0"), ("good pacing", "1"), ("dull story", "0"),
]
TEST_ROWS = [
    ("really good", "1"), ("so bad", "0"), ("great and fun", "1"), ("dull", "0"),
    ("awful", "0"), ("good", "1"), ("bad bad", "0"), ("fun fun", "1"),
]
