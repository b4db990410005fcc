"""The strategies layer: every way to adapt a model, behind one contract.

``config.fit(task, train, dev, ctx) -> Adapted``; each strategy is one module that registers itself (name,
config class, family, label accounting, artifact loader). Importing this package registers the built-in ones;
a plugin registers its own through `register_strategy` / `strategy`.
"""

from adaptlab.lm.pool import DEFAULT_ROLE, ModelPool
from adaptlab.strategies.artifacts import (ARTIFACT_FILE, Adapted, ModelBinder, Prediction, load_adapted,
                                           read_artifact_json, register_artifact)
from adaptlab.strategies.base import (ARMS, FAMILIES, ArtifactKind, FitContext, LabelUse, NotMainProcess, StrategyConfig,
                                      StrategyInfo, arm_of, family_of, get_strategy, register_strategy, strategy,
                                      strategy_names)
from adaptlab.strategies.distill import DistillConfig
from adaptlab.strategies.cascade import CascadeConfig
from adaptlab.strategies.finetune.embedding_probe import EmbeddingProbeConfig
from adaptlab.strategies.finetune.full import FullConfig
from adaptlab.strategies.finetune.ia3 import IA3Config
from adaptlab.strategies.finetune.lora import LoraConfig
from adaptlab.strategies.finetune.prompt_tuning import PromptTuningConfig
from adaptlab.strategies.finetune.setfit import SetFitConfig
from adaptlab.strategies.prompt.calibrate import CalibrateConfig
from adaptlab.strategies.prompt.few_shot import FewShotConfig
from adaptlab.strategies.prompt.many_shot import ManyShotConfig
from adaptlab.strategies.prompt.prompt_search import PromptSearchConfig
from adaptlab.strategies.prompt.zero_shot import ZeroShotConfig

__all__ = ["ARMS", "ARTIFACT_FILE", "arm_of", "DEFAULT_ROLE", "FAMILIES", "Adapted", "ArtifactKind", "CalibrateConfig", "CascadeConfig",
           "DistillConfig", "EmbeddingProbeConfig", "FewShotConfig", "FitContext", "FullConfig", "IA3Config", "LabelUse", "LoraConfig",
           "ManyShotConfig", "ModelBinder", "ModelPool", "NotMainProcess", "Prediction", "PromptSearchConfig",
           "PromptTuningConfig", "SetFitConfig", "StrategyConfig", "StrategyInfo", "ZeroShotConfig", "family_of", "get_strategy",
           "load_adapted", "read_artifact_json", "register_artifact", "register_strategy", "strategy", "strategy_names"]
