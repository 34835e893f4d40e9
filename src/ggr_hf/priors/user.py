"""User priors: one head per user group; a user's recommendations come from their group's heads.

The group is a user-table column (`source: attribute`, one value per user; `mapping` and `missing`
as for item priors) or a Leiden community of the graph linking users who share training items
(`source: graph`). Every item is compatible with every user head.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ggr_hf.errors import GGRConfigError, GGRDataError, GGRInputError
from ggr_hf.priors.base import Prior, PriorContext, ResolvedPrior, as_value_list, register_prior, value_equals
from ggr_hf.priors.graph import check_clustering_fields, leiden_communities
from ggr_hf.priors.item import check_missing_rule, resolve_groups

if TYPE_CHECKING:
    from ggr_hf.data.schema import RecDataBundle
    from ggr_hf.data.splits import SplitData


def user_shared_item_edges(
    sequences: list[np.ndarray], user_ids: np.ndarray, num_users: int, min_weight: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Edges between users who share training items, weighted by the number of shared items."""
    item_users: dict[int, list[int]] = {}
    for u, seq in zip(user_ids.tolist(), sequences):
        for it in np.unique(seq).tolist():
            item_users.setdefault(it, []).append(u)
    counts: dict[tuple[int, int], int] = {}
    for users in item_users.values():
        users = sorted(users)
        for x in range(len(users)):
            for y in range(x + 1, len(users)):
                key = (users[x], users[y])
                counts[key] = counts.get(key, 0) + 1
    items = [(k, c) for k, c in counts.items() if c >= min_weight]
    if not items:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    edges = np.asarray([k for k, _ in items], dtype=np.int64)
    weights = np.asarray([c for _, c in items], dtype=np.float64)
    return edges, weights


@register_prior
class UserPrior(Prior):
    """`{"type": "user", "field": COLUMN}` or `{"type": "user", "source": "graph", "resolution": 1.0}`."""

    type = "user"
    fields = frozenset({"field", "source", "resolution", "seed", "missing", "mapping"})
    per_user = True

    @classmethod
    def default_name(cls, spec: dict[str, Any]) -> str:
        return str(spec.get("field") or "user_cluster")

    @classmethod
    def check_spec(cls, spec: dict[str, Any], fail: Callable[[str], ValueError]) -> None:
        source = spec.get("source", "attribute")
        if source not in ("attribute", "graph"):
            raise fail(f"source must be 'attribute' or 'graph', got {source!r}")
        if source == "attribute" and not spec.get("field"):
            raise fail("a user prior needs 'field' (a user-table column) or source: graph")
        check_missing_rule(spec, fail)
        if source == "graph":
            check_clustering_fields(spec, fail)

    def resolve(self, bundle: RecDataBundle, split: SplitData | None = None) -> ResolvedPrior:
        spec = copy.deepcopy(self.spec)
        num_users = bundle.num_users if bundle.users is None else len(bundle.users)
        if spec.get("source", "attribute") == "attribute":
            column = spec["field"]
            if bundle.users is None or column not in bundle.users.column_names:
                cols = None if bundle.users is None else bundle.users.column_names
                raise GGRConfigError(
                    f"{self.label}: the user table has no column '{column}' (columns: {cols})"
                )
            raw = [as_value_list(v) for v in bundle.users[column]]
            if any(len(r) > 1 for r in raw):
                raise GGRDataError(f"{self.label}: a user prior needs one value per user")
            values, groups, fallback = resolve_groups(self, raw, "user")
            spec["values"] = values
            pos = {v: j for j, v in enumerate(values)}
            group = np.asarray([pos[g[0]] for g in groups], dtype=np.int64)
            return ResolvedPrior(spec, user_group=group, notes={"users_in_other": fallback})
        if split is None:
            raise GGRInputError(f"{self.label}: a user graph prior needs the training split")
        edges, weights = user_shared_item_edges(split.train_items, split.train_user_ids, num_users)
        clusters = leiden_communities(
            num_users, edges, weights, spec.get("resolution", 1.0), spec.get("seed", 0)
        )
        spec["values"] = [f"user-cluster-{c}" for c in range(int(clusters.max()) + 1)]
        return ResolvedPrior(spec, user_group=clusters)

    def active_heads(self, head_value: torch.Tensor, context: PriorContext) -> torch.Tensor:
        return value_equals(head_value, context.user_group(self.index))  # [B, H]

    def pair_mask(self, head_value: torch.Tensor, context: PriorContext) -> torch.Tensor:
        return self.active_heads(head_value, context)[:, None, None, :]  # [B, 1, 1, H]
