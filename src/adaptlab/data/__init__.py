"""The data layer: tasks (`Task`, read from YAML), their examples, sources, splits and validation.

Nothing here knows about models or strategies.
"""

from adaptlab.data.example import RAW_INPUT_FIELD, SPLITS, Example, Splits, normalize_label, seeded_sample
from adaptlab.data.splits import (absent_labels, carve_splits, check_examples, load_split, load_splits,
                                  nested_subsets, stratified_order)
from adaptlab.data.task import DataSpec, SourceSpec, Task, builtin_task, load_task
from adaptlab.data.templates import compile_template, render_input, template_fields

__all__ = ["RAW_INPUT_FIELD", "SPLITS", "DataSpec", "Example", "SourceSpec", "Splits", "Task", "absent_labels",
           "builtin_task", "carve_splits", "check_examples", "compile_template", "load_split", "load_splits",
           "load_task", "nested_subsets", "normalize_label", "render_input", "seeded_sample", "stratified_order",
           "template_fields"]
