"""`RecommenderConfig`: what the configs of ggr-hf's recommendation models share.

GGR and the baselines are composite models: a backbone (HSTU, SASRec, HLLM, ... found through
`AutoConfig` under `backbone_type`) plus the model's own layers. This base class holds the backbone
sub-config (saved as a dict of every backbone field, with `num_items` filled in), the fields the
scoring contract reads (`num_items`, `hidden_size`, `max_seq_len`, `horizon`, `fusion`,
`exclude_history`), and the field checks each subclass's `validate_fields` uses, so that every
model's config fails the same way on a bad value: a `GGRConfigError` naming `Class.field` and the value.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from ggr_hf.configuration_utils import backbone_fields
from ggr_hf.errors import GGRConfigError
from ggr_hf.models import backbone_config_class


class RecommenderConfig(PretrainedConfig):
    """Base class of the configs of ggr-hf's recommendation models (see the module docstring).

    Subclasses call [`~RecommenderConfig.set_backbone`] in their `__init__` before
    `PretrainedConfig.__init__`, and set `fusion` and `exclude_history`.
    """

    def set_backbone(self, backbone_type: str, backbone_config: Any, num_items: int) -> None:
        """Resolves and checks the backbone sub-config.

        Args:
            backbone_type (`str`): the backbone's `model_type` in `AutoConfig`.
            backbone_config (`dict` or `PretrainedConfig`, *optional*): the backbone's fields.
            num_items (`int`): written into the backbone config.
        """
        name = type(self).__name__
        if isinstance(backbone_config, PretrainedConfig):
            if backbone_type != backbone_config.model_type and backbone_type != "hstu":
                raise GGRConfigError(
                    f"{name}.backbone_type {backbone_type!r} disagrees with the backbone_config's "
                    f"model_type {backbone_config.model_type!r}"
                )
            # A config object names its own type; "hstu" is only the default when none is given.
            backbone_type = backbone_config.model_type
        config_cls = backbone_config_class(backbone_type)
        self.backbone_type = backbone_type
        if isinstance(backbone_config, PretrainedConfig):
            backbone_config = backbone_config.to_dict()
        if backbone_config is not None and not isinstance(backbone_config, dict):
            raise GGRConfigError(
                f"{name}.backbone_config must be a dict of the backbone's fields (or a backbone "
                f"config object), got {backbone_config!r} ({type(backbone_config).__name__})"
            )
        backbone_config = dict(backbone_config or {})
        for key in ("model_type", "transformers_version", "architectures"):
            backbone_config.pop(key, None)
        backbone_config["num_items"] = num_items
        # Built here so that a bad backbone field fails now, naming the field.
        self._backbone = config_cls(**backbone_config)
        # Every backbone field is saved, not only the ones given, so a later change of a default
        # never changes a saved model.
        self.backbone_config = backbone_fields(self._backbone)
        self.num_items = num_items

    def get_backbone_config(self) -> PretrainedConfig:
        """The backbone's configuration object (an `HSTUConfig` for `backbone_type="hstu"`)."""
        return backbone_config_class(self.backbone_type)(**self.backbone_config)

    @property
    def hidden_size(self) -> int:
        return int(self._backbone.hidden_size)

    @property
    def max_seq_len(self) -> int:
        return int(self._backbone.max_seq_len)

    @property
    def horizon(self) -> int:
        """Number of future items each position is trained to predict; 1 for next-item models."""
        return 1

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("_backbone", None)
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        out = super().to_diff_dict()
        out.pop("_backbone", None)
        return out

    # ------------------------------------------------------------------ field checks

    def _fail(self, name: str, expected: str) -> GGRConfigError:
        return GGRConfigError(f"{type(self).__name__}.{name} must be {expected}, got {getattr(self, name)!r}")

    def check_choice(self, name: str, options: tuple[str, ...]) -> None:
        """`name` is one of `options`."""
        if getattr(self, name) not in options:
            raise self._fail(name, f"one of {list(options)}")

    def check_bool(self, *names: str) -> None:
        """Each field is `True` or `False`."""
        for name in names:
            if not isinstance(getattr(self, name), bool):
                raise self._fail(name, "true or false")

    def check_number(
        self, name: str, low: float | None = None, high: float | None = None, *, low_open: bool = False
    ) -> None:
        """A finite real number in `[low, high]` (`(low, high]` with `low_open`)."""
        value = getattr(self, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise self._fail(name, "a number")
        if (low is not None and (value <= low if low_open else value < low)) or (
            high is not None and value > high
        ):
            bounds = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            raise self._fail(name, f"in {bounds}")

    def check_int(self, name: str, low: int = 1) -> None:
        """An integer `>= low`."""
        value = getattr(self, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise self._fail(name, f"an integer >= {low}")
