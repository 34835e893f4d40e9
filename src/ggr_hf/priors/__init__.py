"""Structured human priors as plug-ins: one module per prior type, one registry.

Built-in types: `item` (item attribute), `temporal` (LT/ST_S), `event` (interaction type), `graph`
(Leiden item clusters) and `user` (user attribute or Leiden user clusters). A new type is a
`Prior` subclass registered with `register_prior` (see `ggr_hf.priors.base`).
"""

from ggr_hf.priors.base import (
    Prior,
    PriorContext,
    ResolvedPrior,
    get_prior_class,
    make_prior,
    prior_types,
    register_prior,
)
from ggr_hf.priors.event import EventPrior
from ggr_hf.priors.graph import GraphPrior, item_cooccurrence_edges, leiden_communities
from ggr_hf.priors.item import ItemPrior
from ggr_hf.priors.spec import normalize_prior_specs
from ggr_hf.priors.temporal import TemporalPrior, temporal_segment_names
from ggr_hf.priors.user import UserPrior, user_shared_item_edges


def describe_prior(spec: dict) -> str:
    """A short label of a prior spec for tables, e.g. `item:genres` or `temporal:time/S=2`."""
    return make_prior(normalize_prior_specs([spec])[0]).describe()


__all__ = [
    "EventPrior",
    "GraphPrior",
    "ItemPrior",
    "Prior",
    "PriorContext",
    "ResolvedPrior",
    "TemporalPrior",
    "UserPrior",
    "describe_prior",
    "get_prior_class",
    "item_cooccurrence_edges",
    "leiden_communities",
    "make_prior",
    "normalize_prior_specs",
    "prior_types",
    "register_prior",
    "temporal_segment_names",
    "user_shared_item_edges",
]
