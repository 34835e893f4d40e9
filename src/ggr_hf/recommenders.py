"""The recommendation models of ggr-hf by `model_type`: what the experiment runner, the CLI and
`compare` build and load, so that none of them branches on which model it holds.

| `model_type` | config | model | what it is |
|---|---|---|---|
| `ggr` | `GGRConfig` | `GGRForRecommendation` | a backbone + prior heads (no priors: the plain backbone, e.g. HSTU or SASRec) |
| `comirec` | `ComiRecConfig` | `ComiRecForRecommendation` | ComiRec-SA / ComiRec-DR multi-interest baseline |
| `remi` | `RemiConfig` | `RemiForRecommendation` | REMI: ComiRec + interest-aware hard negatives + routing regularisation |
| `dualvae` | `DualVAEConfig` | `DualVAEForRecommendation` | DualVAE adapted to sequences |

A YAML `model:` section names its type with `model_type:` (default `ggr`); the other keys are the
config's fields. A user adds a model with [`register_recommender`]: a `PreTrainedModel` keeping the
contract of `ggr_hf.modeling_recommender` and a config subclassing `RecommenderConfig`.

Config classes are imported without the modeling code (reading an experiment file stays light).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ggr_hf.errors import GGRConfigError, GGRModelFolderError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from ggr_hf.configuration_recommender import RecommenderConfig

DEFAULT_MODEL_TYPE = "ggr"

# model_type -> ("module:ConfigClass", "module:ModelClass")
_SHIPPED: dict[str, tuple[str, str]] = {
    "ggr": ("ggr_hf.configuration_ggr:GGRConfig", "ggr_hf.modeling_ggr:GGRForRecommendation"),
    "comirec": (
        "ggr_hf.baselines.configuration_comirec:ComiRecConfig",
        "ggr_hf.baselines.modeling_comirec:ComiRecForRecommendation",
    ),
    "remi": (
        "ggr_hf.baselines.configuration_comirec:RemiConfig",
        "ggr_hf.baselines.modeling_comirec:RemiForRecommendation",
    ),
    "dualvae": (
        "ggr_hf.baselines.configuration_dualvae:DualVAEConfig",
        "ggr_hf.baselines.modeling_dualvae:DualVAEForRecommendation",
    ),
}
_USER: dict[str, tuple[type, type]] = {}


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def recommender_types() -> list[str]:
    """Every model type that can be built: ggr-hf's own and those registered by the user."""
    return [*_SHIPPED, *(t for t in _USER if t not in _SHIPPED)]


def register_recommender(model_type: str, config_class: type, model_class: type) -> None:
    """Makes a user's own recommendation model buildable from experiment files (`model_type:`) and
    loadable by [`load_recommender`]; also registers it with transformers' Auto classes."""
    from ggr_hf.configuration_utils import register_model_type

    _USER[model_type] = (config_class, model_class)
    register_model_type(model_type, config_class, model_class)


def _unknown(model_type: Any) -> GGRConfigError:
    return GGRConfigError(
        f"model.model_type {model_type!r} is not a recommendation model; choose one of {recommender_types()} "
        "(or register your own with ggr_hf.recommenders.register_recommender)"
    )


def recommender_config_class(model_type: str) -> type[RecommenderConfig]:
    """The config class of `model_type` (imports no modeling code).

    Raises:
        `GGRConfigError`: an unknown model type, naming the known ones.
    """
    if model_type in _USER:
        return _USER[model_type][0]
    if not isinstance(model_type, str) or model_type not in _SHIPPED:
        raise _unknown(model_type)
    return _resolve(_SHIPPED[model_type][0])


def recommender_model_class(model_type: str) -> type[PreTrainedModel]:
    """The model class of `model_type` (importing it registers it with the Auto classes).

    Raises:
        `GGRConfigError`: an unknown model type, naming the known ones.
    """
    if model_type in _USER:
        return _USER[model_type][1]
    if not isinstance(model_type, str) or model_type not in _SHIPPED:
        raise _unknown(model_type)
    return _resolve(_SHIPPED[model_type][1])


def shipped_recommenders() -> list[tuple[type, type]]:
    """(config class, model class) of every recommendation model shipped with ggr-hf."""
    return [(_resolve(c), _resolve(m)) for c, m in _SHIPPED.values()]


def build_recommender_config(model: dict[str, Any], num_items: int) -> RecommenderConfig:
    """The config of a YAML `model:` section: `model_type` (default `ggr`) picks the class, the other
    keys are its fields.

    Raises:
        `GGRConfigError`: an unknown model type or a bad field (as the config class reports it).
    """
    fields = dict(model)
    model_type = fields.pop("model_type", DEFAULT_MODEL_TYPE)
    return recommender_config_class(model_type)(num_items=num_items, **fields)


def build_recommender(config: RecommenderConfig) -> PreTrainedModel:
    """A freshly initialised model for `config` (its class found by `config.model_type`)."""
    return recommender_model_class(config.model_type)(config)


def load_recommender(path: str | os.PathLike, **kwargs: Any) -> PreTrainedModel:
    """Loads any ggr-hf recommendation model saved in a local folder (or a Hub repo id): the class is
    chosen by the `model_type` in its `config.json`; a GGR heads artifact (`ggr_heads`) loads through
    `GGRForRecommendation.from_pretrained` with the base it records. Safetensors only.

    Raises:
        `GGRModelFolderError`: a folder without a readable `config.json` or of a model type that is
            not a recommendation model (e.g. a bare backbone: load it with `GGRForRecommendation`).
    """
    folder = Path(path)
    if not folder.is_dir():
        # A Hub repo id or a missing folder: GGR's loader names what is wrong with either.
        return recommender_model_class(DEFAULT_MODEL_TYPE).from_pretrained(str(path), **kwargs)
    config_file = folder / "config.json"
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except FileNotFoundError:
        raise GGRModelFolderError(f"{folder} has no config.json: not a saved model folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise GGRModelFolderError(f"{config_file}: not a readable model config ({err})") from err
    if model_type in ("ggr_heads", None) or model_type not in recommender_types():
        # Heads artifacts and bare backbones are GGR's to load (or to refuse with a precise message).
        model_type = DEFAULT_MODEL_TYPE
    return recommender_model_class(model_type).from_pretrained(str(folder), **kwargs)


__all__ = [
    "DEFAULT_MODEL_TYPE",
    "build_recommender",
    "build_recommender_config",
    "load_recommender",
    "recommender_config_class",
    "recommender_model_class",
    "recommender_types",
    "register_recommender",
    "shipped_recommenders",
]
