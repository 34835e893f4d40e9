"""Model cards built from data: valid YAML, metrics equal to the evaluation JSON, updates that keep
what the user wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from ggr_hf import hub
from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.hub.card import (
    USER_NOTES_END,
    USER_NOTES_START,
    GGRCardData,
    build_model_card,
    load_metrics,
    load_template,
    metric_display_name,
)
from ggr_hf.modeling_ggr import GGRForRecommendation

REPO_ROOT = Path(__file__).resolve().parents[1]
EVAL = {
    "recall@10": 0.05,
    "ndcg@10": 0.02,
    "entropy@10": 2.1,
    "new_interest_recall@10": 0.01,
    "recall@10_h1": 0.03,
    "split": "test",
    "k": 10,
}


def make_model(priors=None, composition: str = "multiplicative") -> GGRForRecommendation:
    priors = (
        priors if priors is not None else [{"type": "item", "field": "genres", "values": ["a", "b|c", "d"]}]
    )
    config = GGRConfig(
        num_items=20,
        backbone_config={"hidden_size": 16, "max_seq_len": 8, "num_layers": 1},
        priors=priors,
        composition=composition,
        num_negatives=8,
    )
    model = GGRForRecommendation(config)
    if model.item_groups.num_priors:
        membership = torch.zeros(21, 3, dtype=torch.bool)
        membership[1:, 0], membership[1::2, 1], membership[2::3, 2] = True, True, True
        model.set_item_groups("genres", membership)
    return model


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert isinstance(meta, dict)
    return meta


def index_metrics(meta: dict) -> dict[str, float]:
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    return {m["type"]: m["value"] for m in result["metrics"]}


@pytest.fixture
def model_dir(tmp_path) -> Path:
    make_model().save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_card_yaml_parses_and_metrics_equal_the_eval_json(model_dir, tmp_path):
    eval_path = tmp_path / "eval.json"
    eval_path.write_text(json.dumps(EVAL))
    build_model_card(model_dir, metrics=eval_path, dataset_name="ml-1m", base_model="user/hstu-ml1m")
    text = (model_dir / "README.md").read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "ggr-hf"
    assert meta["datasets"] == ["ml-1m"]
    assert meta["base_model"] == "user/hstu-ml1m"
    assert {"ggr-hf", "recommendation", "hstu"} <= set(meta["tags"])

    expected = {k: v for k, v in json.loads(eval_path.read_text()).items() if k not in ("split", "k")}
    assert index_metrics(meta) == expected
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"] == {"name": "ml-1m", "type": "ml-1m", "split": "test"}
    assert result["task"]["type"] == "recommendation"
    # The card also loads as a Hub card without metadata errors.
    assert ModelCard(text).data.eval_results[0].metric_value == 0.05


def test_card_body_is_filled_from_the_model(model_dir):
    build_model_card(
        model_dir,
        metrics=EVAL,
        training_args={
            "training": {"learning_rate": 0.001, "output_dir": "/private/run"},
            "data": {"split_k": 8},
        },
        dataset_name="ml-1m",
    )
    text = (model_dir / "README.md").read_text()
    assert "| genres | item | a, b\\|c, d |" in text
    # One adapter block per head: 16 x 16 weights, no bias; the backbone has 5,737 parameters.
    assert "| b\\|c | genres = b\\|c | 256 | 4.46% |" in text
    assert "| `training.learning_rate` | 0.001 |" in text
    assert "| `data.split_k` | 8 |" in text
    assert "/private/run" not in text  # local paths stay out of the card
    assert "| Recall@10 | 0.0500 |" in text and "| Recall@10 (horizon 1) | 0.0300 |" in text
    assert 'GGRForRecommendation.from_pretrained("<path-or-repo-id>")' in text
    assert "## Intended use" in text and "## Limitations" in text
    assert text.count(USER_NOTES_START) == 1 and text.count(USER_NOTES_END) == 1


def test_an_update_keeps_user_notes_and_metadata(model_dir):
    build_model_card(model_dir, metrics=EVAL, dataset_name="ml-1m")
    path = model_dir / "README.md"
    card = ModelCard.load(path)
    card.data.license = "mit"
    card.data.tags = [*card.data.tags, "my-tag"]
    card.text = card.text.replace(USER_NOTES_START + "\n", USER_NOTES_START + "\nTrained for the demo.\n")
    card.save(path)

    build_model_card(model_dir, metrics={"recall@10": 0.5, "ndcg@10": 0.25}, dataset_name="ml-1m")
    text = path.read_text()
    meta = front_matter(text)
    assert "Trained for the demo." in text
    assert meta["license"] == "mit"
    assert "my-tag" in meta["tags"] and "ggr-hf" in meta["tags"]
    assert index_metrics(meta) == {"recall@10": 0.5, "ndcg@10": 0.25}
    assert "| Recall@10 | 0.5000 |" in text and "0.0500" not in text


def test_an_update_without_inputs_keeps_the_recorded_results(model_dir):
    build_model_card(model_dir, metrics=EVAL, training_args={"learning_rate": 0.001}, dataset_name="ml-1m")
    first = (model_dir / "README.md").read_text()
    build_model_card(model_dir)
    second = (model_dir / "README.md").read_text()
    assert front_matter(second) == front_matter(first)
    assert "| `learning_rate` | 0.001 |" in second


def test_a_hand_written_card_becomes_the_notes(model_dir):
    (model_dir / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# My model\n\nHand-written text.\n")
    build_model_card(model_dir)
    text = (model_dir / "README.md").read_text()
    notes = text.split(USER_NOTES_START)[1].split(USER_NOTES_END)[0]
    assert "Hand-written text." in notes
    assert front_matter(text)["license"] == "cc-by-4.0"


def test_the_trainer_results_file_and_yaml_settings_are_read(tmp_path):
    run = tmp_path / "run"
    make_model().save_pretrained(run / "best")
    (run / "results.json").write_text(json.dumps({"train": {"steps": 3}, "test": {"recall@10": 0.125}}))
    (run / "training_args.yaml").write_text("data:\n  dataset: ml-100k\ntraining:\n  epochs: 2\n")
    build_model_card(run / "best", metrics=run / "results.json", training_args=run / "training_args.yaml")
    meta = front_matter((run / "best" / "README.md").read_text())
    assert index_metrics(meta) == {"recall@10": 0.125}
    assert meta["model-index"][0]["results"][0]["dataset"]["split"] == "test"
    assert meta["datasets"] == ["ml-100k"]


def test_the_plot_is_copied_and_linked(model_dir, tmp_path):
    (tmp_path / "ablation").mkdir()
    plot = tmp_path / "ablation" / "accuracy_vs_diversity.png"  # the name the ablation writes
    plot.write_bytes(b"\x89PNG fake")
    build_model_card(model_dir, metrics=EVAL, dataset_name="ml-1m", figures={"Accuracy vs diversity": plot})
    assert (model_dir / "accuracy_vs_diversity.png").read_bytes() == b"\x89PNG fake"
    text = (model_dir / "README.md").read_text()
    assert "![Accuracy vs diversity](accuracy_vs_diversity.png)" in text
    build_model_card(model_dir)  # recorded by the previous card, and beside the model
    assert "![Accuracy vs diversity](accuracy_vs_diversity.png)" in (model_dir / "README.md").read_text()


def test_every_figure_passed_is_copied_and_embedded_with_its_caption(model_dir, tmp_path):
    figures = {
        "Accuracy vs diversity": tmp_path / "accuracy_vs_diversity.png",
        "Head contributions [share of top-10]": tmp_path / "head_contributions.png",
    }
    for path in figures.values():
        path.write_bytes(b"\x89PNG " + path.name.encode())
    build_model_card(model_dir, metrics=EVAL, dataset_name="ml-1m", figures=figures)
    text = (model_dir / "README.md").read_text()
    for name in ("accuracy_vs_diversity.png", "head_contributions.png"):
        assert (model_dir / name).read_bytes() == b"\x89PNG " + name.encode()
    assert "![Accuracy vs diversity](accuracy_vs_diversity.png)" in text
    assert "![Head contributions [share of top-10\\]](head_contributions.png)" in text
    assert text.index("accuracy_vs_diversity.png") < text.index("head_contributions.png")
    assert front_matter(text)["ggr_hf"]["figures"] == {
        "Accuracy vs diversity": "accuracy_vs_diversity.png",
        "Head contributions [share of top-10]": "head_contributions.png",
    }
    # Only what is passed: no file beside the model is picked up by its name.
    build_model_card(model_dir, figures={})
    text = (model_dir / "README.md").read_text()
    assert "accuracy_vs_diversity.png" not in text and "head_contributions.png" not in text


def test_figures_with_the_same_file_name_are_refused(model_dir, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "plot.png").write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match="same file name 'plot.png'"):
        build_model_card(
            model_dir, figures={"A": tmp_path / "a" / "plot.png", "B": tmp_path / "b" / "plot.png"}
        )


def test_results_files_beside_the_model_are_not_read_unless_passed(tmp_path):
    run = tmp_path / "run"
    make_model().save_pretrained(run / "best")
    (run / "best" / "eval_results.json").write_text(json.dumps({"recall@10": 0.5}))
    (run / "results.json").write_text(json.dumps({"test": {"recall@10": 0.125}}))
    (run / "best" / "accuracy_vs_diversity.png").write_bytes(b"\x89PNG")
    build_model_card(run / "best", dataset_name="ml-1m")
    text = (run / "best" / "README.md").read_text()
    assert "model-index" not in front_matter(text)
    assert "No evaluation results were recorded." in text
    assert "accuracy_vs_diversity.png" not in text


def test_heads_card(tmp_path):
    model = make_model(
        priors=[
            {"type": "item", "field": "genres", "values": ["a", "b", "c"]},
            {"type": "temporal", "segments": 2, "horizon": 2},
        ],
        composition="hierarchical",
    )
    hub.save_heads(
        model, tmp_path / "heads", base_model_name_or_path="user/hstu", model_card={"metrics": EVAL}
    )
    text = (tmp_path / "heads" / "README.md").read_text()
    meta = front_matter(text)
    assert meta["base_model"] == "user/hstu" and "ggr-heads" in meta["tags"]
    assert "model-index" not in meta  # no data set given: results are shown but not indexed
    assert "| a / short-term | genres = a, time = short-term | 256 | 4.46% |" in text
    assert 'from_pretrained("user/hstu", heads="<path-or-repo-id>")' in text
    assert "# heads" in text


def test_a_local_base_path_is_not_hub_metadata(tmp_path):
    hub.save_heads(make_model(), tmp_path / "heads", base_model_name_or_path=str(tmp_path / "backbone"))
    meta = front_matter((tmp_path / "heads" / "README.md").read_text())
    assert "base_model" not in meta


def test_card_data_object(model_dir):
    card = GGRCardData.from_model_dir(model_dir, metrics={"ndcg@10": 0.2}, dataset_name="ml-1m")
    assert card.artifact == "model" and card.num_items == 20 and card.hidden_size == 16
    assert [h.name for h in card.heads] == ["a", "b|c", "d"]
    assert card.backbone_parameters == 5737 and card.head_parameters == 3 * 256
    data = card.to_model_card_data().to_dict()
    assert data["library_name"] == "ggr-hf"
    assert data["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.2


def test_load_metrics_formats():
    metrics, split, dataset = load_metrics(
        {**EVAL, "dataset": "ml-1m", "nan_metric": float("nan"), "ok": True}
    )
    assert metrics == {k: v for k, v in EVAL.items() if k not in ("split", "k")}
    assert (split, dataset) == ("test", "ml-1m")
    metrics, split, _ = load_metrics({"validation": {"ndcg@10": 0.3}, "num_parameters": 5})
    assert metrics == {"ndcg@10": 0.3} and split == "validation"


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("recall@10", "Recall@10"),
        ("ndcg@10_h4", "NDCG@10 (horizon 4)"),
        ("entropy@50", "Entropy@50"),
        ("new_interest_ndcg@10", "New-interest NDCG@10"),
        ("mrr", "MRR"),
    ],
)
def test_metric_names(key, name):
    assert metric_display_name(key) == name


def test_the_template_exists_once_in_the_package():
    packaged = REPO_ROOT / "src" / "ggr_hf" / "resources" / "model_card_template.md"
    assert packaged.read_text() == load_template()
    assert load_template().startswith("---\n{{ card_data }}\n---\n")
    copies = [
        p for folder in ("src", "model_cards", "docs") for p in (REPO_ROOT / folder).glob("**/*template*.md")
    ]
    assert copies == [packaged]
    assert (
        "src/ggr_hf/resources/model_card_template.md" in (REPO_ROOT / "model_cards" / "README.md").read_text()
    )


def test_the_plot_recorded_by_a_v0_1_0_card_is_kept(model_dir):
    build_model_card(model_dir, metrics=EVAL, dataset_name="ml-1m")
    card = ModelCard.load(model_dir / "README.md")
    card.data.ggr_hf = {"version": "0.1.0", "artifact": "model", "plot": "accuracy_diversity.png"}
    card.save(model_dir / "README.md")
    (model_dir / "accuracy_diversity.png").write_bytes(b"\x89PNG")
    build_model_card(model_dir)
    text = (model_dir / "README.md").read_text()
    assert "![Accuracy vs diversity](accuracy_diversity.png)" in text
    assert front_matter(text)["ggr_hf"]["figures"] == {"Accuracy vs diversity": "accuracy_diversity.png"}
