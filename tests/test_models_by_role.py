"""Models by role in one experiment (``models: {large: ..., small: ...}``): validation, cell keys that follow each
model's identity, per-model pricing (tokens for an API, $/hour x measured seconds for self-hosted hardware), and a
real run with the tiny model beside a real llama.cpp server."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptlab.errors import ConfigError
from adaptlab.experiment import expand_cells, load_experiment
from adaptlab.results import CellRecord, Scenario

try:
    from llama_server import llama_server  # noqa: F401 (the fixture)
except ImportError:  # tests/ imported as a package
    from tests.llama_server import llama_server  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
TWO = f"""\
name: two
task: {REPO / "tasks" / "sst2.yaml"}
models:
  large: {{name: smollm2-135m-instruct, backend: api, base_url: "http://127.0.0.1:9001/v1",
          price: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}}}
  small: {{name: tiny-random-llama, hardware: {{price_per_hour: 0.4, device: 2-core CPU}}}}
train_sizes: [16]
seeds: [0]
limit: 6
strategies:
  - {{name: zero_shot, model: large}}
  - {{name: lora, model: small, options: {{rank: 4, max_steps: 2, select_on_dev: false}}}}
"""


def _load(tmp_path: Path, text: str, name: str = "exp.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_experiment(path)


def _error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return info.value


def test_each_entry_adapts_its_role_and_keys_follow_the_model(tmp_path: Path) -> None:
    cfg = _load(tmp_path, TWO)
    cells = expand_cells(cfg, 100)
    assert [(c.strategy, c.role) for c in cells] == [("zero_shot", "large"), ("lora", "small")]
    assert cells[0].payload["model"] == "smollm2-135m-instruct"
    assert cells[0].payload["backend"]["base_url"] == "http://127.0.0.1:9001/v1"
    assert cells[1].payload["model"] == "tiny-random-llama" and "backend" not in cells[1].payload
    # only the large model's server differs: its cell gets a new key, the small model's cell keeps its own
    moved = expand_cells(_load(tmp_path, TWO.replace("9001", "9002"), "b.yaml"), 100)
    assert moved[0].key != cells[0].key and moved[1].key == cells[1].key
    # a price or a hardware block changes what a run costs, not its results: no key changes
    repriced = expand_cells(_load(tmp_path, TWO.replace("0.15", "2.5").replace("0.4", "1.2"), "c.yaml"), 100)
    assert [c.key for c in repriced] == [c.key for c in cells]
    # renaming a role changes nothing the key hashes
    renamed = expand_cells(_load(tmp_path, TWO.replace("large", "big"), "d.yaml"), 100)
    assert [c.key for c in renamed] == [c.key for c in cells]


def test_a_single_model_experiment_keeps_its_keys(tmp_path: Path) -> None:
    one = TWO.split("models:")[0] + "model: tiny-random-llama\ntrain_sizes: [16]\nseeds: [0]\nlimit: 6\n" \
        "strategies:\n  - zero_shot\n"
    as_role = TWO.split("models:")[0] + "models:\n  small: tiny-random-llama\ntrain_sizes: [16]\nseeds: [0]\n" \
        "limit: 6\nstrategies:\n  - zero_shot\n"
    a, b = expand_cells(_load(tmp_path, one, "a.yaml"), 100), expand_cells(_load(tmp_path, as_role, "b.yaml"), 100)
    assert [c.key for c in a] == [c.key for c in b] and b[0].role == "small"


def test_role_errors_name_the_line_and_suggest(tmp_path: Path) -> None:
    err = _error(tmp_path, TWO.replace("{name: zero_shot, model: large}", "{name: zero_shot, model: lrage}"))
    assert err.field == "strategies.0.model" and "unknown model role 'lrage'" in err.message
    assert "large" in (err.hint or "") and err.line == TWO.splitlines().index("  - {name: zero_shot, model: large}") + 1
    err = _error(tmp_path, TWO.replace("{name: zero_shot, model: large}", "zero_shot"))
    assert err.field == "strategies.0.model" and "name the model" in err.message
    err = _error(tmp_path, TWO.replace("models:", "model: tiny-random-llama\nmodels:"))
    assert err.field == "model" and "models:" in err.message
    err = _error(tmp_path, TWO.replace("price_per_hour: 0.4", "price_per_hour: -1"))
    assert "price_per_hour" in (err.field or "")


def _record(query: dict, train: dict | None = None, seconds: float = 0.0) -> CellRecord:
    return CellRecord(key="k", strategy="zero_shot", options={}, n_train=0, seed=0, variant="v", value=0.5,
                      train_seconds=seconds, extra={"cost": {"query": query, "train": train or {}}})


def test_each_model_is_priced_its_own_way() -> None:
    sc = Scenario(price_per_hour=0.10)
    api = _record({"api_input_tokens": 200.0, "api_output_tokens": 10.0, "throughput_qps": 5.0,
                   "token_price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}})
    assert api.query_cost(sc) == pytest.approx((200 * 0.15 + 10 * 0.6) / 1e6)  # tokens, not seconds
    hosted = _record({"throughput_qps": 4.0, "hardware": {"price_per_hour": 1.2, "device": "A10G"}}, seconds=360)
    assert hosted.query_cost(sc) == pytest.approx(0.25 * 1.2 / 3600)  # its own $/hour x measured seconds
    assert hosted.train_cost(sc) == pytest.approx(360 * 1.2 / 3600)
    assert hosted.train_cost(sc.replace(train_price_per_hour=0.5)) == pytest.approx(360 * 0.5 / 3600)
    plain = _record({"throughput_qps": 4.0})
    assert plain.query_cost(sc) == pytest.approx(0.25 * 0.10 / 3600)  # the scenario's price
    # a cascade: the large model's tokens plus the small model's own seconds at its hardware price
    mixed = _record({"api_input_tokens": 50.0, "api_output_tokens": 1.0, "hardware_seconds": 0.2,
                     "token_price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                     "hardware": {"price_per_hour": 0.36}})
    assert mixed.query_cost(sc) == pytest.approx(52 / 1e6 + 0.2 * 0.36 / 3600)
    # a teacher labelling through a priced API: its tokens are a one-off training cost
    distil = _record({}, {"api_input_tokens": 1e6, "api_output_tokens": 0.0,
                          "token_price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}, seconds=36)
    assert distil.train_cost(sc) == pytest.approx(36 * 0.10 / 3600 + 0.15)
    cheaper = sc.replace(token_price=distil.token_price(sc) or _price(0.05))
    assert distil.train_cost(cheaper) == pytest.approx(36 * 0.10 / 3600 + 0.05)


def _price(value: float):
    from adaptlab.models.prices import TokenPrice

    return TokenPrice(input_per_mtok=value, output_per_mtok=value)


@pytest.mark.server
def test_two_models_in_one_run_tiny_and_a_real_llama_server(llama_server: str, tmp_path: Path) -> None:
    from adaptlab.experiment import run_experiment
    from adaptlab.report import build_report

    # the server reads the answer it writes (as a chat API does): echo scoring costs llama-cpp-python a sort of the
    # vocabulary per prompt token, minutes here; test_api_pricing covers the echo path's token counts
    cfg = _load(tmp_path, TWO.replace("http://127.0.0.1:9001/v1", llama_server).replace(
        "price: {input_per_mtok", "api: {logprobs: \"off\"}, price: {input_per_mtok"))
    cfg = cfg.with_changes(evaluation={"latency_sample": 0, "throughput_batch_sizes": [], "throughput_sample": 0})
    cells = run_experiment(cfg, tmp_path / "run", progress=False)
    by = {c.strategy: c for c in cells}
    assert all(c.ok for c in cells), [c.error for c in cells]
    large, small = by["zero_shot"], by["lora"]
    assert (large.extra["role"], small.extra["role"]) == ("large", "small")
    q = large.query_info()
    assert q["api_input_tokens"] > 0 and q["token_price"]["input_per_mtok"] == 0.15
    sc = Scenario()
    assert large.query_cost(sc) == pytest.approx(
        (q["api_input_tokens"] * 0.15 + q["api_output_tokens"] * 0.6) / 1e6)
    assert small.query_info()["hardware"] == {"price_per_hour": 0.4, "device": "2-core CPU"}
    assert small.query_cost(sc) == pytest.approx(small.serving_seconds(sc) * 0.4 / 3600)
    paths = build_report(tmp_path / "run")
    html = paths.html.read_text()
    assert 'id="options-table"' in html and "$0.15/$0.6 per 1M tokens in/out" in html
    assert "$0.4/hour (2-core CPU) x measured seconds" in html


def _four_arms():
    """Hand-made cells of the four arms on 200 shared examples: an API prompt (priced per token), LoRA, a distilled
    student and a cascade, each with two seeds; accuracies and costs are set so the tuned arms differ in cost."""
    import zlib

    import numpy as np

    from adaptlab.results import PredictionRow

    api = {"api_input_tokens": 300.0, "api_output_tokens": 2.0,
           "token_price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}
    specs = [  # variant, strategy, arm, n_train, labels, accuracy, query info, train seconds
        ("few_shot @large", "few_shot", "prompt", 8, 8, 0.80, api, 0.0),
        ("lora", "lora", "finetune", 64, 64, 0.90, {"throughput_qps": 5.0}, 3600.0),
        ("distill", "distill", "distill", 8, 8, 0.90, {"throughput_qps": 5.0}, 1800.0),
        ("cascade", "cascade", "cascade", 64, 114, 0.91,
         {**api, "api_input_tokens": 30.0, "hardware_seconds": 0.2}, 3600.0)]
    cells, preds = [], {}
    for variant, strategy, arm, n, labels, acc, query, train in specs:
        for seed in (0, 1):
            key = f"{strategy}-{seed}"
            scores = (np.random.default_rng(zlib.crc32(key.encode())).random(200) < acc).astype(float)
            gold = ["a" if i % 2 else "b" for i in range(200)]  # balanced: the majority baseline is 0.5
            preds[key] = [PredictionRow(key, f"ex{i}", "", g, g if s else ("b" if g == "a" else "a"), s)
                          for i, (g, s) in enumerate(zip(gold, scores))]
            value = float(scores.mean())
            cells.append(CellRecord(key=key, strategy=strategy, options={}, n_train=n, seed=seed, variant=variant,
                                    value=value, ci_low=value - 0.05, ci_high=value + 0.05, n_test=200,
                                    train_seconds=train, query_seconds=0.3, labels_used=labels, family="prompt"
                                    if arm == "prompt" else "finetune",
                                    extra={"arm": arm, "cost": {"query": query, "train": {}}}))
    return cells, preds


def test_the_recommendation_weighs_four_arms_with_the_same_rules() -> None:
    from adaptlab.analysis import analyze
    from adaptlab.recommend import recommend

    cells, preds = _four_arms()
    sc = Scenario(price_per_hour=0.1, accuracy_target=0.85, price_per_label=1.0, queries_per_month=1000.0)
    rec = recommend(analyze(cells, lambda k: preds[k], sc), sc)
    rows = {r["arm"]: r for r in rec.options}
    assert set(rows) == {"prompt", "finetune", "distill", "cascade"}
    # distil and LoRA both meet the target at the same quality; distil used 8 labels, not 64: cheaper in total
    assert rec.decision == "finetune" and rec.choice == "distill" and rec.headline.startswith("Distil with distill")
    assert rows["distill"]["chosen"] and not rows["finetune"]["chosen"]
    assert rows["prompt"]["meets_target"] is False and rows["cascade"]["meets_target"] is True
    assert rows["prompt"]["price"] == "$0.15/$0.6 per 1M tokens in/out"
    assert rows["cascade"]["price"].endswith("+ $0.1/hour x measured seconds of the small model")
    assert rows["prompt"]["usd_per_1k"] == pytest.approx(1000 * (300 * 0.15 + 2 * 0.6) / 1e6)
    assert rows["cascade"]["usd_per_1k"] == pytest.approx(1000 * ((30 * 0.15 + 2 * 0.6) / 1e6 + 0.2 * 0.1 / 3600))
    # fewer labels on hand: only the 8-label options remain
    assert any(w.startswith("With 8 labels on hand") for w in rec.would_change) is False  # distil already uses 8
    # a token price change is weighed too
    assert any(w.startswith(("Token prices from 0.01x", "At ")) and "per 1M tokens" in w for w in rec.would_change)
    # without a label price and with a looser target, cost still decides between the tuned arms
    cheaper = recommend(analyze(cells, lambda k: preds[k], sc.replace(price_per_label=0.0)),
                        sc.replace(price_per_label=0.0))
    assert cheaper.choice in ("distill", "lora", "cascade") and cheaper.decision == "finetune"
