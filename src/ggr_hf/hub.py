"""Hub packaging of GGR models: the heads-only artifact, loading dispatch and `push_to_hub`.

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
- a backbone or a full model plus `heads=...`, composed into one model.

A path that is an existing folder is read as the repo; anything else is a Hub repo id, fetched with
`huggingface_hub.snapshot_download` (which also works offline from the local cache with
`local_files_only=True` or `HF_HUB_OFFLINE=1`).

Nothing loads silently with random weights: missing or unexpected keys are errors unless the caller
passes `strict=False`, and heads put on a backbone with another item vocabulary, hidden size or
backbone type raise a `ValueError` naming both values.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ggr_hf import __version__
from ggr_hf.configuration_ggr import BACKBONE_CONFIGS, GGRConfig
from ggr_hf.configuration_utils import _TRANSFORMERS_KEYS, backbone_fields
from ggr_hf.heads.layout import build_head_layout
from ggr_hf.priors.spec import normalize_prior_specs

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from ggr_hf.modeling_ggr import GGRForRecommendation

logger = logging.getLogger(__name__)

HEADS_MODEL_TYPE = "ggr_heads"
GGR_MODEL_TYPE = "ggr"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CARD_NAME = "README.md"
BACKBONE_PREFIX = "backbone."

# Weight files of any format; their presence is what "the repo has its weights" means.
_WEIGHT_FILES = (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, "pytorch_model.bin", "pytorch_model.bin.index.json")
# Hub kwargs that select *which files* to read; the rest of `from_pretrained`'s kwargs go to the model.
_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download")
# GGRConfig fields that decide the parameter layout of the heads: they must match for heads to load
# into an existing model in place.
_STRUCTURAL_FIELDS = ("priors", "composition", "head_bias")
# GGRConfig fields that describe the backbone, not the heads.
_BACKBONE_FIELDS = ("backbone_type", "backbone_config", "num_items")
# Head fields kept at the top level of the heads config (the rest go to `settings`).
_HEAD_FIELDS = ("priors", "composition", "head_init", "head_init_std", "head_bias")


def _ggr_setting_names() -> list[str]:
    """GGRConfig's loss and inference fields, read from its signature so that a field added later
    travels with the heads without a change here."""
    params = inspect.signature(GGRConfig.__init__).parameters
    return [
        name
        for name, p in params.items()
        if name != "self"
        and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        and name not in _BACKBONE_FIELDS
        and name not in _HEAD_FIELDS
    ]


def compute_vocab_fingerprint(
    backbone_type: str, num_items: int, hidden_size: int, item_vocab_sha256: str | None = None
) -> str:
    """A stable hash of what heads depend on: the backbone type, the item vocabulary and the width.

    Args:
        backbone_type (`str`): e.g. `"hstu"`.
        num_items (`int`): number of real items (the item table has `num_items + 1` rows).
        hidden_size (`int`): width of the backbone states the heads read.
        item_vocab_sha256 (`str`, *optional*): [`item_vocab_sha256`] of the original item ids, when known.

    Returns:
        `str`: `"sha256:<hex>"`.
    """
    payload = {
        "backbone_type": backbone_type,
        "num_items": int(num_items),
        "hidden_size": int(hidden_size),
        "item_vocab_sha256": item_vocab_sha256,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"sha256:{digest}"


def item_vocab_sha256(item_ids: Sequence[Any]) -> str:
    """Hash of the original item ids in internal-id order (`item_ids[i]` is internal id `i + 1`)."""
    return hashlib.sha256(json.dumps([str(i) for i in item_ids]).encode()).hexdigest()


def _embedding_sha256(backbone: nn.Module) -> str | None:
    """Hash of the backbone's input embedding table, or `None` where it has none we can read.

    Used only to warn: heads trained end to end with a backbone are meaningless on another training
    run of a backbone of the same shape.
    """
    try:
        emb = backbone.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if not isinstance(emb, nn.Embedding) or emb.weight.is_meta:
        return None
    weight = emb.weight.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()


class GGRHeadsConfig(PretrainedConfig):
    r"""
    Configuration of a heads-only GGR artifact: the adapter heads without the backbone they sit on
    (like Medusa heads or a PEFT adapter). Together with a backbone's own config it rebuilds the
    full [`GGRConfig`] (see [`GGRHeadsConfig.to_ggr_config`]).

    Args:
        base_model_name_or_path (`str`, *optional*):
            The backbone (or full GGR model) the heads load onto: a Hub repo id or a folder.
        base_model_revision (`str`, *optional*):
            Revision of `base_model_name_or_path` on the Hub.

        > What the heads were trained against

        backbone_type (`str`, *optional*, defaults to `"hstu"`):
            The backbone type (`GGRConfig.backbone_type`).
        num_items (`int`, *optional*, defaults to 1):
            Number of real items of the backbone's item vocabulary.
        hidden_size (`int`, *optional*, defaults to 1):
            Width of the backbone states the heads read.
        item_vocab_sha256 (`str`, *optional*):
            Hash of the original item ids, when they were given at save time.
        vocab_fingerprint (`str`, *optional*):
            [`compute_vocab_fingerprint`] of the four fields above; filled when not given and checked
            against them when given (a hand-edited config fails here).
        backbone_embedding_sha256 (`str`, *optional*):
            Hash of the backbone's item embedding table at save time; a different table on load
            only warns (a dtype cast changes it too).
        base_num_parameters (`int`, *optional*):
            Parameters of the backbone, for the model card's "% of backbone" column.

        > Heads

        priors (`list[dict]`, *optional*):
            The resolved prior specifications (`GGRConfig.priors`).
        composition (`str`, *optional*, defaults to `"multiplicative"`)
        head_init (`str`, *optional*, defaults to `"zero"`)
        head_init_std (`float`, *optional*, defaults to 0.02)
        head_bias (`bool`, *optional*, defaults to `False`)
        head_names (`list[str]`, *optional*):
            The heads' readable names, derived from the priors; checked against them when given.
        settings (`dict`, *optional*):
            The other `GGRConfig` fields (loss and inference settings) the heads were trained with.
        ggr_hf_version (`str`, *optional*):
            The ggr-hf version that wrote the artifact.
    """

    model_type = HEADS_MODEL_TYPE

    def __init__(
        self,
        base_model_name_or_path: str | None = None,
        base_model_revision: str | None = None,
        # What the heads were trained against
        backbone_type: str = "hstu",
        num_items: int = 1,
        hidden_size: int = 1,
        item_vocab_sha256: str | None = None,
        vocab_fingerprint: str | None = None,
        backbone_embedding_sha256: str | None = None,
        base_num_parameters: int | None = None,
        # Heads
        priors: list[dict[str, Any]] | None = None,
        composition: str = "multiplicative",
        head_init: str = "zero",
        head_init_std: float = 0.02,
        head_bias: bool = False,
        head_names: list[str] | None = None,
        settings: dict[str, Any] | None = None,
        ggr_hf_version: str | None = None,
        **kwargs,
    ):
        self.base_model_name_or_path = base_model_name_or_path
        self.base_model_revision = base_model_revision
        self.backbone_type = backbone_type
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.item_vocab_sha256 = item_vocab_sha256
        self.backbone_embedding_sha256 = backbone_embedding_sha256
        self.base_num_parameters = base_num_parameters
        self.priors = normalize_prior_specs(priors)
        self.composition = composition
        self.head_init = head_init
        self.head_init_std = head_init_std
        self.head_bias = head_bias
        self.settings = dict(settings or {})
        self.ggr_hf_version = ggr_hf_version or __version__
        unknown = sorted(k for k in kwargs if k not in _TRANSFORMERS_KEYS)
        if unknown:
            raise ValueError(
                f"GGRHeadsConfig got unknown field(s) {unknown} (written by ggr-hf {self.ggr_hf_version}, "
                f"installed {__version__}). Check the spelling, or upgrade ggr-hf if the artifact is newer."
            )
        super().__init__(**kwargs)

        expected_names = build_head_layout(self.priors, self.composition).names
        if head_names is not None and list(head_names) != list(expected_names):
            raise ValueError(
                f"GGRHeadsConfig.head_names {list(head_names)} do not match the heads its priors give "
                f"{list(expected_names)}; the config was edited or is corrupted"
            )
        self.head_names = list(expected_names)
        expected_fp = compute_vocab_fingerprint(
            self.backbone_type, self.num_items, self.hidden_size, self.item_vocab_sha256
        )
        if vocab_fingerprint is not None and vocab_fingerprint != expected_fp:
            raise ValueError(
                f"GGRHeadsConfig.vocab_fingerprint {vocab_fingerprint!r} does not match its own fields "
                f"(backbone_type={self.backbone_type!r}, num_items={self.num_items}, "
                f"hidden_size={self.hidden_size}): the config was edited or is corrupted"
            )
        self.vocab_fingerprint = expected_fp
        unknown_settings = sorted(set(self.settings) - set(_ggr_setting_names()))
        if unknown_settings:
            raise ValueError(
                f"GGRHeadsConfig.settings has unknown GGRConfig field(s) {unknown_settings} (written by "
                f"ggr-hf {self.ggr_hf_version}, installed {__version__}); upgrade ggr-hf"
            )

    def to_diff_dict(self) -> dict[str, Any]:
        # Every field of the heads config is written, not only those that differ from the defaults,
        # so that a later change of a default never changes what a saved artifact means.
        out = super().to_diff_dict()
        full = self.to_dict()
        for name in inspect.signature(type(self).__init__).parameters:
            if name in full:
                out[name] = full[name]
        return out

    @classmethod
    def from_model(
        cls,
        model: GGRForRecommendation,
        base_model_name_or_path: str | None = None,
        base_model_revision: str | None = None,
        item_ids: Sequence[Any] | None = None,
    ) -> GGRHeadsConfig:
        """The heads config of `model`.

        Args:
            model ([`GGRForRecommendation`]): the model whose heads are described.
            base_model_name_or_path (`str`, *optional*): the backbone the heads load onto.
            base_model_revision (`str`, *optional*)
            item_ids (`Sequence`, *optional*): original item ids in internal-id order; hashed into
                the fingerprint so that heads refuse a backbone with a reordered vocabulary.
        """
        config: GGRConfig = model.config
        if item_ids is not None and len(item_ids) != config.num_items:
            raise ValueError(
                f"item_ids has {len(item_ids)} ids but the model has num_items={config.num_items}"
            )
        backbone_params = sum(p.numel() for p in model.backbone.parameters())
        return cls(
            base_model_name_or_path=base_model_name_or_path,
            base_model_revision=base_model_revision,
            backbone_type=config.backbone_type,
            num_items=config.num_items,
            hidden_size=config.hidden_size,
            item_vocab_sha256=item_vocab_sha256(item_ids) if item_ids is not None else None,
            backbone_embedding_sha256=_embedding_sha256(model.backbone),
            base_num_parameters=int(backbone_params),
            priors=config.priors,
            composition=config.composition,
            head_init=config.head_init,
            head_init_std=config.head_init_std,
            head_bias=config.head_bias,
            settings={name: getattr(config, name) for name in _ggr_setting_names()},
        )

    def to_ggr_config(
        self, backbone_type: str, backbone_config: dict[str, Any] | PretrainedConfig
    ) -> GGRConfig:
        """The full [`GGRConfig`] of these heads on a backbone with the given config.

        Raises:
            `ValueError` when the backbone does not match what the heads were trained against.
        """
        if isinstance(backbone_config, PretrainedConfig):
            backbone_config = backbone_fields(backbone_config)
        self.check_backbone(
            backbone_type, int(backbone_config["num_items"]), int(backbone_config["hidden_size"])
        )
        return GGRConfig(
            backbone_type=backbone_type,
            backbone_config=backbone_config,
            num_items=int(backbone_config["num_items"]),
            priors=self.priors,
            composition=self.composition,
            head_init=self.head_init,
            head_init_std=self.head_init_std,
            head_bias=self.head_bias,
            **self.settings,
        )

    def check_backbone(
        self, backbone_type: str, num_items: int, hidden_size: int, item_ids: Sequence[Any] | None = None
    ) -> None:
        """Raises `ValueError` naming every field where the backbone differs from what the heads expect."""
        problems = []
        if backbone_type != self.backbone_type:
            problems.append(f"backbone type: heads {self.backbone_type!r}, backbone {backbone_type!r}")
        if int(num_items) != int(self.num_items):
            problems.append(f"num_items (item vocabulary): heads {self.num_items}, backbone {num_items}")
        if int(hidden_size) != int(self.hidden_size):
            problems.append(f"hidden_size: heads {self.hidden_size}, backbone {hidden_size}")
        if item_ids is not None and self.item_vocab_sha256 is not None:
            got = item_vocab_sha256(item_ids)
            if got != self.item_vocab_sha256:
                problems.append(
                    f"item vocabulary hash: heads {self.item_vocab_sha256[:12]}..., backbone {got[:12]}..."
                )
        if problems:
            raise ValueError(
                "these heads were trained against another backbone: " + "; ".join(problems) + ". "
                "Load them onto the backbone they were trained with"
                + (f" ({self.base_model_name_or_path})" if self.base_model_name_or_path else "")
                + "."
            )


# ---------------------------------------------------------------------------------------------- files


def _looks_like_local_path(name: str) -> bool:
    """Whether `name` can only be a local path (a Hub id is `name` or `namespace/name`)."""
    return name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or os.path.isfile(name)


def resolve_repo(
    path_or_id: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    allow_patterns: Iterable[str] | None = ("*.json", "*.safetensors", "*.md", "*.png"),
) -> Path:
    """The local folder of a model: `path_or_id` itself when it is a folder, else a Hub snapshot.

    Args:
        path_or_id (`str` or `os.PathLike`): a folder or a Hub repo id (`"namespace/name"`).
        revision, token, cache_dir, local_files_only, force_download: as in
            `huggingface_hub.snapshot_download`. With `local_files_only=True` (or `HF_HUB_OFFLINE=1`)
            nothing is downloaded and the local cache is used.
        allow_patterns: files fetched from the Hub. Pickled weights are not among them.

    Raises:
        `FileNotFoundError` for a local-looking path that is not a folder.
    """
    path = Path(os.path.expanduser(os.fspath(path_or_id)))
    if path.is_dir():
        return path
    name = os.fspath(path_or_id)
    if _looks_like_local_path(name):
        raise FileNotFoundError(f"{name} is not a folder (and not a Hub repo id)")
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            repo_id=name,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
            allow_patterns=list(allow_patterns) if allow_patterns is not None else None,
        )
    )


def read_config_dict(folder: Path) -> dict[str, Any]:
    """`folder/config.json` as a dict, with errors that name the file."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}; it is not a saved model or heads folder")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def check_safetensors(path: Path) -> list[str]:
    """Reads a safetensors header (not the tensors) and returns its keys.

    Raises:
        `FileNotFoundError` when the file is missing; `OSError` naming the file when it is truncated
        or not a safetensors file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the repo has no weights")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except (SafetensorError, OSError) as err:
        raise OSError(
            f"{path} is not a readable safetensors file ({err}); it is truncated or corrupted: "
            "download or save it again"
        ) from err
    return keys


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (never a pickle), with errors that name the file."""
    check_safetensors(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise OSError(
            f"{path} could not be read ({err}); it is corrupted: download or save it again"
        ) from err


def _check_model_weights(folder: Path) -> None:
    """A full model folder must hold weights, and its safetensors headers must parse."""
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise FileNotFoundError(
            f"{folder} has a {CONFIG_NAME} but no weights ({WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}); "
            "the upload or save is incomplete"
        )
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        for shard in shards:
            check_safetensors(folder / shard)
    elif (folder / WEIGHTS_NAME).is_file():
        check_safetensors(folder / WEIGHTS_NAME)


def commit_folder(staging: Path, target: Path) -> None:
    """Moves the files written in `staging` into `target` so that a crash never leaves a folder that
    looks complete.

    A new `target` is one atomic rename of the whole folder. An existing one loses its `config.json`
    first (from then on it reads as incomplete), gets every other file by rename, and gets the new
    `config.json` last: a folder with a `config.json` always holds a finished save. Files of
    `target` that `staging` does not hold are left alone. `staging` must be on the same file system
    (make it in `target.parent`).
    """
    target = Path(target)
    if not target.exists():
        os.replace(staging, target)
        return
    (target / CONFIG_NAME).unlink(missing_ok=True)
    for item in sorted(staging.iterdir()):
        if item.name == CONFIG_NAME:
            continue
        dest = target / item.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(item, dest)
    if (staging / CONFIG_NAME).exists():
        os.replace(staging / CONFIG_NAME, target / CONFIG_NAME)
    shutil.rmtree(staging, ignore_errors=True)


def _staging_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


# ---------------------------------------------------------------------------------------------- save


def heads_state_dict(model: GGRForRecommendation) -> dict[str, torch.Tensor]:
    """Every state-dict key of `model` that is not part of the backbone, as contiguous CPU tensors."""
    return {
        key: value.detach().to("cpu").contiguous().clone()
        for key, value in model.state_dict().items()
        if not key.startswith(BACKBONE_PREFIX)
    }


def _default_base(model: GGRForRecommendation) -> str | None:
    base = getattr(model, "_ggr_base_model_name_or_path", None)
    if base:
        return base
    name = getattr(model.config, "_name_or_path", "") or ""
    return name or None


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
    [`commit_folder`]); a `README.md` already there keeps its user-written notes.

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
            passed to [`ggr_hf.modelcard.build_model_card`] (`metrics`, `training_args`, ...).

    Returns:
        `Path`: the folder.
    """
    target = Path(save_directory)
    if (target / CONFIG_NAME).is_file():
        existing = read_config_dict(target).get("model_type")
        if existing != HEADS_MODEL_TYPE:
            raise ValueError(
                f"{target} holds a {existing!r} model, not a heads artifact; save the heads to another folder"
            )
    base = base_model_name_or_path or _default_base(model)
    if base is None:
        logger.warning(
            "Saving heads without base_model_name_or_path: loading them will need the backbone passed "
            "explicitly, e.g. GGRForRecommendation.from_pretrained(backbone, heads=...)."
        )
    config = GGRHeadsConfig.from_model(model, base, base_model_revision, item_ids)
    state = heads_state_dict(model)
    leaked = [k for k in state if k.startswith(BACKBONE_PREFIX)]
    if leaked:  # defensive: the filter above makes this impossible
        raise RuntimeError(f"backbone keys in the heads state dict: {leaked}")

    staging = _staging_dir(target)
    try:
        save_file(state, str(staging / WEIGHTS_NAME), metadata={"format": "pt", "ggr_hf_artifact": "heads"})
        config.to_json_file(str(staging / CONFIG_NAME))
        if model_card is not False:
            from ggr_hf.modelcard import build_model_card

            if (target / CARD_NAME).is_file():
                shutil.copyfile(target / CARD_NAME, staging / CARD_NAME)
            card_kwargs = dict(model_card) if isinstance(model_card, dict) else {}
            card_kwargs.setdefault("model_name", target.resolve().name)
            build_model_card(staging, **card_kwargs)
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
        model_card (`bool` or `dict`): as in [`save_heads`].
        save_kwargs: passed to `save_pretrained` (e.g. `max_shard_size`).
    """
    target = Path(save_directory)
    if (target / CONFIG_NAME).is_file() and read_config_dict(target).get("model_type") == HEADS_MODEL_TYPE:
        raise ValueError(f"{target} holds a heads artifact; save the full model to another folder")
    staging = _staging_dir(target)
    try:
        model.save_pretrained(staging, **save_kwargs)
        if model_card is not False and getattr(model.config, "model_type", None) == GGR_MODEL_TYPE:
            from ggr_hf.modelcard import build_model_card

            if (target / CARD_NAME).is_file():
                shutil.copyfile(target / CARD_NAME, staging / CARD_NAME)
            card_kwargs = dict(model_card) if isinstance(model_card, dict) else {}
            card_kwargs.setdefault("model_name", target.resolve().name)
            build_model_card(staging, **card_kwargs)
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


