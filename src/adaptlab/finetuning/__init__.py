"""Fine-tuning strategies: LoRA, IA3, prompt tuning, full fine-tuning (peft/transformers on
accelerate) and the embedding probe (MiniLM + logistic regression).

Importing this package registers the artifact kinds ``finetuned`` and ``embedding_probe`` with
`adaptlab.adapted.load_adapted`. Heavy libraries load only when a method runs.
"""

from adaptlab.finetuning import adapted as _adapted  # noqa: F401  (registers "finetuned")
from adaptlab.finetuning import embedding_probe as _probe  # noqa: F401  (registers "embedding_probe")
from adaptlab.finetuning.configs import (METHODS, EmbeddingProbeConfig, FullConfig, IA3Config, LoraConfig,
                                         PromptTuningConfig, TrainArgs, build_configs)

__all__ = ["METHODS", "EmbeddingProbeConfig", "FullConfig", "IA3Config", "LoraConfig", "PromptTuningConfig",
           "TrainArgs", "build_configs", "run_finetune"]


def __getattr__(name: str):  # lazy: run.py pulls in the evaluator
    if name == "run_finetune":
        from adaptlab.finetuning.run import run_finetune

        return run_finetune
    raise AttributeError(name)
