"""Saving and loading GGR models: full models, heads-only artifacts, and heads put on a backbone.

A GGR model is a backbone (HSTU, HLLM, ...) plus light adapter heads. Like Medusa heads and PEFT
adapters, the heads can travel on their own: a *heads artifact* is a folder (or Hub repo) with

- `config.json`: a [`GGRHeadsConfig`] (`model_type: "ggr_heads"`): the prior specification, the head
  names, the composition and head settings, `base_model_name_or_path`, and a fingerprint of the item
  vocabulary and hidden size the heads were trained against;
- `model.safetensors`: every state-dict key that does not start with `backbone.` (the adapter
  weights, `logit_scale`, and the item-group membership buffers `item_groups.*`, which are tied to
  the item vocabulary) and nothing else;
- `README.md`: the model card.

Loading ([`load_ggr`], which `GGRForRecommendation.from_pretrained` delegates to) accepts

- a full GGR model (`model_type: "ggr"`);
- a heads artifact, whose `base_model_name_or_path` is loaded first;
- a backbone (any `model_type` registered with transformers' `AutoConfig`) or a full model plus
  `heads=...`, composed into one model.

A path that is an existing folder is read as the repo; anything else is a Hub repo id, fetched with
`huggingface_hub.snapshot_download` (which also works offline from the local cache with
`local_files_only=True` or `HF_HUB_OFFLINE=1`).

Nothing loads silently with random weights: missing or unexpected keys are errors unless the caller
passes `strict=False`, and heads put on a backbone with another item vocabulary, hidden size or
backbone type raise a `ValueError` naming both values. Only safetensors are read: a folder holding
only a pickled `pytorch_model.bin` is a [`GGRModelFolderError`] that says how to convert it, and
transformers' own fallback to pickles is off (`use_safetensors=True`). A `config.json` whose shapes
disagree with the weights (an edited `num_items` or `hidden_size`) is an error naming the config
values, the tensor, its shape and its file. The model of a training run that did not finish loads
with a [`GGRIncompleteRunWarning`] (see `ggr_hf.hub.runs`).

This module never imports `ggr_hf.modeling_ggr` (which imports it): the GGR model class comes from
the caller (`model_class`) or from transformers' `AutoModel` mapping of [`GGRConfig`].
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.configuration_heads import HEADS_MODEL_TYPE, GGRHeadsConfig, embedding_sha256, ggr_setting_names
from ggr_hf.configuration_utils import backbone_fields
from ggr_hf.errors import GGRFileNotFoundError, GGRInputError, GGRModelFolderError
from ggr_hf.hub.card import build_model_card
from ggr_hf.hub.io import (
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_model_weights,
    commit_folder,
    read_config_dict,
    read_safetensors,
    resolve_repo,
    staging_dir,
    tensor_files,
)
from ggr_hf.hub.runs import warn_if_incomplete

if TYPE_CHECKING:
    import torch

    from ggr_hf.modeling_ggr import GGRForRecommendation

logger = logging.getLogger(__name__)

GGR_MODEL_TYPE = GGRConfig.model_type
BACKBONE_PREFIX = "backbone."

# Hub kwargs that select *which files* to read; the rest of `from_pretrained`'s kwargs go to the model.
_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download")
# GGRConfig fields that decide the parameter layout of the heads: they must match for heads to load
# into an existing model in place.
_STRUCTURAL_FIELDS = ("priors", "composition", "head_bias")


def ggr_model_class() -> type[GGRForRecommendation]:
    """The model class registered with transformers' `AutoModel` for [`GGRConfig`].

    `import ggr_hf` registers ggr-hf's model types as soon as transformers is loaded (see
    `ggr_hf.auto`), so this module needs neither `ggr_hf.modeling_ggr` nor `ggr_hf.auto` (both
    import it).
    """
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    if GGRConfig not in MODEL_MAPPING:
        raise RuntimeError("GGRConfig is not registered with transformers' AutoModel; import ggr_hf.auto")
    return MODEL_MAPPING[GGRConfig]


def is_backbone_type(model_type: str | None) -> bool:
    """Whether `model_type` names a backbone: registered with `AutoConfig`, and not a GGR type."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return model_type not in (None, GGR_MODEL_TYPE, HEADS_MODEL_TYPE) and model_type in CONFIG_MAPPING


