"""The one config system: YAML loading with line numbers, pydantic models, one-line errors with did-you-mean."""

from adaptlab.config.model import (ConfigModel, Invalid, config_error, load_package_file, load_yaml_model,
                                   suggestion, unknown_key)
from adaptlab.config.yaml import KeyLines, line_of, parse_scalar, read_yaml

__all__ = ["ConfigModel", "Invalid", "KeyLines", "config_error", "line_of", "load_package_file", "load_yaml_model",
           "parse_scalar", "read_yaml", "suggestion", "unknown_key"]
