"""Training windows and the collator that turns them into model inputs.

A user's training sequence is cut into windows of at most `max_seq_len` input positions, from the
end backwards, so every training interaction is read. Each position predicts the next `horizon`
items of the user's *training* sequence (targets may lie past the window's end, never in the
validation or test part), with the timestamp of the next item as the position's request time.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ggr_hf.data.splits import EvalRows, SplitData


class TrainingWindows(Dataset):
    """Windows over the training sequences of a `SplitData`.

    Args:
        split (`SplitData`): the split (only its training part is read).
        max_seq_len (`int`): input positions per window.
        horizon (`int`): targets per position (P; 1 without a temporal prior).
        user_groups (`np.ndarray` of shape `(num_users_total, num_user_priors)`, *optional*): group
            of each user (indexed by `user_id`) in each user prior.
    """

    def __init__(
        self,
        split: SplitData,
        max_seq_len: int,
        horizon: int = 1,
        user_groups: np.ndarray | None = None,
    ):
        self.items = split.train_items
        self.timestamps = split.train_timestamps
        self.events = split.train_events
        self.user_ids = split.train_user_ids
        self.max_seq_len = max_seq_len
        self.horizon = horizon
        self.user_groups = user_groups
        windows = []
        for u, seq in enumerate(self.items):
            end = len(seq) - 1  # the last training item has no training target
            while end > 0:
                start = max(0, end - max_seq_len)
                windows.append((u, start, end))
                end = start
        self.windows = np.asarray(windows, dtype=np.int64).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, idx: int) -> dict:
        u, start, end = (int(x) for x in self.windows[idx])
        row = {"seq": u, "start": start, "end": end}
        return row

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Builds a right-padded batch.

        Returns a dict with
            input_ids, timestamps, query_timestamps: `LongTensor [B, T]`;
            target_ids (and target_event_ids with events): `LongTensor [B, T, horizon]`;
            user_groups (with user priors): `LongTensor [B, num_user_priors]`.
        """
        width = max(r["end"] - r["start"] for r in rows)
        bsz, horizon = len(rows), self.horizon
        input_ids = np.zeros((bsz, width), dtype=np.int64)
        timestamps = np.zeros((bsz, width), dtype=np.int64)
        query_ts = np.zeros((bsz, width), dtype=np.int64)
        targets = np.zeros((bsz, width, horizon), dtype=np.int64)
        target_events = (
            np.full((bsz, width, horizon), -1, dtype=np.int64) if self.events is not None else None
        )
        for i, r in enumerate(rows):
            seq, ts = self.items[r["seq"]], self.timestamps[r["seq"]]
            s, e = r["start"], r["end"]
            n = e - s
            input_ids[i, :n] = seq[s:e]
            timestamps[i, :n] = ts[s:e]
            query_ts[i, :n] = ts[s + 1 : e + 1]
            for p in range(horizon):
                lo, hi = s + 1 + p, min(e + 1 + p, len(seq))
                if hi > lo:
                    targets[i, : hi - lo, p] = seq[lo:hi]
                    if target_events is not None:
                        target_events[i, : hi - lo, p] = self.events[r["seq"]][lo:hi]
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "timestamps": torch.from_numpy(timestamps),
            "query_timestamps": torch.from_numpy(query_ts),
            "target_ids": torch.from_numpy(targets),
        }
        if target_events is not None:
            batch["target_event_ids"] = torch.from_numpy(target_events)
        if self.user_groups is not None:
            users = [int(self.user_ids[r["seq"]]) for r in rows]
            batch["user_groups"] = torch.from_numpy(self.user_groups[users])
        return batch


def eval_batches(rows: EvalRows, max_seq_len: int, batch_size: int, user_groups: np.ndarray | None = None):
    """Yields evaluation batches: the last `max_seq_len` history items, the full history for exclusion.

    Each batch is a dict with `input_ids`, `timestamps` `[B, T]`, `query_timestamps` `[B]` (the first
    target's time: the request time), `history` `[B, L]` (all history items, for suppression and
    new-interest detection), `targets` `[B, K]`, `index` (row numbers), and `target_events` /
    `user_groups` where available.
    """
    n = len(rows)
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, min(lo + batch_size, n))
        hists = [rows.histories[i] for i in idx]
        width = min(max_seq_len, max(len(h) for h in hists))
        full = max(len(h) for h in hists)
        input_ids = np.zeros((len(idx), width), dtype=np.int64)
        ts = np.zeros((len(idx), width), dtype=np.int64)
        history = np.zeros((len(idx), full), dtype=np.int64)
        for j, i in enumerate(idx):
            h, t = rows.histories[i], rows.history_timestamps[i]
            m = min(width, len(h))
            input_ids[j, :m] = h[-m:]
            ts[j, :m] = t[-m:]
            history[j, : len(h)] = h
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "timestamps": torch.from_numpy(ts),
            "query_timestamps": torch.from_numpy(rows.target_timestamps[idx, 0].copy()),
            "history": torch.from_numpy(history),
            "targets": torch.from_numpy(rows.targets[idx]),
            "index": torch.from_numpy(idx),
        }
        if rows.target_events is not None:
            batch["target_events"] = torch.from_numpy(rows.target_events[idx])
            hev = np.full((len(idx), full), -1, dtype=np.int64)
            for j, i in enumerate(idx):
                hev[j, : len(rows.history_events[i])] = rows.history_events[i]
            batch["history_events"] = torch.from_numpy(hev)
        if user_groups is not None:
            batch["user_groups"] = torch.from_numpy(user_groups[rows.user_ids[idx]])
        yield batch
