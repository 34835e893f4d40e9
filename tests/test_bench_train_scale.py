"""`benchmarks/bench_train_scale.py` at a tiny size: its data, configs and the dense / pair-only check
(never its timings)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import yaml

from ggr_hf.cli import main as cli_main
from ggr_hf.data.schema import RecDataBundle
from ggr_hf.experiments.config import load_experiment_config

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_train_scale.py"
SETTINGS = dict(batch=4, seq=20, hidden=16, layers=1, negatives=16, warmup=1, steps=2)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_scale", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prepared(bench, tmp_path_factory) -> Path:
    """A small MerRec-schema set from the benchmark's generator, prepared by the real command."""
    work = tmp_path_factory.mktemp("scale")
    bench.generate(work / "raw", 20_000, 1, 1, 0)
    out = work / "prepared"
    args = ["data", "prepare", "merrec", "--raw", str(work / "raw"), "--out", str(out), "--min-events", "50"]
    assert cli_main([*args, "--no-progress"]) == 0
    return out


def _flat_items(bundle: RecDataBundle) -> np.ndarray:
    return pc.list_flatten(bundle.sequences.with_format("arrow")[:].column("item_ids")).to_numpy()


def test_folding_keeps_the_events_on_a_quarter_of_the_catalogue(bench, prepared, tmp_path):
    bundle = RecDataBundle.load_from_disk(prepared)
    folded = bench.fold_items(bundle, 4)
    folded.save_to_disk(tmp_path / "folded")
    again = RecDataBundle.load_from_disk(tmp_path / "folded")
    again.validate()  # ids within 1..num_items, same lengths, sorted times
    assert again.num_items == bundle.num_items // 4
    assert again.num_users == bundle.num_users and again.num_interactions == bundle.num_interactions
    before, after = _flat_items(bundle), _flat_items(again)
    assert np.array_equal(after, (before - 1) % again.num_items + 1)
    assert after.max() <= again.num_items < before.max()


def test_configs_give_16_heads_and_the_plain_backbone(bench, prepared, tmp_path):
    bundle = RecDataBundle.load_from_disk(prepared)
    mapping = bench.category_mapping(list(set(bundle.items["c0_name"])))
    assert sorted(set(mapping.values())) == [f"cat{i}" for i in range(8)]
    for variant, heads in (("ggr16", 16), ("plain", 1)):
        path = tmp_path / f"{variant}.yaml"
        path.write_text(yaml.safe_dump(bench.experiment_dict(variant, prepared, mapping, SETTINGS, tmp_path)))
        cfg = load_experiment_config(path)  # what `ggr-hf train --config` reads
        priors = cfg.model.get("priors") or []
        assert len(priors) == (2 if heads == 16 else 0)
        assert cfg.training.max_steps == SETTINGS["warmup"] + SETTINGS["steps"]


def test_dense_child_trains_through_the_loop_and_finds_the_same_loss(bench, prepared, tmp_path):
    # The dense form through the real loop in a fresh process, as the benchmark runs it: the
    # pair-only and dense losses agree on the first batch, and every measured step is timed.
    bundle = RecDataBundle.load_from_disk(prepared)
    mapping = bench.category_mapping(list(set(bundle.items["c0_name"])))
    path = tmp_path / "dense16.yaml"
    path.write_text(yaml.safe_dump(bench.experiment_dict("dense16", prepared, mapping, SETTINGS, tmp_path)))
    result = bench.run_child("dense16", path, SETTINGS["warmup"], 0)
    check = result["loss_check"]
    assert check["equal"] and check["pair_only"] == pytest.approx(check["dense"], rel=1e-5)
    assert result["num_heads"] == 16 and result["steps"] == SETTINGS["steps"]
    share = result["share"]
    assert 0 < share["forward"] < 1 and 0 < share["backward"] < 1
    assert 0 <= share["outside_forward_backward_optimizer"] < 1
    assert result["events_per_second"] > 0 and result["training_peak_rss"] >= result["rss_before_training"]
