"""Shared fixtures: tiny configs and models built in milliseconds."""

from __future__ import annotations

import pytest
import torch

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.modeling_ggr import GGRForRecommendation

NUM_ITEMS = 20
GROUPS = ["a", "b", "c"]


def membership() -> torch.Tensor:
    """Items 1-20 in three overlapping groups (items 10-11 in two groups)."""
    mem = torch.zeros(NUM_ITEMS + 1, 3, dtype=torch.bool)
    mem[1:8, 0] = True
    mem[8:12, 1] = True
    mem[10:21, 2] = True
    return mem


def tiny_config(priors=None, **kwargs) -> GGRConfig:
    backbone = {
        "hidden_size": 16,
        "max_seq_len": 8,
        "num_layers": 1,
        "attention_dim": 8,
        "linear_dim": 8,
        "dropout": 0.0,
    }
    backbone.update(kwargs.pop("backbone_config", {}))
    if priors is None:
        priors = [{"type": "item", "field": "genres", "values": GROUPS}]
    kwargs.setdefault("num_items", NUM_ITEMS)
    return GGRConfig(backbone_config=backbone, priors=priors, num_negatives=8, **kwargs)


def tiny_model(priors=None, perturb: bool = True, seed: int = 0, **kwargs) -> GGRForRecommendation:
    torch.manual_seed(seed)
    model = GGRForRecommendation(tiny_config(priors, **kwargs))
    if model.layout.item_prior_indices:
        model.set_item_groups(model.config.priors[model.layout.item_prior_indices[0]]["name"], membership())
    if perturb:
        with torch.no_grad():
            for p in model.heads.parameters():
                p.normal_(0, 0.3)
    return model.eval()


@pytest.fixture
def batch():
    torch.manual_seed(1)
    ids = torch.randint(1, NUM_ITEMS + 1, (3, 8))
    ids[1, 5:] = 0
    ids[2, 2:] = 0
    ts = torch.cumsum(torch.randint(1, 5000, (3, 8)), 1) * (ids != 0)
    return ids, ts
