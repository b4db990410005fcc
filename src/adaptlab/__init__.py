"""adaptlab: prompt it or fine-tune it? Adapt an LLM both ways, measure both, recommend one."""

__version__ = "0.1.0"
