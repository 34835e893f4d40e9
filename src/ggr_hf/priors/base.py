"""The prior plug-in interface: one `Prior` subclass per prior `type`, looked up in one registry.

A prior type says, in one class:

- which spec fields it accepts and how they are checked (`fields`, `check_spec`, `default_name`);
- how its group names (`values`) and data are resolved from the training data (`resolve`);
- whether its heads score only their own group's items (`restricts_items`: the compatibility set
  `Omega_k` is the group's items, e.g. categories, graph clusters);
- which (position, offset, head) training pairs are compatible beyond that (`pair_mask`: temporal
  segments own their offsets, event heads the targets of their type, user heads their users);
- which heads are active for a user at inference (`active_heads`: user groups, the oracle event).

Heads are the values' combinations (`ggr_hf.heads.layout`), so a head is described, for each prior,
by the index of its value in that prior, or -1 where the head does not constrain the prior (additive
composition). The model asks each prior for its masks with that `head_value` vector and combines them;
nothing outside `ggr_hf.priors` branches on a prior type.

```python
from ggr_hf.priors import Prior, register_prior

@register_prior
class WeekdayPrior(Prior):
    type = "weekday"
    ...
```
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from ggr_hf.errors import GGRConfigError, GGRInputError

if TYPE_CHECKING:
    from ggr_hf.data.schema import RecDataBundle
    from ggr_hf.data.splits import SplitData

# Keys every prior spec may have, whatever its type.
COMMON_FIELDS = frozenset({"type", "name", "values"})


@dataclass
class PriorContext:
    """What the priors' masks may read for one batch.

    Attributes:
        horizon (`int`): number of target offsets `P`.
        target_event_ids (`torch.LongTensor` of shape `(batch_size, seq_len, horizon)`, *optional*):
            the event type of each training target.
        user_groups (`torch.LongTensor` of shape `(batch_size, num_user_priors)`, *optional*): each
            user's group in each per-user prior (columns in config order of those priors).
        user_columns (`dict[int, int]`): prior index -> its column in `user_groups`.
        target_event (`torch.LongTensor` of shape `(batch_size,)`, *optional*): the ORACLE setting
            at inference (the true target's event type).
    """

    horizon: int = 1
    target_event_ids: torch.Tensor | None = None
    user_groups: torch.Tensor | None = None
    user_columns: dict[int, int] = field(default_factory=dict)
    target_event: torch.Tensor | None = None

    def user_group(self, prior_index: int) -> torch.Tensor:
        """`torch.LongTensor [batch_size]`: each user's group in the per-user prior `prior_index`."""
        if self.user_groups is None:
            raise GGRInputError("this model has a user prior: pass user_groups (batch_size, num_user_priors)")
        return self.user_groups[:, self.user_columns[prior_index]]


@dataclass
class ResolvedPrior:
    """A prior resolved against a data set.

    Attributes:
        spec (`dict`): the specification with its ordered group names in `values`.
        item_membership (`torch.BoolTensor` of shape `(num_items + 1, num_groups)`, *optional*):
            the groups of each item (row 0 is padding), for item-restricting priors.
        user_group (`np.ndarray` of shape `(num_users,)`, *optional*): each user's group index, for
            per-user priors.
        item_clusters (`np.ndarray` of shape `(num_items + 1,)`, *optional*): a group index per item
            (-1 for padding) for single-label priors learnt from data, which the experiment adds to
            the item table as a column named after the prior.
        notes (`dict[str, int]`): counts of documented fallbacks (items in "other", ...).
    """

    spec: dict[str, Any]
    item_membership: torch.Tensor | None = None
    user_group: np.ndarray | None = None
    item_clusters: np.ndarray | None = None
    notes: dict[str, int] = field(default_factory=dict)


class Prior:
    """Base class of a prior type. Subclasses set `type` (the YAML `type:` string) and override what
    applies; `register_prior` makes the type usable in `GGRConfig(priors=[...])`.

    Instances wrap one resolved or unresolved specification (`spec`) at position `index` of the
    config's priors.
    """

    type: ClassVar[str] = ""
    # Spec keys accepted besides `type`, `name` and `values`.
    fields: ClassVar[frozenset[str]] = frozenset()
    # Heads score only the items of their group (Omega_k) and draw in-group negatives.
    restricts_items: ClassVar[bool] = False
    # Heads apply to the users of their group only; the batch carries a `user_groups` column.
    per_user: ClassVar[bool] = False
    # At most this many priors of the type in one model (None: no limit).
    max_per_model: ClassVar[int | None] = None

    def __init__(self, spec: dict[str, Any], index: int = 0):
        self.spec = spec
        self.index = index

    # ------------------------------------------------------------------ the specification

    @classmethod
    def default_name(cls, spec: dict[str, Any]) -> str:
        """The prior's name when the spec gives none (names must be unique within a model)."""
        return str(spec.get("field") or cls.type)

    @classmethod
    def check_spec(cls, spec: dict[str, Any], fail: Callable[[str], ValueError]) -> None:
        """Checks the type's own fields and fills their defaults in `spec` (in place).

        Args:
            spec (`dict`): a copy of the user's specification.
            fail: builds the error to raise, naming the prior: `raise fail("segments must be ...")`.
        """

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def values(self) -> list[str]:
        return list(self.spec.get("values") or [])

    @property
    def label(self) -> str:
        """`prior 0 ('genres')`: how messages name the prior."""
        return f"prior {self.index} ('{self.name}')"

    @property
    def horizon(self) -> int:
        """Future items per position this prior needs the model to learn (1: the next item)."""
        return 1

    def describe(self) -> str:
        """A short label for tables, e.g. `item:genres`."""
        return f"{self.type}:{self.spec.get('field') or self.name}"

    # ------------------------------------------------------------------ the data

    def resolve(self, bundle: RecDataBundle, split: SplitData | None = None) -> ResolvedPrior:
        """Resolves the group names (and the item or user groups) from the training data.

        Args:
            bundle (`RecDataBundle`): item table, user table, event names.
            split (`SplitData`, *optional*): the training histories, for priors learnt from
                interactions (they must read nothing from validation or test).
        """
        if not self.values:
            raise GGRConfigError(f"{self.label}: a {self.type} prior needs 'values'")
        return ResolvedPrior(spec=copy.deepcopy(self.spec))

    # ------------------------------------------------------------------ the model

    def pair_mask(self, head_value: torch.Tensor, context: PriorContext) -> torch.Tensor | None:
        """Which training pairs each head may learn, beyond item compatibility.

        Args:
            head_value (`torch.LongTensor` of shape `(num_heads,)`): each head's value index in this
                prior, -1 where the head does not constrain it.
            context (`PriorContext`)

        Returns:
            `torch.BoolTensor` broadcastable to `(batch_size, seq_len, horizon, num_heads)`, or `None`
            when the prior does not constrain training pairs.
        """
        return None

    def active_heads(self, head_value: torch.Tensor, context: PriorContext) -> torch.Tensor | None:
        """Which heads may score items for each user at inference.

        Returns:
            `torch.BoolTensor` of shape `(batch_size, num_heads)`, or `None` (every head).
        """
        return None


# ---------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[Prior]] = {}


def register_prior(prior_class: type[Prior]) -> type[Prior]:
    """Registers a prior type under `prior_class.type` (usable as a class decorator).

    Registering the same type again replaces the class (a reloaded module); two different prior types
    cannot share a name across the built-in ones unless replaced on purpose.
    """
    if not isinstance(prior_class, type) or not issubclass(prior_class, Prior):
        raise TypeError(f"register_prior expects a Prior subclass, got {prior_class!r}")
    if not prior_class.type or not isinstance(prior_class.type, str):
        raise GGRConfigError(f"{prior_class.__name__}.type must be a non-empty string")
    _REGISTRY[prior_class.type] = prior_class
    return prior_class


def prior_types() -> list[str]:
    """The registered prior types, in registration order."""
    return list(_REGISTRY)


def get_prior_class(prior_type: str) -> type[Prior]:
    """The class registered for `prior_type` (`ValueError` naming the known types otherwise)."""
    if prior_type not in _REGISTRY:
        raise GGRConfigError(f"unknown type {prior_type!r}; expected one of {prior_types()}")
    return _REGISTRY[prior_type]


def make_prior(spec: dict[str, Any], index: int = 0) -> Prior:
    """The plug-in object of one (normalised) specification."""
    return get_prior_class(spec["type"])(spec, index)


# ---------------------------------------------------------------------- shared helpers of the plug-ins


def as_value_list(value: Any) -> list:
    """A cell of an item or user column as a list of values (None, NaN and "" are no value)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [v for v in value if v is not None and v != ""]
    if isinstance(value, float) and np.isnan(value):
        return []
    return [value] if value != "" else []


def membership_matrix(values: list[str], groups_per_item: list[list[str]]) -> torch.Tensor:
    """`torch.BoolTensor [num_items + 1, num_groups]` from each item's group names (row 0: padding)."""
    pos = {v: j for j, v in enumerate(values)}
    mem = torch.zeros(len(groups_per_item) + 1, len(values), dtype=torch.bool)
    for item, gs in enumerate(groups_per_item, start=1):
        for g in gs:
            mem[item, pos[g]] = True
    return mem


def value_equals(head_value: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`head_value < 0 | head_value == value[..., None]`: heads that do not constrain the prior, or
    whose value is the given one.

    Args:
        head_value (`torch.LongTensor` of shape `(num_heads,)`)
        value (`torch.LongTensor` of any shape `(*)`)

    Returns:
        `torch.BoolTensor` of shape `(*, num_heads)`.
    """
    head_value = head_value.to(value.device)
    return (head_value < 0) | (head_value == value.unsqueeze(-1))
