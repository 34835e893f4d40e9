"""Registration of ggr-hf's model types with transformers' Auto classes.

After `import ggr_hf.auto`, or the first access of a class through the package
(`from ggr_hf import GGRForRecommendation`, `ggr_hf.GGRConfig`, ...), `AutoConfig.from_pretrained` and
`AutoModel.from_pretrained` load GGR models and their backbones without `trust_remote_code`. A bare
`import ggr_hf` registers nothing: it stays free of torch and transformers so that the data commands
start fast.

| `model_type` | config | model |
|---|---|---|
| `ggr` | `GGRConfig` | `GGRForRecommendation` |
| `hstu` | `HSTUConfig` | `HSTUModel` |
| `hllm` | `HLLMConfig` | `HLLMModel` (when `ggr_hf.models.hllm` is installed) |
| `ggr_heads` | `GGRHeadsConfig` | none: a heads artifact is not a model on its own; load it with `GGRForRecommendation.from_pretrained(heads_repo)` |

Registration is one entry per component (no string dispatch elsewhere) and idempotent: importing
the module again, or reloading it, does not fail. A `model_type` that transformers itself defines is
never overridden (a future native `hstu` would win), with a warning.
"""

from __future__ import annotations

import importlib
import logging

from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

logger = logging.getLogger(__name__)

# (model_type, "module:ConfigClass", "module:ModelClass" or None). Optional components are imported
# lazily so that a missing optional backbone does not break `import ggr_hf`.
_REGISTRY: tuple[tuple[str, str, str | None, bool], ...] = (
    ("ggr", "ggr_hf.configuration_ggr:GGRConfig", "ggr_hf.modeling_ggr:GGRForRecommendation", True),
    (
        "hstu",
        "ggr_hf.models.hstu.configuration_hstu:HSTUConfig",
        "ggr_hf.models.hstu.modeling_hstu:HSTUModel",
        True,
    ),
    ("ggr_heads", "ggr_hf.hub:GGRHeadsConfig", None, True),
    # HLLM is optional: registered only when `ggr_hf.models.hllm` imports (it needs a transformers
    # LLM such as Qwen and is written separately); its absence is not an error.
    ("hllm", "ggr_hf.models.hllm:HLLMConfig", "ggr_hf.models.hllm:HLLMModel", False),
)

REGISTERED: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel] | None]] = {}


def _import(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def register_model_type(
    model_type: str, config_class: type[PretrainedConfig], model_class: type[PreTrainedModel] | None = None
) -> bool:
    """Registers one model type with `AutoConfig` (and `AutoModel` when `model_class` is given).

    Returns:
        `bool`: whether it was registered (`False` when transformers defines the type itself).

    Raises:
        `ValueError` when `config_class.model_type` is not `model_type`.
    """
    if getattr(config_class, "model_type", None) != model_type:
        raise ValueError(
            f"{config_class.__name__}.model_type is {config_class.model_type!r}, not {model_type!r}"
        )
    if model_type in CONFIG_MAPPING_NAMES:
        logger.warning(
            "transformers defines model_type %r itself; ggr-hf's %s is not registered",
            model_type,
            config_class.__name__,
        )
        return False
    # exist_ok: registering again (a re-import, a reload that made new class objects) replaces the
    # entry instead of failing.
    AutoConfig.register(model_type, config_class, exist_ok=True)
    if model_class is not None:
        AutoModel.register(config_class, model_class, exist_ok=True)
    REGISTERED[model_type] = (config_class, model_class)
    return True


def register_auto_classes() -> dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel] | None]]:
    """Registers every ggr-hf model type (see the module docstring). Safe to call more than once.

    Returns:
        `dict`: model type -> (config class, model class or `None`) of what is registered.
    """
    for model_type, config_spec, model_spec, required in _REGISTRY:
        try:
            config_class = _import(config_spec)
            model_class = _import(model_spec) if model_spec else None
        except (ImportError, AttributeError) as err:
            if required:
                raise
            logger.debug("not registering %r: %s", model_type, err)
            continue
        register_model_type(model_type, config_class, model_class)
    return dict(REGISTERED)


register_auto_classes()
