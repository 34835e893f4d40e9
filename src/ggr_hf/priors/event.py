"""The interaction-type (event) prior: one head per event type (view, like, add-to-cart, ...).

Every item is compatible with every event head; an event head learns the targets of its type.
At inference max fusion runs over all event heads (honest); the ORACLE setting, which keeps only the
true target event's heads, exists only where it is asked for by name (`target_event`).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

from ggr_hf.errors import GGRConfigError, GGRDataError, GGRInputError
from ggr_hf.priors.base import Prior, PriorContext, ResolvedPrior, register_prior, value_equals

if TYPE_CHECKING:
    from ggr_hf.data.schema import RecDataBundle
    from ggr_hf.data.splits import SplitData


@register_prior
class EventPrior(Prior):
    """`{"type": "event"}`: the data set's event types, in the data set's order."""

    type = "event"
    max_per_model = 1

    @classmethod
    def default_name(cls, spec: dict[str, Any]) -> str:
        return "event"

    def resolve(self, bundle: RecDataBundle, split: SplitData | None = None) -> ResolvedPrior:
        if not bundle.event_names:
            raise GGRDataError(f"{self.label}: the data set '{bundle.name}' has no event types")
        spec = copy.deepcopy(self.spec)
        spec.setdefault("values", list(bundle.event_names))
        if list(spec["values"]) != list(bundle.event_names):
            raise GGRConfigError(
                f"{self.label}: values {spec['values']} differ from the data set's event types {bundle.event_names}"
            )
        return ResolvedPrior(spec)

    def pair_mask(self, head_value: torch.Tensor, context: PriorContext) -> torch.Tensor:
        if context.target_event_ids is None:
            raise GGRInputError("this model has an event prior: pass target_event_ids")
        return value_equals(head_value, context.target_event_ids)  # [B, T, P, H]

    def active_heads(self, head_value: torch.Tensor, context: PriorContext) -> torch.Tensor | None:
        if context.target_event is None:
            return None
        return value_equals(head_value, context.target_event)  # [B, H]
