"""Builds the data side of each prior: group names, item membership, user groups, graph clusters.

`build_priors` reads the item and user tables (and, for graph priors, the *training* histories only,
so nothing leaks from validation or test) and returns the resolved specifications to put in
`GGRConfig.priors` plus the tensors to hand to the model (`apply_priors`).

Documented rules:
- item prior: the column may hold one value or a list per item; `mapping` maps raw values onto
  groups (one group or a list). A raw value missing from the mapping is an error naming the prior
  and the value. An item with no group is an error (`missing: error`, the default) or joins a group
  named "other" (`missing: other`), counted and logged.
- user prior: a user-table column (`source: attribute`) or Leiden communities of the graph linking
  users who share training items (`source: graph`).
- graph prior: Leiden communities of the item co-occurrence graph (items consecutive within a
  window of 3 in a user's training history; edge weight = count, edges below `min_weight` dropped).
  Items that occur in no kept edge join a group named "unclustered" (counted, logged).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ggr_hf.data.schema import RecDataBundle
from ggr_hf.data.splits import SplitData
from ggr_hf.priors.spec import ITEM_RESTRICTING_TYPES, normalize_prior_specs

logger = logging.getLogger(__name__)

COOCCURRENCE_WINDOW = 3


@dataclass
class BuiltPriors:
    """Resolved priors and their data.

    Attributes:
        specs: resolved specifications (with `values`), for `GGRConfig(priors=...)`.
        item_membership: prior name -> `BoolTensor [num_items + 1, num_groups]`.
        user_groups: `LongTensor`-ready array `[num_users, num_user_priors]` (user priors in order).
        item_clusters: graph prior name -> cluster index per item `[num_items + 1]` (-1 for padding).
        notes: counts of fallbacks, by prior.
    """

    specs: list[dict]
    item_membership: dict[str, torch.Tensor] = field(default_factory=dict)
    user_groups: np.ndarray | None = None
    item_clusters: dict[str, np.ndarray] = field(default_factory=dict)
    notes: dict[str, dict[str, int]] = field(default_factory=dict)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [v for v in value if v is not None and v != ""]
    if isinstance(value, float) and np.isnan(value):
        return []
    return [value] if value != "" else []


def _prior_label(i: int, spec: dict) -> str:
    return f"prior {i} ('{spec['name']}')"


def _resolve_groups(
    i: int, spec: dict, raw_per_row: list[list], table_name: str
) -> tuple[list[str], list[list[str]], int]:
    """Maps raw column values to group names; returns (values, groups per row, rows that fell back)."""
    mapping = spec.get("mapping")
    groups_per_row: list[list[str]] = []
    for raw in raw_per_row:
        groups: list[str] = []
        for v in raw:
            if mapping is not None:
                key = str(v)
                if key not in mapping:
                    raise ValueError(
                        f"{_prior_label(i, spec)}: value {key!r} of {table_name} column '{spec['field']}' "
                        "is not in the prior's mapping table"
                    )
                mapped = mapping[key]
                groups.extend(str(m) for m in (mapped if isinstance(mapped, (list, tuple)) else [mapped]))
            else:
                groups.append(str(v))
        groups_per_row.append(list(dict.fromkeys(groups)))
    values = spec.get("values")
    found = sorted({g for gs in groups_per_row for g in gs})
    if values is None:
        values = found
    else:
        unknown = [g for g in found if g not in values]
        if unknown:
            raise ValueError(f"{_prior_label(i, spec)}: groups {unknown[:5]} are not in the prior's values")
    fallback = 0
    if any(not gs for gs in groups_per_row):
        empty_rows = [r for r, gs in enumerate(groups_per_row) if not gs]
        if spec.get("missing", "error") == "error":
            raise ValueError(
                f"{_prior_label(i, spec)}: {len(empty_rows)} {table_name} rows have no value in column "
                f"'{spec['field']}' (first: row {empty_rows[0]}); set missing: other to group them"
            )
        fallback = len(empty_rows)
        if "other" not in values:
            values = [*values, "other"]
        for r in empty_rows:
            groups_per_row[r] = ["other"]
        logger.warning(
            "%s: %d %s rows with no value joined the group 'other'",
            _prior_label(i, spec),
            fallback,
            table_name,
        )
    return list(values), groups_per_row, fallback


def _membership(values: list[str], groups_per_item: list[list[str]]) -> torch.Tensor:
    pos = {v: j for j, v in enumerate(values)}
    mem = torch.zeros(len(groups_per_item) + 1, len(values), dtype=torch.bool)
    for item, gs in enumerate(groups_per_item, start=1):
        for g in gs:
            mem[item, pos[g]] = True
    return mem


def leiden_communities(
    num_nodes: int, edges: np.ndarray, weights: np.ndarray, resolution: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Leiden communities (modularity with a resolution parameter), deterministic for a seed.

    Args:
        num_nodes (`int`)
        edges (`np.ndarray` of shape `(E, 2)`): undirected edges.
        weights (`np.ndarray` of shape `(E,)`)

    Returns:
        `np.ndarray [num_nodes]` community index per node, communities numbered by decreasing size
        (ties by smallest member), so the numbering does not depend on the solver's internal order.
    """
    import igraph as ig
    import leidenalg

    graph = ig.Graph(n=num_nodes, edges=edges.tolist(), directed=False)
    graph.es["weight"] = weights.astype(float).tolist()
    part = leidenalg.find_partition(
        graph,
        leidenalg.RBConfigurationVertexPartition,
        weights="weight",
        resolution_parameter=float(resolution),
        seed=int(seed),
    )
    membership = np.asarray(part.membership, dtype=np.int64)
    sizes = np.bincount(membership)
    first = np.full(len(sizes), num_nodes, dtype=np.int64)
    np.minimum.at(first, membership, np.arange(num_nodes))
    order = sorted(range(len(sizes)), key=lambda c: (-sizes[c], first[c]))
    relabel = np.empty(len(sizes), dtype=np.int64)
    relabel[order] = np.arange(len(sizes))
    return relabel[membership]


