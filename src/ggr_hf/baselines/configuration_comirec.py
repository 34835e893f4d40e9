"""`ComiRecConfig` and `RemiConfig`: the multi-interest baselines (ComiRec-SA / ComiRec-DR and REMI) on a
ggr-hf backbone."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from ggr_hf.configuration_recommender import RecommenderConfig
from ggr_hf.configuration_utils import FUSIONS, register_model_type, reject_unknown_keys

EXTRACTORS = ("sa", "dr")


class ComiRecConfig(RecommenderConfig):
    r"""
    Configuration of [`ComiRecForRecommendation`]: a sequence encoder whose per-position states are turned
    into `num_interests` interest vectors (ComiRec, Cen et al., KDD 2020), trained on the interest closest
    to each target and fused by max score at inference. REMI's two training changes (interest-aware hard
    negatives and routing regularisation) are fields here too, off by default; [`RemiConfig`] turns them on.

    Args:
        backbone_type (`str`, *optional*, defaults to `"hstu"`):
            The encoder's `model_type` in transformers' `AutoConfig` / `AutoModel`. The release builds
            ComiRec on HSTU; `"item_embedding"` (the item embeddings themselves, no sequence model) is
            the paper's original encoder. Any registered ggr-hf backbone works.
        backbone_config (`dict` or `PretrainedConfig`, *optional*):
            The encoder's own fields; `num_items` is filled from this config's `num_items`.
        num_items (`int`, *optional*, defaults to 1):
            Number of real items (internal ids `1..num_items`, 0 is padding).

        > Interest extraction

        extractor (`str`, *optional*, defaults to `"sa"`):
            `"sa"`: ComiRec-SA's self-attention (`A = softmax(w_2^T tanh(W_1 H))`, one attention row per
            interest); `"dr"`: ComiRec-DR's dynamic routing (capsules with a bilinear map, squash and
            `routing_iterations` rounds of agreement).
        num_interests (`int`, *optional*, defaults to 4):
            Interest vectors per user (the paper's and the release's K = 4).
        routing_iterations (`int`, *optional*, defaults to 3):
            Rounds of dynamic routing (`"dr"` only; the paper's 3).
        attention_size (`int`, *optional*):
            Width of the self-attention layer `W_1` (`"sa"` only). Defaults to half the encoder's hidden
            size (the release's `interest_hidden`; the ComiRec code uses 4 x hidden size).
        interest_dropout (`float`, *optional*):
            Dropout inside the self-attention layer (`"sa"` only). Defaults to the encoder's `dropout`
            (the release reuses the HSTU dropout there), 0 when the encoder has none.

        > Loss

        num_negatives (`int`, *optional*, defaults to 128):
            Catalogue-wide sampled negatives per step, shared by every (position, target) pair.
        false_negative_threshold (`float`, *optional*, defaults to 0.99):
            Negatives whose cosine with the positive exceeds this are masked (as is a negative equal to
            the positive).
        logit_scale_init (`float`, *optional*, defaults to 20.0):
            Initial scale of the cosine logits (1 / temperature 0.05).
        learnable_logit_scale (`bool`, *optional*, defaults to `True`)
        logit_scale_max (`float`, *optional*, defaults to 100.0):
            The learned scale is clamped at this value.
        hard_negative_beta (`float`, *optional*, defaults to 0.0):
            REMI's interest-aware hard negatives: each sampled negative's term in the softmax denominator
            is re-weighted by `n * softmax_j(beta * s_j)`, `s_j` its logit against the interest being
            trained. 0 turns it off (plain sampled softmax).
        routing_reg_lambda (`float`, *optional*, defaults to 0.0):
            Weight of REMI's routing regularisation `||diag(C)||^2`, `C` the covariance of the routing
            (attention) matrix over the history. 0 turns it off.

        > Inference

        fusion (`str`, *optional*, defaults to `"max"`):
            `"max"`: an item's score is its best score over the interests (ComiRec's retrieval);
            `"mean"`: their mean.
        exclude_history (`bool`, *optional*, defaults to `True`):
            Whether items already in the history are removed from recommendations.
    """

    model_type = "comirec"

    def __init__(
        self,
        backbone_type: str = "hstu",
        backbone_config: dict[str, Any] | PretrainedConfig | None = None,
        num_items: int = 1,
        # Interest extraction
        extractor: str = "sa",
        num_interests: int = 4,
        routing_iterations: int = 3,
        attention_size: int | None = None,
        interest_dropout: float | None = None,
        # Loss
        num_negatives: int = 128,
        false_negative_threshold: float = 0.99,
        logit_scale_init: float = 20.0,
        learnable_logit_scale: bool = True,
        logit_scale_max: float = 100.0,
        hard_negative_beta: float = 0.0,
        routing_reg_lambda: float = 0.0,
        # Inference
        fusion: str = "max",
        exclude_history: bool = True,
        **kwargs,
    ):
        self.set_backbone(backbone_type, backbone_config, num_items)
        self.extractor = extractor
        self.num_interests = num_interests
        self.routing_iterations = routing_iterations
        # Resolved here and saved, so a saved model never depends on the encoder's defaults.
        self.attention_size = max(1, self.hidden_size // 2) if attention_size is None else attention_size
        if interest_dropout is None:
            interest_dropout = float(getattr(self._backbone, "dropout", 0.0) or 0.0)
        self.interest_dropout = interest_dropout
        self.num_negatives = num_negatives
        self.false_negative_threshold = false_negative_threshold
        self.logit_scale_init = logit_scale_init
        self.learnable_logit_scale = learnable_logit_scale
        self.logit_scale_max = logit_scale_max
        self.hard_negative_beta = hard_negative_beta
        self.routing_reg_lambda = routing_reg_lambda
        self.fusion = fusion
        self.exclude_history = exclude_history
        reject_unknown_keys(type(self).__name__, kwargs)
        super().__init__(**kwargs)
        self.validate_fields()

    def validate_fields(self) -> None:
        """Raises `GGRConfigError` (a `ValueError`) naming the first invalid field and its value."""
        self.check_int("num_items")
        self.check_choice("extractor", EXTRACTORS)
        self.check_int("num_interests")
        self.check_int("routing_iterations")
        self.check_int("attention_size")
        self.check_number("interest_dropout", 0.0, 1.0)
        if self.interest_dropout >= 1.0:
            raise self._fail("interest_dropout", "in [0, 1)")
        self.check_int("num_negatives")
        self.check_number("false_negative_threshold", -1.0, 1.0)
        self.check_bool("learnable_logit_scale", "exclude_history")
        self.check_number("logit_scale_init", 0.0, low_open=True)
        self.check_number("logit_scale_max", float(self.logit_scale_init))
        self.check_number("hard_negative_beta", 0.0)
        self.check_number("routing_reg_lambda", 0.0)
        self.check_choice("fusion", FUSIONS)


class RemiConfig(ComiRecConfig):
    r"""
    Configuration of [`RemiForRecommendation`]: REMI (Xie et al., "Rethinking Multi-Interest Learning for
    Candidate Matching in Recommender Systems", RecSys 2023) is ComiRec trained with interest-aware hard
    negatives and routing regularisation. Same fields as [`ComiRecConfig`]; only the defaults differ:

    Args:
        hard_negative_beta (`float`, *optional*, defaults to 1.0):
            Hardness `beta` of the interest-aware negatives (the release's `beta_ihn` default).
        routing_reg_lambda (`float`, *optional*, defaults to 100.0):
            Weight `lambda` of the routing regularisation (the release's `lambda_rr` default; the paper
            tunes it around 1e2).
        extractor (`str`, *optional*, defaults to `"sa"`):
            REMI builds on ComiRec-SA in the release; `"dr"` works too.
    """

    model_type = "remi"

    def __init__(self, hard_negative_beta: float = 1.0, routing_reg_lambda: float = 100.0, **kwargs):
        super().__init__(
            hard_negative_beta=hard_negative_beta, routing_reg_lambda=routing_reg_lambda, **kwargs
        )


register_model_type(ComiRecConfig.model_type, ComiRecConfig)
register_model_type(RemiConfig.model_type, RemiConfig)
