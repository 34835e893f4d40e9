"""The in-memory layout every ggr-hf data set is turned into.

Every loader (MovieLens, PixelRec, MerRec, EB-NeRD, the release's processed parquet) produces a
`RecDataBundle`:

- `sequences`: a `datasets.Dataset`, one row per user, with the columns
  - `user_id` (int64): the internal user index, `0 .. num_users - 1` (row of `users`);
  - `item_ids` (list<int64>): internal item ids, time ordered, `1 .. num_items` (0 is padding);
  - `timestamps` (list<int64>): seconds since the epoch, non-decreasing, same length;
  - `event_ids` (list<int64>, optional): interaction type per event, index into
    `RecDataBundle.event_names`.
- `items`: a `datasets.Dataset`, one row per item, row `i - 1` describes internal item `i`, with
  `item_id` (int64, internal), `original_id` (string, the publisher's id) and `title` (string),
  plus any attribute columns (e.g. `genres`: list<string>, `category`: string).
- `users` (optional): a `datasets.Dataset`, row `u` describes internal user `u`, with `user_id`
  (int64), `original_id` (string) and attribute columns (e.g. `age`, `gender`, `occupation`).

Internal ids are dense so that embedding tables and compatibility masks can be indexed directly;
the original ids are kept so that recommendations print what the publisher calls the item.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ggr_hf.errors import GGRDataError, GGRFileNotFoundError

logger = logging.getLogger(__name__)

PAD_ITEM_ID = 0

SEQUENCE_COLUMNS = ("user_id", "item_ids", "timestamps")


class DataFormatError(GGRDataError):
    """Raised when an input file does not have the expected layout (ggr-hf's `GGRDataError`).

    The message always names the file and, where it applies, the column and the offending value.
    """


@dataclass
class DropCounter:
    """Counts rows a loader skipped, by documented reason, so that nothing is dropped silently."""

    counts: Counter = field(default_factory=Counter)

    def add(self, reason: str, n: int = 1) -> None:
        if n:
            self.counts[reason] += int(n)

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    def log(self, source: str) -> None:
        for reason, n in sorted(self.counts.items()):
            # Reasons ending in `_kept` / `_replaced` count rows or values kept with a documented repair.
            action = "kept %d with a repair" if reason.endswith(("_kept", "_replaced")) else "dropped %d rows"
            logger.warning("%s: " + action + " (%s)", source, n, reason)


@dataclass
class RecDataBundle:
    """A data set in ggr-hf's layout (see the module docstring for the columns)."""

    name: str
    sequences: datasets.Dataset
    items: datasets.Dataset
    users: datasets.Dataset | None = None
    event_names: list[str] | None = None
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        """Number of real items; internal ids run from 1 to `num_items`."""
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(pc.sum(pc.list_value_length(self._sequence_table().column("item_ids"))).as_py() or 0)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "events": list(self.event_names or []),
            "dropped": dict(self.dropped),
        }

    def _sequence_table(self) -> pa.Table:
        ds = self.sequences
        if ds._indices is not None:  # a selected/shuffled view: materialise the rows it points at
            ds = ds.flatten_indices()
        return ds.data.table

    def validate(self) -> None:
        """Checks the invariants every consumer relies on (see the module docstring).

        The checks run batch by batch with Arrow and NumPy, so they are fast on hundreds of millions of
        events.

        Raises:
            `DataFormatError` naming the column that breaks an invariant (and the user, where one does).
        """
        name = self.name
        for col in SEQUENCE_COLUMNS:
            if col not in self.sequences.column_names:
                raise DataFormatError(f"{name}: sequences lack the column '{col}'")
        for col in ("item_id", "original_id", "title"):
            if col not in self.items.column_names:
                raise DataFormatError(f"{name}: items table lacks the column '{col}'")
        n_items = self.num_items
        item_col = self.items.with_format("arrow")[:]["item_id"].to_numpy()
        if not np.array_equal(item_col, np.arange(1, n_items + 1)):
            raise DataFormatError(f"{name}: items table column 'item_id' must be 1..{n_items} in order")
        has_events = "event_ids" in self.sequences.column_names
        n_events = len(self.event_names or [])
        next_user = 0
        for batch in self._sequence_table().to_batches(max_chunksize=1 << 16):
            users = batch.column("user_id").to_numpy()
            if not np.array_equal(users, np.arange(next_user, next_user + len(users))):
                raise DataFormatError(f"{name}: sequences column 'user_id' must be 0..num_users-1 in order")
            items, ts = batch.column("item_ids"), batch.column("timestamps")
            lengths = pc.list_value_length(items).to_numpy(zero_copy_only=False)
            bad = lengths != pc.list_value_length(ts).to_numpy(zero_copy_only=False)
            if bad.any():
                raise DataFormatError(
                    f"{name}: user {next_user + int(np.argmax(bad))}: columns 'item_ids' and 'timestamps' "
                    "differ in length"
                )
            parents = pc.list_parent_indices(items).to_numpy()
            flat_items = pc.list_flatten(items).to_numpy()
            bad = (flat_items < 1) | (flat_items > n_items)
            if bad.any():
                user = next_user + int(parents[np.argmax(bad)])
                raise DataFormatError(f"{name}: user {user}: column 'item_ids' has ids outside 1..{n_items}")
            flat_ts = pc.list_flatten(ts).to_numpy()
            bad = (flat_ts[1:] < flat_ts[:-1]) & (parents[1:] == parents[:-1])
            if bad.any():
                user = next_user + int(parents[np.argmax(bad)])
                raise DataFormatError(f"{name}: user {user}: column 'timestamps' is not sorted")
            if has_events:
                events = batch.column("event_ids")
                bad = lengths != pc.list_value_length(events).to_numpy(zero_copy_only=False)
                if bad.any():
                    user = next_user + int(np.argmax(bad))
                    raise DataFormatError(f"{name}: user {user}: column 'event_ids' has the wrong length")
                flat_ev = pc.list_flatten(events).to_numpy()
                if len(flat_ev) and n_events and (flat_ev.min() < 0 or flat_ev.max() >= n_events):
                    raise DataFormatError(f"{name}: column 'event_ids' has ids outside 0..{n_events - 1}")
            next_user += len(users)

    def save_to_disk(self, directory: str | Path) -> None:
        """Writes the bundle with `datasets.Dataset.save_to_disk`; a `bundle.json` marks it complete.

        The marker is written last, so an interrupted save never looks like a finished cache.
        """
        directory = Path(directory)
        marker = directory / "bundle.json"
        if marker.exists():
            marker.unlink()
        directory.mkdir(parents=True, exist_ok=True)
        self.sequences.save_to_disk(str(directory / "sequences"))
        self.items.save_to_disk(str(directory / "items"))
        if self.users is not None:
            self.users.save_to_disk(str(directory / "users"))
        meta = {
            "name": self.name,
            "event_names": self.event_names,
            "dropped": self.dropped,
            "has_users": self.users is not None,
        }
        tmp = directory / "bundle.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(marker)

    @classmethod
    def load_from_disk(cls, directory: str | Path) -> RecDataBundle:
        directory = Path(directory)
        marker = directory / "bundle.json"
        if not directory.is_dir():
            raise GGRFileNotFoundError(f"{directory}: no such folder (expected a prepared ggr-hf data set)")
        if not marker.exists():
            raise GGRFileNotFoundError(
                f"{directory} is not a complete ggr-hf data set (no bundle.json); prepare it again"
            )
        try:
            meta = json.loads(marker.read_text())
            name = meta["name"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataFormatError(
                f"{marker}: not a readable ggr-hf bundle marker ({err!r}); prepare the data set again"
            ) from None
        tables = {}
        for part in ("sequences", "items", "users"):
            if part == "users" and not meta.get("has_users"):
                tables[part] = None
                continue
            try:
                tables[part] = datasets.load_from_disk(str(directory / part))
            except FileNotFoundError as err:
                raise GGRFileNotFoundError(
                    f"{directory / part}: missing from the prepared data set ({err}); prepare it again"
                ) from None
            except (OSError, ValueError, pa.ArrowException) as err:
                raise DataFormatError(
                    f"{directory / part}: not a readable datasets folder ({err}); prepare it again"
                ) from None
        return cls(
            name=name,
            sequences=tables["sequences"],
            items=tables["items"],
            users=tables["users"],
            event_names=meta.get("event_names"),
            dropped=meta.get("dropped", {}),
        )

    @staticmethod
    def is_complete(directory: str | Path) -> bool:
        return (Path(directory) / "bundle.json").exists()
