"""Prior specifications: what a user writes in YAML or Python to ask for prior-conditioned heads.

A prior is a dict with a `type` and a `name`; the plug-in registered for the type
(`ggr_hf.priors.base.register_prior`) checks its fields, and resolves its values from the data
(`ggr_hf.priors.builder`). Examples with the built-in types:

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

from ggr_hf.errors import GGRConfigError
from ggr_hf.priors.base import COMMON_FIELDS, get_prior_class


def normalize_prior_specs(priors: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Validates prior specifications and fills their defaults.

    Args:
        priors (`list[dict]`): the user's specifications.

    Returns:
        `list[dict]`: copies with `name` (and what each type fills in) set.

    Raises:
        `ValueError` naming the prior (by position and name) and the offending field.
    """
    if priors is None:
        return []
    if not isinstance(priors, (list, tuple)):
        raise GGRConfigError(f"GGRConfig.priors must be a list of dicts, got {type(priors).__name__}")
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    per_type: dict[str, int] = {}
    for i, raw in enumerate(priors):
        if not isinstance(raw, dict):
            raise GGRConfigError(f"GGRConfig.priors[{i}] must be a dict, got {raw!r}")
        spec = copy.deepcopy(raw)

        def fail(message: str, spec: dict = spec, i: int = i) -> GGRConfigError:
            name = spec.get("name", spec.get("type", "?"))
            return GGRConfigError(f"GGRConfig.priors[{i}] ('{name}'): {message}")

        try:
            cls = get_prior_class(spec.get("type"))
        except ValueError as err:
            raise fail(str(err)) from None
        unknown = sorted(set(spec) - COMMON_FIELDS - cls.fields)
        if unknown:
            raise fail(f"unknown field(s) {unknown} for a {cls.type} prior")
        cls.check_spec(spec, fail)
        spec.setdefault("name", cls.default_name(spec))
        if not isinstance(spec["name"], str) or not spec["name"]:
            raise fail(f"name must be a non-empty string, got {spec['name']!r}")
        if spec["name"] in names:
            raise fail(f"duplicate prior name {spec['name']!r}")
        names.add(spec["name"])
        values = spec.get("values")
        if values is not None:
            if not isinstance(values, (list, tuple)) or not values:
                raise fail(f"values must be a non-empty list of group names, got {values!r}")
            values = [str(v) for v in values]
            if len(set(values)) != len(values):
                raise fail("values contains duplicates")
            spec["values"] = values
        per_type[cls.type] = per_type.get(cls.type, 0) + 1
        if cls.max_per_model is not None and per_type[cls.type] > cls.max_per_model:
            raise GGRConfigError(
                f"GGRConfig.priors: at most {cls.max_per_model} {cls.type} prior(s) per model"
            )
        out.append(spec)
    return out


def priors_resolved(priors: list[dict[str, Any]]) -> bool:
    """True when every prior knows its group names (a model can be built from the config)."""
    return all(p.get("values") for p in priors)
