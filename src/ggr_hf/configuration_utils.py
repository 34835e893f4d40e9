"""Helpers shared by the ggr-hf configuration classes."""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PretrainedConfig

from ggr_hf.errors import GGRConfigError

# How the scores of a model's queries (GGR heads, multi-interest vectors) combine per item.
FUSIONS = ("max", "mean")

# Keys that transformers itself writes into (or passes through) a config dictionary. Everything else
# a config receives must be one of its own documented fields.
_TRANSFORMERS_KEYS = frozenset(PretrainedConfig().to_dict()) | {
    "torch_dtype",
    "name_or_path",
    "_commit_hash",
    "attn_implementation",
    "experts_implementation",
    "num_labels",
    "_from_auto",
    "_from_pipeline",
    "output_attentions",
    "ggr_hf_version",
}


def reject_unknown_keys(config_name: str, kwargs: dict) -> None:
    """Raises `ValueError` for keys that are neither the config's fields nor transformers' own.

    Research code often warns on unknown keys and carries on (RecBole, HLLM); a misspelt
    hyperparameter then silently keeps its default. Here it is an error that names the key.
    """
    unknown = sorted(k for k in kwargs if k not in _TRANSFORMERS_KEYS)
    if unknown:
        from ggr_hf import __version__

        raise GGRConfigError(
            f"{config_name} got unknown field(s) {unknown}. Check the spelling; if the config was written "
            f"by a newer ggr-hf than the installed {__version__}, upgrade ggr-hf."
        )


def check_positive_ints(config: PretrainedConfig, names: Iterable[str]) -> None:
    """Raises `GGRConfigError` naming the first of `names` that is not an integer >= 1 (bools refused)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise GGRConfigError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}")


def check_numbers(
    config: PretrainedConfig,
    names: Iterable[str] = (),
    fractions: Iterable[str] = (),
    positive: Iterable[str] = (),
) -> None:
    """Raises `GGRConfigError` naming the first field that is not a number (bools and NaN refused):
    `names` are only checked for that, `fractions` (dropout rates) must also be in [0, 1), `positive`
    must also be > 0."""
    fractions, positive = tuple(fractions), tuple(positive)
    for name in (*names, *fractions, *positive):
        value = getattr(config, name)
        field = f"{type(config).__name__}.{name}"
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise GGRConfigError(f"{field} must be a number, got {value!r}")
        if name in fractions and not 0.0 <= value < 1.0:
            raise GGRConfigError(f"{field} must be in [0, 1), got {value!r}")
        if name in positive and not value > 0:
            raise GGRConfigError(f"{field} must be > 0, got {value!r}")


def backbone_fields(config: PretrainedConfig) -> dict:
    """A backbone config's own fields (transformers' bookkeeping keys left out)."""
    return {k: v for k, v in config.to_dict().items() if k not in _TRANSFORMERS_KEYS and k != "model_type"}


def register_model_type(model_type: str, config_class: type, model_class: type | None = None) -> bool:
    """Registers one model type with `AutoConfig` (and `AutoModel` when `model_class` is given).

    Idempotent: registering again (a re-import, a reload that made new class objects) replaces the
    entry. A `model_type` that transformers itself defines is never overridden (a future native `hstu`
    would win), with a warning.

    Returns:
        `bool`: whether it was registered.

    Raises:
        `ValueError` when `config_class.model_type` is not `model_type`.
    """
    import logging

    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if getattr(config_class, "model_type", None) != model_type:
        raise GGRConfigError(
            f"{config_class.__name__}.model_type is {config_class.model_type!r}, not {model_type!r}"
        )
    if model_type in CONFIG_MAPPING_NAMES:
        logging.getLogger(__name__).warning(
            "transformers defines model_type %r itself; ggr-hf's %s is not registered",
            model_type,
            config_class.__name__,
        )
        return False
    AutoConfig.register(model_type, config_class, exist_ok=True)
    if model_class is not None:
        AutoModel.register(config_class, model_class, exist_ok=True)
    return True
