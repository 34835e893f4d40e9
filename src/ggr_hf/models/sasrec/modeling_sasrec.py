"""SASRec: Self-Attentive Sequential Recommendation (Kang & McAuley, ICDM 2018) as a ggr-hf backbone.

The architecture follows the paper and its reference code (kang205/SASRec):

    x  = Dropout(E[i_t] * sqrt(d) + P[t]) * mask              item embedding scaled by sqrt(d), learned positions
    per block:
        q  = LN(x)
        x  = q + MHA(q, x, x)   (causal softmax attention)      only the queries are normalised, as in the code
        y  = LN(x)
        x  = (y + Dropout(W2 Dropout(act(W1 y)))) * mask          point-wise feed-forward
    h  = normalize(LN(x)) * mask                               final LayerNorm, then the contract's L2 norm

Departures, from the paper's code and from the GGR release (`code/REC/model/IDNet/sasrec.py`, a
RecBole-style SASRec):

- Scores are cosine similarities (the backbone contract: L2-normalised states and item rows) times the
  recommender's learned logit scale, trained with sampled softmax; the paper scores with raw dot products
  and trains with binary cross-entropy on one sampled negative per position. The release does as
  ggr-hf does (cosine, learned temperature, sampled softmax).
- Positions are counted from the oldest item of the (right-padded) history, so a state never depends
  on later items; the paper's code left-pads to a fixed length, so there the newest item always sits at
  the last position.
- The multi-head attention has an output projection, as PyTorch ports of SASRec (and the release) have;
  the TF code concatenates the heads without one. Q, K and V projections have biases, as in both.
- The item embedding is scaled by `sqrt(d)` as the paper's code does; the release instead applies a
  LayerNorm to `E[i_t] + P[t]` and no scaling.
- Pre-LayerNorm blocks as the paper's code; the release uses post-LayerNorm blocks (BERT-style: the
  residual sum is normalised) and no final LayerNorm.
- The feed-forward width defaults to `d` with ReLU (the paper); the release takes a multiple of `d`
  and an activation from its config (RecBole defaults: `4d`, GELU), which `intermediate_size` and
  `hidden_act` can reproduce. The release also has a separate attention-dropout rate; one `dropout`
  covers both here, as in the paper.
- Initialisation: item and position embeddings `N(0, initializer_range)`, linear layers Xavier-normal
  with zero biases (the paper's code uses Glorot initialisers throughout; the release `N(0, 0.02)`).
- `timestamps` and `query_timestamps` are accepted and ignored: SASRec is time-unaware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ggr_hf.models.backbone import GGRBackboneModel, GGRBackboneOutput, ItemIdEmbeddingsMixin
from ggr_hf.models.sasrec.configuration_sasrec import SASRecConfig

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


@dataclass
class SASRecModelOutput(GGRBackboneOutput):
    """SASRec's output: the backbone contract's `last_hidden_state` (see [`GGRBackboneOutput`])."""


class SASRecAttention(nn.Module):
    """Causal multi-head softmax self-attention whose queries read the normalised stream and whose
    keys and values read the un-normalised one (the paper's code)."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        bsz, seq_len, _ = x.shape
        return x.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """
        Args:
            queries (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`): the normalised stream.
            keys (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`): the residual stream.
            allowed (`torch.BoolTensor` of shape `(batch_size, 1, seq_len, seq_len)`): `True` where query
                `i` may read key `j`.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`.
        """
        bsz, seq_len, d = queries.shape
        q = self._split(self.query(queries))
        k = self._split(self.key(keys))
        v = self._split(self.value(keys))
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.output(attended.transpose(1, 2).reshape(bsz, seq_len, d))


class SASRecFeedForward(nn.Module):
    """Point-wise two-layer feed-forward network with dropout after each layer."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.dense_in = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = _ACTIVATIONS[config.hidden_act]
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch_size, seq_len, hidden_size)` -> `(batch_size, seq_len, hidden_size)`."""
        return self.dropout(self.dense_out(self.dropout(self.act(self.dense_in(hidden_states)))))


class SASRecBlock(nn.Module):
    """One SASRec block: pre-LayerNorm causal self-attention, then a pre-LayerNorm feed-forward network."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SASRecAttention(config)
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = SASRecFeedForward(config)

    def forward(self, hidden_states: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """
        Args:
            hidden_states (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`)
            allowed (`torch.BoolTensor` of shape `(batch_size, 1, seq_len, seq_len)`)

        Returns:
            `torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`.
        """
        normed = self.attention_norm(hidden_states)
        # The residual adds to the normalised queries, not to the raw stream (the paper's code).
        hidden_states = normed + self.attention(normed, hidden_states, allowed)
        normed = self.feed_forward_norm(hidden_states)
        return normed + self.feed_forward(normed)


class SASRecPreTrainedModel(GGRBackboneModel):
    config_class = SASRecConfig
    base_model_prefix = "sasrec"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_normal_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])


class SASRecModel(ItemIdEmbeddingsMixin, SASRecPreTrainedModel):
    """The SASRec encoder: item ids in, L2-normalised user states out.

    The item embedding table is shared between the input and the scoring side (tied, as in SASRec).
    """

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        self.item_embeddings = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_seq_len, config.hidden_size)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([SASRecBlock(config) for _ in range(config.num_layers)])
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
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
    ) -> SASRecModelOutput | tuple:
        """The backbone contract's forward ([`GGRBackboneModel.forward`]). `timestamps` and
        `query_timestamps` are accepted and ignored (SASRec is time-unaware)."""
        seq_len = input_ids.shape[1]
        attention_mask = self.resolve_attention_mask(input_ids, attention_mask)
        keep = attention_mask.unsqueeze(-1).to(self.item_embeddings.weight.dtype)

        positions = torch.arange(seq_len, device=input_ids.device)
        x = self.input_item_embeddings(input_ids, inputs_embeds) * math.sqrt(self.config.hidden_size)
        x = self.embedding_dropout(x + self.position_embeddings(positions)[None]) * keep

        causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=input_ids.device).tril()
        diagonal = torch.eye(seq_len, dtype=torch.bool, device=input_ids.device)
        # Every query may read itself: a padded query would otherwise have no key at all and its
        # softmax would be NaN. Real queries always read themselves anyway, and padded states are zeroed.
        allowed = (causal[None] & (attention_mask[:, None, :] | diagonal[None])).unsqueeze(1)  # [B, 1, T, T]
        for block in self.blocks:
            x = block(x, allowed) * keep
        x = F.normalize(self.final_norm(x), dim=-1) * keep
        if return_dict is False:
            return (x,)
        return SASRecModelOutput(last_hidden_state=x)
