"""Regressions from the adversarial bad-input sweep of issue 13: each case once ended in a raw
exception, a silent wrong result or a message that did not name the thing; now each is one
documented `GGRError` (or exit code 2) naming the file, field or argument and the value."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from safetensors.torch import save_file

from ggr_hf import GGRConfig
from ggr_hf.cli import EXIT_USAGE, main
from ggr_hf.data.pixelrec import load_pixelrec
from ggr_hf.data.schema import DataFormatError
from ggr_hf.data.synthetic import make_synthetic
from ggr_hf.errors import GGRConfigError, GGRInputError, GGRModelFolderError
from ggr_hf.experiments.ablation import load_ablation_spec
from ggr_hf.experiments.config import experiment_config_from_dict, load_experiment_config
from ggr_hf.hub.io import check_safetensors
from ggr_hf.hub.push import push_model_to_hub
from tests.conftest import tiny_model

BASE = {"data": {"dataset": "synthetic", "split_k": 2}, "model": {}, "training": {"epochs": 1}}


def config_with(section: str, **values) -> dict:
    d = copy.deepcopy(BASE)
    d[section].update(values)
    return d


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("training", {"log_every": 0}, r"training.log_every must be >= 1, got 0"),
        ("training", {"patience": -1}, r"training.patience must be >= 0 .*got -1"),
        ("training", {"max_steps": 0}, r"training.max_steps must be -1 \(no limit\) or >= 1, got 0"),
        ("training", {"max_steps": -5}, r"training.max_steps must be -1 \(no limit\) or >= 1, got -5"),
        ("training", {"output_dir": ""}, r"training.output_dir must name a folder, got ''"),
        ("data", {"min_seq_len": -1}, r"data.min_seq_len must be >= 0, got -1"),
        ("data", {"max_users": 0}, r"data.max_users must be >= 1 or null, got 0"),
        ("model", {"backbone_config": [8]}, r"model: GGRConfig.backbone_config must be a dict .* got \[8\]"),
        ("model", {"exclude_history": "no"}, r"GGRConfig.exclude_history must be true or false, got 'no'"),
        ("model", {"offset_discount": "high"}, r"GGRConfig.offset_discount must be a number, got 'high'"),
        (
            "model",
            {"priors": [{"type": "graph", "resolution": -1.0}]},
            r"priors\[0\] \('graph'\): resolution must be a number > 0, got -1.0",
        ),
        (
            "model",
            {"priors": [{"type": "graph", "min_weight": "2"}]},
            r"min_weight must be an integer >= 1, got '2'",
        ),
        (
            "model",
            {"priors": [{"type": "user", "source": "graph", "resolution": 0}]},
            r"resolution must be a number > 0, got 0",
        ),
    ],
)
def test_a_bad_value_is_refused_when_the_config_is_read(section, values, message):
    with pytest.raises(GGRConfigError, match=rf"^exp.yaml: .*{message}"):
        experiment_config_from_dict(config_with(section, **values), "exp.yaml")


def test_a_key_given_twice_in_the_yaml_is_named_with_its_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("data: {dataset: synthetic}\ntraining:\n  epochs: 1\n  epochs: 20\n")
    with pytest.raises(
        GGRConfigError, match=r"exp.yaml: not valid YAML \(the key 'epochs' is given twice .* line 4"
    ):
        load_experiment_config(path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_users": "many"}, r"synthetic: num_users must be an integer, got 'many' \(str\)"),
        ({"num_items": 0}, r"synthetic: need .* got num_users=200, num_categories=6, num_items=0"),
        ({"cycle_prob": "often"}, r"synthetic: cycle_prob must be a number in \[0, 1\], got 'often'"),
    ],
)
def test_bad_synthetic_options_name_the_option(options, message):
    with pytest.raises(GGRInputError, match=message):
        make_synthetic(**options)


def test_a_synthetic_option_of_the_wrong_type_is_exit_2_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config_with("data", synthetic={"num_users": "many"})))
    assert main(["train", "--config", str(path), "--output-dir", str(tmp_path / "out")]) == EXIT_USAGE
    assert "synthetic: num_users must be an integer, got 'many'" in capsys.readouterr().err


@pytest.mark.parametrize("field", ["hidden_size", "num_layers"])
def test_a_backbone_field_of_the_wrong_type_is_a_config_error_from_the_api(field):
    with pytest.raises(GGRConfigError, match=rf"HSTUConfig.{field} must be a positive integer, got '8'"):
        GGRConfig(backbone_config={field: "8"})


def write_ablation(tmp_path, **spec) -> str:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", **spec}))
    return str(path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"base": {"data": {}}, "variants": [{"name": "a"}]}, r"base must name an experiment YAML"),
        ({"base": "nobase.yaml", "variants": [{"name": "a"}]}, r"nobase.yaml does not exist"),
        ({"variants": 5}, r"variants must be a list"),
        ({"variants": ["a"]}, r"variants\[0\] must be a mapping with 'name', got 'a'"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, r"variants\[1\]: the name 'a' is used twice"),
        ({"seeds": "0,1", "variants": [{"name": "a"}]}, r"seeds must be a list of integers >= 0, got '0,1'"),
        ({"overrides": {"training": 5}, "variants": [{"name": "a"}]}, r"overrides must map sections"),
        (
            {"variants": [{"name": "a"}, {"name": "b", "eval_of": "a", "fusion": "min"}]},
            r"variants\[1\] \('b'\).fusion must be one of \['max', 'mean'\], got 'min'",
        ),
        (
            {"variants": [{"name": "a"}, {"name": "b", "model": {"priors": [{"type": "weekdayz"}]}}]},
            r"abl.yaml: variants\[1\] \('b'\): model: .*unknown type 'weekdayz'",
        ),
    ],
)
def test_an_ablation_file_is_checked_whole_before_any_training(tmp_path, spec, message):
    path = write_ablation(tmp_path, **spec)
    with pytest.raises((GGRConfigError, FileNotFoundError), match=message):
        load_ablation_spec(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["compare", "--config", "x.yaml", "--seeds", "-1"],
            "argument --seeds: expected an integer >= 0, got '-1'",
        ),
        (
            ["ablate", "--config", "x.yaml", "--seeds", "a"],
            "argument --seeds: expected an integer >= 0, got 'a'",
        ),
        (
            ["data", "prepare", "pixelrec", "--raw", "r", "--out", "o", "--min-events", "-5"],
            "argument --min-events/--min-clicks: expected an integer >= 1, got '-5'",
        ),
    ],
)
def test_numeric_flags_are_checked_by_the_parser(argv, message, capsys):
    assert main(argv) == EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("repo_id", ["bad repo id!", 5, "a/b/c"])
def test_a_bad_repo_id_is_refused_before_anything_is_written(repo_id, tmp_path):
    with pytest.raises(GGRInputError, match=rf"repo_id {repo_id!r} is not a Hub model id"):
        push_model_to_hub(tmp_path, repo_id)


def test_a_truncated_weights_file_is_a_model_folder_error_and_an_os_error(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(4)}, str(path))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(
        GGRModelFolderError, match=r"model.safetensors is not a readable safetensors file"
    ) as info:
        check_safetensors(path)
    assert isinstance(info.value, OSError)


@pytest.fixture(scope="module")
def model():
    return tiny_model(priors=[{"type": "item", "field": "genres", "values": ["a", "b", "c"]}])


@pytest.mark.parametrize("save", ["save_pretrained", "save_heads"])
def test_saving_into_a_file_is_refused(model, save, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(GGRInputError, match=r"afile is a file, not a folder"):
        getattr(model, save)(tmp_path / "afile")
    with pytest.raises(GGRInputError, match=r"afile/sub: .*afile is a file, not a folder"):
        getattr(model, save)(tmp_path / "afile" / "sub")


@pytest.mark.parametrize(
    ("timestamps", "value"),
    [
        ([1_600_000_000_000, 1_600_000_001_000], 1_600_000_000_000),  # milliseconds
        ([1_600_000_000, 1_600_000_001_000_000_000], 1_600_000_001_000_000_000),  # nanoseconds
        ([-5, 1_600_000_000], -5),
        (torch.tensor([1_600_000_000_000, 1_600_000_001_000]), 1_600_000_000_000),
    ],
)
def test_recommend_refuses_times_that_are_not_seconds(model, timestamps, value):
    with pytest.raises(
        GGRInputError, match=rf"timestamps: user 0, position \d: {value} is not a time in seconds"
    ):
        model.recommend(
            [1, 2] if not isinstance(timestamps, torch.Tensor) else torch.tensor([1, 2]),
            k=3,
            timestamps=timestamps,
        )
    assert model.recommend([1, 2], k=3, timestamps=[1_600_000_000, 1_600_000_001]).item_ids.shape == (1, 3)


@pytest.mark.parametrize(
    ("text", "shown"),
    [("item_id,user_id\ni1,u1\n", "item_id,user_id"), ("", "empty")],
)
def test_an_interaction_csv_with_the_wrong_header_is_named(tmp_path, text, shown):
    (tmp_path / "Pixel8M.csv").write_text(text)
    (tmp_path / "item_info.csv").write_text("item_id,title,tag\ni1,T,Gaming\n")
    with pytest.raises(
        DataFormatError,
        match=rf"no interaction CSV .*CSVs with other headers: Pixel8M.csv \(header: {shown}\)",
    ):
        load_pixelrec(tmp_path, progress=False)


def test_ebnerd_splits_given_as_one_string_are_not_read_letter_by_letter(tmp_path):
    from ggr_hf.data.ebnerd import input_files

    (tmp_path / "articles.parquet").write_bytes(b"")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "history.parquet").write_bytes(b"")
    assert input_files(tmp_path, splits="train")[1] == tmp_path / "train" / "history.parquet"
    with pytest.raises(
        FileNotFoundError,
        match=r"valdation/history.parquet: file not found \(splits=\['valdation'\]; split folders here: \['train'\]\)",
    ):
        input_files(tmp_path, splits="valdation")
    with pytest.raises(GGRInputError, match=r"splits must name split folders"):
        input_files(tmp_path, splits=[])


def test_a_metrics_file_without_metrics_and_a_figure_that_is_no_image_are_refused(tmp_path):
    from ggr_hf.hub.card import _figure_files, load_metrics

    path = tmp_path / "m.json"
    path.write_text('{"ndcg@10": "high"}')
    with pytest.raises(GGRInputError, match=r"m.json holds no finite numeric metrics .*'ndcg@10': 'high'"):
        load_metrics(path)
    path.write_text('{"test": {"ndcg@10": 0.25}}')
    assert load_metrics(path) == ({"ndcg@10": 0.25}, "test", None)
    with pytest.raises(GGRInputError, match=r"figure 'plot': notes.txt is not an image the card can show"):
        _figure_files({"plot": "notes.txt"})
    assert _figure_files({"plot": "dir/a.PNG"}) == [("plot", "a.PNG")]


def test_weights_that_do_not_match_the_config_name_the_config_and_a_few_keys(model, tmp_path):
    import json

    from ggr_hf.modeling_ggr import GGRForRecommendation

    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["priors"] = []
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        GGRModelFolderError,
        match=r"m: its weights do not match the model its config.json describes \(GGRForRecommendation; "
        r"unexpected_keys: \[.*\] \(and \d+ more\)\); restore the config.json",
    ):
        GGRForRecommendation.from_pretrained(tmp_path / "m")