def _is_ggr_model(model: nn.Module) -> bool:
    return isinstance(getattr(model, "config", None), GGRConfig)


# ---------------------------------------------------------------------------------------------- save


def heads_state_dict(model: GGRForRecommendation) -> dict[str, torch.Tensor]:
    """Every state-dict key of `model` that is not part of the backbone, as contiguous CPU tensors."""
    return {
        key: value.detach().to("cpu").contiguous().clone()
        for key, value in model.state_dict().items()
        if not key.startswith(BACKBONE_PREFIX)
    }


def default_base(model: GGRForRecommendation) -> str | None:
    """The base a heads artifact of `model` records by default: the base its heads were loaded with,
    else the folder or repo `model` was loaded from."""
    base = getattr(model, "_ggr_base_model_name_or_path", None)
    if base:
        return base
    name = getattr(model.config, "_name_or_path", "") or ""
    return name or None


def _write_card(staging: Path, target: Path, model_card: bool | dict[str, Any]) -> None:
    """The card of a save: the previous card of `target` is updated (its notes kept)."""
    if (target / CARD_NAME).is_file():
        shutil.copyfile(target / CARD_NAME, staging / CARD_NAME)
    card_kwargs = dict(model_card) if isinstance(model_card, dict) else {}
    card_kwargs.setdefault("model_name", target.resolve().name)
    build_model_card(staging, **card_kwargs)


def save_heads(
    model: GGRForRecommendation,
    save_directory: str | os.PathLike,
    *,
    base_model_name_or_path: str | None = None,
    base_model_revision: str | None = None,
    item_ids: Sequence[Any] | None = None,
    model_card: bool | dict[str, Any] = True,
) -> Path:
    """Writes the heads-only artifact of `model`: `config.json`, `model.safetensors`, `README.md`.

    No backbone key and no backbone file is written. The folder is written atomically (see
    [`ggr_hf.hub.io.commit_folder`]); a `README.md` already there keeps its user-written notes.

    Args:
        model ([`GGRForRecommendation`]): the model whose heads are saved.
        save_directory (`str` or `os.PathLike`): the folder; it may be new, or hold an earlier heads
            artifact. A folder holding a full model or a backbone is refused.
        base_model_name_or_path (`str`, *optional*): the backbone the heads load onto. Defaults to the
            base the heads were loaded with, else the folder or repo `model` was loaded from. Without
            one, loading the heads needs the backbone passed explicitly.
        base_model_revision (`str`, *optional*)
        item_ids (`Sequence`, *optional*): original item ids in internal-id order (see
            [`GGRHeadsConfig.from_model`]).
        model_card (`bool` or `dict`, *optional*, defaults to `True`): write the card; a dict is
            passed to [`ggr_hf.hub.card.build_model_card`] (`metrics`, `training_args`, `figures`, ...).

    Returns:
        `Path`: the folder.
    """
    target = Path(save_directory)
    if (target / CONFIG_NAME).is_file():
        existing = read_config_dict(target).get("model_type")
        if existing != HEADS_MODEL_TYPE:
            raise GGRInputError(
                f"{target} holds a {existing!r} model, not a heads artifact; save the heads to another folder"
            )
    base = base_model_name_or_path or default_base(model)
    if base is None:
        logger.warning(
            "Saving heads without base_model_name_or_path: loading them will need the backbone passed "
            "explicitly, e.g. GGRForRecommendation.from_pretrained(backbone, heads=...)."
        )
    config = GGRHeadsConfig.from_model(model, base, base_model_revision, item_ids)
    state = heads_state_dict(model)

    staging = staging_dir(target)
    try:
        save_file(state, str(staging / WEIGHTS_NAME), metadata={"format": "pt", "ggr_hf_artifact": "heads"})
        config.to_json_file(str(staging / CONFIG_NAME))
        if model_card is not False:
            _write_card(staging, target, model_card)
        commit_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def save_model(
    model: PreTrainedModel,
    save_directory: str | os.PathLike,
    *,
    model_card: bool | dict[str, Any] = True,
    **save_kwargs,
) -> Path:
    """`model.save_pretrained` made atomic, with the model card written beside the weights.

    Weight files of an earlier save that the new one does not have (stale shards) are removed.

    Args:
        model: the model (a [`GGRForRecommendation`] or a backbone).
        save_directory: the folder.
        model_card (`bool` or `dict`): as in [`save_heads`]; only GGR models get a card.
        save_kwargs: passed to `save_pretrained` (e.g. `max_shard_size`).

    Returns:
        `Path`: the folder.
    """
    target = Path(save_directory)
    if (target / CONFIG_NAME).is_file() and read_config_dict(target).get("model_type") == HEADS_MODEL_TYPE:
        raise GGRInputError(f"{target} holds a heads artifact; save the full model to another folder")
    staging = staging_dir(target)
    try:
        model.save_pretrained(staging, **save_kwargs)
        if model_card is not False and _is_ggr_model(model):
            _write_card(staging, target, model_card)
        if target.exists():
            new = {p.name for p in staging.iterdir()}
            (target / CONFIG_NAME).unlink(missing_ok=True)
            for old in target.iterdir():
                is_weights = old.name.endswith((".safetensors", ".bin")) or old.name.endswith(".index.json")
                if is_weights and old.name not in new:
                    old.unlink()
        commit_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# ---------------------------------------------------------------------------------------------- load