def _ggr_model_class() -> type[GGRForRecommendation]:
    from ggr_hf.modeling_ggr import GGRForRecommendation

    return GGRForRecommendation


def _backbone_type_of(model_type: str) -> str:
    """The `GGRConfig.backbone_type` whose config class has this `model_type`."""
    for name, config_class in BACKBONE_CONFIGS.items():
        if getattr(config_class, "model_type", None) == model_type:
            return name
    raise ValueError(
        f"model_type {model_type!r} is not a GGR backbone; known backbones: {sorted(BACKBONE_CONFIGS)}"
    )


def _backbone_model_class(backbone_type: str) -> type[PreTrainedModel]:
    from ggr_hf.configuration_ggr import ensure_backbone_registered
    from ggr_hf.modeling_ggr import BACKBONE_MODELS

    ensure_backbone_registered(backbone_type)
    if backbone_type not in BACKBONE_MODELS:
        raise ValueError(
            f"no backbone model registered for {backbone_type!r}; known: {sorted(BACKBONE_MODELS)}"
        )
    return BACKBONE_MODELS[backbone_type]


def _restore_layout_buffers(model: GGRForRecommendation) -> None:
    """Makes the state derived from the config alone usable after `from_pretrained`. Idempotent.

    transformers 5 builds the model on the meta device in `from_pretrained`: plain tensor attributes
    created in `__init__` (the head layout, the heads' index lists) stay on `meta`, and non-persistent
    buffers (`_head_*`) are materialised with `torch.empty_like`, i.e. uninitialised memory. The
    proper fix lives in `heads/layout.py`, `heads/adapter.py` (explicit `device="cpu"`) and
    `GGRPreTrainedModel._init_weights` (refill the buffers); this guard makes loading correct before
    and after that fix, and only rebuilds what is actually on `meta`.
    """
    layout = getattr(model, "layout", None)
    if layout is None:
        return
    heads = getattr(model, "heads", None)
    index_lists = ("_parent_index", "_value_index", "_leaf_node")
    on_meta = any(isinstance(v, torch.Tensor) and v.is_meta for v in vars(layout).values()) or any(
        t.is_meta for name in index_lists for t in getattr(heads, name, [])
    )
    if on_meta:
        with torch.device("cpu"):
            layout = build_head_layout(model.config.priors, model.config.composition)
            fresh = type(heads)(layout, model.config.hidden_size, bias=model.config.head_bias)
        model.layout = layout
        heads.layout = layout
        for name in index_lists:
            if hasattr(fresh, name):
                setattr(heads, name, getattr(fresh, name))
    for buffer_name, attr in (
        ("_head_item_group", "item_group"),
        ("_head_segment", "segment"),
        ("_head_event", "event"),
        ("_head_user_group", "user_group"),
    ):
        buf = getattr(model, buffer_name, None)
        value = getattr(layout, attr, None)
        if isinstance(buf, torch.Tensor) and isinstance(value, torch.Tensor):
            with torch.no_grad():
                buf.copy_(value.to(buf.device, buf.dtype))