def item_cooccurrence_edges(
    sequences: list[np.ndarray], num_items: int, window: int = COOCCURRENCE_WINDOW, min_weight: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted item co-occurrence edges from training sequences (pairs within `window` positions)."""
    pairs = []
    for seq in sequences:
        for gap in range(1, window):
            if len(seq) > gap:
                a, b = seq[:-gap], seq[gap:]
                keep = a != b
                pairs.append(np.stack([np.minimum(a, b)[keep], np.maximum(a, b)[keep]], 1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    allp = np.concatenate(pairs)
    key = allp[:, 0] * (num_items + 1) + allp[:, 1]
    uniq, counts = np.unique(key, return_counts=True)
    keep = counts >= min_weight
    uniq, counts = uniq[keep], counts[keep]
    edges = np.stack([uniq // (num_items + 1), uniq % (num_items + 1)], 1)
    return edges, counts.astype(np.float64)


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


def build_priors(bundle: RecDataBundle, specs: list[dict], split: SplitData | None = None) -> BuiltPriors:
    """Resolves prior specifications against a data set.

    Args:
        bundle (`RecDataBundle`): the data set (item table, user table, event names).
        specs (`list[dict]`): prior specifications (see `ggr_hf.priors.spec`).
        split (`SplitData`, *optional*): needed by graph priors, which read only training histories.

    Returns:
        `BuiltPriors`.
    """
    specs = normalize_prior_specs(specs)
    built = BuiltPriors(specs=[])
    user_cols: list[np.ndarray] = []
    for i, spec in enumerate(specs):
        spec = copy.deepcopy(spec)
        ptype = spec["type"]
        note: dict[str, int] = {}
        if ptype == "item":
            if spec["field"] not in bundle.items.column_names:
                raise ValueError(
                    f"{_prior_label(i, spec)}: the item table has no column '{spec['field']}' "
                    f"(columns: {bundle.items.column_names})"
                )
            raw = [_as_list(v) for v in bundle.items[spec["field"]]]
            values, groups, fallback = _resolve_groups(i, spec, raw, "item")
            spec["values"] = values
            built.item_membership[spec["name"]] = _membership(values, groups)
            note["items_in_other"] = fallback
        elif ptype == "graph":
            if split is None:
                raise ValueError(f"{_prior_label(i, spec)}: a graph prior needs the training split")
            edges, weights = item_cooccurrence_edges(
                split.train_items, bundle.num_items, min_weight=int(spec.get("min_weight", 1))
            )
            clusters = leiden_communities(
                bundle.num_items + 1, edges, weights, spec.get("resolution", 1.0), spec.get("seed", 0)
            )
            connected = np.zeros(bundle.num_items + 1, dtype=bool)
            connected[edges.reshape(-1)] = True
            n_clusters = int(clusters[connected].max()) + 1 if connected.any() else 0
            values = [f"cluster-{c}" for c in range(n_clusters)]
            groups = []
            unclustered = 0
            for item in range(1, bundle.num_items + 1):
                if connected[item]:
                    groups.append([values[clusters[item]]])
                else:
                    groups.append(["unclustered"])
                    unclustered += 1
            if unclustered:
                values.append("unclustered")
                logger.warning(
                    "%s: %d items with no co-occurrence joined 'unclustered'",
                    _prior_label(i, spec),
                    unclustered,
                )
            spec["values"] = values
            built.item_membership[spec["name"]] = _membership(values, groups)
            pos = {v: j for j, v in enumerate(values)}
            built.item_clusters[spec["name"]] = np.asarray([-1] + [pos[g[0]] for g in groups], dtype=np.int64)
            note["items_unclustered"] = unclustered
        elif ptype == "event":
            if not bundle.event_names:
                raise ValueError(f"{_prior_label(i, spec)}: the data set '{bundle.name}' has no event types")
            spec.setdefault("values", list(bundle.event_names))
            if list(spec["values"]) != list(bundle.event_names):
                raise ValueError(
                    f"{_prior_label(i, spec)}: values {spec['values']} differ from the data set's event "
                    f"types {bundle.event_names}"
                )
        elif ptype == "user":
            num_users = bundle.num_users if bundle.users is None else len(bundle.users)
            if spec.get("source", "attribute") == "attribute":
                if bundle.users is None or spec["field"] not in bundle.users.column_names:
                    cols = None if bundle.users is None else bundle.users.column_names
                    raise ValueError(
                        f"{_prior_label(i, spec)}: the user table has no column '{spec['field']}' (columns: {cols})"
                    )
                raw = [_as_list(v) for v in bundle.users[spec["field"]]]
                if any(len(r) > 1 for r in raw):
                    raise ValueError(f"{_prior_label(i, spec)}: a user prior needs one value per user")
                values, groups, fallback = _resolve_groups(i, spec, raw, "user")
                spec["values"] = values
                pos = {v: j for j, v in enumerate(values)}
                user_cols.append(np.asarray([pos[g[0]] for g in groups], dtype=np.int64))
                note["users_in_other"] = fallback
            else:
                if split is None:
                    raise ValueError(f"{_prior_label(i, spec)}: a user graph prior needs the training split")
                edges, weights = user_shared_item_edges(split.train_items, split.train_user_ids, num_users)
                clusters = leiden_communities(
                    num_users, edges, weights, spec.get("resolution", 1.0), spec.get("seed", 0)
                )
                spec["values"] = [f"user-cluster-{c}" for c in range(int(clusters.max()) + 1)]
                user_cols.append(clusters)
        elif ptype == "temporal":
            pass
        built.specs.append(spec)
        built.notes[spec["name"]] = note
    if user_cols:
        built.user_groups = np.stack(user_cols, axis=1)
    return built


def apply_priors(model, built: BuiltPriors) -> None:
    """Copies item membership into a freshly built `GGRForRecommendation`."""
    for i in model.layout.item_prior_indices:
        name = model.config.priors[i]["name"]
        model.set_item_groups(name, built.item_membership[name])


def item_category_matrix(bundle: RecDataBundle, field_name: str) -> torch.Tensor:
    """Multi-hot `FloatTensor [num_items + 1, C]` of an item column, for entropy and new-interest metrics."""
    if field_name not in bundle.items.column_names:
        raise ValueError(
            f"the item table has no column '{field_name}' (columns: {bundle.items.column_names})"
        )
    raw = [[str(v) for v in _as_list(x)] for x in bundle.items[field_name]]
    values = sorted({v for r in raw for v in r})
    pos = {v: j for j, v in enumerate(values)}
    mat = torch.zeros(len(raw) + 1, max(len(values), 1))
    for item, r in enumerate(raw, start=1):
        for v in r:
            mat[item, pos[v]] = 1.0
    return mat


__all__ = [
    "ITEM_RESTRICTING_TYPES",
    "BuiltPriors",
    "apply_priors",
    "build_priors",
    "item_category_matrix",
    "leiden_communities",
]
