"""`GGRConfig`: everything needed to build a GGR model, without the data set."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from ggr_hf.configuration_recommender import RecommenderConfig
from ggr_hf.configuration_utils import (
    FUSIONS,
    check_numbers,
    check_positive_ints,
    register_model_type,
    reject_unknown_keys,
)
from ggr_hf.errors import GGRConfigError
from ggr_hf.priors import make_prior
from ggr_hf.priors.spec import normalize_prior_specs, priors_resolved

COMPOSITIONS = ("multiplicative", "hierarchical", "additive")
NEGATIVE_SAMPLING = ("in_group", "global")
PRIOR_WEIGHTING = ("frequency", "uniform")
HEAD_INITS = ("zero", "trunc_normal")
SWITCHES = ("none", "state", "state_query")
CALIBRATIONS = ("none", "fused", "fused_offsets", "switch")

# The fields added after ggr-hf 0.1.0, with the values that reproduce a model saved before them: a
# config read from a file (`from_dict`) that lacks one gets this value, not the constructor default.
LEGACY_DEFAULTS = {
    "calibration": "none",
    "calibration_loss_weight": 1.0,
    "switch": "none",
    "switch_loss_weight": 1.0,
    "switch_gating": False,
    "switch_threshold": 0.5,
    "positive_mixin_ratio": 0.0,
}


class GGRConfig(RecommenderConfig):
    r"""
    Configuration of [`GGRForRecommendation`]: a generative recommender backbone plus one light adapter
    head per value of each structured human prior.

    Where the paper's brief and the authors' released code differ, the default is the code's value
    and the brief's is documented as the alternative.

    Args:
        backbone_type (`str`, *optional*, defaults to `"hstu"`):
            The backbone's `model_type` in transformers' `AutoConfig` / `AutoModel` (ggr-hf ships
            `"hstu"` and `"hllm"`; any backbone registered there and implementing
            `ggr_hf.models.backbone.GGRBackboneModel` works).
        backbone_config (`dict` or `PretrainedConfig`, *optional*):
            The backbone's own configuration (the composite-model sub-config). Saved as a dict of
            every backbone field; `num_items` is filled from this config's `num_items`.
        num_items (`int`, *optional*, defaults to 1):
            Number of real items (internal ids `1..num_items`, 0 is padding).

        > Priors and heads

        priors (`list[dict]`, *optional*):
            Prior specifications (see `ggr_hf.priors`; each `type` is a registered plug-in). An empty list gives the plain backbone,
            the baseline. Saved resolved, i.e. with each prior's ordered group names.
        composition (`str`, *optional*, defaults to `"multiplicative"`):
            How two or more priors combine: `"multiplicative"` (one head per combination),
            `"hierarchical"` (coarse to fine, upper levels shared) or `"additive"` (one head per
            value of each prior). With one prior all three give the same heads.
        head_init (`str`, *optional*, defaults to `"zero"`):
            `"zero"`: the adapter weight starts at zero, so each head starts as the backbone output
            (the brief). `"trunc_normal"`: truncated normal with `head_init_std` (the released code).
        head_init_std (`float`, *optional*, defaults to 0.02)
        head_bias (`bool`, *optional*, defaults to `False`):
            Whether the adapter `W_k h + b_k` has a bias. Without it a zero-initialised head is an
            exact identity; Medusa keeps a randomly initialised bias, which is not.

        > Loss

        num_negatives (`int`, *optional*, defaults to 128):
            Sampled negatives per head per step (shared by all positions of the batch).
        negative_sampling (`str`, *optional*, defaults to `"in_group"`):
            `"in_group"`: an item-prior head's negatives come from its own items (the paper);
            `"global"`: uniform over the catalogue for every head (the ablation).
        prior_weighting (`str`, *optional*, defaults to `"frequency"`):
            `"frequency"`: head k's loss weighs `|Y_k| / sum_j |Y_j|` (what both the formula and the
            released code do); `"uniform"`: every head present in the batch weighs the same.
        offset_discount (`float`, *optional*, defaults to 0.99):
            `lam` of the multi-step weights `w_p = lam^p / sum_q lam^q` (released scripts: 0.99; the
            brief reports 0.7 as best).
        false_negative_threshold (`float`, *optional*, defaults to 0.99):
            Negatives whose cosine with the positive exceeds this are masked.
        positive_mixin_ratio (`float`, *optional*, defaults to 0.0):
            The release's `pos_sample_mix_ratio`: each (position, offset, head) pair whose target is
            *outside* the head's item group (but meets the head's other constraints) also trains that
            head with this probability, against the head's usual negatives. 0 is the paper's form.

        > Calibration of max fusion across heads (see `docs/partition_calibration.md`)

        calibration (`str`, *optional*, defaults to `"fused"`):
            Each head learns to rank inside its own item group with in-group negatives, so scores of
            different groups' heads are never trained against each other; max fusion over a partition
            prior (graph clusters, a single-label category) then compares incomparable scores.
            `"none"`: the paper's loss and plain max fusion. `"fused"`: adds a loss term training the
            fused score (an item's max over its compatible active heads, what inference ranks by)
            against catalogue-wide negatives; no weights, inference unchanged. `"fused_offsets"`: the
            same plus one learned additive score offset per head (trained by that term only).
            `"switch"`: adds `log p_switch(group)` of the head's item group(s) to the head's scores at
            inference (needs `switch`). A config read from a file saved without this field (ggr-hf
            0.1.0) gets `"none"`, which is how it was trained.
        calibration_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the fused term (`"fused"`, `"fused_offsets"`) in the total loss. The term is
            counted per training pair of the main loss (scaled by targets / pairs, which is 1 for a
            partition prior, 1/2 with the additive composition), so that multi-process training
            equals one process.

        > Prior switch (the release's `prior_switch`)

        switch (`str`, *optional*, defaults to `"none"`):
            Per group of every item-restricting prior, a logistic classifier predicting whether the next
            `horizon` targets fall in the group: `"state"` reads the backbone state `h` (the release's
            `in`), `"state_query"` reads `h` and the query of the group's first head (the release's
            `in_out`). Trained in the same loss with class-balanced binary cross-entropy.
        switch_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the switch's loss (mean over groups and positions) in the total loss.
        switch_gating (`bool`, *optional*, defaults to `False`):
            At inference, switch off the heads of groups the switch predicts absent (probability below
            `switch_threshold`), as the release's `use_prior_switch_test`; each user keeps at least the
            most probable group of every item prior.
        switch_threshold (`float`, *optional*, defaults to 0.5):
            Probability at which a group counts as predicted present (gating and `switch_accuracy`).
        logit_scale_init (`float`, *optional*, defaults to 20.0):
            Initial scale of the cosine logits (1 / temperature 0.05).
        learnable_logit_scale (`bool`, *optional*, defaults to `True`)
        logit_scale_max (`float`, *optional*, defaults to 100.0):
            The learned scale is clamped at this value.

        > Inference

        fusion (`str`, *optional*, defaults to `"max"`):
            `"max"`: an item's score is its best score over its compatible heads (the paper);
            `"mean"`: their mean (the ablation).
        exclude_history (`bool`, *optional*, defaults to `True`):
            Whether items already in the history are removed from recommendations.
    """

    model_type = "ggr"

    def __init__(
        self,
        backbone_type: str = "hstu",
        backbone_config: dict[str, Any] | PretrainedConfig | None = None,
        num_items: int = 1,
        # Priors and heads
        priors: list[dict[str, Any]] | None = None,
        composition: str = "multiplicative",
        head_init: str = "zero",
        head_init_std: float = 0.02,
        head_bias: bool = False,
        # Loss
        num_negatives: int = 128,
        negative_sampling: str = "in_group",
        prior_weighting: str = "frequency",
        offset_discount: float = 0.99,
        false_negative_threshold: float = 0.99,
        positive_mixin_ratio: float = 0.0,
        # Calibration and prior switch
        calibration: str = "fused",
        calibration_loss_weight: float = 1.0,
        switch: str = "none",
        switch_loss_weight: float = 1.0,
        switch_gating: bool = False,
        switch_threshold: float = 0.5,
        logit_scale_init: float = 20.0,
        learnable_logit_scale: bool = True,
        logit_scale_max: float = 100.0,
        # Inference
        fusion: str = "max",
        exclude_history: bool = True,
        **kwargs,
    ):
        self.set_backbone(backbone_type, backbone_config, num_items)

        self.priors = normalize_prior_specs(priors)
        self.composition = composition
        self.head_init = head_init
        self.head_init_std = head_init_std
        self.head_bias = head_bias
        self.num_negatives = num_negatives
        self.negative_sampling = negative_sampling
        self.prior_weighting = prior_weighting
        self.offset_discount = offset_discount
        self.false_negative_threshold = false_negative_threshold
        self.positive_mixin_ratio = positive_mixin_ratio
        self.calibration = calibration
        self.calibration_loss_weight = calibration_loss_weight
        self.switch = switch
        self.switch_loss_weight = switch_loss_weight
        self.switch_gating = switch_gating
        self.switch_threshold = switch_threshold
        self.logit_scale_init = logit_scale_init
        self.learnable_logit_scale = learnable_logit_scale
        self.logit_scale_max = logit_scale_max
        self.fusion = fusion
        self.exclude_history = exclude_history
        reject_unknown_keys("GGRConfig", kwargs)
        super().__init__(**kwargs)
        self.validate_fields()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        """`PretrainedConfig.from_dict`, giving fields absent from a saved config the values that
        reproduce models saved before those fields existed (`LEGACY_DEFAULTS`)."""
        config_dict = {**{k: v for k, v in LEGACY_DEFAULTS.items() if k not in kwargs}, **config_dict}
        return super().from_dict(config_dict, **kwargs)

    @property
    def horizon(self) -> int:
        """Number of future items each position is trained to predict (P); 1 without a temporal prior."""
        return max([make_prior(p, i).horizon for i, p in enumerate(self.priors)], default=1)

    def validate_fields(self) -> None:
        """Raises `GGRConfigError` (a `ValueError`) naming the first invalid field."""

        def choice(name: str, options: tuple[str, ...]) -> None:
            if getattr(self, name) not in options:
                raise GGRConfigError(
                    f"GGRConfig.{name} must be one of {list(options)}, got {getattr(self, name)!r}"
                )

        for name in ("head_bias", "learnable_logit_scale", "exclude_history", "switch_gating"):
            if not isinstance(getattr(self, name), bool):
                raise GGRConfigError(f"GGRConfig.{name} must be true or false, got {getattr(self, name)!r}")
        check_numbers(
            self,
            (
                "head_init_std",
                "offset_discount",
                "false_negative_threshold",
                "logit_scale_init",
                "logit_scale_max",
                "positive_mixin_ratio",
                "calibration_loss_weight",
                "switch_loss_weight",
                "switch_threshold",
            ),
        )
        check_positive_ints(self, ("num_items",))
        choice("composition", COMPOSITIONS)
        choice("head_init", HEAD_INITS)
        choice("negative_sampling", NEGATIVE_SAMPLING)
        choice("prior_weighting", PRIOR_WEIGHTING)
        choice("fusion", FUSIONS)
        choice("calibration", CALIBRATIONS)
        choice("switch", SWITCHES)
        if not 0.0 <= float(self.positive_mixin_ratio) <= 1.0:
            raise GGRConfigError(
                f"GGRConfig.positive_mixin_ratio must be in [0, 1], got {self.positive_mixin_ratio!r}"
            )
        for name in ("calibration_loss_weight", "switch_loss_weight"):
            if float(getattr(self, name)) < 0:
                raise GGRConfigError(f"GGRConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 < float(self.switch_threshold) < 1.0:
            raise GGRConfigError(
                f"GGRConfig.switch_threshold must be a probability in (0, 1), got {self.switch_threshold!r}"
            )
        if self.switch != "none" and not any(
            make_prior(p, i).restricts_items for i, p in enumerate(self.priors)
        ):
            raise GGRConfigError(
                f"GGRConfig.switch is {self.switch!r} but no prior restricts items (the switch predicts "
                "the item groups of item / graph priors); set switch to 'none'"
            )
        if self.switch == "none" and (self.calibration == "switch" or self.switch_gating):
            what = "calibration='switch'" if self.calibration == "switch" else "switch_gating=True"
            raise GGRConfigError(
                f"GGRConfig.switch is 'none' but {what} needs the prior switch; set switch to 'state' "
                "or 'state_query'"
            )
        check_positive_ints(self, ("num_negatives",))
        if not 0.0 < float(self.offset_discount) <= 1.0:
            raise GGRConfigError(f"GGRConfig.offset_discount must be in (0, 1], got {self.offset_discount!r}")
        if not -1.0 <= float(self.false_negative_threshold) <= 1.0:
            raise GGRConfigError(
                f"GGRConfig.false_negative_threshold must be a cosine in [-1, 1], got {self.false_negative_threshold!r}"
            )
        if float(self.logit_scale_init) <= 0 or float(self.logit_scale_max) < float(self.logit_scale_init):
            raise GGRConfigError(
                "GGRConfig.logit_scale_init must be > 0 and <= logit_scale_max, got "
                f"{self.logit_scale_init!r} and {self.logit_scale_max!r}"
            )
        if float(self.head_init_std) <= 0:
            raise GGRConfigError(f"GGRConfig.head_init_std must be > 0, got {self.head_init_std!r}")

    @property
    def priors_resolved(self) -> bool:
        return priors_resolved(self.priors)


register_model_type(GGRConfig.model_type, GGRConfig)
