"""Item-attribute priors: one head per group of an item column (categories, tags, ...).

The column may hold one value or a list per item (multi-label). `mapping` maps raw values onto
groups (one group or a list); a raw value missing from the mapping is an error naming the prior and
the value. An item with no group is an error (`missing: error`, the default) or joins a group named
"other" (`missing: other`), counted and logged. Heads score only their group's items.

`label: first` keeps only each item's first group (after mapping), which turns a multi-label column
into a single-label category, i.e. a partition of the catalogue (ML-100K: each movie's first listed
genre); `label: all` (the default) keeps every group.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ggr_hf.errors import GGRConfigError, GGRDataError
from ggr_hf.priors.base import Prior, ResolvedPrior, as_value_list, membership_matrix, register_prior

if TYPE_CHECKING:
    from ggr_hf.data.schema import RecDataBundle
    from ggr_hf.data.splits import SplitData

logger = logging.getLogger(__name__)


def check_missing_rule(spec: dict[str, Any], fail: Callable[[str], ValueError]) -> None:
    if spec.get("missing", "error") not in ("error", "other"):
        raise fail(f"missing must be 'error' or 'other', got {spec.get('missing')!r}")


LABEL_RULES = ("all", "first")


def check_label_rule(spec: dict[str, Any], fail: Callable[[str], ValueError]) -> None:
    if spec.get("label", "all") not in LABEL_RULES:
        raise fail(f"label must be one of {list(LABEL_RULES)}, got {spec.get('label')!r}")


def resolve_groups(
    prior: Prior, raw_per_row: list[list], table_name: str
) -> tuple[list[str], list[list[str]], int]:
    """Maps raw column values to group names (only the first group of each row with `label: first`).

    Returns:
        (values, groups per row, rows that fell back to "other").
    """
    spec = prior.spec
    mapping = spec.get("mapping")
    groups_per_row: list[list[str]] = []
    for raw in raw_per_row:
        groups: list[str] = []
        for v in raw:
            if mapping is not None:
                key = str(v)
                if key not in mapping:
                    raise GGRDataError(
                        f"{prior.label}: value {key!r} of {table_name} column '{spec['field']}' "
                        "is not in the prior's mapping table"
                    )
                mapped = mapping[key]
                groups.extend(str(m) for m in (mapped if isinstance(mapped, (list, tuple)) else [mapped]))
            else:
                groups.append(str(v))
        groups = list(dict.fromkeys(groups))
        if spec.get("label", "all") == "first":
            groups = groups[:1]
        groups_per_row.append(groups)
    values = spec.get("values")
    found = sorted({g for gs in groups_per_row for g in gs})
    if values is None:
        values = found
    else:
        unknown = [g for g in found if g not in values]
        if unknown:
            raise GGRDataError(f"{prior.label}: groups {unknown[:5]} are not in the prior's values")
    fallback = 0
    empty_rows = [r for r, gs in enumerate(groups_per_row) if not gs]
    if empty_rows:
        if spec.get("missing", "error") == "error":
            raise GGRDataError(
                f"{prior.label}: {len(empty_rows)} {table_name} rows have no value in column "
                f"'{spec['field']}' (first: row {empty_rows[0]}); set missing: other to group them"
            )
        fallback = len(empty_rows)
        if "other" not in values:
            values = [*values, "other"]
        for r in empty_rows:
            groups_per_row[r] = ["other"]
        logger.warning(
            "%s: %d %s rows with no value joined the group 'other'", prior.label, fallback, table_name
        )
    return list(values), groups_per_row, fallback


@register_prior
class ItemPrior(Prior):
    """`{"type": "item", "field": COLUMN, "mapping": {raw: group}, "missing": "error" | "other",
    "label": "all" | "first"}`."""

    type = "item"
    fields = frozenset({"field", "mapping", "missing", "label"})
    restricts_items = True

    @classmethod
    def check_spec(cls, spec: dict[str, Any], fail: Callable[[str], ValueError]) -> None:
        if not spec.get("field"):
            raise fail("an item prior needs 'field', the item-table column holding the groups")
        check_missing_rule(spec, fail)
        check_label_rule(spec, fail)

    def resolve(self, bundle: RecDataBundle, split: SplitData | None = None) -> ResolvedPrior:
        column = self.spec["field"]
        if column not in bundle.items.column_names:
            raise GGRConfigError(
                f"{self.label}: the item table has no column '{column}' (columns: {bundle.items.column_names})"
            )
        raw = [as_value_list(v) for v in bundle.items[column]]
        values, groups, fallback = resolve_groups(self, raw, "item")
        spec = copy.deepcopy(self.spec)
        spec["values"] = values
        return ResolvedPrior(
            spec, item_membership=membership_matrix(values, groups), notes={"items_in_other": fallback}
        )
