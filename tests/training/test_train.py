import json

import numpy as np
import pytest
import torch

from ggr_hf.cli import main
from ggr_hf.evaluation.evaluator import evaluate_model, evaluate_popularity
from ggr_hf.experiments.config import ExperimentConfig, experiment_config_from_dict, load_experiment_config
from ggr_hf.experiments.experiment import build_model, prepare_experiment, train_model

SYNTH = {"num_users": 150, "num_items": 200, "num_categories": 6, "min_len": 20, "max_len": 40, "seed": 0}


def small_config(tmp_path, priors=None, epochs=6) -> ExperimentConfig:
    return experiment_config_from_dict(
        {
            "data": {"dataset": "synthetic", "split_k": 2, "synthetic": SYNTH},
            "model": {
                "backbone_config": {"hidden_size": 32, "num_layers": 1, "max_seq_len": 20, "dropout": 0.0},
                "priors": [{"type": "item", "field": "genres"}] if priors is None else priors,
                "num_negatives": 32,
            },
            "training": {
                "epochs": epochs,
                "batch_size": 32,
                "learning_rate": 3e-3,
                "output_dir": str(tmp_path),
                "progress": False,
                "eval_every_epochs": 2,
            },
        }
    )


def test_training_lowers_the_loss_and_beats_random_ranking(tmp_path):
    cfg = small_config(tmp_path)
    exp = prepare_experiment(cfg)
    model = build_model(exp)
    before = evaluate_model(model, exp.split.validation, item_categories=exp.item_categories)
    result = train_model(model, exp, cfg.training)
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0] * 0.9
    after = evaluate_model(model, exp.split.test, item_categories=exp.item_categories)
    # Random ranking of the >= 160 items outside a history gives recall@10 <= 10/160.
    assert after["recall@10"] > 2 * 10 / 160
    assert after["ndcg@10"] > before["ndcg@10"]
    pop = evaluate_popularity(
        exp.split.item_popularity(), exp.split.test, item_categories=exp.item_categories
    )
    assert after["recall@10"] > pop["recall@10"]
    log = [json.loads(line) for line in (tmp_path / "eval_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [2, 4, 6]
    assert (tmp_path / "best" / "model.safetensors").is_file()
    assert result.best_epoch in (2, 4, 6)


def test_yaml_config_unknown_keys_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {dataset: synthetic}\nmodel: {}\ntraining: {epochs: 2, learning_rate: 1e-3}\n")
    cfg = load_experiment_config(path, ["training.epochs=5", "model.fusion=mean"])
    assert cfg.training.epochs == 5 and cfg.training.learning_rate == 1e-3 and cfg.model["fusion"] == "mean"
    # YAML reads a bare `no` as false; it still means accelerate's "no".
    cfg = load_experiment_config(path, ["training.mixed_precision=no"])
    assert cfg.training.mixed_precision == "no"
    with pytest.raises(ValueError, match="mixed_precision must be no, bf16 or fp16, got 'fp8'"):
        load_experiment_config(path, ["training.mixed_precision=fp8"])
    path.write_text("training: {epoch: 2}\n")
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['epoch'\\] in section 'training'"):
        load_experiment_config(path)
    path.write_text("model: {num_items: 3}\n")
    with pytest.raises(ValueError, match="num_items"):
        load_experiment_config(path)


def test_cli_train_evaluate_recommend_end_to_end(tmp_path, capsys):
    cfg = small_config(tmp_path / "run", epochs=2)
    config_path = tmp_path / "exp.yaml"
    import yaml

    d = cfg.to_dict()
    config_path.write_text(yaml.safe_dump(d))
    assert main(["train", "--config", str(config_path), "--output-dir", str(tmp_path / "run")]) == 0
    best = tmp_path / "run" / "best"
    assert (best / "README.md").is_file() and (best / "ggr_experiment.json").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(best), "--split", "test", "--output", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    for key in ("recall@10", "ndcg@10", "entropy@10", "new_interest_recall@10", "recall@10_h1"):
        assert key in metrics and np.isfinite(metrics[key])
    assert metrics["split"] == "test" and "most_popular" in metrics
    capsys.readouterr()
    assert main(["recommend", str(best), "--user", "u3", "--k", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("user u3") and len(out) == 2 + 4
    assert main(["recommend", str(best), "--user", "nobody"]) == 2
    assert "nobody" in capsys.readouterr().err


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {priors: [{type: item, field: colour}]}\ndata: {dataset: synthetic}\n")
    assert main(["train", "--config", str(path), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "colour" in err and "Traceback" not in err


def test_seeds_make_training_reproducible(tmp_path):
    a = small_config(tmp_path / "a", epochs=1)
    b = small_config(tmp_path / "b", epochs=1)
    ma, mb = build_model(prepare_experiment(a), seed=0), build_model(prepare_experiment(b), seed=0)
    train_model(ma, prepare_experiment(a), a.training)
    train_model(mb, prepare_experiment(b), b.training)
    for (n1, p1), (_, p2) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(p1, p2), n1
