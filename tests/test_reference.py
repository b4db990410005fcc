"""docs/reference.md is generated from the config models' field docs and must match them."""

from __future__ import annotations

from pathlib import Path

from adaptlab.cli.reference import reference_markdown

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"


def test_the_yaml_reference_is_current() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/reference.md is stale: run `python -m adaptlab.cli.reference > docs/reference.md`")


def test_every_key_is_documented() -> None:
    undocumented = [line.split("|")[1].strip() for line in reference_markdown().splitlines()
                    if line.startswith("| `") and line.rstrip().endswith("|  |")]
    assert not undocumented, undocumented


def test_a_plugin_loaded_in_the_process_does_not_enter_the_reference() -> None:
    """The reference documents adaptlab's own strategies: a plugin another test (or a user's run in the same
    process) registered stays out of it (it was in once, when the suite ran the plugin test first)."""
    from adaptlab.experiment.plugins import load_plugin
    from adaptlab.strategies import strategy_names

    load_plugin(str(REFERENCE.parents[1] / "examples" / "plugins" / "majority.py"), None)
    assert "majority" in strategy_names()
    text = reference_markdown()
    assert "### `majority`" not in text and "### `many_shot` (prompt)" in text
