"""Experiment configs are checked when read: every field's type, the model section, the selection
metric, `--set` overrides; each failure is one `GGRConfigError` line naming the source, field and value."""

from __future__ import annotations

import pytest
import yaml

from ggr_hf.errors import GGRConfigError, GGRFileNotFoundError
from ggr_hf.evaluation.evaluator import DEFAULT_KS
from ggr_hf.experiments.config import (
    apply_overrides,
    evaluator_metric_names,
    experiment_config_from_dict,
    load_experiment_config,
)

BASE = {"data": {"dataset": "synthetic", "split_k": 2}, "model": {}, "training": {"epochs": 2}}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return path


def write(path, text: str):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ("{epochs: 2.5}", "training.epochs must be an integer, got 2.5 (float)"),
        ("{batch_size: '64'}", "training.batch_size must be an integer, got '64' (str)"),
        ("{epochs: true}", "training.epochs must be an integer, got True (bool)"),
        ("{learning_rate: fast}", "training.learning_rate must be a number, got 'fast' (str)"),
        ("{learning_rate: .nan}", "training.learning_rate must be a number, got nan (float)"),
        ("{cpu: 1}", "training.cpu must be true or false, got 1 (int)"),
        ("{output_dir: [a]}", "training.output_dir must be a string, got ['a'] (list)"),
        ("{save_total_limit: 1.5}", "training.save_total_limit must be an integer or null, got 1.5"),
        ("{seed: null}", "training.seed must be an integer, got None (NoneType)"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_file_field_and_value(tmp_path, training, message):
    path = write(tmp_path / "exp.yaml", f"data: {{dataset: synthetic}}\ntraining: {training}\n")
    with pytest.raises(GGRConfigError) as err:
        load_experiment_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_data_section_types_are_checked_too(tmp_path):
    path = write(tmp_path / "exp.yaml", "data: {split_k: '8', synthetic: 3}\n")
    with pytest.raises(GGRConfigError, match=r"data.split_k must be an integer, got '8' \(str\)"):
        load_experiment_config(path)
    path.write_text("data: {synthetic: 3}\n")
    with pytest.raises(GGRConfigError, match=r"data.synthetic must be a mapping, got 3"):
        load_experiment_config(path)
    path.write_text("data: {split_k: 0}\n")
    with pytest.raises(GGRConfigError, match=r"data.split_k must be >= 1, got 0"):
        load_experiment_config(path)


def test_accepted_values_keep_working(config):
    # A YAML 1.1 `1e-3` (a string to YAML), an int for a float, `no` for mixed_precision.
    cfg = load_experiment_config(
        config, ["training.learning_rate=1e-3", "training.weight_decay=0", "training.mixed_precision=no"]
    )
    assert cfg.training.learning_rate == 1e-3 and isinstance(cfg.training.weight_decay, float)
    assert cfg.training.mixed_precision == "no"
    cfg = load_experiment_config(config, ["training.save_total_limit=null", "data.max_users=10"])
    assert cfg.training.save_total_limit is None and cfg.data.max_users == 10
    with pytest.raises(GGRConfigError, match="mixed_precision must be no, bf16 or fp16, got True"):
        load_experiment_config(config, ["training.mixed_precision=yes"])


def test_sections_must_be_mappings_and_known(tmp_path):
    path = write(tmp_path / "exp.yaml", "training: 5\n")
    with pytest.raises(GGRConfigError, match="section 'training' must be a mapping of key: value, got 5"):
        load_experiment_config(path)
    path.write_text("trainnig: {epochs: 2}\n")
    with pytest.raises(GGRConfigError, match=r"unknown section\(s\) \['trainnig'\]"):
        load_experiment_config(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(GGRConfigError, match="the top level must be a mapping"):
        load_experiment_config(path)


def test_the_model_section_is_checked_by_building_a_ggr_config(tmp_path):
    path = write(tmp_path / "exp.yaml", "model: {fusion: median}\n")
    with pytest.raises(GGRConfigError) as err:
        load_experiment_config(path)
    assert str(err.value).startswith(f"{path}: model: GGRConfig.fusion must be one of")
    assert "'median'" in str(err.value)
    path.write_text("model: {backbone_config: {hidden_sise: 8}}\n")
    with pytest.raises(GGRConfigError, match="hidden_sise"):
        load_experiment_config(path)
    path.write_text("model: {num_items: 3}\n")
    with pytest.raises(GGRConfigError, match="model.num_items is taken from the data set"):
        load_experiment_config(path)


def test_the_selection_metric_is_one_the_evaluator_computes(config):
    with pytest.raises(GGRConfigError) as err:
        load_experiment_config(config, ["training.selection_metric=ndgc@10"])
    message = str(err.value)
    assert message.startswith(
        "--set 'training.selection_metric=ndgc@10': training.selection_metric 'ndgc@10'"
    )
    assert "did you mean 'ndcg@10'?" in message
    for name in ("recall@10", "ndcg@50_h1", "entropy@10", "new_interest_recall@10"):
        assert (
            load_experiment_config(config, [f"training.selection_metric={name}"]).training.selection_metric
            == name
        )


def test_metric_names_come_from_the_evaluator():
    names = evaluator_metric_names(8, True)
    for k in DEFAULT_KS:
        assert {f"recall@{k}", f"ndcg@{k}", f"recall@{k}_h1", f"ndcg@{k}_h4", f"ndcg@{k}_h8"} <= set(names)
    assert "num_users" not in names and "head_share@10" not in names
    plain = evaluator_metric_names(1, False)
    assert "recall@10_h1" in plain and not any(n.startswith(("entropy", "new_interest")) for n in plain)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.epochs", "--set 'training.epochs' must look like section.key=value"),
        ("epochs=3", "--set 'epochs=3' must look like section.key=value"),
        ("training..epochs=3", "must look like section.key=value"),
        ("trainig.epochs=3", "--set 'trainig.epochs=3': unknown section 'trainig'"),
        ("training.epoch=3", "--set 'training.epoch=3': unknown key 'epoch' in section 'training'"),
        ("training.output_dir=[a", "--set 'training.output_dir=[a': the value '[a' is not valid YAML"),
        ("training.epochs=2.5", "--set 'training.epochs=2.5': training.epochs must be an integer, got 2.5"),
        ("training.epochs=0", "--set 'training.epochs=0': training.epochs must be >= 1, got 0"),
        ("training.epochs.x=1", "--set 'training.epochs.x=1': training.epochs is 2, not a mapping"),
    ],
)
def test_set_overrides_name_the_override(config, override, message):
    with pytest.raises(GGRConfigError) as err:
        load_experiment_config(config, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_nested_model_overrides_still_work(config):
    cfg = load_experiment_config(config, ["model.backbone_config.hidden_size=24", "data.synthetic.seed=3"])
    assert cfg.model["backbone_config"] == {"hidden_size": 24} and cfg.data.synthetic == {"seed": 3}
    assert apply_overrides({"model": None}, ["model.fusion=mean"]) == {"model": {"fusion": "mean"}}


def test_unreadable_files(tmp_path):
    with pytest.raises(GGRFileNotFoundError, match="experiment config .*nope.yaml does not exist"):
        load_experiment_config(tmp_path / "nope.yaml")
    with pytest.raises(GGRConfigError, match="is not a file"):
        load_experiment_config(tmp_path)
    path = write(tmp_path / "exp.yaml", "training: {epochs: [1\n")
    with pytest.raises(GGRConfigError, match="not valid YAML") as err:
        load_experiment_config(path)
    assert "\n" not in str(err.value)
    path.write_bytes(b"\xff\xfe\x00training")
    with pytest.raises(GGRConfigError, match="not a UTF-8 text file"):
        load_experiment_config(path)


def test_dicts_are_checked_like_files():
    with pytest.raises(GGRConfigError, match=r"^saved.json: training.epochs must be an integer"):
        experiment_config_from_dict({"training": {"epochs": "3"}}, "saved.json")
    # Still ValueErrors, for code written against them.
    with pytest.raises(ValueError):
        experiment_config_from_dict({"training": {"epochs": "3"}})


def test_a_backbone_naming_a_hub_model_is_read_without_a_download(tmp_path):
    # Hub access is off while the config is read: the backbone is checked when the model is built,
    # every other model field now.
    backbone = "backbone_type: hllm, backbone_config: {item_llm: nobody/no-such-model}"
    path = write(tmp_path / "exp.yaml", f"model: {{{backbone}}}\n")
    assert load_experiment_config(path).model["backbone_config"] == {"item_llm": "nobody/no-such-model"}
    path.write_text(f"model: {{{backbone}, fusion: median}}\n")
    with pytest.raises(GGRConfigError, match="model: GGRConfig.fusion must be one of"):
        load_experiment_config(path)


@pytest.mark.parametrize("backbone", ["HSTUConfig", "SASRecConfig", "ItemEmbeddingConfig"])
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dropout", "x", "dropout must be a number, got 'x'"),
        ("dropout", None, "dropout must be a number, got None"),
        ("dropout", float("nan"), "dropout must be a number, got nan"),
        ("dropout", 1.0, r"dropout must be in \[0, 1\), got 1.0"),
        ("initializer_range", 0, "initializer_range must be > 0, got 0"),
        ("initializer_range", True, "initializer_range must be a number, got True"),
        ("hidden_size", True, "hidden_size must be a positive integer, got True"),
        ("max_seq_len", 0, "max_seq_len must be a positive integer, got 0"),
    ],
)
def test_backbone_configs_name_the_field_of_a_bad_number(backbone, field, value, message):
    # Before: HSTUConfig(dropout="x") raised float()'s own ValueError, naming neither the config nor
    # the field, and a string initializer_range was accepted.
    import ggr_hf

    config_class = getattr(ggr_hf, backbone)
    with pytest.raises(GGRConfigError, match=f"{backbone}.{message}"):
        config_class(num_items=10, **{field: value})
