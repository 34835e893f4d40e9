"""The temporal prior LT/ST_S: short- vs long-term interest as heads over future offsets.

Every position is a cut point with targets at the next `horizon` (P) items. P splits into S equal
contiguous segments; segment head s learns only offsets p in [s*P/S, (s+1)*P/S). Segment 0 is the
short term, the last the long term. Every item is compatible with every segment head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ggr_hf.priors.base import Prior, PriorContext, register_prior, value_equals


def temporal_segment_names(segments: int) -> list[str]:
    """Readable names of the LT/ST_S segments: short-term first, long-term last."""
    if segments == 1:
        return ["next-items"]
    if segments == 2:
        return ["short-term", "long-term"]
    names = [f"segment-{s}" for s in range(segments)]
    names[0], names[-1] = "short-term", "long-term"
    return names


@register_prior
class TemporalPrior(Prior):
    """`{"type": "temporal", "segments": S, "horizon": P}` (P defaults to S and must be divisible by S)."""

    type = "temporal"
    fields = frozenset({"segments", "horizon"})
    max_per_model = 1

    @classmethod
    def default_name(cls, spec: dict[str, Any]) -> str:
        return "time"

    @classmethod
    def check_spec(cls, spec: dict[str, Any], fail: Callable[[str], ValueError]) -> None:
        segments = spec.get("segments")
        horizon = spec.get("horizon", segments)
        if not isinstance(segments, int) or isinstance(segments, bool) or segments < 1:
            raise fail(f"segments must be a positive integer, got {segments!r}")
        if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
            raise fail(f"horizon must be a positive integer, got {horizon!r}")
        if horizon % segments:
            raise fail(f"horizon {horizon} is not divisible by segments {segments}")
        spec["horizon"] = horizon
        spec["values"] = temporal_segment_names(segments)

    @property
    def horizon(self) -> int:
        return int(self.spec["horizon"])

    def describe(self) -> str:
        return f"{self.type}:{self.name}/S={self.spec['segments']}"

    def segment_of_offset(self, horizon: int) -> torch.Tensor:
        """`torch.LongTensor [horizon]`: the segment that learns offset p (p = 0 is the next item)."""
        width = self.spec["horizon"] // self.spec["segments"]
        return torch.arange(horizon) // width

    def pair_mask(self, head_value: torch.Tensor, context: PriorContext) -> torch.Tensor:
        seg = self.segment_of_offset(context.horizon).to(head_value.device)  # [P]
        return value_equals(head_value, seg)[None, None]  # [1, 1, P, H]
