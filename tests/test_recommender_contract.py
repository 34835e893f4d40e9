"""GGR itself passes the shared recommender tester (the baselines' tests mix in the same checks)."""

from __future__ import annotations

import torch

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.modeling_ggr import GGRForRecommendation
from tests.recommender_tester import RecommenderTesterMixin

BACKBONE = {"hidden_size": 16, "num_layers": 1, "num_attention_heads": 2, "max_seq_len": 12, "dropout": 0.0}


class TestPlainHSTUContract(RecommenderTesterMixin):
    def make_model(self):
        torch.manual_seed(0)
        return GGRForRecommendation(GGRConfig(num_items=40, backbone_config=BACKBONE, priors=[])).eval()


class TestGGRWithItemAndTemporalPriorsContract(RecommenderTesterMixin):
    def make_model(self):
        torch.manual_seed(0)
        priors = [
            {"type": "item", "field": "cat", "values": ["a", "b", "c"]},
            {"type": "temporal", "segments": 2, "horizon": 2},
        ]
        model = GGRForRecommendation(
            GGRConfig(num_items=40, backbone_config=BACKBONE, priors=priors, head_init="trunc_normal")
        )
        membership = torch.zeros(41, 3, dtype=torch.bool)
        membership[1:, 0] = True  # every item is an "a"; some are also "b" or "c"
        membership[1::2, 1] = True
        membership[1::3, 2] = True
        model.set_item_groups("cat", membership)
        return model.eval()
