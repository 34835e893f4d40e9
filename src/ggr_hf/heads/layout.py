"""Which heads a set of priors gives, and what each head is compatible with.

A head is identified by its *path*: for each prior it constrains, the index of the prior's value
("short-term / Comedy" is `((time, 0), (genres, 5))`). The layout is derived from the config alone,
so a saved model rebuilds exactly the same heads.

- multiplicative / hierarchical: one head per combination of values (the cartesian product); the
  hierarchical composition computes the same leaves through a tree of shared blocks.
- additive: one head per value of each prior; a head constrains only its own prior.
- no priors: a single head named "backbone" that is the identity (plain HSTU).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from ggr_hf.priors.spec import ITEM_RESTRICTING_TYPES


@dataclass
class HeadLayout:
    """The heads of a GGR model and their compatibility constraints.

    Attributes:
        priors: the resolved prior specifications, in config order.
        paths: per head, a tuple of `(prior_index, value_index)` pairs.
        names: per head, a readable name such as `"short-term / Comedy"`.
        item_group: `LongTensor [num_heads, num_item_priors]`, the value index of each item-restricting
            prior (-1 where the head does not constrain it).
        segment: `LongTensor [num_heads]`, the temporal segment (-1: every offset).
        event: `LongTensor [num_heads]`, the event type (-1: every event).
        user_group: `LongTensor [num_heads, num_user_priors]`, (-1: every user).
    """

    priors: list[dict]
    composition: str
    paths: list[tuple[tuple[int, int], ...]]
    names: list[str]
    item_prior_indices: list[int] = field(default_factory=list)
    user_prior_indices: list[int] = field(default_factory=list)
    temporal_index: int | None = None
    event_index: int | None = None
    item_group: torch.Tensor | None = None
    segment: torch.Tensor | None = None
    event: torch.Tensor | None = None
    user_group: torch.Tensor | None = None

    @property
    def num_heads(self) -> int:
        return len(self.paths)

    @property
    def is_backbone_only(self) -> bool:
        return not self.priors

    def segment_of_offset(self, horizon: int) -> torch.Tensor:
        """`LongTensor [horizon]`: the segment that learns offset p (0-based: p=0 is the next item)."""
        if self.temporal_index is None:
            return torch.zeros(horizon, dtype=torch.long)
        spec = self.priors[self.temporal_index]
        width = spec["horizon"] // spec["segments"]
        return torch.arange(horizon) // width


def build_head_layout(priors: list[dict], composition: str) -> HeadLayout:
    """Derives the heads from resolved priors.

    Args:
        priors (`list[dict]`): resolved prior specs (each with `values`).
        composition (`str`): `"multiplicative"`, `"hierarchical"` or `"additive"`.
    """
    for i, p in enumerate(priors):
        if not p.get("values"):
            raise ValueError(
                f"GGRConfig.priors[{i}] ('{p.get('name')}') has no values; build the priors from data "
                "with ggr_hf.priors.build_priors before building the model"
            )
    if not priors:
        paths: list[tuple[tuple[int, int], ...]] = [()]
    elif composition == "additive":
        paths = [((i, v),) for i, p in enumerate(priors) for v in range(len(p["values"]))]
    else:
        ranges = [range(len(p["values"])) for p in priors]
        paths = [tuple(enumerate(combo)) for combo in itertools.product(*ranges)]

    names = [" / ".join(priors[i]["values"][v] for i, v in path) or "backbone" for path in paths]
    item_idx = [i for i, p in enumerate(priors) if p["type"] in ITEM_RESTRICTING_TYPES]
    user_idx = [i for i, p in enumerate(priors) if p["type"] == "user"]
    temporal = next((i for i, p in enumerate(priors) if p["type"] == "temporal"), None)
    event = next((i for i, p in enumerate(priors) if p["type"] == "event"), None)

    num_heads = len(paths)
    item_group = torch.full((num_heads, len(item_idx)), -1, dtype=torch.long, device="cpu")
    user_group = torch.full((num_heads, len(user_idx)), -1, dtype=torch.long, device="cpu")
    segment = torch.full((num_heads,), -1, dtype=torch.long, device="cpu")
    event_t = torch.full((num_heads,), -1, dtype=torch.long, device="cpu")
    for h, path in enumerate(paths):
        for i, v in path:
            if i in item_idx:
                item_group[h, item_idx.index(i)] = v
            elif i in user_idx:
                user_group[h, user_idx.index(i)] = v
            elif i == temporal:
                segment[h] = v
            elif i == event:
                event_t[h] = v
    return HeadLayout(
        priors=priors,
        composition=composition,
        paths=paths,
        names=names,
        item_prior_indices=item_idx,
        user_prior_indices=user_idx,
        temporal_index=temporal,
        event_index=event,
        item_group=item_group,
        segment=segment,
        event=event_t,
        user_group=user_group,
    )
