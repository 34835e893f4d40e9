"""The paper's per-user temporal split and the training windows cut from it.

For each user, time ordered: the last K items are the test targets, the K before them the validation
targets, the rest is for training (K = 1 is classic leave-one-out). Users need more than
`max(min_len, 2K)` items; the others are dropped, counted and logged (the release's rule).

- validation: history = training items, targets = the K validation items;
- test: history = training + validation items, targets = the K test items. The model never trains
  on validation items; they are only read as history at test time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ggr_hf.data.schema import RecDataBundle

logger = logging.getLogger(__name__)


@dataclass
class EvalRows:
    """Histories and targets of one evaluation split, as numpy arrays (one entry per user)."""

    user_ids: np.ndarray  # [U] int64
    histories: list[np.ndarray]  # item ids, oldest first
    history_timestamps: list[np.ndarray]
    targets: np.ndarray  # [U, K] int64
    target_timestamps: np.ndarray  # [U, K] int64
    history_events: list[np.ndarray] | None = None
    target_events: np.ndarray | None = None  # [U, K]

    def __len__(self) -> int:
        return len(self.user_ids)

    def subset(self, n: int) -> EvalRows:
        def cut(x):
            return None if x is None else x[:n]

        return EvalRows(
            self.user_ids[:n],
            self.histories[:n],
            self.history_timestamps[:n],
            self.targets[:n],
            self.target_timestamps[:n],
            cut(self.history_events),
            cut(self.target_events),
        )


@dataclass
class SplitData:
    """A data set split for training, model selection and testing."""

    k: int
    num_items: int
    train_items: list[np.ndarray]
    train_timestamps: list[np.ndarray]
    train_user_ids: np.ndarray
    validation: EvalRows
    test: EvalRows
    train_events: list[np.ndarray] | None = None
    dropped_users: int = 0
    notes: dict = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.train_user_ids)

    def item_popularity(self) -> np.ndarray:
        """Training-interaction counts per item id, `[num_items + 1]` (row 0 = padding = 0)."""
        counts = np.zeros(self.num_items + 1, dtype=np.int64)
        for seq in self.train_items:
            np.add.at(counts, seq, 1)
        counts[0] = 0
        return counts


def temporal_split(bundle: RecDataBundle, k: int = 1, min_len: int = 0) -> SplitData:
    """Splits every user's sequence into train / validation / test by time.

    Args:
        bundle (`RecDataBundle`): the data set.
        k (`int`): targets per user in validation and in test (the paper: 8 for Pixel8M and
            EB-NeRD, 1 for MerRec; 1 = leave-one-out).
        min_len (`int`): users need more than `max(min_len, 2k)` items.

    Returns:
        `SplitData`. Dropped users are counted in `dropped_users` and logged.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"split k must be a positive integer, got {k!r}")
    threshold = max(int(min_len), 2 * k)
    seqs = bundle.sequences
    has_events = "event_ids" in seqs.column_names
    cols = ["user_id", "item_ids", "timestamps"] + (["event_ids"] if has_events else [])
    table = seqs.select_columns(cols).with_format("numpy")

    train_items, train_ts, train_ev, users = [], [], [], []
    val = {"h": [], "ht": [], "he": [], "t": [], "tt": [], "te": []}
    test = {"h": [], "ht": [], "he": [], "t": [], "tt": [], "te": []}
    dropped = 0
    for row in table.iter(batch_size=4096):
        for i in range(len(row["user_id"])):
            items = np.asarray(row["item_ids"][i], dtype=np.int64)
            ts = np.asarray(row["timestamps"][i], dtype=np.int64)
            ev = np.asarray(row["event_ids"][i], dtype=np.int64) if has_events else None
            n = len(items)
            if n <= threshold:
                dropped += 1
                continue
            users.append(int(row["user_id"][i]))
            a, b = n - 2 * k, n - k
            train_items.append(items[:a])
            train_ts.append(ts[:a])
            val["h"].append(items[:a])
            val["ht"].append(ts[:a])
            val["t"].append(items[a:b])
            val["tt"].append(ts[a:b])
            test["h"].append(items[:b])
            test["ht"].append(ts[:b])
            test["t"].append(items[b:])
            test["tt"].append(ts[b:])
            if has_events:
                train_ev.append(ev[:a])
                val["he"].append(ev[:a])
                val["te"].append(ev[a:b])
                test["he"].append(ev[:b])
                test["te"].append(ev[b:])
    if dropped:
        logger.warning(
            "%s: dropped %d of %d users with <= %d items (split k=%d needs more than max(min_len, 2k))",
            bundle.name,
            dropped,
            dropped + len(users),
            threshold,
            k,
        )
    if not users:
        raise ValueError(
            f"{bundle.name}: no user has more than {threshold} items; lower min_len or the split k={k}"
        )
    user_arr = np.asarray(users, dtype=np.int64)

    def rows(d: dict) -> EvalRows:
        return EvalRows(
            user_ids=user_arr,
            histories=d["h"],
            history_timestamps=d["ht"],
            targets=np.stack(d["t"]).astype(np.int64),
            target_timestamps=np.stack(d["tt"]).astype(np.int64),
            history_events=d["he"] if has_events else None,
            target_events=np.stack(d["te"]).astype(np.int64) if has_events else None,
        )

    return SplitData(
        k=k,
        num_items=bundle.num_items,
        train_items=train_items,
        train_timestamps=train_ts,
        train_user_ids=user_arr,
        validation=rows(val),
        test=rows(test),
        train_events=train_ev if has_events else None,
        dropped_users=dropped,
        notes={"threshold": threshold},
    )
