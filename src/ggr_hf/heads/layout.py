"""Which heads a set of priors gives, and what each head is compatible with.

A head is identified by its *path*: for each prior it constrains, the index of the prior's value
("short-term / Comedy" is `((time, 0), (genres, 5))`). The layout is derived from the config alone,
so a saved model rebuilds exactly the same heads.

- multiplicative / hierarchical: one head per combination of values (the cartesian product); the
  hierarchical composition computes the same leaves through a tree of shared blocks.
- additive: one head per value of each prior; a head constrains only its own prior.
- no priors: a single head named "backbone" that is the identity (plain HSTU).

What a head's constraint on a prior *means* (which items, offsets, events or users) is the prior
plug-in's business (`ggr_hf.priors`); the layout only records, per head and prior, the value index
(`head_values`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ggr_hf.errors import GGRConfigError
from ggr_hf.priors import Prior, PriorContext, make_prior


@dataclass
class HeadLayout:
    """The heads of a GGR model.

    Attributes:
        priors: the resolved prior specifications, in config order.
        composition: `"multiplicative"`, `"hierarchical"` or `"additive"`.
        paths: per head, a tuple of `(prior_index, value_index)` pairs.
        names: per head, a readable name such as `"short-term / Comedy"`.
        plugins: the prior plug-in objects, in config order.
        head_values: `torch.LongTensor [num_heads, num_priors]` (CPU): each head's value index in each
            prior, -1 where the head does not constrain it.
    """

    priors: list[dict]
    composition: str
    paths: list[tuple[tuple[int, int], ...]]
    names: list[str]
    plugins: list[Prior]
    head_values: torch.Tensor

    @property
    def num_heads(self) -> int:
        return len(self.paths)

    @property
    def is_backbone_only(self) -> bool:
        return not self.priors

    @property
    def item_prior_indices(self) -> list[int]:
        """Indices of the priors whose heads score only their group's items (with a membership table)."""
        return [i for i, p in enumerate(self.plugins) if p.restricts_items]

    @property
    def user_prior_indices(self) -> list[int]:
        """Indices of the per-user priors; their columns in `user_groups` follow this order."""
        return [i for i, p in enumerate(self.plugins) if p.per_user]

    def context(self, **kwargs) -> PriorContext:
        """A `PriorContext` for this layout (user-group columns filled in)."""
        columns = {i: j for j, i in enumerate(self.user_prior_indices)}
        return PriorContext(user_columns=columns, **kwargs)

    def pair_mask(self, context: PriorContext, head_values: torch.Tensor) -> torch.Tensor | None:
        """The AND of every prior's training-pair constraint (`None`: no constraint).

        Args:
            head_values (`torch.LongTensor` of shape `(num_heads, num_priors)`): `self.head_values`
                on the batch's device.

        Returns:
            `torch.BoolTensor` broadcastable to `(batch_size, seq_len, horizon, num_heads)`.
        """
        return self._all_priors(lambda prior, values: prior.pair_mask(values, context), head_values)

    def active_heads(self, context: PriorContext, head_values: torch.Tensor) -> torch.Tensor | None:
        """The AND of every prior's inference-time head selection: `(batch_size, num_heads)` or `None`."""
        return self._all_priors(lambda prior, values: prior.active_heads(values, context), head_values)

    def _all_priors(
        self, mask_of: Callable[[Prior, torch.Tensor], torch.Tensor | None], head_values: torch.Tensor
    ) -> torch.Tensor | None:
        masks = [mask_of(prior, head_values[:, i]) for i, prior in enumerate(self.plugins)]
        masks = [m for m in masks if m is not None]
        return functools.reduce(torch.logical_and, masks) if masks else None


def build_head_layout(priors: list[dict], composition: str) -> HeadLayout:
    """Derives the heads from resolved priors.

    Args:
        priors (`list[dict]`): resolved prior specs (each with `values`).
        composition (`str`): `"multiplicative"`, `"hierarchical"` or `"additive"`.
    """
    for i, p in enumerate(priors):
        if not p.get("values"):
            raise GGRConfigError(
                f"GGRConfig.priors[{i}] ('{p.get('name')}') has no values; build the priors from data "
                "with ggr_hf.priors.builder.build_priors before building the model"
            )
    if not priors:
        paths: list[tuple[tuple[int, int], ...]] = [()]
    elif composition == "additive":
        paths = [((i, v),) for i, p in enumerate(priors) for v in range(len(p["values"]))]
    else:
        ranges = [range(len(p["values"])) for p in priors]
        paths = [tuple(enumerate(combo)) for combo in itertools.product(*ranges)]

    names = [" / ".join(priors[i]["values"][v] for i, v in path) or "backbone" for path in paths]
    # Explicitly on the CPU: a model built under a meta-device context (from_pretrained) must still
    # get real layout tensors; they are data derived from the config, never weights.
    head_values = torch.full((len(paths), len(priors)), -1, dtype=torch.long, device="cpu")
    for h, path in enumerate(paths):
        for i, v in path:
            head_values[h, i] = v
    return HeadLayout(
        priors=priors,
        composition=composition,
        paths=paths,
        names=names,
        plugins=[make_prior(p, i) for i, p in enumerate(priors)],
        head_values=head_values,
    )
