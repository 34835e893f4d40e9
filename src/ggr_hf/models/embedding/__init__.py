"""The item-embedding encoder: each position's state is its own (position-tagged) item embedding.

`item_embedding` is registered with transformers' Auto classes with the other shipped backbones
(`ggr_hf.models.register_backbone_models`), so `GGRConfig(backbone_type="item_embedding")` finds it.
"""

from ggr_hf.models.embedding.configuration_embedding import ItemEmbeddingConfig
from ggr_hf.models.embedding.modeling_embedding import (
    ItemEmbeddingModel,
    ItemEmbeddingModelOutput,
    ItemEmbeddingPreTrainedModel,
)

__all__ = [
    "ItemEmbeddingConfig",
    "ItemEmbeddingModel",
    "ItemEmbeddingModelOutput",
    "ItemEmbeddingPreTrainedModel",
]
