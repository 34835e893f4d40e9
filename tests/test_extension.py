"""Extending ggr-hf from outside the package: a new prior type and a new backbone, defined here.

Nothing in `src/` knows about `popularity_band` or `toy_gru`: the prior registers through
`ggr_hf.register_prior`, the backbone through transformers' own `AutoConfig.register` /
`AutoModel.register`. A tiny model with both is trained, saved, reloaded and asked for
recommendations, and the backbone passes the shared backbone tester.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from ggr_hf import GGRBackboneModel, GGRConfig, GGRForRecommendation, Prior, register_prior
from ggr_hf.models.backbone import GGRBackboneOutput
from ggr_hf.priors import ResolvedPrior
from tests.models.backbone_tester import BackboneTesterMixin

# ---------------------------------------------------------------------- a new prior type


@register_prior
class PopularityBandPrior(Prior):
    """Items split by training popularity: `popular` (the top `share` of items by training
    interactions) and `long-tail`; each head scores only its band."""

    type = "popularity_band"
    fields = frozenset({"share"})
    restricts_items = True

    @classmethod
    def default_name(cls, spec: dict[str, Any]) -> str:
        return "popularity"

    @classmethod
    def check_spec(cls, spec, fail):
        share = spec.setdefault("share", 0.2)
        if not isinstance(share, float) or not 0 < share < 1:
            raise fail(f"share must be a float in (0, 1), got {share!r}")

    def resolve(self, bundle, split=None) -> ResolvedPrior:
        if split is None:
            raise ValueError(f"{self.label}: needs the training split")
        counts = np.bincount(np.concatenate(split.train_items), minlength=bundle.num_items + 1)[1:]
        popular = np.argsort(-counts, kind="stable")[: max(1, int(self.spec["share"] * bundle.num_items))]
        membership = torch.zeros(bundle.num_items + 1, 2, dtype=torch.bool)
        membership[1:, 1] = True
        membership[torch.as_tensor(popular) + 1, 0] = True
        membership[torch.as_tensor(popular) + 1, 1] = False
        spec = copy.deepcopy(self.spec)
        spec["values"] = ["popular", "long-tail"]
        return ResolvedPrior(spec, item_membership=membership)


# ---------------------------------------------------------------------- a new backbone


class ToyGRUConfig(PretrainedConfig):
    model_type = "toy_gru"

    def __init__(self, num_items: int = 1, hidden_size: int = 16, max_seq_len: int = 8, **kwargs):
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.max_seq_len = max_seq_len
        super().__init__(**kwargs)


class ToyGRUModel(GGRBackboneModel):
    """Item embeddings read by a GRU: causal by construction."""

    config_class = ToyGRUConfig
    base_model_prefix = "toy_gru"

    def __init__(self, config: ToyGRUConfig):
        super().__init__(config)
        self.items = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        self.gru = nn.GRU(config.hidden_size, config.hidden_size, batch_first=True)
        self.post_init()

    def embed_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.items(item_ids), dim=-1)

    def all_item_embeddings(self) -> torch.Tensor:
        return F.normalize(self.items.weight, dim=-1)

    def forward(self, input_ids, timestamps=None, attention_mask=None, query_timestamps=None, **kwargs):
        mask = self.resolve_attention_mask(input_ids, attention_mask)
        hidden, _ = self.gru(self.items(input_ids))  # [B, T, d]
        hidden = F.normalize(hidden, dim=-1) * mask.unsqueeze(-1)
        return GGRBackboneOutput(last_hidden_state=hidden)


AutoConfig.register("toy_gru", ToyGRUConfig, exist_ok=True)
AutoModel.register(ToyGRUConfig, ToyGRUModel, exist_ok=True)


class TestToyGRUBackbone(BackboneTesterMixin):
    def make_backbone(self) -> ToyGRUModel:
        torch.manual_seed(0)
        return ToyGRUModel(ToyGRUConfig(num_items=25, hidden_size=12, max_seq_len=8)).eval()


# ---------------------------------------------------------------------- both, end to end


def test_bad_spec_of_the_new_prior_names_it():
    with pytest.raises(ValueError, match=r"priors\[0\] \('popularity_band'\): share must be"):
        GGRConfig(priors=[{"type": "popularity_band", "share": 2}])


def test_new_prior_and_backbone_train_save_reload_recommend(tmp_path):
    """Named in an experiment YAML, trained by `ggr-hf train` (the real data path, accelerate loop,
    evaluation and saving), reloaded with `from_pretrained` and asked for recommendations."""
    import json

    import yaml

    from ggr_hf.cli import main
    from ggr_hf.data.splits import temporal_split
    from ggr_hf.data.synthetic import make_synthetic
    from ggr_hf.priors.builder import build_priors

    synthetic = {
        "num_users": 40,
        "num_items": 30,
        "num_categories": 3,
        "min_len": 12,
        "max_len": 20,
        "seed": 0,
    }
    config = {
        "data": {"dataset": "synthetic", "synthetic": synthetic, "split_k": 1, "category_field": "genres"},
        "model": {
            "backbone_type": "toy_gru",
            "backbone_config": {"hidden_size": 16, "max_seq_len": 10},
            "priors": [{"type": "popularity_band", "share": 0.3}],
            "num_negatives": 8,
        },
        "training": {"epochs": 6, "batch_size": 16, "learning_rate": 1.0e-2, "progress": False},
    }
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "toy.yaml"), "--output-dir", str(out)]) == 0

    log = [json.loads(line) for line in (out / "eval_log.jsonl").read_text().splitlines()]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert "recall@10" in json.loads((out / "results.json").read_text())["test"]

    model = GGRForRecommendation.from_pretrained(out / "best").eval()
    assert isinstance(model.backbone, ToyGRUModel) and model.head_names == ["popular", "long-tail"]
    model.save_pretrained(tmp_path / "again")
    reloaded = GGRForRecommendation.from_pretrained(tmp_path / "again").eval()

    bundle = make_synthetic(**synthetic)
    split = temporal_split(bundle, k=1)
    histories = [list(map(int, h[-6:])) for h in split.train_items[:4]]
    a = model.recommend(histories, k=5)
    b = reloaded.recommend(histories, k=5)
    assert a.item_ids.tolist() == b.item_ids.tolist()
    torch.testing.assert_close(a.scores, b.scores)
    # Each item is explained by the head of its band: the band the prior computed from training data.
    popular = build_priors(bundle, [{"type": "popularity_band", "share": 0.3}], split).item_membership
    for items, heads in zip(a.item_ids.tolist(), a.head_names):
        for item, head in zip(items, heads):
            assert head == ("popular" if popular["popularity"][item, 0] else "long-tail")
