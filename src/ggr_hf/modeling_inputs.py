"""Checks of the Python API's inputs (`GGRForRecommendation.recommend` / `score_items`): histories,
timestamps, user groups and batch tensors, each failure a one-line `GGRInputError` naming the
argument, the user index, the position and the offending value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ggr_hf.errors import GGRInputError

if TYPE_CHECKING:
    from ggr_hf.heads.layout import HeadLayout

__all__ = [
    "check_integer_tensor",
    "check_item_ids",
    "is_integer",
    "is_integer_dtype",
    "pad_histories",
    "user_groups_tensor",
]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Plausible times in seconds, 1970-01-01 .. 2100-01-01 (the data loaders' range): milliseconds or
# nanoseconds (what pandas' `astype("int64")` gives) fall far above it.
_MAX_SECONDS = 4_102_444_800


def _check_plausible_seconds(ids: torch.Tensor, ts: torch.Tensor) -> None:
    bad = (ids != 0) & ((ts < 0) | (ts >= _MAX_SECONDS))
    if bool(bad.any()):
        user, pos = (int(i) for i in bad.nonzero()[0])
        raise GGRInputError(
            f"timestamps: user {user}, position {pos}: {int(ts[user, pos])} is not a time in seconds "
            "between 1970 and 2100; convert milliseconds (// 1000) or nanoseconds (// 10**9) to seconds"
        )


def is_integer(value: Any) -> bool:
    """A Python, numpy or 0-d tensor integer (bool is not an item id or a time)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.ndim == 0 and is_integer_dtype(value.dtype)
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_integer_dtype(dtype: Any) -> bool:
    """Whether a torch or numpy dtype holds integers (bool does not count)."""
    if isinstance(dtype, torch.dtype):
        return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool
    return np.issubdtype(dtype, np.integer)


