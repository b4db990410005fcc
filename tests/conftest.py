"""Shared test fixtures: repository paths and (session-scoped) models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
TASKS_DIR = REPO / "tasks"

# Tests never reach a model hub: everything they load is installed locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"benchmark data not found at {SHARED_DATA}: clone the project with ../shared beside it")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tasks_dir() -> Path:
    return TASKS_DIR


@pytest.fixture(scope="session")
def tiny_loaded():
    """The 2-layer randomly initialised Llama with the SmolLM2 tokenizer (fast)."""
    from adaptlab.models import load_model

    return load_model("tiny-random-llama")


@pytest.fixture(scope="session")
def default_loaded():
    """The real default model (SmolLM2-135M-Instruct), converted once into the cache."""
    from adaptlab.models import load_model

    return load_model("smollm2-135m-instruct")
