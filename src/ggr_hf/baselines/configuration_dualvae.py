"""`DualVAEConfig`: DualVAE (Guo et al., SDM 2024) adapted to next-item prediction, as a ggr-hf model.

The defaults are the GGR release's (`code/IDNet/dualvae.yaml` and `code/REC/model/IDNet/dualvae.py`);
see `ggr_hf.baselines.modeling_dualvae` for the model and every departure from the release.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from ggr_hf.configuration_recommender import RecommenderConfig
from ggr_hf.configuration_utils import FUSIONS, register_model_type, reject_unknown_keys

ACTIVATIONS = ("tanh", "sigmoid", "silu", "relu")


class DualVAEConfig(RecommenderConfig):
    r"""
    Configuration of [`DualVAEForRecommendation`]: an encoder (HSTU in the GGR release's baselines)
    whose causal states are split into aspect-disentangled Gaussian user latents, scored against
    aspect-disentangled item latents.

    Args:
        backbone_type (`str`, *optional*, defaults to `"hstu"`):
            The encoder's `model_type` in transformers' `AutoConfig` (e.g. `"hstu"`, `"item_embedding"`,
            `"sasrec"`; any registered ggr-hf backbone works).
        backbone_config (`dict` or `PretrainedConfig`, *optional*):
            The encoder's own fields. Saved as a dict of every field; `num_items` is filled in.
        num_items (`int`, *optional*, defaults to 1):
            Number of real items (internal ids `1..num_items`, 0 is padding).

        > Aspects and latents

        latent_size (`int`, *optional*, defaults to 32):
            Size `K` of each aspect's latent (release `vae_latent_dim`).
        num_aspects (`int`, *optional*, defaults to 5):
            Number of aspects `A` (release `vae_num_aspects`). Users and items are scored in
            `A * K` dimensions.
        aspect_temperature (`float`, *optional*, defaults to 0.5):
            Temperature of the softmax over an item's (or a history position's) cosine with the `A`
            aspect prototypes, which gives its aspect weights (release `vae_aspect_temperature`).
        causal_pooling (`bool`, *optional*, defaults to `True`):
            `True` (the release): each aspect's user input at position `t` is an attention-pooled sum
            of the aspect-weighted states of positions `0..t`. `False`: the aspect-weighted encoder
            state at `t` alone (the encoder has already read `0..t`).
        encoder_hidden_sizes (`list[int]`, *optional*, defaults to `[64]`):
            Hidden layers of the posterior network (each Linear, LayerNorm, activation, dropout),
            shared by the aspects (release `vae_encoder_structure_size="small"`; `[128, 64]` is its
            "medium", `[256, 128, 64]` its "large").
        activation (`str`, *optional*, defaults to `"tanh"`):
            Activation of the posterior and pooling networks: `"tanh"`, `"sigmoid"`, `"silu"`, `"relu"`.
        dropout (`float`, *optional*, defaults to 0.2):
            Dropout inside the posterior and pooling networks (release `hidden_dropout_prob`).
        latent_dropout (`float`, *optional*, defaults to 0.2):
            Dropout on the sampled user latent during training ("information dropout", release
            `vae_latent_dropout`).

        > Loss

        num_negatives (`int`, *optional*, defaults to 128):
            Catalogue-wide sampled negatives per step, shared by every position of the batch.
        kl_beta (`float`, *optional*, defaults to 0.01):
            Final weight of the KL term (release `vae_beta_kl`; the release's code falls back to 0.1
            when the key is missing, its yaml sets 0.01).
        kl_anneal_steps (`int`, *optional*, defaults to 10000):
            The KL weight rises linearly from 0 to `kl_beta` over this many training steps (counted by
            the model's `kl_step` buffer, saved with the weights); 0 uses `kl_beta` from the start.
        contrastive_gamma (`float`, *optional*, defaults to 0.01):
            Weight of the aspect-level contrastive term (release `vae_gama_cl`).
        contrastive_temperature (`float`, *optional*, defaults to 0.2):
            Temperature of that term (fixed at 0.2 in the release's code).
        orthogonality_weight (`float`, *optional*, defaults to 0.1):
            Weight of the orthogonality penalty on the aspect prototypes (release `vae_ortho_lambda`).
        logit_scale_init (`float`, *optional*, defaults to 20.0):
            Initial scale of the scores (1 / temperature 0.05, as GGR and the release).
        learnable_logit_scale (`bool`, *optional*, defaults to `True`)
        logit_scale_max (`float`, *optional*, defaults to 100.0):
            The learned scale is clamped at this value.

        > Inference

        fusion (`str`, *optional*, defaults to `"max"`):
            How query scores combine; DualVAE has a single query, so `"max"` and `"mean"` agree.
        exclude_history (`bool`, *optional*, defaults to `True`):
            Whether items already in the history are removed from recommendations.
    """

    model_type = "dualvae"

    def __init__(
        self,
        backbone_type: str = "hstu",
        backbone_config: dict[str, Any] | PretrainedConfig | None = None,
        num_items: int = 1,
        # Aspects and latents
        latent_size: int = 32,
        num_aspects: int = 5,
        aspect_temperature: float = 0.5,
        causal_pooling: bool = True,
        encoder_hidden_sizes: list[int] | None = None,
        activation: str = "tanh",
        dropout: float = 0.2,
        latent_dropout: float = 0.2,
        # Loss
        num_negatives: int = 128,
        kl_beta: float = 0.01,
        kl_anneal_steps: int = 10000,
        contrastive_gamma: float = 0.01,
        contrastive_temperature: float = 0.2,
        orthogonality_weight: float = 0.1,
        logit_scale_init: float = 20.0,
        learnable_logit_scale: bool = True,
        logit_scale_max: float = 100.0,
        # Inference
        fusion: str = "max",
        exclude_history: bool = True,
        **kwargs,
    ):
        self.set_backbone(backbone_type, backbone_config, num_items)
        self.latent_size = latent_size
        self.num_aspects = num_aspects
        self.aspect_temperature = aspect_temperature
        self.causal_pooling = causal_pooling
        self.encoder_hidden_sizes = [64] if encoder_hidden_sizes is None else encoder_hidden_sizes
        self.activation = activation
        self.dropout = dropout
        self.latent_dropout = latent_dropout
        self.num_negatives = num_negatives
        self.kl_beta = kl_beta
        self.kl_anneal_steps = kl_anneal_steps
        self.contrastive_gamma = contrastive_gamma
        self.contrastive_temperature = contrastive_temperature
        self.orthogonality_weight = orthogonality_weight
        self.logit_scale_init = logit_scale_init
        self.learnable_logit_scale = learnable_logit_scale
        self.logit_scale_max = logit_scale_max
        self.fusion = fusion
        self.exclude_history = exclude_history
        reject_unknown_keys("DualVAEConfig", kwargs)
        super().__init__(**kwargs)
        self.validate_fields()

    @property
    def query_size(self) -> int:
        """Size of the scored vectors: `num_aspects * latent_size`."""
        return int(self.num_aspects) * int(self.latent_size)

    def validate_fields(self) -> None:
        """Raises `GGRConfigError` (a `ValueError`) naming the first invalid field."""
        self.check_int("num_items")
        self.check_int("latent_size")
        self.check_int("num_aspects")
        self.check_int("num_negatives")
        self.check_int("kl_anneal_steps", low=0)
        self.check_bool("causal_pooling", "learnable_logit_scale", "exclude_history")
        self.check_choice("activation", ACTIVATIONS)
        self.check_choice("fusion", FUSIONS)
        hidden = self.encoder_hidden_sizes
        if (
            not isinstance(hidden, (list, tuple))
            or not hidden
            or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden)
        ):
            raise self._fail("encoder_hidden_sizes", "a non-empty list of positive integers")
        self.encoder_hidden_sizes = list(hidden)
        self.check_number("aspect_temperature", 0.0, low_open=True)
        self.check_number("contrastive_temperature", 0.0, low_open=True)
        self.check_number("dropout", 0.0, 1.0)
        self.check_number("latent_dropout", 0.0, 1.0)
        if self.dropout == 1.0 or self.latent_dropout == 1.0:
            name = "dropout" if self.dropout == 1.0 else "latent_dropout"
            raise self._fail(name, "in [0, 1)")
        for name in ("kl_beta", "contrastive_gamma", "orthogonality_weight"):
            self.check_number(name, 0.0)
        self.check_number("logit_scale_init", 0.0, low_open=True)
        self.check_number("logit_scale_max", float(self.logit_scale_init))


register_model_type(DualVAEConfig.model_type, DualVAEConfig)
