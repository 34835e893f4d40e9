"""The shared backbone tester on the shipped backbones (HSTU and HLLM on a tiny random Qwen2)."""

from __future__ import annotations

from ggr_hf.models.hstu.modeling_hstu import HSTUModel
from tests.models.backbone_tester import BackboneTesterMixin
from tests.models.test_hllm import make_hllm
from tests.models.test_hstu import tiny_hstu


class TestHSTUBackbone(BackboneTesterMixin):
    def make_backbone(self) -> HSTUModel:
        return tiny_hstu()


class TestHLLMBackbone(BackboneTesterMixin):
    def make_backbone(self):
        return make_hllm("qwen2").eval()
