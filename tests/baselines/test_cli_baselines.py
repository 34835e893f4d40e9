"""Every baseline through the user-facing commands, with no per-model branch: `ggr-hf train`,
`evaluate`, `recommend` and `compare --models`, from the same YAML a GGR run uses."""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file

from ggr_hf import load_recommender
from ggr_hf.cli import main

DATA = {
    "dataset": "synthetic",
    "split_k": 2,
    "synthetic": {"num_users": 50, "num_items": 60, "num_categories": 3, "min_len": 12, "max_len": 20},
}
ENCODER = {"hidden_size": 16, "num_layers": 1, "max_seq_len": 12, "dropout": 0.0}
MODELS = {
    "sasrec": {"backbone_type": "sasrec", "backbone_config": ENCODER, "priors": [], "num_negatives": 16},
    "comirec_dr": {
        "model_type": "comirec",
        "extractor": "dr",
        "num_interests": 3,
        "backbone_config": ENCODER,
        "num_negatives": 16,
    },
    "remi": {"model_type": "remi", "num_interests": 2, "backbone_config": ENCODER, "num_negatives": 16},
    "dualvae": {"model_type": "dualvae", "backbone_config": ENCODER, "num_negatives": 16},
}
# What `recommend` names as the source of each item.
EXPLAINED_BY = {"sasrec": "backbone", "comirec_dr": "interest ", "remi": "interest ", "dualvae": ""}


def write_config(tmp_path, model: dict, **training) -> str:
    path = tmp_path / "exp.yaml"
    cfg = {"data": DATA, "model": model, "training": {"epochs": 1, "batch_size": 32, **training}}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize("name", list(MODELS))
def test_train_evaluate_recommend(name, tmp_path, capsys):
    config = write_config(tmp_path, MODELS[name])
    out_dir = tmp_path / "run"
    assert main(["train", "--config", config, "--output-dir", str(out_dir)]) == 0
    trained = json.loads(capsys.readouterr().out)
    best = out_dir / "best"
    assert trained["best_model"] == str(best)
    assert (best / "model.safetensors").is_file() and not list(best.glob("*.bin"))
    model = load_recommender(best)
    expected_type = "ggr" if name == "sasrec" else MODELS[name]["model_type"]
    assert model.config.model_type == expected_type
    # The saved weights are the loaded ones.
    state = load_file(str(best / "model.safetensors"))
    assert set(state) <= set(model.state_dict())

    # `evaluate` re-reads the saved model and the data named in its experiment: the same test metrics.
    metrics_file = tmp_path / "metrics.json"
    assert main(["evaluate", str(best), "--output", str(metrics_file)]) == 0
    capsys.readouterr()
    metrics = json.loads(metrics_file.read_text())
    assert metrics["recall@10"] == pytest.approx(trained["test"]["recall@10"], abs=1e-6)

    assert main(["recommend", str(best), "--user", "u1", "--k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].lower().startswith("user u1:") and "top 3" in lines[0]
    rows = [line for line in lines[2:] if line.strip()]
    assert len(rows) == 3
    if EXPLAINED_BY[name]:
        assert all(EXPLAINED_BY[name] in row for row in rows), lines


def test_compare_takes_any_list_of_models(tmp_path, capsys):
    config = write_config(tmp_path, MODELS["sasrec"], eval_every_epochs=1)
    models = tmp_path / "models.yaml"
    models.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"name": "SASRec", "model": MODELS["sasrec"]},
                    {"name": "ComiRec-DR", "model": MODELS["comirec_dr"]},
                    {
                        "name": "GGR cat",
                        "model": {**MODELS["sasrec"], "priors": [{"type": "item", "field": "genres"}]},
                    },
                ]
            }
        )
    )
    out = tmp_path / "cmp"
    argv = ["compare", "--config", config, "--models", str(models), "--seeds", "0", "1"]
    assert main([*argv, "--split-ks", "2", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("MostPop", "SASRec (n=2)", "ComiRec-DR (n=2)", "GGR cat (n=2)", "Params", "Train min"):
        assert name in printed
    results = json.loads((out / "results.json").read_text())
    text = json.dumps(results)
    assert "ComiRec-DR" in text and "GGR cat" in text
    assert list(out.glob("accuracy_vs_diversity_k2.png"))
