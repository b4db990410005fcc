"""The models layer: names and the conversion cache, loading weights, sentence embedders, what a model is
(`ModelSpec`) and cost arithmetic (FLOPs, memory). Heavy libraries load only inside functions."""

from adaptlab.models.convert import (DEFAULT_MODEL, EMBEDDER_MODEL, KNOWN_MODELS, TINY_MODEL, cache_root,
                                     ensure_converted, gguf_path)
from adaptlab.models.loading import LoadedModel, check_model_name, load_model, load_tokenizer
from adaptlab.models.spec import ApiOptions, ModelSpec

__all__ = ["DEFAULT_MODEL", "EMBEDDER_MODEL", "KNOWN_MODELS", "TINY_MODEL", "ApiOptions", "LoadedModel",
           "ModelSpec", "cache_root", "check_model_name", "ensure_converted", "gguf_path", "load_model",
           "load_tokenizer"]
