import json

import pytest
import yaml

from ggr_hf.cli import main
from ggr_hf.experiments.ablation import format_ablation_table, load_ablation_spec

BASE = {
    "data": {
        "dataset": "synthetic",
        "split_k": 2,
        "synthetic": {"num_users": 60, "num_items": 80, "num_categories": 3, "min_len": 12, "max_len": 24},
    },
    "model": {
        "backbone_config": {"hidden_size": 16, "num_layers": 1, "max_seq_len": 12, "dropout": 0.0},
        "num_negatives": 16,
    },
    "training": {"epochs": 1, "batch_size": 32},
}


def write_spec(tmp_path, variants, **extra):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    spec = {"base": "base.yaml", "seeds": [0, 1], "variants": variants, **extra}
    (tmp_path / "abl.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / "abl.yaml"


def test_ablation_cli_writes_table_plots_and_eval_only_rows(tmp_path, capsys):
    path = write_spec(
        tmp_path,
        [
            {"name": "plain", "model": {"priors": []}},
            {"name": "genre", "model": {"priors": [{"type": "item", "field": "genres"}]}},
            {"name": "genre mean", "eval_of": "genre", "fusion": "mean"},
        ],
    )
    out = tmp_path / "out"
    assert main(["ablate", "--config", str(path), "--output-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [len(results["runs"][n]) for n in ("plain", "genre", "genre mean")] == [2, 2, 2]
    # the mean-fusion row evaluates the very same trained models: same heads, different scores
    assert results["runs"]["genre mean"][0]["num_heads"] == results["runs"]["genre"][0]["num_heads"] == 3
    table = (out / "results.md").read_text()
    assert table.splitlines()[2].startswith("| MostPop")
    assert "| genre mean | 3 |" in table and "K=2" in table
    assert (out / "accuracy_vs_diversity.png").stat().st_size > 1000
    assert (out / "head_contributions.png").stat().st_size > 1000
    assert table == format_ablation_table(results) + "\n"


def test_ablation_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="defined later or never"):
        load_ablation_spec(write_spec(tmp_path, [{"name": "x", "eval_of": "y"}]))
    with pytest.raises(ValueError, match="unknown key"):
        load_ablation_spec(write_spec(tmp_path, [{"name": "x"}], colour=1))


def test_compare_prints_mostpop_and_both_models_per_split(tmp_path, capsys):
    base = dict(BASE)
    base["model"] = {**BASE["model"], "priors": [{"type": "item", "field": "genres"}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(base))
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                "--config",
                str(path),
                "--seeds",
                "0",
                "1",
                "--split-ks",
                "1",
                "2",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| K=")]
    assert [r.split(" | ")[1] for r in rows] == [
        "MostPop (train popularity)",
        "HSTU (n=2)",
        "HSTU + item:genres (n=2)",
    ] * 2
    assert rows[0].startswith("| K=1 (leave-one-out)") and rows[3].startswith("| K=2")
    assert "%)" in rows[2]  # relative change against HSTU
    results = json.loads((out / "results.json").read_text())
    recalls = [r["test"]["recall@10"] for r in results["runs"]["k2"]["models"]["HSTU"]]
    mean = sum(recalls) / 2
    assert f"{mean:.4f}" in rows[4]


def test_compare_models_file_replaces_the_model_section_and_plots(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(BASE))
    genre = {**BASE["model"], "priors": [{"type": "item", "field": "genres"}]}
    (tmp_path / "genre.yaml").write_text(yaml.safe_dump({**BASE, "model": genre}))
    models = tmp_path / "models.yaml"
    models.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"name": "plain", "model": {**BASE["model"], "priors": []}},
                    {"name": "genre heads", "config": "genre.yaml"},
                ]
            }
        )
    )
    out = tmp_path / "cmp"
    argv = ["compare", "--config", str(path), "--models", str(models), "--seeds", "0", "--split-ks", "2"]
    assert main([*argv, "--output-dir", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| K=")]
    assert [r.split(" | ")[1] for r in rows] == [
        "MostPop (train popularity)",
        "plain (n=1)",
        "genre heads (n=1)",
    ]
    results = json.loads((out / "results.json").read_text())
    genre_run = results["runs"]["k2"]["models"]["genre heads"][0]
    assert genre_run["num_heads"] > 1 and results["runs"]["k2"]["models"]["plain"][0]["num_heads"] == 1
    # parameters and minutes columns, and the accuracy/diversity plot of the split
    assert rows[2].split(" | ")[-2].endswith("k")
    assert (out / "accuracy_vs_diversity_k2.png").stat().st_size > 1000


def test_compare_models_file_errors_name_the_entry(tmp_path):
    from ggr_hf.experiments.compare import load_model_list

    bad = tmp_path / "m.yaml"
    bad.write_text(yaml.safe_dump({"models": [{"name": "a", "model": {}}, {"name": "a", "model": {}}]}))
    with pytest.raises(ValueError, match=r"models\[1\].*'a' is used twice"):
        load_model_list(bad)
    bad.write_text(yaml.safe_dump({"models": [{"name": "a"}]}))
    with pytest.raises(ValueError, match=r"models\[0\] \('a'\) needs exactly one of 'model'"):
        load_model_list(bad)
    bad.write_text(yaml.safe_dump({"models": [{"name": "a", "config": "missing.yaml"}]}))
    with pytest.raises(FileNotFoundError, match=r"models\[0\] \('a'\).*missing.yaml does not exist"):
        load_model_list(bad)