def _from_pretrained_checked(
    model_class: type[PreTrainedModel],
    folder: Path,
    strict: bool,
    output_loading_info: bool = False,
    **kwargs,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """transformers' own `from_pretrained` (bypassing any override on `model_class`, which may be
    the one that calls this), with missing, unexpected and mismatched keys made errors under `strict`.
    """
    _check_model_weights(folder)
    model, info = PreTrainedModel.from_pretrained.__func__(  # the unoverridden classmethod
        model_class, str(folder), output_loading_info=True, **kwargs
    )
    problems = {
        name: sorted(str(k) for k in info.get(name, ()))
        for name in ("missing_keys", "unexpected_keys", "mismatched_keys")
        if info.get(name)
    }
    if strict and problems:
        details = "; ".join(f"{name}: {keys}" for name, keys in problems.items())
        raise ValueError(
            f"{folder} does not match {model_class.__name__} ({details}). Nothing was loaded with random "
            "weights; pass strict=False to accept initialised values for missing keys."
        )
    if problems:
        logger.warning("Loaded %s with strict=False: %s", folder, problems)
    _restore_layout_buffers(model)
    return model, info


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
        model_class (`type`, *optional*): the class to build (a subclass of `GGRForRecommendation`).
        item_ids (`Sequence`, *optional*): original item ids of the backbone, checked against the
            heads' vocabulary hash when both are known.
        kwargs: `revision`, `token`, `cache_dir`, `local_files_only`, `force_download` choose what is
            fetched; `output_loading_info` returns `(model, info)`; everything else (e.g. `dtype`,
            `device_map`, `config`) goes to transformers' `from_pretrained`.

    Raises:
        `ValueError`: a heads/backbone mismatch, missing or unexpected keys under `strict`, a heads
            artifact without a base, a folder of an unknown model type.
        `FileNotFoundError`: no `config.json`, or no weights.
        `OSError`: a truncated or corrupted safetensors file (named).
    """
    model_class = model_class or _ggr_model_class()
    if model_args:
        raise TypeError(f"GGR models take no positional model arguments, got {model_args!r}")
    output_loading_info = bool(kwargs.pop("output_loading_info", False))
    hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}

    if isinstance(pretrained_model_name_or_path, nn.Module):
        if heads is None:
            raise ValueError("pass heads=... to put heads on a model object")
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

    if model_type == HEADS_MODEL_TYPE:
        if heads is not None:
            raise ValueError(
                f"{pretrained_model_name_or_path} is a heads artifact; pass the backbone first and the "
                f"heads as heads=..., e.g. from_pretrained(backbone, heads={str(pretrained_model_name_or_path)!r})"
            )
        heads_config = GGRHeadsConfig.from_dict(config_dict)
        base = heads_config.base_model_name_or_path
        if not base:
            raise ValueError(
                f"the heads artifact {pretrained_model_name_or_path} records no base_model_name_or_path; "
                "pass the backbone explicitly: from_pretrained(backbone, heads=...)"
            )
        if not os.path.isabs(base) and (folder / base).is_dir():
            base = str(folder / base)  # a relative base path is relative to the heads folder
        base_hub = {k: v for k, v in hub_kwargs.items() if k != "revision"}
        if heads_config.base_model_revision:
            base_hub["revision"] = heads_config.base_model_revision
        return load_ggr(
            base,
            heads=folder,
            strict=strict,
            model_class=model_class,
            item_ids=item_ids,
            output_loading_info=output_loading_info,
            **base_hub,
            **kwargs,
        )

    if model_type == GGR_MODEL_TYPE:
        model, info = _from_pretrained_checked(model_class, folder, strict, **kwargs)
    elif model_type is not None and any(
        getattr(c, "model_type", None) == model_type for c in BACKBONE_CONFIGS.values()
    ):
        if heads is None:
            backbone_class = _backbone_model_class(_backbone_type_of(model_type))
            raise ValueError(
                f"{pretrained_model_name_or_path} is a {model_type!r} backbone, not a GGR model: pass "
                f"heads=... to put heads on it, or load it with {backbone_class.__name__}.from_pretrained"
            )
        kwargs.pop("config", None)  # a GGR config passed by an Auto class does not describe a backbone
        backbone_class = _backbone_model_class(_backbone_type_of(model_type))
        model, info = _from_pretrained_checked(backbone_class, folder, strict, **kwargs)
    else:
        raise ValueError(
            f"{folder / CONFIG_NAME} has model_type {model_type!r}; expected {GGR_MODEL_TYPE!r}, "
            f"{HEADS_MODEL_TYPE!r} or a backbone ({sorted(BACKBONE_CONFIGS)})"
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
        model_class (`type`, *optional*): the class to build in the second case.
        item_ids (`Sequence`, *optional*): the backbone's original item ids (see [`load_ggr`]).
        hub_kwargs: `revision`, `token`, `cache_dir`, `local_files_only`, `force_download`.

    Raises:
        `ValueError` on a backbone type, item vocabulary or hidden size mismatch (naming both values),
        on missing/unexpected keys under `strict`, and on shape mismatches; `OSError` on a corrupted
        weights file.
    """
    model_class = model_class or _ggr_model_class()
    ggr_class = _ggr_model_class()
    folder = resolve_repo(heads_path_or_id, **hub_kwargs)
    config_dict = read_config_dict(folder)
    if config_dict.get("model_type") != HEADS_MODEL_TYPE:
        raise ValueError(
            f"{heads_path_or_id} is not a heads artifact (model_type {config_dict.get('model_type')!r}, "
            f"expected {HEADS_MODEL_TYPE!r})"
        )
    heads_config = GGRHeadsConfig.from_dict(config_dict)

    if isinstance(model, ggr_class):
        backbone = model.backbone
        backbone_type = model.config.backbone_type
    elif isinstance(model, PreTrainedModel):
        backbone = model
        backbone_type = _backbone_type_of(model.config.model_type)
    else:
        raise TypeError(f"heads go on a GGRForRecommendation or a backbone model, got {type(model).__name__}")
    heads_config.check_backbone(
        backbone_type, int(backbone.config.num_items), int(backbone.config.hidden_size), item_ids=item_ids
    )
    if heads_config.backbone_embedding_sha256 is not None:
        current = _embedding_sha256(backbone)
        if current is not None and current != heads_config.backbone_embedding_sha256:
            logger.warning(
                "The backbone's item embeddings differ from those the heads %s were saved with (another "
                "training run, or a cast to another dtype); scores will differ from the saved model's.",
                heads_path_or_id,
            )

    state = read_safetensors(folder / WEIGHTS_NAME)
    leaked = sorted(k for k in state if k.startswith(BACKBONE_PREFIX))
    if leaked:
        raise ValueError(
            f"{folder / WEIGHTS_NAME} holds backbone keys {leaked[:5]}...; it is not a heads artifact"
        )

    target_config = heads_config.to_ggr_config(backbone_type, backbone.config)
    if isinstance(model, ggr_class) and _same_heads_structure(model.config, target_config):
        target = model
        for name in _ggr_setting_names() + ["head_init", "head_init_std"]:
            setattr(target.config, name, getattr(target_config, name))
    else:
        target = model_class(target_config)
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
        raise ValueError(f"{folder / WEIGHTS_NAME}: shapes do not match the model: {mismatched}")
    if strict and (missing or unexpected):
        raise ValueError(
            f"{folder / WEIGHTS_NAME} does not match the heads of its config: missing keys {missing}, "
            f"unexpected keys {unexpected}. Pass strict=False to keep initial values for missing keys."
        )
    if missing or unexpected:
        logger.warning("Loading heads with strict=False: missing %s, unexpected %s", missing, unexpected)
    target.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    _restore_layout_buffers(target)
    target._ggr_heads_name_or_path = os.fspath(heads_path_or_id)
    if heads_config.base_model_name_or_path and not getattr(target, "_ggr_base_model_name_or_path", None):
        target._ggr_base_model_name_or_path = heads_config.base_model_name_or_path
    return target


# ---------------------------------------------------------------------------------------------- push


def _fetch_remote_card(api: Any, repo_id: str, revision: str | None, token: str | None) -> Path | None:
    """The repo's current `README.md`, so that pushing updates the card instead of replacing it."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(api.hf_hub_download(repo_id=repo_id, filename=CARD_NAME, revision=revision, token=token))
    except (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    ) as err:
        logger.debug("no card on the Hub for %s yet (%s)", repo_id, err)
    except (HfHubHTTPError, OSError) as err:
        logger.warning("could not read the current card of %s (%s); writing a new one", repo_id, err)
    return None


def _model_files(folder: Path) -> list[Path]:
    """The files of a full model folder that make the model: its config and its weights (the index
    and the shards it names, or `model.safetensors`), not logs, checkpoints or optimiser states."""
    files = [folder / name for name in (CONFIG_NAME, "generation_config.json") if (folder / name).is_file()]
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        files += [index, *(folder / shard for shard in shards)]
    else:
        files.append(folder / WEIGHTS_NAME)
    return files


def push_model_to_hub(
    model: GGRForRecommendation | str | os.PathLike,
    repo_id: str,
    heads_only: bool = False,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    card_data: dict[str, Any] | None = None,
    *,
    commit_description: str | None = None,
    create_pr: bool = False,
    base_model_name_or_path: str | None = None,
    max_shard_size: str | int | None = None,
    tags: list[str] | None = None,
) -> CommitInfo:
    """Uploads a full GGR model or its heads only, with an up-to-date model card, in one commit.

    Uses `HfApi.create_repo` (existing repos are fine), `HfApi.create_branch` for a `revision` that
    is not `main`, and one `HfApi.create_commit` of `CommitOperationAdd` operations. The card keeps
    the user-written notes of the folder's `README.md`, or of the repo's current card.

    Args:
        model: a [`GGRForRecommendation`], or a saved folder (full model or heads artifact). A
            folder's model files are uploaded as they are (after checking their headers); its
            evaluation results, training arguments and plot feed the card.
        repo_id (`str`): `"namespace/name"`.
        heads_only (`bool`): upload the heads artifact (see [`save_heads`]) instead of the full model.
        private, token, revision, commit_message, commit_description, create_pr: as in `HfApi`.
        card_data (`dict`, *optional*): keyword arguments of
            [`ggr_hf.modelcard.render_model_card`] (`metrics`, `training_args`, `dataset_name`,
            `plot_path`, `base_model`, ...).
        base_model_name_or_path (`str`, *optional*): heads only: the Hub id of the backbone they load
            onto (a local path would be useless to others).
        max_shard_size: passed to `save_pretrained` for a full model object.
        tags (`list[str]`, *optional*): extra tags for the card's metadata.

    Returns:
        `huggingface_hub.CommitInfo`.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from ggr_hf.modelcard import discover_card_inputs, render_model_card

    api = HfApi(token=token)
    card_kwargs: dict[str, Any] = dict(card_data or {})
    card_kwargs.setdefault("repo_id", repo_id)
    if tags:
        card_kwargs["tags"] = [*card_kwargs.get("tags", []), *tags]
    source_dir: Path | None = None
    model_object: GGRForRecommendation | None = None
    if isinstance(model, (str, os.PathLike)):
        source_dir = Path(model)
        if not source_dir.is_dir():
            raise FileNotFoundError(f"{source_dir} is not a folder")
        for key, value in discover_card_inputs(source_dir).items():
            card_kwargs.setdefault(key, value)
        source_type = read_config_dict(source_dir).get("model_type")
        if source_type == HEADS_MODEL_TYPE:
            heads_only = True
        elif source_type != GGR_MODEL_TYPE:
            raise ValueError(f"{source_dir} holds a {source_type!r} model; push a GGR model or heads folder")
        elif heads_only:
            model_object = load_ggr(source_dir)
            source_dir = None
    else:
        model_object = model

    with tempfile.TemporaryDirectory(prefix="ggr-hf-push-") as tmp:
        staging = Path(tmp) / "repo"
        files: dict[str, Path] = {}
        if source_dir is not None:
            card_dir = source_dir
            if heads_only:
                config = GGRHeadsConfig.from_dict(read_config_dict(source_dir))  # validates it
                check_safetensors(source_dir / WEIGHTS_NAME)
                files[WEIGHTS_NAME] = source_dir / WEIGHTS_NAME
                files[CONFIG_NAME] = source_dir / CONFIG_NAME
                if base_model_name_or_path:
                    config.base_model_name_or_path = base_model_name_or_path
                    staging.mkdir()
                    config.to_json_file(str(staging / CONFIG_NAME))
                    files[CONFIG_NAME] = staging / CONFIG_NAME
            else:
                _check_model_weights(source_dir)
                for path in _model_files(source_dir):
                    files[path.relative_to(source_dir).as_posix()] = path
        else:
            assert model_object is not None
            if heads_only:
                base = base_model_name_or_path or _default_base(model_object)
                save_heads(model_object, staging, base_model_name_or_path=base, model_card=False)
            else:
                save_kwargs = {"max_shard_size": max_shard_size} if max_shard_size is not None else {}
                model_object.save_pretrained(staging, **save_kwargs)
            card_dir = staging
            for path in sorted(p for p in staging.rglob("*") if p.is_file()):
                files[path.relative_to(staging).as_posix()] = path

        if heads_only:
            base = json.loads(files[CONFIG_NAME].read_text()).get("base_model_name_or_path")
            if base and (_looks_like_local_path(base) or Path(base).exists()):
                logger.warning(
                    "The heads' base_model_name_or_path %r is a local path; pass base_model_name_or_path=<hub "
                    "id> so that others can load them.",
                    base,
                )

        existing = source_dir / CARD_NAME if source_dir is not None else None
        if existing is None or not existing.is_file():
            existing = _fetch_remote_card(api, repo_id, revision, token)
        config_override = files[CONFIG_NAME] if heads_only else None
        card = render_model_card(card_dir, existing=existing, config_path=config_override, **card_kwargs)
        card_path = Path(tmp) / CARD_NAME
        card_path.write_text(str(card))
        files[CARD_NAME] = card_path
        plot = card_kwargs.get("plot_path")
        plot_name = card.data.to_dict().get("ggr_hf", {}).get("plot")
        if plot and plot_name and Path(plot).is_file():
            files[plot_name] = Path(plot)

        api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None and revision != "main":
            api.create_branch(repo_id=repo_id, branch=revision, exist_ok=True, repo_type="model")
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
            for name, path in sorted(files.items())
        ]
        what = "GGR heads" if heads_only else "GGR model"
        return api.create_commit(
            repo_id=repo_id,
            operations=operations,
            commit_message=commit_message or f"Upload {what} with ggr-hf {__version__}",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
            repo_type="model",
        )
