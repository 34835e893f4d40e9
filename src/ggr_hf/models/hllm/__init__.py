"""The HLLM backbone: an item LLM and a user LLM from transformers (Qwen2 / Qwen2.5 / Qwen3, Llama, ...).

`hllm` is registered with transformers' Auto classes with the other shipped backbones
(`ggr_hf.models.register_backbone_models`), so `GGRConfig(backbone_type="hllm")` finds it.
"""

from ggr_hf.models.hllm.configuration_hllm import HLLMConfig
from ggr_hf.models.hllm.item_text import build_item_texts, build_word_level_tokenizer, format_item_text
from ggr_hf.models.hllm.modeling_hllm import HLLMModel, HLLMModelOutput, HLLMPreTrainedModel

__all__ = [
    "HLLMConfig",
    "HLLMModel",
    "HLLMModelOutput",
    "HLLMPreTrainedModel",
    "build_item_texts",
    "build_word_level_tokenizer",
    "format_item_text",
]