def _is_row(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or (
        isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim >= 1
    )


def _as_rows(name: str, values: Any, single: bool) -> list[list[Any]]:
    """A list history (or timestamps) as a list of per-user lists of scalars."""
    rows = [values] if single else list(values)
    out = []
    for i, row in enumerate(rows):
        if not _is_row(row):
            raise GGRInputError(f"{name}: user {i} is {row!r}, not a list of values; pass one list per user")
        out.append(row.tolist() if isinstance(row, (torch.Tensor, np.ndarray)) else list(row))
    return out


def check_item_ids(name: str, ids: torch.Tensor, num_items: int) -> None:
    """Right-padded rows of item ids: `1..num_items`, then only `0`; names the first bad entry."""
    if not is_integer_dtype(ids.dtype):
        raise GGRInputError(f"{name}: item ids must be an integer tensor, got dtype {ids.dtype}")
    bad = (ids < 0) | (ids > num_items)
    # A 0 before a real item: rows are read as right-padded, so the items after it would be lost.
    real = ids != 0
    later_real = real.flip(1).cummax(1).values.flip(1)
    bad |= ~real & torch.cat([later_real[:, 1:], torch.zeros_like(later_real[:, :1])], dim=1)
    if bool(bad.any()):
        user, pos = (int(x) for x in bad.nonzero()[0])
        value = int(ids[user, pos])
        if value == 0:
            raise GGRInputError(
                f"{name}: user {user}, position {pos}: 0 (padding) before a real item; right-pad each "
                "row (0 only after the last item)"
            )
        raise GGRInputError(
            f"{name}: user {user}, position {pos}: item id {value} is outside the catalogue 1..{num_items}; "
            "pass internal item ids"
        )


def pad_histories(history: Any, timestamps: Any, num_items: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Checks and right-pads histories (and their timestamps) into `(batch_size, seq_len)` tensors.

    Args:
        history: one history (a list of item ids, a 1-D tensor or array), several (a list of those),
            or a right-padded `(batch_size, seq_len)` integer tensor or array.
        timestamps: the same structure, one integer time in seconds per item (1970..2100, as the
            data sets store them; milliseconds or nanoseconds are refused), or `None`.
        num_items (`int`): the catalogue size; item ids must lie in `1..num_items`.

    Returns:
        `torch.LongTensor` ids and timestamps (or `None`), both `(batch_size, seq_len)`.

    Raises:
        `GGRInputError`: naming the user index, the position and the value of the first bad entry.
    """
    for name, value in (("history", history), ("timestamps", timestamps)):
        if isinstance(value, np.ndarray) and value.dtype != object and not is_integer_dtype(value.dtype):
            raise GGRInputError(f"{name}: expected integers, got an array of dtype {value.dtype}")
    if isinstance(history, np.ndarray):
        history = history.tolist() if history.dtype == object else torch.from_numpy(history)
    if isinstance(timestamps, np.ndarray):
        timestamps = timestamps.tolist() if timestamps.dtype == object else torch.from_numpy(timestamps)
    if isinstance(history, torch.Tensor):
        if history.dim() not in (1, 2) or history.numel() == 0:
            raise GGRInputError(
                f"history: a tensor of item ids must be 1-D or (batch_size, seq_len) and not empty, "
                f"got shape {tuple(history.shape)}"
            )
        ids = history.unsqueeze(0) if history.dim() == 1 else history
        check_item_ids("history", ids, num_items)
        if not bool((ids[:, 0] != 0).all()):
            user = int((ids[:, 0] == 0).nonzero()[0, 0])
            raise GGRInputError(f"history: user {user} has no items (the row is all padding)")
        ids = ids.cpu().long()
        if timestamps is None:
            return ids, None
        ts = timestamps
        if isinstance(ts, torch.Tensor) and ts.dim() == 1 and history.dim() == 1:
            ts = ts.unsqueeze(0)
        if not isinstance(ts, torch.Tensor) or not is_integer_dtype(ts.dtype) or ts.shape != ids.shape:
            got = (
                f"dtype {timestamps.dtype}, shape {tuple(timestamps.shape)}"
                if isinstance(timestamps, torch.Tensor)
                else type(timestamps).__name__
            )
            raise GGRInputError(
                f"timestamps: with a tensor history they must be an integer tensor of its shape "
                f"{tuple(history.shape)}, got {got}"
            )
        ts = ts.cpu().long()
        _check_plausible_seconds(ids, ts)
        return ids, ts
    if not isinstance(history, (list, tuple)) or len(history) == 0:
        got = repr(history) if isinstance(history, (list, tuple)) else type(history).__name__
        raise GGRInputError(
            f"history: expected a list of item ids, a list of lists or an integer tensor, got {got}"
        )
    single = not _is_row(history[0])
    rows = _as_rows("history", history, single)
    ts_rows = None
    if timestamps is not None:
        if not isinstance(timestamps, (list, tuple, torch.Tensor, np.ndarray)):
            raise GGRInputError(f"timestamps: expected one list of times per history, got {timestamps!r}")
        ts_rows = _as_rows("timestamps", timestamps, single)
        if len(ts_rows) != len(rows):
            raise GGRInputError(f"timestamps: {len(ts_rows)} users but the history has {len(rows)}")
    width = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), max(width, 1), dtype=torch.long)
    ts = torch.zeros_like(ids) if ts_rows is not None else None
    for user, row in enumerate(rows):
        if not row:
            raise GGRInputError(f"history: user {user} has no items; every history needs at least one")
        for pos, item in enumerate(row):
            if not is_integer(item):
                raise GGRInputError(
                    f"history: user {user}, position {pos}: item id {item!r} is not an integer; "
                    f"pass internal item ids 1..{num_items}"
                )
            if not 1 <= int(item) <= num_items:
                raise GGRInputError(
                    f"history: user {user}, position {pos}: item id {int(item)} is outside the catalogue "
                    f"1..{num_items}; pass internal item ids"
                )
        ids[user, : len(row)] = torch.tensor([int(x) for x in row], dtype=torch.long)
        if ts_rows is not None:
            times = ts_rows[user]
            if len(times) != len(row):
                raise GGRInputError(
                    f"timestamps: user {user} has {len(row)} items but {len(times)} timestamps"
                )
            for pos, t in enumerate(times):
                if not is_integer(t) or not _INT64_MIN <= int(t) <= _INT64_MAX:
                    raise GGRInputError(
                        f"timestamps: user {user}, position {pos}: {t!r} is not an integer time in seconds"
                    )
            ts[user, : len(row)] = torch.tensor([int(t) for t in times], dtype=torch.long)
    if ts is not None:
        _check_plausible_seconds(ids, ts)
    return ids, ts


def user_groups_tensor(
    layout: HeadLayout, user_groups: Any, batch_size: int, device: torch.device
) -> torch.Tensor | None:
    """Checks `user_groups` against the model's user priors and returns them as a
    `(batch_size, num_user_priors)` `LongTensor` (a 1-D input of `batch_size * num_user_priors`
    values is read row by row); each value must index one of its prior's groups."""
    priors = [layout.priors[i] for i in layout.user_prior_indices]
    names = [p.get("name") for p in priors]
    if user_groups is None:
        if priors:
            raise GGRInputError(
                f"user_groups: this model has user priors {names}; pass each user's group index in each"
            )
        return None
    if not priors:
        raise GGRInputError("user_groups: this model has no user priors; leave user_groups out")
    try:
        groups = torch.as_tensor(user_groups)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise GGRInputError(
            f"user_groups: expected integer group indices, got {user_groups!r} ({err})"
        ) from err
    if not is_integer_dtype(groups.dtype):
        raise GGRInputError(f"user_groups: expected integer group indices, got dtype {groups.dtype}")
    shape = (batch_size, len(priors))
    if groups.dim() == 1 and groups.numel() == batch_size * len(priors):
        groups = groups.view(shape)
    if tuple(groups.shape) != shape:
        raise GGRInputError(
            f"user_groups: expected shape {shape} (users, user priors {names}), got {tuple(groups.shape)}"
        )
    sizes = torch.tensor([len(p["values"]) for p in priors], device=groups.device)
    bad = (groups < 0) | (groups >= sizes)
    if bool(bad.any()):
        user, column = (int(x) for x in bad.nonzero()[0])
        raise GGRInputError(
            f"user_groups: user {user}, prior '{names[column]}': group {int(groups[user, column])} is "
            f"outside 0..{int(sizes[column]) - 1}"
        )
    return groups.to(device=device, dtype=torch.long)


def check_integer_tensor(name: str, value: torch.Tensor | None, shape: tuple[int, ...]) -> None:
    """An optional integer tensor of exactly `shape` (`-1`: any size)."""
    if value is None:
        return
    if not isinstance(value, torch.Tensor) or not is_integer_dtype(value.dtype):
        got = f"dtype {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise GGRInputError(f"{name}: expected an integer tensor, got {got}")
    if value.dim() != len(shape) or any(s != -1 and s != v for s, v in zip(shape, value.shape)):
        wanted = tuple("n" if s == -1 else s for s in shape)
        raise GGRInputError(f"{name}: expected shape {wanted}, got {tuple(value.shape)}")
