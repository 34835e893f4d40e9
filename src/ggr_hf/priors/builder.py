"""Resolves a model's priors against a data set: group names, item membership, user groups.

`build_priors` hands each specification to its plug-in (`ggr_hf.priors.base`) with the item and
user tables and the *training* histories (priors learnt from interactions read nothing from
validation or test), and collects what the model needs (`apply_priors`) and what the experiment
needs (user groups for the batches, cluster columns for the item table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ggr_hf.errors import GGRConfigError
from ggr_hf.priors.base import as_value_list, make_prior
from ggr_hf.priors.spec import normalize_prior_specs

if TYPE_CHECKING:
    from ggr_hf.data.schema import RecDataBundle
    from ggr_hf.data.splits import SplitData


@dataclass
class BuiltPriors:
    """Resolved priors and their data.

    Attributes:
        specs: resolved specifications (with `values`), for `GGRConfig(priors=...)`.
        item_membership: prior name -> `BoolTensor [num_items + 1, num_groups]` (item-restricting priors).
        user_groups: `[num_users, num_user_priors]` group indices (per-user priors in config order).
        item_clusters: prior name -> group index per item `[num_items + 1]` (-1 for padding), for
            single-label priors learnt from data (graph clusters).
        notes: counts of fallbacks, by prior.
    """

    specs: list[dict]
    item_membership: dict[str, torch.Tensor] = field(default_factory=dict)
    user_groups: np.ndarray | None = None
    item_clusters: dict[str, np.ndarray] = field(default_factory=dict)
    notes: dict[str, dict[str, int]] = field(default_factory=dict)


def build_priors(bundle: RecDataBundle, specs: list[dict], split: SplitData | None = None) -> BuiltPriors:
    """Resolves prior specifications against a data set.

    Args:
        bundle (`RecDataBundle`): the data set (item table, user table, event names).
        specs (`list[dict]`): prior specifications (see `ggr_hf.priors.spec`).
        split (`SplitData`, *optional*): needed by priors learnt from the training histories.

    Returns:
        `BuiltPriors`.
    """
    built = BuiltPriors(specs=[])
    user_cols: list[np.ndarray] = []
    for i, spec in enumerate(normalize_prior_specs(specs)):
        resolved = make_prior(spec, i).resolve(bundle, split)
        name = resolved.spec["name"]
        if resolved.item_membership is not None:
            built.item_membership[name] = resolved.item_membership
        if resolved.item_clusters is not None:
            built.item_clusters[name] = resolved.item_clusters
        if resolved.user_group is not None:
            user_cols.append(resolved.user_group)
        built.specs.append(resolved.spec)
        built.notes[name] = resolved.notes
    if user_cols:
        built.user_groups = np.stack(user_cols, axis=1)
    return built


def apply_priors(model, built: BuiltPriors) -> None:
    """Copies the item membership of item-restricting priors into a freshly built `GGRForRecommendation`."""
    for name, membership in built.item_membership.items():
        model.set_item_groups(name, membership)


def item_category_matrix(bundle: RecDataBundle, field_name: str) -> torch.Tensor:
    """Multi-hot `FloatTensor [num_items + 1, C]` of an item column, for entropy and new-interest metrics."""
    if field_name not in bundle.items.column_names:
        raise GGRConfigError(
            f"the item table has no column '{field_name}' (columns: {bundle.items.column_names})"
        )
    raw = [[str(v) for v in as_value_list(x)] for x in bundle.items[field_name]]
    values = sorted({v for r in raw for v in r})
    pos = {v: j for j, v in enumerate(values)}
    mat = torch.zeros(len(raw) + 1, max(len(values), 1))
    for item, r in enumerate(raw, start=1):
        for v in r:
            mat[item, pos[v]] = 1.0
    return mat


__all__ = ["BuiltPriors", "apply_priors", "build_priors", "item_category_matrix"]