# Config fields that set tensor shapes, named when a config disagrees with its weights.
_SHAPE_FIELDS = ("num_items", "hidden_size", "max_seq_len", "num_layers")


def _shape_fields(config_dict: dict[str, Any]) -> str:
    """`num_items=12, hidden_size=8, ...` from a config dict (a GGR config's backbone sub-config too)."""
    fields = {**(config_dict.get("backbone_config") or {}), **config_dict}
    return ", ".join(f"{name}={fields[name]}" for name in _SHAPE_FIELDS if name in fields)


def check_config_matches_weights(
    folder: Path, build: Callable[[], nn.Module], config_dict: dict[str, Any]
) -> None:
    """Compares the tensor shapes of the model `build` makes from the folder's config (built on the
    meta device: no memory, no initialisation) with the shapes in the folder's safetensors headers.

    Raises:
        `GGRModelFolderError`: naming `config.json`'s shape fields, the first disagreeing tensor, its
            shape in the file and in the config, and the file.
    """
    import torch

    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in build().state_dict().items()}
    found = tensor_files(folder)
    mismatched = [
        (key, path, tuple(shape), expected[key])
        for key, (path, shape) in sorted(found.items())
        if key in expected and tuple(shape) != expected[key]
    ]
    if mismatched:
        key, path, shape, want = mismatched[0]
        more = f" (and {len(mismatched) - 1} more tensors)" if len(mismatched) > 1 else ""
        raise GGRModelFolderError(
            f"{folder / CONFIG_NAME} ({_shape_fields(config_dict)}) does not match its weights: {path} "
            f"holds {key} of shape {shape}, the config gives {want}{more}; restore the {CONFIG_NAME} "
            "saved with these weights (or the weights saved with this config)"
        )


