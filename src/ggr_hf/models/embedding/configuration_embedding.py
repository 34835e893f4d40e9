"""Configuration of the item-embedding encoder."""

from __future__ import annotations

from transformers import PretrainedConfig

from ggr_hf.configuration_utils import check_numbers, check_positive_ints, reject_unknown_keys
from ggr_hf.errors import GGRConfigError


class ItemEmbeddingConfig(PretrainedConfig):
    r"""
    Configuration of [`ItemEmbeddingModel`]: the encoder that does not mix positions, i.e. the
    embedded item sequence itself (the "original encoder" that ComiRec's multi-interest extractor reads).

    Args:
        num_items (`int`):
            Number of real items. Internal item ids run from 1 to `num_items`; 0 is padding, so the
            embedding table has `num_items + 1` rows.
        hidden_size (`int`, *optional*, defaults to 64):
            Width `d` of item (and position) embeddings.
        max_seq_len (`int`, *optional*, defaults to 50):
            Longest history the model reads; also the number of learned positions.
        use_position_embeddings (`bool`, *optional*, defaults to `True`):
            Whether a learned absolute position embedding is added to each item embedding.
        dropout (`float`, *optional*, defaults to 0.2):
            Dropout on the embedded sequence (training only).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the item and position embedding initialisers.
    """

    model_type = "item_embedding"

    def __init__(
        self,
        num_items: int = 1,
        hidden_size: int = 64,
        max_seq_len: int = 50,
        use_position_embeddings: bool = True,
        dropout: float = 0.2,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.max_seq_len = max_seq_len
        self.use_position_embeddings = use_position_embeddings
        self.dropout = dropout
        self.initializer_range = initializer_range
        reject_unknown_keys("ItemEmbeddingConfig", kwargs)
        super().__init__(**kwargs)
        self.validate_fields()

    def validate_fields(self) -> None:
        """Raises `GGRConfigError` (a `ValueError`) naming the first invalid field."""
        check_positive_ints(self, ("num_items", "hidden_size", "max_seq_len"))
        if not isinstance(self.use_position_embeddings, bool):
            raise GGRConfigError(
                "ItemEmbeddingConfig.use_position_embeddings must be true or false, got "
                f"{self.use_position_embeddings!r}"
            )
        check_numbers(self, fractions=("dropout",), positive=("initializer_range",))
