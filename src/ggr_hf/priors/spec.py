"""Prior specifications: what a user writes in YAML or Python to ask for prior-conditioned heads.

A prior is a dict with a `type` and a `name`; the builder (`ggr_hf.priors.builder`) fills in the
values it finds in the data. Examples:

    {"type": "item", "field": "genres"}                       # one head per genre (multi-label)
    {"type": "item", "field": "tags", "mapping": {...}}       # tags mapped onto groups first
    {"type": "temporal", "segments": 2, "horizon": 8}         # LT/ST_2 over the next 8 items
    {"type": "event"}                                         # one head per interaction type
    {"type": "user", "field": "occupation"}                   # the user's group selects heads
    {"type": "graph", "resolution": 1.0, "seed": 0}           # Leiden clusters of items

Each resolved prior carries `values`, the ordered list of its group names. The list is saved in the
model config, so a saved model knows its heads without the data set.
"""

from __future__ import annotations

import copy
from typing import Any

PRIOR_TYPES = ("item", "temporal", "event", "user", "graph")

# Fields each prior type accepts; anything else is a typo and an error.
_ALLOWED_FIELDS: dict[str, set[str]] = {
    "item": {"type", "name", "field", "values", "mapping", "missing"},
    "temporal": {"type", "name", "segments", "horizon", "values"},
    "event": {"type", "name", "values"},
    "user": {"type", "name", "field", "values", "source", "resolution", "seed", "missing"},
    "graph": {"type", "name", "field", "values", "resolution", "seed", "min_weight", "missing"},
}

# Priors that restrict which items a head may score (their compatibility set Omega_k).
ITEM_RESTRICTING_TYPES = ("item", "graph")


def _err(index: int, spec: dict, message: str) -> ValueError:
    name = spec.get("name", spec.get("type", "?")) if isinstance(spec, dict) else "?"
    return ValueError(f"GGRConfig.priors[{index}] ('{name}'): {message}")


def normalize_prior_specs(priors: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Validates prior specifications and fills their defaults.

    Args:
        priors (`list[dict]`): the user's specifications.

    Returns:
        `list[dict]`: copies with `name` (and, for temporal priors, `values`) filled in.

    Raises:
        `ValueError` naming the prior (by position and name) and the offending field.
    """
    if priors is None:
        return []
    if not isinstance(priors, (list, tuple)):
        raise ValueError(f"GGRConfig.priors must be a list of dicts, got {type(priors).__name__}")
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, raw in enumerate(priors):
        if not isinstance(raw, dict):
            raise ValueError(f"GGRConfig.priors[{i}] must be a dict, got {raw!r}")
        spec = copy.deepcopy(raw)
        ptype = spec.get("type")
        if ptype not in PRIOR_TYPES:
            raise _err(i, spec, f"unknown type {ptype!r}; expected one of {list(PRIOR_TYPES)}")
        unknown = sorted(set(spec) - _ALLOWED_FIELDS[ptype])
        if unknown:
            raise _err(i, spec, f"unknown field(s) {unknown} for a {ptype} prior")
        if ptype in ("item",) and not spec.get("field"):
            raise _err(i, spec, "an item prior needs 'field', the item-table column holding the groups")
        if ptype == "user" and spec.get("source", "attribute") == "attribute" and not spec.get("field"):
            raise _err(i, spec, "a user prior needs 'field' (a user-table column) or source: graph")
        if ptype == "user" and spec.get("source", "attribute") not in ("attribute", "graph"):
            raise _err(i, spec, f"source must be 'attribute' or 'graph', got {spec.get('source')!r}")
        if ptype in ("item", "user", "graph") and spec.get("missing", "error") not in ("error", "other"):
            raise _err(i, spec, f"missing must be 'error' or 'other', got {spec.get('missing')!r}")
        if ptype == "temporal":
            segments = spec.get("segments")
            horizon = spec.get("horizon", segments)
            if not isinstance(segments, int) or segments < 1:
                raise _err(i, spec, f"segments must be a positive integer, got {segments!r}")
            if not isinstance(horizon, int) or horizon < 1:
                raise _err(i, spec, f"horizon must be a positive integer, got {horizon!r}")
            if horizon % segments:
                raise _err(i, spec, f"horizon {horizon} is not divisible by segments {segments}")
            spec["horizon"] = horizon
            spec["values"] = temporal_segment_names(segments)
        default_name = {
            "item": spec.get("field"),
            "temporal": "time",
            "event": "event",
            "user": spec.get("field") or "user_cluster",
            "graph": "item_cluster",
        }[ptype]
        spec.setdefault("name", default_name)
        if not isinstance(spec["name"], str) or not spec["name"]:
            raise _err(i, spec, f"name must be a non-empty string, got {spec['name']!r}")
        if spec["name"] in names:
            raise _err(i, spec, f"duplicate prior name {spec['name']!r}")
        names.add(spec["name"])
        values = spec.get("values")
        if values is not None:
            if not isinstance(values, (list, tuple)) or not values:
                raise _err(i, spec, f"values must be a non-empty list of group names, got {values!r}")
            values = [str(v) for v in values]
            if len(set(values)) != len(values):
                raise _err(i, spec, "values contains duplicates")
            spec["values"] = values
        out.append(spec)
    return out


def temporal_segment_names(segments: int) -> list[str]:
    """Readable names of the LT/ST_S segments: short-term first, long-term last."""
    if segments == 1:
        return ["next-items"]
    if segments == 2:
        return ["short-term", "long-term"]
    names = [f"segment-{s}" for s in range(segments)]
    names[0], names[-1] = "short-term", "long-term"
    return names


def priors_resolved(priors: list[dict[str, Any]]) -> bool:
    """True when every prior knows its group names (a model can be built from the config)."""
    return all(p.get("values") for p in priors)
