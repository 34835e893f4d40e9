"""`GGRHeadsConfig`: the configuration of a heads-only GGR artifact, beside [`GGRConfig`]."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from transformers import PretrainedConfig

from ggr_hf import __version__
from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.configuration_utils import backbone_fields, reject_unknown_keys
from ggr_hf.errors import GGRConfigError, GGRInputError, GGRModelFolderError
from ggr_hf.heads.layout import build_head_layout
from ggr_hf.priors.spec import normalize_prior_specs

if TYPE_CHECKING:
    from torch import nn

    from ggr_hf.modeling_ggr import GGRForRecommendation

HEADS_MODEL_TYPE = "ggr_heads"

# GGRConfig fields that describe the backbone, not the heads.
_BACKBONE_FIELDS = ("backbone_type", "backbone_config", "num_items")
# Head fields kept at the top level of the heads config (the rest go to `settings`).
_HEAD_FIELDS = ("priors", "composition", "head_init", "head_init_std", "head_bias")


def ggr_setting_names() -> list[str]:
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


def embedding_sha256(backbone: nn.Module) -> str | None:
    """Hash of the backbone's input embedding table (`[num_items + 1, hidden_size]`), or `None` where
    it has none we can read.

    Used only to warn: heads trained end to end with a backbone are meaningless on another training
    run of a backbone of the same shape.
    """
    import torch

    try:
        emb = backbone.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if not isinstance(emb, torch.nn.Embedding) or emb.weight.is_meta:
        return None
    weight = emb.weight.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()


class GGRHeadsConfig(PretrainedConfig):
    r"""
    Configuration of a heads-only GGR artifact: the adapter heads without the backbone they sit on
    (like Medusa heads or a PEFT adapter). Together with a backbone's own config it rebuilds the
    full [`GGRConfig`] (see [`GGRHeadsConfig.to_ggr_config`]).

    Every field is written to `config.json`, not only those that differ from the defaults (transformers
    5 keeps every field a subclass adds), so a later change of a default never changes what a saved
    artifact means.

    Args:
        base_model_name_or_path (`str`, *optional*):
            The backbone (or full GGR model) the heads load onto: a Hub repo id or a folder.
        base_model_revision (`str`, *optional*):
            Revision of `base_model_name_or_path` on the Hub.

        > What the heads were trained against

        backbone_type (`str`, *optional*, defaults to `"hstu"`):
            The backbone's `model_type` (`GGRConfig.backbone_type`).
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
        # The writer's version in the name: an unknown field most often means a newer artifact.
        reject_unknown_keys(f"GGRHeadsConfig (written by ggr-hf {self.ggr_hf_version})", kwargs)
        super().__init__(**kwargs)

        expected_names = build_head_layout(self.priors, self.composition).names
        if head_names is not None and list(head_names) != list(expected_names):
            raise GGRConfigError(
                f"GGRHeadsConfig.head_names {list(head_names)} do not match the heads its priors give "
                f"{list(expected_names)}; the config was edited or is corrupted"
            )
        self.head_names = list(expected_names)
        expected_fp = compute_vocab_fingerprint(
            self.backbone_type, self.num_items, self.hidden_size, self.item_vocab_sha256
        )
        if vocab_fingerprint is not None and vocab_fingerprint != expected_fp:
            raise GGRConfigError(
                f"GGRHeadsConfig.vocab_fingerprint {vocab_fingerprint!r} does not match its own fields "
                f"(backbone_type={self.backbone_type!r}, num_items={self.num_items}, "
                f"hidden_size={self.hidden_size}): the config was edited or is corrupted"
            )
        self.vocab_fingerprint = expected_fp
        unknown_settings = sorted(set(self.settings) - set(ggr_setting_names()))
        if unknown_settings:
            raise GGRConfigError(
                f"GGRHeadsConfig.settings has unknown GGRConfig field(s) {unknown_settings} (written by "
                f"ggr-hf {self.ggr_hf_version}, installed {__version__}); upgrade ggr-hf"
            )

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
            raise GGRInputError(
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
            backbone_embedding_sha256=embedding_sha256(model.backbone),
            base_num_parameters=int(backbone_params),
            priors=config.priors,
            composition=config.composition,
            head_init=config.head_init,
            head_init_std=config.head_init_std,
            head_bias=config.head_bias,
            settings={name: getattr(config, name) for name in ggr_setting_names()},
        )

    def to_ggr_config(
        self, backbone_type: str, backbone_config: dict[str, Any] | PretrainedConfig
    ) -> GGRConfig:
        """The full [`GGRConfig`] of these heads on a backbone with the given config.

        Raises:
            `GGRModelFolderError` (a `ValueError`) when the backbone does not match what the heads were trained against.
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
        """Raises `GGRModelFolderError` (a `ValueError`) naming every field where the backbone differs from what the heads expect."""
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
            raise GGRModelFolderError(
                "these heads were trained against another backbone: " + "; ".join(problems) + ". "
                "Load them onto the backbone they were trained with"
                + (f" ({self.base_model_name_or_path})" if self.base_model_name_or_path else "")
                + "."
            )
