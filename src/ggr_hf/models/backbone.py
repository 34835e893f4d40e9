"""The backbone contract: what `GGRForRecommendation` needs from a generative recommender backbone.

A backbone is a transformers `PreTrainedModel` that subclasses [`GGRBackboneModel`] and is registered
with transformers' Auto classes under its config's `model_type`:

```python
from transformers import AutoConfig, AutoModel

AutoConfig.register("my_backbone", MyBackboneConfig)
AutoModel.register(MyBackboneConfig, MyBackboneModel)
GGRConfig(backbone_type="my_backbone", backbone_config={...}, num_items=1682)   # nothing in ggr-hf edited
```

The config must have `num_items` (real items are `1..num_items`, 0 is padding; `GGRConfig` sets it),
`hidden_size` and `max_seq_len`. The model implements:

- `forward(input_ids, timestamps=None, attention_mask=None, query_timestamps=None)` returning a
  [`GGRBackboneOutput`] whose `last_hidden_state` `(batch_size, seq_len, hidden_size)` holds the
  L2-normalised state of every position. Position `t` may read items `0..t` only (causal); padded
  positions hold zeros; a user's states do not depend on the other rows of the batch nor on padding
  added at the right.
- `embed_items(item_ids)` -> `(*, hidden_size)` and `all_item_embeddings()` ->
  `(num_items + 1, hidden_size)`: the L2-normalised item embeddings scores are computed against.
  An ID-based backbone whose item table is an `nn.Embedding` named `item_embeddings` gets both (and
  `get_input_embeddings`) from [`ItemIdEmbeddingsMixin`]; if its `forward` reads the history's rows
  through `input_item_embeddings(input_ids, inputs_embeds)` and takes `inputs_embeds`, GGR's training
  step looks the history and the step's other items up in one call.
- optionally `prepare_from_items(items)`: a hook that reads the item table (a `datasets.Dataset`,
  one row per item in id order) before training, e.g. HLLM tokenises item texts. No-op by default.
- the class attribute `item_table_is_cheap`: `True` when `all_item_embeddings()` is a cheap read of a
  table (ID-based backbones), so the loss may normalise the whole table once instead of every
  gathered row; `False` for backbones that encode items with a network (HLLM).

`tests/models/backbone_tester.py` is the shared tester every backbone passes (shapes, causality,
padding, batch independence, save/load).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from ggr_hf.errors import GGRInputError


@dataclass
class GGRBackboneOutput(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`):
            L2-normalised user states `h_t`; position `t` has read items `0..t` and predicts the next
            item. Padded positions hold zeros.
    """

    last_hidden_state: torch.FloatTensor | None = None


