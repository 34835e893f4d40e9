import json

import pytest

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.models.hstu.configuration_hstu import HSTUConfig


def test_round_trip_keeps_every_field(tmp_path):
    config = GGRConfig(
        num_items=42,
        backbone_config={"hidden_size": 24, "num_layers": 3},
        priors=[
            {"type": "temporal", "segments": 2, "horizon": 4},
            {"type": "item", "field": "genres", "values": ["x", "y"]},
        ],
        composition="hierarchical",
        offset_discount=0.7,
        fusion="mean",
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    # Every backbone field is written, not only the ones given, so later default changes are harmless.
    assert saved["backbone_config"]["max_seq_len"] == 50 and saved["backbone_config"]["num_items"] == 42
    loaded = GGRConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.horizon == 4 and loaded.hidden_size == 24
    assert loaded.priors[0]["values"] == ["short-term", "long-term"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fusion": "median"}, "fusion"),
        ({"composition": "tree"}, "composition"),
        ({"negative_sampling": "hard"}, "negative_sampling"),
        ({"offset_discount": 0.0}, "offset_discount"),
        ({"num_negatives": 0}, "num_negatives"),
        ({"num_items": 0}, "num_items"),
        ({"head_init": "ones"}, "head_init"),
        ({"logit_scale_init": 200.0}, "logit_scale_init"),
        ({"backbone_type": "sasrec2"}, "backbone_type"),
        ({"backbone_config": {"hidden_size": -1}}, "hidden_size"),
        ({"backbone_config": {"dropout": 1.5}}, "dropout"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GGRConfig(**kwargs)


def test_unknown_keys_are_errors():
    with pytest.raises(ValueError, match="num_negativs"):
        GGRConfig(num_negativs=3)
    with pytest.raises(ValueError, match="hiden_size"):
        HSTUConfig(hiden_size=3)


@pytest.mark.parametrize(
    ("prior", "message"),
    [
        ({"type": "item"}, "needs 'field'"),
        ({"type": "colour", "field": "x"}, "unknown type"),
        ({"type": "item", "field": "genres", "colour": 1}, "unknown field"),
        ({"type": "temporal", "segments": 3, "horizon": 8}, "not divisible"),
        ({"type": "temporal", "segments": 0}, "segments"),
        ({"type": "item", "field": "genres", "values": ["a", "a"]}, "duplicates"),
    ],
)
def test_invalid_priors_name_the_prior(prior, message):
    with pytest.raises(ValueError, match=message) as err:
        GGRConfig(priors=[prior])
    assert "priors[0]" in str(err.value)


def test_duplicate_prior_names_rejected():
    with pytest.raises(ValueError, match="duplicate prior name"):
        GGRConfig(priors=[{"type": "item", "field": "g"}, {"type": "item", "field": "g"}])
