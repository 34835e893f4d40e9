"""Registration of ggr-hf's model types with transformers' Auto classes.

| `model_type` | config | model |
|---|---|---|
| `ggr` | `GGRConfig` | `GGRForRecommendation` |
| `hstu` | `HSTUConfig` | `HSTUModel` |
| `hllm` | `HLLMConfig` | `HLLMModel` |
| `sasrec` | `SASRecConfig` | `SASRecModel` (backbone) |
| `item_embedding` | `ItemEmbeddingConfig` | `ItemEmbeddingModel` (backbone) |
| `comirec` | `ComiRecConfig` | `ComiRecForRecommendation` |
| `remi` | `RemiConfig` | `RemiForRecommendation` |
| `dualvae` | `DualVAEConfig` | `DualVAEForRecommendation` |
| `ggr_heads` | `GGRHeadsConfig` | none: a heads artifact is not a model on its own; load it with `GGRForRecommendation.from_pretrained(heads_repo)` |

`import ggr_hf` registers them as soon as transformers is imported (before or after ggr_hf), so
`import ggr_hf` followed by `AutoModel.from_pretrained(folder)` loads a ggr-hf model without
`trust_remote_code`, while `import ggr_hf` alone stays free of torch and transformers (the data
commands start fast). Importing this module registers them at once. Registration is idempotent.
"""

from __future__ import annotations

from transformers import PretrainedConfig, PreTrainedModel

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.configuration_heads import GGRHeadsConfig
from ggr_hf.configuration_utils import register_model_type
from ggr_hf.modeling_ggr import GGRForRecommendation
from ggr_hf.models import shipped_backbones
from ggr_hf.recommenders import shipped_recommenders

REGISTERED: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel] | None]] = {}


def register_auto_classes() -> dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel] | None]]:
    """Registers every ggr-hf model type (see the module docstring). Safe to call more than once.

    Returns:
        `dict`: model type -> (config class, model class or `None`) of what is registered.
    """
    components = [
        *shipped_backbones(),
        (GGRConfig, GGRForRecommendation),
        *shipped_recommenders(),
        (GGRHeadsConfig, None),
    ]
    for config_class, model_class in components:
        if register_model_type(config_class.model_type, config_class, model_class):
            REGISTERED[config_class.model_type] = (config_class, model_class)
    return dict(REGISTERED)


register_auto_classes()

__all__ = ["REGISTERED", "register_auto_classes", "register_model_type"]