def _checked(
    load: Callable[..., tuple[PreTrainedModel, dict[str, Any]]],
    what: str,
    folder: Path,
    strict: bool,
    build: Callable[[], nn.Module],
    config_dict: dict[str, Any],
    **kwargs,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Loads with transformers' `from_pretrained` (`load`) from safetensors only, after checking the
    config against the weights' shapes (`build` makes the model from the config), with missing,
    unexpected and mismatched keys made errors under `strict`."""
    check_model_weights(folder)
    if kwargs.get("use_safetensors", True) is not True:
        raise GGRInputError(
            f"use_safetensors={kwargs['use_safetensors']!r}: ggr-hf loads safetensors only (a pickle can "
            "run code); leave use_safetensors unset"
        )
    kwargs["use_safetensors"] = True
    check_config_matches_weights(folder, build, config_dict)
    model, info = load(str(folder), output_loading_info=True, **kwargs)
    problems = {
        name: sorted(str(k) for k in info.get(name, ()))
        for name in ("missing_keys", "unexpected_keys", "mismatched_keys")
        if info.get(name)
    }
    if strict and problems:
        details = "; ".join(f"{name}: {_first_keys(keys)}" for name, keys in problems.items())
        raise GGRModelFolderError(
            f"{folder}: its weights do not match the model its config.json describes ({what}; {details}); "
            "restore the config.json saved with these weights. Nothing was loaded with random "
            "weights; pass strict=False to accept initialised values for missing keys."
        )
    if problems:
        logger.warning("Loaded %s with strict=False: %s", folder, problems)
    return model, info


def _first_keys(keys: list[str], shown: int = 3) -> str:
    """A few key names and how many more (a message names the keys, it does not dump them)."""
    more = f" (and {len(keys) - shown} more)" if len(keys) > shown else ""
    return f"{keys[:shown]}{more}"


def load_ggr(
    pretrained_model_name_or_path: str | os.PathLike | PreTrainedModel,
    *model_args,
    heads: str | os.PathLike | None = None,
    heads_revision: str | None = None,
    strict: bool = True,
    model_class: type[GGRForRecommendation] | None = None,
    item_ids: Sequence[Any] | None = None,
    **kwargs,
) -> GGRForRecommendation | tuple[GGRForRecommendation, dict[str, Any]]:
    """Loads a GGR model from a full model, a heads artifact, or a backbone plus heads.

    This is what `GGRForRecommendation.from_pretrained` does:

    ```python
    GGRForRecommendation.from_pretrained("user/ggr-ml1m")                  # a full model
    GGRForRecommendation.from_pretrained("user/ggr-ml1m-genre-heads")      # heads; fetches their base
    GGRForRecommendation.from_pretrained("user/hstu-ml1m", heads="user/ggr-ml1m-genre-heads")
    ```

    Args:
        pretrained_model_name_or_path: a folder or Hub repo id holding a full GGR model, a heads
            artifact or a backbone; or a model object (a backbone or a [`GGRForRecommendation`]) to
            put `heads` on.
        heads (`str` or `os.PathLike`, *optional*): a heads artifact (folder or repo id) to put on
            the model or backbone.
        heads_revision (`str`, *optional*): revision of the `heads` repo (`revision` is the base's).
        strict (`bool`, *optional*, defaults to `True`): missing or unexpected keys are errors.
            With `False` they are logged and missing ones keep their initial values.
        model_class (`type`, *optional*): the class to build (a subclass of `GGRForRecommendation`);
            defaults to the one `AutoModel` maps [`GGRConfig`] to.
        item_ids (`Sequence`, *optional*): original item ids of the backbone, checked against the
            heads' vocabulary hash when both are known.
        kwargs: `revision`, `token`, `cache_dir`, `local_files_only`, `force_download` choose what is
            fetched; `output_loading_info` returns `(model, info)`; everything else (e.g. `dtype`,
            `device_map`, `config`) goes to transformers' `from_pretrained`.

    Raises:
        `ValueError` ([`GGRModelFolderError`], [`GGRInputError`]): a heads/backbone mismatch, missing
            or unexpected keys under `strict`, a heads artifact without a base, a folder of an unknown
            model type, only pickled weights, a config whose shapes disagree with its weights.
        `GGRFileNotFoundError`: a local path that does not exist, a heads folder whose base is gone
            (both named), no `config.json`, or no weights.
        `OSError`: a truncated or corrupted safetensors file (named).

    Warns:
        [`GGRIncompleteRunWarning`]: the model of a training run that did not finish.
    """
    model_class = model_class or ggr_model_class()
    if model_args:
        raise TypeError(f"GGR models take no positional model arguments, got {model_args!r}")
    output_loading_info = bool(kwargs.pop("output_loading_info", False))
    hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}

    if isinstance(pretrained_model_name_or_path, nn.Module):
        if heads is None:
            raise GGRInputError("pass heads=... to put heads on a model object")
        if heads_revision is not None:
            hub_kwargs["revision"] = heads_revision
        model = load_heads_into(
            pretrained_model_name_or_path,
            heads,
            strict=strict,
            model_class=model_class,
            item_ids=item_ids,
            **hub_kwargs,
        )
        return (model, {}) if output_loading_info else model

    folder = resolve_repo(pretrained_model_name_or_path, **hub_kwargs)
    config_dict = read_config_dict(folder)
    model_type = config_dict.get("model_type")
    warn_if_incomplete(folder)

    if model_type == HEADS_MODEL_TYPE:
        if heads is not None:
            raise GGRInputError(
                f"{pretrained_model_name_or_path} is a heads artifact; pass the backbone first and the "
                f"heads as heads=..., e.g. from_pretrained(backbone, heads={str(pretrained_model_name_or_path)!r})"
            )
        heads_config = GGRHeadsConfig.from_dict(config_dict)
        base = heads_config.base_model_name_or_path
        if not base:
            raise GGRModelFolderError(
                f"the heads artifact {pretrained_model_name_or_path} records no base_model_name_or_path; "
                "pass the backbone explicitly: from_pretrained(backbone, heads=...)"
            )
        if not os.path.isabs(base) and (folder / base).is_dir():
            base = str(folder / base)  # a relative base path is relative to the heads folder
        base_hub = {k: v for k, v in hub_kwargs.items() if k != "revision"}
        if heads_config.base_model_revision:
            base_hub["revision"] = heads_config.base_model_revision
        try:
            base_folder = resolve_repo(base, **base_hub)
        except GGRFileNotFoundError as err:
            raise GGRFileNotFoundError(
                f"the heads folder {pretrained_model_name_or_path} needs its base model {base!r} "
                f"(base_model_name_or_path in {folder / CONFIG_NAME}), which cannot be found: {err}. "
                "Pass the backbone explicitly, from_pretrained(backbone, "
                f"heads={os.fspath(pretrained_model_name_or_path)!r}), or fix base_model_name_or_path"
            ) from err
        loaded = load_ggr(
            base_folder,
            heads=folder,
            strict=strict,
            model_class=model_class,
            item_ids=item_ids,
            output_loading_info=output_loading_info,
            **kwargs,
        )
        # The base as recorded (a Hub id stays an id), not the snapshot folder it resolved to.
        (loaded[0] if output_loading_info else loaded)._ggr_base_model_name_or_path = base
        return loaded

    if model_type == GGR_MODEL_TYPE:
        # transformers' own classmethod, not `model_class.from_pretrained`: that override is what
        # calls this function.
        load = PreTrainedModel.from_pretrained.__func__.__get__(model_class)
        config = kwargs.get("config") or model_class.config_class.from_dict(config_dict)
        model, info = _checked(
            load, model_class.__name__, folder, strict, lambda: model_class(config), config_dict, **kwargs
        )
    elif is_backbone_type(model_type):
        if heads is None:
            raise GGRInputError(
                f"{pretrained_model_name_or_path} is a {model_type!r} backbone, not a GGR model: pass "
                "heads=... to put heads on it, or load it with transformers.AutoModel.from_pretrained"
            )
        from transformers import AutoConfig, AutoModel

        kwargs.pop("config", None)  # a GGR config passed by an Auto class does not describe a backbone
        backbone_config = AutoConfig.from_pretrained(str(folder))
        model, info = _checked(
            AutoModel.from_pretrained,
            f"its {model_type!r} backbone",
            folder,
            strict,
            lambda: AutoModel.from_config(backbone_config),
            config_dict,
            **kwargs,
        )
    else:
        raise GGRModelFolderError(
            f"{folder / CONFIG_NAME} has model_type {model_type!r}; expected {GGR_MODEL_TYPE!r}, "
            f"{HEADS_MODEL_TYPE!r} or a backbone registered with transformers' AutoConfig"
        )

    if heads is not None:
        # The heads repo shares the token and cache but not the base's revision.
        heads_hub = {k: v for k, v in hub_kwargs.items() if k != "revision"}
        if heads_revision is not None:
            heads_hub["revision"] = heads_revision
        model = load_heads_into(
            model, heads, strict=strict, model_class=model_class, item_ids=item_ids, **heads_hub
        )
        model._ggr_base_model_name_or_path = os.fspath(pretrained_model_name_or_path)
    return (model, info) if output_loading_info else model


def _same_heads_structure(config: GGRConfig, target: GGRConfig) -> bool:
    return all(getattr(config, name) == getattr(target, name) for name in _STRUCTURAL_FIELDS)


def load_heads_into(
    model: PreTrainedModel,
    heads_path_or_id: str | os.PathLike,
    strict: bool = True,
    *,
    model_class: type[GGRForRecommendation] | None = None,
    item_ids: Sequence[Any] | None = None,
    **hub_kwargs,
) -> GGRForRecommendation:
    """Puts a heads artifact on a backbone or on a GGR model.

    - On a [`GGRForRecommendation`] with the same head structure (priors, composition, head bias),
      the head weights are loaded in place and its loss/inference settings become the heads'.
    - On a bare backbone (e.g. an `HSTUModel`), or a GGR model with other heads, a new
      `GGRForRecommendation` is built from the heads config and the backbone's config; it takes the
      backbone module itself (not a copy), then the head weights.

    Use the return value: it is `model` in the first case and a new model in the second.

    Args:
        model: a backbone or a [`GGRForRecommendation`].
        heads_path_or_id: a heads folder or Hub repo id.
        strict (`bool`, *optional*, defaults to `True`): missing or unexpected head keys are errors.
        model_class (`type`, *optional*): the class to build in the second case (see [`load_ggr`]).
        item_ids (`Sequence`, *optional*): the backbone's original item ids (see [`load_ggr`]).
        hub_kwargs: `revision`, `token`, `cache_dir`, `local_files_only`, `force_download`.

    Raises:
        `ValueError` on a backbone type, item vocabulary or hidden size mismatch (naming both values),
        on missing/unexpected keys under `strict`, and on shape mismatches; `OSError` on a corrupted
        weights file.
    """
    folder = resolve_repo(heads_path_or_id, **hub_kwargs)
    config_dict = read_config_dict(folder)
    if config_dict.get("model_type") != HEADS_MODEL_TYPE:
        raise GGRInputError(
            f"{heads_path_or_id} is not a heads artifact (model_type {config_dict.get('model_type')!r}, "
            f"expected {HEADS_MODEL_TYPE!r})"
        )
    heads_config = GGRHeadsConfig.from_dict(config_dict)

    if _is_ggr_model(model):
        backbone = model.backbone
        backbone_type = model.config.backbone_type
    elif isinstance(model, PreTrainedModel):
        backbone = model
        backbone_type = model.config.model_type
    else:
        raise TypeError(f"heads go on a GGRForRecommendation or a backbone model, got {type(model).__name__}")
    heads_config.check_backbone(
        backbone_type, int(backbone.config.num_items), int(backbone.config.hidden_size), item_ids=item_ids
    )
    if heads_config.backbone_embedding_sha256 is not None:
        current = embedding_sha256(backbone)
        if current is not None and current != heads_config.backbone_embedding_sha256:
            logger.warning(
                "The backbone's item embeddings differ from those the heads %s were saved with (another "
                "training run, or a cast to another dtype); scores will differ from the saved model's.",
                heads_path_or_id,
            )

    state = read_safetensors(folder / WEIGHTS_NAME)
    leaked = sorted(k for k in state if k.startswith(BACKBONE_PREFIX))
    if leaked:
        raise GGRModelFolderError(
            f"{folder / WEIGHTS_NAME} holds backbone keys {leaked[:5]}...; it is not a heads artifact"
        )

    target_config = heads_config.to_ggr_config(backbone_type, backbone.config)
    if _is_ggr_model(model) and _same_heads_structure(model.config, target_config):
        target = model
        for name in [*ggr_setting_names(), "head_init", "head_init_std"]:
            setattr(target.config, name, getattr(target_config, name))
    else:
        target = (model_class or ggr_model_class())(target_config)
        # Take the loaded backbone itself: the freshly built one is replaced, never mixed.
        target.backbone = backbone
        param = next(backbone.parameters(), None)
        if param is not None:
            target.to(device=param.device, dtype=param.dtype if param.is_floating_point() else None)
        target.config.backbone_config = backbone_fields(backbone.config)
        # Like `from_pretrained`, a model built here is in the backbone's mode (eval after loading).
        target.train(backbone.training)

    expected = {k: v for k, v in target.state_dict().items() if not k.startswith(BACKBONE_PREFIX)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise GGRModelFolderError(f"{folder / WEIGHTS_NAME}: shapes do not match the model: {mismatched}")
    if strict and (missing or unexpected):
        raise GGRModelFolderError(
            f"{folder / WEIGHTS_NAME} does not match the heads of its config: missing keys {missing}, "
            f"unexpected keys {unexpected}. Pass strict=False to keep initial values for missing keys."
        )
    if missing or unexpected:
        logger.warning("Loading heads with strict=False: missing %s, unexpected %s", missing, unexpected)
    target.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    target._ggr_heads_name_or_path = os.fspath(heads_path_or_id)
    if heads_config.base_model_name_or_path and not getattr(target, "_ggr_base_model_name_or_path", None):
        target._ggr_base_model_name_or_path = heads_config.base_model_name_or_path
    return target
