"""The HLLM backbone: an item LLM and a user LLM from transformers (Qwen2 / Qwen2.5 / Qwen3, Llama, ...).

Importing this package registers `backbone_type="hllm"` with `GGRConfig` and `GGRForRecommendation`.
"""

from ggr_hf.configuration_ggr import register_backbone_config
from ggr_hf.modeling_ggr import register_backbone_model
from ggr_hf.models.hllm.configuration_hllm import HLLMConfig
from ggr_hf.models.hllm.item_text import build_item_texts, build_word_level_tokenizer, format_item_text
from ggr_hf.models.hllm.modeling_hllm import HLLMModel, HLLMModelOutput, HLLMPreTrainedModel

register_backbone_config("hllm", HLLMConfig)
register_backbone_model("hllm", HLLMModel)

__all__ = [
    "HLLMConfig",
    "HLLMModel",
    "HLLMModelOutput",
    "HLLMPreTrainedModel",
    "build_item_texts",
    "build_word_level_tokenizer",
    "format_item_text",
]
