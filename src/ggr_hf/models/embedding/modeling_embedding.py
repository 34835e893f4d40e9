"""The item-embedding encoder: no sequence model at all, the embedded history itself.

    h_t = normalize(Dropout(normalize(E[i_t]) + P[t])) * mask_t

Each position's state is its own L2-normalised item embedding plus an optional learned position
embedding; nothing mixes positions, so it is trivially causal. It is the "original encoder" of ComiRec
(Cen et al., KDD 2020), whose multi-interest extractor reads the raw embedded sequence, and lets the
multi-interest baselines run without a HSTU encoder underneath. As a plain recommender (the state of the
last position as the query) it recommends items close to the last one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ggr_hf.models.backbone import GGRBackboneModel, GGRBackboneOutput, ItemIdEmbeddingsMixin
from ggr_hf.models.embedding.configuration_embedding import ItemEmbeddingConfig


@dataclass
class ItemEmbeddingModelOutput(GGRBackboneOutput):
    """The encoder's output: the backbone contract's `last_hidden_state` (see [`GGRBackboneOutput`])."""


class ItemEmbeddingPreTrainedModel(GGRBackboneModel):
    config_class = ItemEmbeddingConfig
    base_model_prefix = "item_embedding"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])


class ItemEmbeddingModel(ItemIdEmbeddingsMixin, ItemEmbeddingPreTrainedModel):
    """Item ids in, each position's own L2-normalised (position-tagged) item embedding out.

    The same table gives the scoring side's item embeddings (tied).
    """

    def __init__(self, config: ItemEmbeddingConfig):
        super().__init__(config)
        self.item_embeddings = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        self.position_embeddings = (
            nn.Embedding(config.max_seq_len, config.hidden_size) if config.use_position_embeddings else None
        )
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        timestamps: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        query_timestamps: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs,
    ) -> ItemEmbeddingModelOutput | tuple:
        """The backbone contract's forward ([`GGRBackboneModel.forward`]). `timestamps` and
        `query_timestamps` are accepted and ignored."""
        attention_mask = self.resolve_attention_mask(input_ids, attention_mask)
        x = F.normalize(self.input_item_embeddings(input_ids, inputs_embeds), dim=-1)
        if self.position_embeddings is not None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            x = x + self.position_embeddings(positions)[None]
        x = F.normalize(self.embedding_dropout(x), dim=-1)
        x = x * attention_mask.unsqueeze(-1).to(x.dtype)
        if return_dict is False:
            return (x,)
        return ItemEmbeddingModelOutput(last_hidden_state=x)