class GGRBackboneModel(PreTrainedModel):
    """Base class of ggr-hf backbones (see the module docstring for the contract).

    Subclasses set `config_class` and `base_model_prefix` as any transformers model does and
    implement `forward`, `embed_items` and `all_item_embeddings`.
    """

    main_input_name = "input_ids"
    # Whether `forward` takes `inputs_embeds` (see `ItemIdEmbeddingsMixin`).
    accepts_inputs_embeds: ClassVar[bool] = False
    # ID-based backbones read their item table for free; see the module docstring.
    item_table_is_cheap: ClassVar[bool] = True

    def forward(
        self,
        input_ids: torch.LongTensor,
        timestamps: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        query_timestamps: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> GGRBackboneOutput | tuple:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`):
                internal item ids, right-padded with 0, oldest first; `seq_len <= config.max_seq_len`.
            timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*): seconds.
            attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*):
                1 on real items; defaults to `input_ids != 0`.
            query_timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
                request time of each position's prediction (see [`default_query_timestamps`]).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def embed_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """`(*)` item ids -> `(*, hidden_size)` L2-normalised embeddings."""
        raise NotImplementedError(f"{type(self).__name__} must implement embed_items")

    def all_item_embeddings(self) -> torch.Tensor:
        """`(num_items + 1, hidden_size)` L2-normalised embeddings, row 0 (padding) included."""
        raise NotImplementedError(f"{type(self).__name__} must implement all_item_embeddings")

    def prepare_from_items(self, items: Any, **kwargs) -> None:
        """Reads what the backbone needs from the item table before training (default: nothing)."""

    def resolve_attention_mask(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.BoolTensor:
        """Checks the length against `config.max_seq_len` and returns the boolean mask of real items.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`)
            attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*)

        Returns:
            `torch.BoolTensor` of shape `(batch_size, seq_len)`: `input_ids != 0` when no mask is given.
        """
        seq_len = input_ids.shape[1]
        if seq_len > self.config.max_seq_len:
            raise GGRInputError(
                f"input_ids has {seq_len} positions but {type(self.config).__name__}.max_seq_len is "
                f"{self.config.max_seq_len}; keep the most recent max_seq_len items"
            )
        return (input_ids != 0) if attention_mask is None else attention_mask.bool()


class ItemIdEmbeddingsMixin:
    """The scoring side of an ID-based backbone whose item table is `self.item_embeddings`
    (`nn.Embedding` of `num_items + 1` rows, row 0 padding), shared with its input side. Listed
    before the backbone's `PreTrainedModel` base so that these methods are the ones found."""

    item_embeddings: nn.Embedding
    # `forward` takes `inputs_embeds`, rows of `item_embeddings` looked up by the caller.
    accepts_inputs_embeds: ClassVar[bool] = True

    def input_item_embeddings(
        self, input_ids: torch.Tensor, inputs_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The raw (not normalised) table rows of the history `(batch_size, seq_len, hidden_size)`:
        `inputs_embeds` when the caller looked them up itself (GGR's training step reads every item
        of the step through one lookup, see `GGRForRecommendation._step_item_embeddings`), else
        `item_embeddings(input_ids)`.

        Raises:
            `GGRInputError`: `inputs_embeds` not of shape `(*input_ids.shape, hidden_size)`.
        """
        if inputs_embeds is None:
            return self.item_embeddings(input_ids)
        expected = (*input_ids.shape, self.item_embeddings.embedding_dim)
        if tuple(inputs_embeds.shape) != expected:
            raise GGRInputError(f"inputs_embeds: expected shape {expected}, got {tuple(inputs_embeds.shape)}")
        return inputs_embeds

    def get_input_embeddings(self) -> nn.Embedding:
        return self.item_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.item_embeddings = value

    def embed_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """L2-normalised item embeddings used for scoring.

        Args:
            item_ids (`torch.LongTensor` of any shape `(*)`)

        Returns:
            `torch.FloatTensor` of shape `(*, hidden_size)`.
        """
        return F.normalize(self.item_embeddings(item_ids), dim=-1)

    def all_item_embeddings(self) -> torch.Tensor:
        """`torch.FloatTensor` of shape `(num_items + 1, hidden_size)`, row 0 (padding) included."""
        return F.normalize(self.item_embeddings.weight, dim=-1)


def default_query_timestamps(timestamps: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The next real event's time at each position; a position's own time where no next event is known.

    Args:
        timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`)
        attention_mask (`torch.BoolTensor` of shape `(batch_size, seq_len)`)

    Returns:
        `torch.LongTensor` of shape `(batch_size, seq_len)`.
    """
    nxt = torch.cat([timestamps[:, 1:], timestamps[:, -1:]], dim=1)
    nxt_valid = torch.cat([attention_mask[:, 1:], torch.zeros_like(attention_mask[:, :1])], dim=1)
    return torch.where(nxt_valid, nxt, timestamps)


def request_query_timestamps(
    timestamps: torch.Tensor, attention_mask: torch.Tensor, request_time: torch.Tensor
) -> torch.Tensor:
    """Query times for scoring at a request: the request time at each row's last real position,
    the next event's time before it.

    Args:
        timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`)
        attention_mask (`torch.BoolTensor` of shape `(batch_size, seq_len)`)
        request_time (`torch.LongTensor` of shape `(batch_size,)`)

    Returns:
        `torch.LongTensor` of shape `(batch_size, seq_len)`.
    """
    out = default_query_timestamps(timestamps, attention_mask).clone()
    last = attention_mask.long().sum(1) - 1
    out[torch.arange(len(last), device=out.device), last] = request_time.to(out.dtype)
    return out
