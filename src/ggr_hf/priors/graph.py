"""The graph prior: Leiden communities of the item co-occurrence graph, one head per cluster.

The graph is read from the *training* histories only (nothing leaks from validation or test): items
consecutive within a window of 3 in a user's history are linked, weighted by how often; edges below
`min_weight` are dropped. Items that occur in no kept edge join a group named "unclustered"
(counted, logged). Clusters are single-label and heads score only their cluster's items.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ggr_hf.errors import GGRInputError
from ggr_hf.priors.base import Prior, ResolvedPrior, membership_matrix, register_prior
from ggr_hf.priors.item import check_missing_rule

if TYPE_CHECKING:
    from ggr_hf.data.schema import RecDataBundle
    from ggr_hf.data.splits import SplitData

logger = logging.getLogger(__name__)

COOCCURRENCE_WINDOW = 3


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


def check_clustering_fields(spec: dict[str, Any], fail: Callable[[str], ValueError]) -> None:
    """The Leiden fields a graph-clustered prior accepts: `resolution > 0`, integer `seed`,
    integer `min_weight >= 1` (each optional)."""
    resolution = spec.get("resolution", 1.0)
    if not isinstance(resolution, (int, float)) or isinstance(resolution, bool) or not resolution > 0:
        raise fail(f"resolution must be a number > 0, got {resolution!r}")
    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise fail(f"seed must be an integer, got {seed!r}")
    min_weight = spec.get("min_weight", 1)
    if not isinstance(min_weight, int) or isinstance(min_weight, bool) or min_weight < 1:
        raise fail(f"min_weight must be an integer >= 1, got {min_weight!r}")


@register_prior
class GraphPrior(Prior):
    """`{"type": "graph", "resolution": 1.0, "seed": 0, "min_weight": 1}`."""

    type = "graph"
    fields = frozenset({"field", "resolution", "seed", "min_weight", "missing"})
    restricts_items = True

    @classmethod
    def default_name(cls, spec: dict[str, Any]) -> str:
        return "item_cluster"

    @classmethod
    def check_spec(cls, spec: dict[str, Any], fail: Callable[[str], ValueError]) -> None:
        check_missing_rule(spec, fail)
        check_clustering_fields(spec, fail)

    def resolve(self, bundle: RecDataBundle, split: SplitData | None = None) -> ResolvedPrior:
        if split is None:
            raise GGRInputError(f"{self.label}: a graph prior needs the training split")
        edges, weights = item_cooccurrence_edges(
            split.train_items, bundle.num_items, min_weight=int(self.spec.get("min_weight", 1))
        )
        clusters = leiden_communities(
            bundle.num_items + 1, edges, weights, self.spec.get("resolution", 1.0), self.spec.get("seed", 0)
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
            logger.warning("%s: %d items with no co-occurrence joined 'unclustered'", self.label, unclustered)
        spec = copy.deepcopy(self.spec)
        spec["values"] = values
        pos = {v: j for j, v in enumerate(values)}
        return ResolvedPrior(
            spec,
            item_membership=membership_matrix(values, groups),
            item_clusters=np.asarray([-1] + [pos[g[0]] for g in groups], dtype=np.int64),
            notes={"items_unclustered": unclustered},
        )
