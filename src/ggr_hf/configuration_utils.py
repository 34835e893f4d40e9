"""Helpers shared by the ggr-hf configuration classes."""

from __future__ import annotations

from transformers import PretrainedConfig

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

        raise ValueError(
            f"{config_name} got unknown field(s) {unknown}. Check the spelling; if the config was written "
            f"by a newer ggr-hf than the installed {__version__}, upgrade ggr-hf."
        )


def backbone_fields(config: PretrainedConfig) -> dict:
    """A backbone config's own fields (transformers' bookkeeping keys left out)."""
    return {k: v for k, v in config.to_dict().items() if k not in _TRANSFORMERS_KEYS and k != "model_type"}
