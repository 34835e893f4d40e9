"""HSTU: Hierarchical Sequential Transduction Units (Zhai et al., 2024), on padded tensors.

A plain PyTorch version of the research path of meta-recsys/generative-recommenders
(`research/modeling/sequential/hstu.py`): it works on right-padded `[B, T]` batches with masks
instead of jagged tensors, so it runs on CPU and under any accelerate backend.

Per block (PAPER.md):

    [U, V, Q, K] = SiLU(LN(x) W_uvqk)                 LN without affine, one fused projection, no bias
    A            = SiLU(Q K^T + rab) / n  (causal)     pointwise, no softmax, n = `config.max_seq_len`
    x           <- x + W_o Dropout(U * LN(A V)) + b_o
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from ggr_hf.models.backbone import (
    GGRBackboneModel,
    GGRBackboneOutput,
    ItemIdEmbeddingsMixin,
    default_query_timestamps,
)
from ggr_hf.models.hstu.configuration_hstu import HSTUConfig


@dataclass
class HSTUModelOutput(GGRBackboneOutput):
    """HSTU's output: the backbone contract's `last_hidden_state` (see [`GGRBackboneOutput`])."""


class HSTURelativeBias(nn.Module):
    """Relative attention bias `rab`: a learned scalar per position offset plus one per time bucket.

    The time term buckets `|ts_query(i) - ts_j|`, where the query time of position `i` is the time of
    the event it predicts (the request time; the reference code uses the next event's timestamp).
    """

    def __init__(self, config: HSTUConfig):
        super().__init__()
        self.max_seq_len = config.max_seq_len
        self.num_time_buckets = config.num_time_buckets
        self.time_bucket_divisor = config.time_bucket_divisor
        # offset i - j in [0, max_seq_len): only the causal half is ever used.
        self.position_weight = nn.Parameter(torch.empty(config.max_seq_len))
        self.time_weight = nn.Parameter(torch.empty(config.num_time_buckets + 1))

    def bucketize(self, time_delta: torch.Tensor) -> torch.Tensor:
        """Maps seconds to log-spaced buckets: `floor(ln(max(|dt|, 1)) / divisor)`, clamped."""
        dt = time_delta.abs().clamp(min=1).to(torch.float32)
        buckets = torch.floor(torch.log(dt) / self.time_bucket_divisor).long()
        return buckets.clamp(0, self.num_time_buckets)

    def indices(
        self, timestamps: torch.Tensor, query_timestamps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The bias's lookup indices, the same for every layer (each layer has its own weights):
        computed once per forward, not once per layer.

        Args:
            timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`): event times in seconds.
            query_timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`): request time of
                each position's prediction.

        Returns:
            offset (`torch.LongTensor` of shape `(seq_len, seq_len)`): `i - j`, clamped;
            buckets (`torch.LongTensor` of shape `(batch_size, seq_len, seq_len)`): time bucket of
            `|ts_query(i) - ts_j|`.
        """
        seq_len = timestamps.shape[1]
        idx = torch.arange(seq_len, device=timestamps.device)
        offset = (idx[:, None] - idx[None, :]).clamp(0, self.max_seq_len - 1)  # [T, T]
        delta = query_timestamps[:, :, None] - timestamps[:, None, :]  # [B, T, T]
        return offset, self.bucketize(delta)

    def forward(self, offset: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        """`torch.FloatTensor` of shape `(batch_size, seq_len, seq_len)`: the bias of query `i`, key `j`
        (arguments from [`~HSTURelativeBias.indices`])."""
        return self.position_weight[offset].unsqueeze(0) + self.time_weight[buckets]


class HSTUBlock(nn.Module):
    """One HSTU layer: fused UVQK projection, pointwise causal attention, gated output."""

    def __init__(self, config: HSTUConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.attention_dim = config.attention_dim
        self.linear_dim = config.linear_dim
        self.eps = config.layer_norm_eps
        width = self.num_heads * (2 * config.linear_dim + 2 * config.attention_dim)
        self.uvqk = nn.Linear(config.hidden_size, width, bias=False)
        self.output = nn.Linear(self.num_heads * config.linear_dim, config.hidden_size, bias=True)
        self.relative_bias = HSTURelativeBias(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        allowed: torch.Tensor,
        offset: torch.Tensor,
        buckets: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            hidden_states (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`)
            allowed (`torch.FloatTensor` of shape `(batch_size, 1, seq_len, seq_len)`): `1 / n` where
                query `i` may read key `j` (causal, real key), else 0: the mask with the attention
                normaliser `n = config.max_seq_len` folded in.
            offset, buckets: the relative-bias indices ([`~HSTURelativeBias.indices`]).

        Returns:
            `torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`.
        """
        bsz, seq_len, d = hidden_states.shape
        normed = F.layer_norm(hidden_states, (d,), eps=self.eps)
        uvqk = F.silu(self.uvqk(normed))
        lin = self.num_heads * self.linear_dim
        att = self.num_heads * self.attention_dim
        u, v, q, k = torch.split(uvqk, [lin, lin, att, att], dim=-1)
        # [B, T, H*D] -> [B, H, T, D]
        v = v.view(bsz, seq_len, self.num_heads, self.linear_dim).transpose(1, 2)
        q = q.view(bsz, seq_len, self.num_heads, self.attention_dim).transpose(1, 2)
        k = k.view(bsz, seq_len, self.num_heads, self.attention_dim).transpose(1, 2)

        scores = torch.matmul(q, k.transpose(-1, -2))  # [B, H, T, T]
        scores = scores + self.relative_bias(offset, buckets).unsqueeze(1)
        # Pointwise attention has no softmax, so masking is a multiplication by zero, not -inf.
        weights = F.silu(scores) * allowed

        attended = torch.matmul(weights, v)  # [B, H, T, Dv]
        attended = attended.transpose(1, 2).reshape(bsz, seq_len, lin)  # [B, T, H*Dv]
        attended = F.layer_norm(attended, (lin,), eps=self.eps)
        out = self.output(self.dropout(u * attended))
        return hidden_states + out


class HSTUPreTrainedModel(GGRBackboneModel):
    config_class = HSTUConfig
    base_model_prefix = "hstu"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, HSTURelativeBias):
            init.normal_(module.position_weight, mean=0.0, std=std)
            init.normal_(module.time_weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear):
            # The reference initialises HSTU's projections with Xavier-normal.
            init.xavier_normal_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])


class HSTUModel(ItemIdEmbeddingsMixin, HSTUPreTrainedModel):
    """The HSTU encoder: item ids (and times) in, L2-normalised user states out.

    The item embedding table is shared between the input and the scoring side, as in the reference.
    """

    def __init__(self, config: HSTUConfig):
        super().__init__(config)
        self.item_embeddings = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_seq_len, config.hidden_size)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([HSTUBlock(config) for _ in range(config.num_layers)])
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
    ) -> HSTUModelOutput | tuple:
        """The backbone contract's forward ([`GGRBackboneModel.forward`]). HSTU reads `timestamps`
        (seconds; without them the time bias sees zero deltas) and `query_timestamps` (where not
        given: the next position's timestamp, and the position's own for the last real item)."""
        seq_len = input_ids.shape[1]
        attention_mask = self.resolve_attention_mask(input_ids, attention_mask)
        if timestamps is None:
            timestamps = torch.zeros_like(input_ids)
        if query_timestamps is None:
            query_timestamps = default_query_timestamps(timestamps, attention_mask)

        positions = torch.arange(seq_len, device=input_ids.device)
        x = self.input_item_embeddings(input_ids, inputs_embeds) * math.sqrt(self.config.hidden_size)
        x = x + self.position_embeddings(positions)[None]
        x = self.embedding_dropout(x) * attention_mask.unsqueeze(-1)
        # What every layer reads the same way is computed once: the attention mask and the bias's
        # lookup indices (a log over batch x seq_len x seq_len time deltas).
        causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=input_ids.device).tril()
        allowed = (causal[None, :, :] & attention_mask[:, None, :]).unsqueeze(1).to(x.dtype)  # [B, 1, T, T]
        # A / n with n the configured length (not the batch's): one product per layer instead of a
        # division and a product over (batch, heads, T, T), forward and backward.
        allowed = allowed / float(self.config.max_seq_len)
        offset, buckets = (
            self.blocks[0].relative_bias.indices(timestamps, query_timestamps)
            if self.blocks
            else (None, None)
        )
        for block in self.blocks:
            x = block(x, allowed, offset, buckets)
            x = x * attention_mask.unsqueeze(-1)
        x = F.normalize(x, dim=-1)
        if return_dict is False:
            return (x,)
        return HSTUModelOutput(last_hidden_state=x)
