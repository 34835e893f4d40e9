"""Generative recommender backbones and their registration with transformers' Auto classes.

Every backbone implements the contract of `ggr_hf.models.backbone` and is found by `GGRConfig` /
`GGRForRecommendation` through `AutoConfig` / `AutoModel` under its `model_type`, like any
transformers model: ggr-hf's own (`hstu`, `hllm`, `sasrec`, `item_embedding`) are registered here,
a user's own with `AutoConfig.register` / `AutoModel.register`, with no edit to ggr-hf.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ggr_hf.errors import GGRConfigError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from ggr_hf.models.backbone import GGRBackboneModel

SHIPPED_BACKBONES = ("hstu", "hllm", "sasrec", "item_embedding")


@functools.cache
def register_backbone_configs() -> None:
    """Registers the configs of the shipped backbones with `AutoConfig`, once per process (every
    `GGRConfig` asks for its backbone's config class through here)."""
    from ggr_hf.configuration_utils import register_model_type
    from ggr_hf.models.embedding.configuration_embedding import ItemEmbeddingConfig
    from ggr_hf.models.hllm.configuration_hllm import HLLMConfig
    from ggr_hf.models.hstu.configuration_hstu import HSTUConfig
    from ggr_hf.models.sasrec.configuration_sasrec import SASRecConfig

    for config_class in (HSTUConfig, HLLMConfig, SASRecConfig, ItemEmbeddingConfig):
        register_model_type(config_class.model_type, config_class)


def shipped_backbones() -> list[tuple[type, type]]:
    """(config class, model class) of each backbone shipped with ggr-hf."""
    from ggr_hf.models.embedding.configuration_embedding import ItemEmbeddingConfig
    from ggr_hf.models.embedding.modeling_embedding import ItemEmbeddingModel
    from ggr_hf.models.hllm.configuration_hllm import HLLMConfig
    from ggr_hf.models.hllm.modeling_hllm import HLLMModel
    from ggr_hf.models.hstu.configuration_hstu import HSTUConfig
    from ggr_hf.models.hstu.modeling_hstu import HSTUModel
    from ggr_hf.models.sasrec.configuration_sasrec import SASRecConfig
    from ggr_hf.models.sasrec.modeling_sasrec import SASRecModel

    return [
        (HSTUConfig, HSTUModel),
        (HLLMConfig, HLLMModel),
        (SASRecConfig, SASRecModel),
        (ItemEmbeddingConfig, ItemEmbeddingModel),
    ]


@functools.cache
def register_backbone_models() -> None:
    """Registers the shipped backbones with `AutoConfig` and `AutoModel`, once per process (every
    model build goes through here)."""
    from ggr_hf.configuration_utils import register_model_type

    for config_class, model_class in shipped_backbones():
        register_model_type(config_class.model_type, config_class, model_class)


def backbone_config_class(model_type: str) -> type[PretrainedConfig]:
    """The config class registered with `AutoConfig` for a backbone `model_type`.

    Raises:
        `ValueError` naming the type when no such model type is registered.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    register_backbone_configs()
    try:
        return CONFIG_MAPPING[model_type]
    except KeyError:
        raise GGRConfigError(
            f"GGRConfig.backbone_type {model_type!r} is not a model type known to transformers' AutoConfig; "
            f"ggr-hf ships {list(SHIPPED_BACKBONES)}; register your own backbone with "
            "AutoConfig.register(model_type, Config) and AutoModel.register(Config, Model)"
        ) from None


def build_backbone(config: PretrainedConfig) -> GGRBackboneModel:
    """Builds the backbone of `config` through `AutoModel.from_config` and checks it keeps the contract.

    Raises:
        `ValueError` when no model is registered for the config, or the model is not a
        `GGRBackboneModel` (`ggr_hf.models.backbone`).
    """
    from transformers import AutoModel

    from ggr_hf.models.backbone import GGRBackboneModel

    register_backbone_models()
    try:
        model = AutoModel.from_config(config)
    except ValueError as err:
        raise GGRConfigError(
            f"no backbone model registered for model_type {config.model_type!r}: {err}. "
            "Register it with AutoModel.register(Config, Model)"
        ) from None
    if not isinstance(model, GGRBackboneModel):
        raise GGRConfigError(
            f"AutoModel built {type(model).__name__} for backbone_type {config.model_type!r}, which does "
            "not implement the ggr-hf backbone contract: subclass ggr_hf.models.backbone.GGRBackboneModel"
        )
    return model
