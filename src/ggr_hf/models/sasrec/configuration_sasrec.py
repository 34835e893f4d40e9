"""Configuration of the SASRec backbone."""

from __future__ import annotations

from transformers import PretrainedConfig

from ggr_hf.configuration_utils import check_numbers, check_positive_ints, reject_unknown_keys
from ggr_hf.errors import GGRConfigError

SASREC_ACTIVATIONS = ("relu", "gelu", "silu")


class SASRecConfig(PretrainedConfig):
    r"""
    Configuration of [`SASRecModel`], the causal self-attention recommender of "Self-Attentive Sequential
    Recommendation" (Kang & McAuley, ICDM 2018), as a ggr-hf backbone.

    Args:
        num_items (`int`):
            Number of real items. Internal item ids run from 1 to `num_items`; 0 is padding, so the
            embedding table has `num_items + 1` rows.
        hidden_size (`int`, *optional*, defaults to 64):
            Width `d` of item embeddings and of the residual stream.
        num_layers (`int`, *optional*, defaults to 2):
            Number of self-attention blocks (the paper's `b`).
        num_attention_heads (`int`, *optional*, defaults to 2):
            Heads of each softmax self-attention; must divide `hidden_size` (the paper reports one
            head; its code takes the number as a setting).
        intermediate_size (`int`, *optional*):
            Inner width of the point-wise feed-forward network. Defaults to `hidden_size`, as in the
            paper (two `d x d` layers).
        hidden_act (`str`, *optional*, defaults to `"relu"`):
            Activation of the feed-forward network: `"relu"` (the paper), `"gelu"` or `"silu"`.
        max_seq_len (`int`, *optional*, defaults to 50):
            Longest history the model reads; also the number of learned absolute positions.
        dropout (`float`, *optional*, defaults to 0.2):
            Dropout on the input embeddings, the attention weights, the attention output and both
            feed-forward layers (one rate for all, as in the paper).
        layer_norm_eps (`float`, *optional*, defaults to 1e-8):
            Epsilon of the layer norms (the paper's code uses 1e-8).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the item and position embedding initialisers.
    """

    model_type = "sasrec"

    def __init__(
        self,
        num_items: int = 1,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_attention_heads: int = 2,
        intermediate_size: int | None = None,
        hidden_act: str = "relu",
        max_seq_len: int = 50,
        dropout: float = 0.2,
        layer_norm_eps: float = 1e-8,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        # Resolved here so that the saved config names the width actually built.
        self.intermediate_size = hidden_size if intermediate_size is None else intermediate_size
        self.hidden_act = hidden_act
        self.max_seq_len = max_seq_len
        self.dropout = dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        reject_unknown_keys("SASRecConfig", kwargs)
        super().__init__(**kwargs)
        self.validate_fields()

    def validate_fields(self) -> None:
        """Raises `GGRConfigError` (a `ValueError`) naming the first invalid field."""
        check_positive_ints(
            self,
            (
                "num_items",
                "hidden_size",
                "num_layers",
                "num_attention_heads",
                "intermediate_size",
                "max_seq_len",
            ),
        )
        if self.hidden_size % self.num_attention_heads:
            raise GGRConfigError(
                f"SASRecConfig.num_attention_heads ({self.num_attention_heads}) must divide "
                f"SASRecConfig.hidden_size ({self.hidden_size})"
            )
        if self.hidden_act not in SASREC_ACTIVATIONS:
            raise GGRConfigError(
                f"SASRecConfig.hidden_act must be one of {list(SASREC_ACTIVATIONS)}, got {self.hidden_act!r}"
            )
        check_numbers(self, fractions=("dropout",), positive=("layer_norm_eps", "initializer_range"))
