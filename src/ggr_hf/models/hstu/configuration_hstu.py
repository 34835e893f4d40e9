"""Configuration of the HSTU backbone."""

from __future__ import annotations

from transformers import PretrainedConfig

from ggr_hf.configuration_utils import check_numbers, check_positive_ints, reject_unknown_keys


class HSTUConfig(PretrainedConfig):
    r"""
    Configuration of [`HSTUModel`], the ID-based generative recommender of "Actions Speak Louder than
    Words" (Zhai et al., 2024), as used by GGR.

    Args:
        num_items (`int`):
            Number of real items. Internal item ids run from 1 to `num_items`; 0 is padding, so the
            embedding table has `num_items + 1` rows.
        hidden_size (`int`, *optional*, defaults to 64):
            Width `d` of item embeddings and of the residual stream.
        num_layers (`int`, *optional*, defaults to 2):
            Number of HSTU blocks.
        num_attention_heads (`int`, *optional*, defaults to 2):
            Number of pointwise attention heads per block.
        attention_dim (`int`, *optional*, defaults to 32):
            Width of Q and K per head.
        linear_dim (`int`, *optional*, defaults to 32):
            Width of U and V per head.
        max_seq_len (`int`, *optional*, defaults to 50):
            Longest history the model reads. It is also the `n` that normalises the pointwise
            attention (`SiLU(QK^T + rab) / n`), kept fixed so that a user's output does not depend
            on how long the other sequences of a batch are.
        num_time_buckets (`int`, *optional*, defaults to 128):
            Number of log-spaced time-difference buckets in the relative attention bias.
        time_bucket_divisor (`float`, *optional*, defaults to 0.301):
            `bucket = floor(ln(max(|dt|, 1)) / time_bucket_divisor)` (the reference code's value).
        dropout (`float`, *optional*, defaults to 0.2):
            Dropout on the input embeddings and on each block's attention output.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            Epsilon of the non-affine layer norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the embedding and bias initialisers.
    """

    model_type = "hstu"

    def __init__(
        self,
        num_items: int = 1,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_attention_heads: int = 2,
        attention_dim: int = 32,
        linear_dim: int = 32,
        max_seq_len: int = 50,
        num_time_buckets: int = 128,
        time_bucket_divisor: float = 0.301,
        dropout: float = 0.2,
        layer_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_attention_heads = num_attention_heads
        self.attention_dim = attention_dim
        self.linear_dim = linear_dim
        self.max_seq_len = max_seq_len
        self.num_time_buckets = num_time_buckets
        self.time_bucket_divisor = time_bucket_divisor
        self.dropout = dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        reject_unknown_keys("HSTUConfig", kwargs)
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
                "attention_dim",
                "linear_dim",
                "max_seq_len",
                "num_time_buckets",
            ),
        )
        check_numbers(
            self,
            fractions=("dropout",),
            positive=("time_bucket_divisor", "layer_norm_eps", "initializer_range"),
        )
