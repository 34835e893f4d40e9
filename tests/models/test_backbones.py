"""The shared backbone tester on the shipped backbones (HSTU and HLLM on a tiny random Qwen2)."""

from __future__ import annotations

import torch

from ggr_hf.models.hstu.configuration_hstu import HSTUConfig
from ggr_hf.models.hstu.modeling_hstu import HSTUModel
from tests.models.backbone_tester import BackboneTesterMixin
from tests.models.test_hllm import make_hllm


class TestHSTUBackbone(BackboneTesterMixin):
    def make_backbone(self) -> HSTUModel:
        torch.manual_seed(0)
        config = HSTUConfig(
            num_items=30,
            hidden_size=16,
            num_layers=2,
            num_attention_heads=2,
            attention_dim=8,
            linear_dim=8,
            max_seq_len=8,
            dropout=0.0,
        )
        return HSTUModel(config).eval()


class TestHLLMBackbone(BackboneTesterMixin):
    def make_backbone(self):
        return make_hllm("qwen2").eval()
