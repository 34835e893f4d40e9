"""The two-pass pipeline every out-of-core loader runs, with the loader's own steps as hooks.

A loader subclasses `TwoPassLoader` and says how to count events per user (pass 1), how to turn a batch
of its files into `(rank, item key, time[, event])` rows for the `SequenceBuilder` (pass 2), and how to
build its item (and optional user) table from the grouping result. `TwoPassLoader.run` does the rest:
the scratch folder, the candidate users, the grouping engine, memory release between phases, and the
`RecDataBundle` with its drop counts.
"""

from __future__ import annotations

import abc
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from .arrow_utils import arrow_dataset, iter_parquet_batches, iter_progress, release_memory, user_keys
from .engine import BuildResult, SequenceBuilder, UserCounter, UserIndex
from .schema import DropCounter, RecDataBundle

logger = logging.getLogger(__name__)

__all__ = ["FirstRowPerUser", "TwoPassLoader", "WorkDir", "count_user_batch", "users_dataset"]


class WorkDir:
    """A loader's scratch folder: the caller's, or a temporary one removed by `cleanup`.

    When the folder is temporary the loader reads its outputs into memory before `cleanup`, so the
    returned bundle never points at deleted files.
    """

    def __init__(self, work_dir: str | Path | None) -> None:
        self.temporary = work_dir is None
        self.path = Path(tempfile.mkdtemp(prefix="ggr-hf-")) if work_dir is None else Path(work_dir)
        self.path.mkdir(parents=True, exist_ok=True)

    def load_sequences(self, result: BuildResult) -> datasets.Dataset:
        return datasets.Dataset.from_file(str(result.sequences_path), in_memory=self.temporary)

    def bundle(
        self,
        name: str,
        result: BuildResult,
        items: pa.Table,
        users: UserIndex,
        drops: DropCounter,
        *,
        user_columns: pa.Table | None = None,
        event_names: Sequence[str] | None = None,
    ) -> RecDataBundle:
        """The loader's `RecDataBundle` from the grouping result, with the drop counts logged.

        Args:
            name (`str`): the data set's name.
            result (`BuildResult`): `SequenceBuilder.finish`'s result.
            items (`pa.Table`): the item table, one row per kept item in internal id order.
            users (`UserIndex`): the user index the sequences were built with.
            drops (`DropCounter`): everything skipped or repaired on the way.
            user_columns (`pa.Table`, *optional*): extra user columns, one row per output user.
            event_names (`Sequence[str]`, *optional*): the event types the `event_ids` index.
        """
        bundle = RecDataBundle(
            name=name,
            sequences=self.load_sequences(result),
            items=arrow_dataset(items),
            users=users_dataset(users, result, user_columns),
            event_names=list(event_names) if event_names is not None else None,
            dropped=drops.as_dict(),
        )
        drops.log(name)
        return bundle

    def cleanup(self) -> None:
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)


def users_dataset(index: UserIndex, result: BuildResult, extra: pa.Table | None = None) -> datasets.Dataset:
    """The `users` table: internal `user_id`, the publisher's `original_id`, then `extra` columns.

    `extra`, when given, has one row per output user in output order.
    """
    n = len(result.user_ranks)
    table = pa.table(
        {
            "user_id": pa.array(np.arange(n, dtype=np.int64)),
            "original_id": index.original_ids.take(pa.array(result.user_ranks)),
        }
    )
    if extra is not None:
        for name in extra.column_names:
            table = table.append_column(name, extra.column(name))
    return arrow_dataset(table)


def count_user_batch(
    counter: UserCounter,
    user_ids: pa.Array | pa.ChunkedArray,
    drops: DropCounter,
    weights: np.ndarray | None = None,
) -> None:
    """Pass 1 for one batch: adds its users to `counter`; null users are counted as `null_user_id`.

    Args:
        counter (`UserCounter`): the running counts.
        user_ids (`pa.Array`): the batch's user column (integers or strings), one value per row.
        drops (`DropCounter`): receives the dropped events.
        weights (`np.ndarray` of int64 `[len(user_ids)]`, *optional*): events each row stands for (e.g.
            the length of a history list); 1 per row by default.
    """
    keys, valid, originals = user_keys(user_ids)
    if valid is not None:
        drops.add(
            "null_user_id", int(len(valid) - valid.sum()) if weights is None else int(weights[~valid].sum())
        )
        keys = keys[valid]
        weights = None if weights is None else weights[valid]
    counter.add(keys, originals, weights=weights)


class FirstRowPerUser:
    """Keeps the first row (in file order) of each candidate user's per-user columns, out of the stream.

    Args:
        num_users (`int`): the number of candidate users (`len(UserIndex)`).
    """

    def __init__(self, num_users: int) -> None:
        self._seen = np.zeros(num_users, dtype=bool)
        self._parts: list[tuple[np.ndarray, pa.Table]] = []

    def add(self, ranks: np.ndarray, rows: np.ndarray, table: pa.Table | pa.RecordBatch) -> None:
        """Notes the rows of users not seen yet.

        Args:
            ranks (`np.ndarray` of int64 `[n]`): the rank of each candidate row.
            rows (`np.ndarray` of int64 `[n]`): the row of `table` each rank belongs to.
            table (`pa.Table` or `pa.RecordBatch`): the per-user columns of the batch.
        """
        uniq, first = np.unique(ranks, return_index=True)
        new = ~self._seen[uniq]
        if not new.any():
            return
        self._seen[uniq[new]] = True
        picked = table.take(pa.array(rows[first[new]]))
        if isinstance(picked, pa.RecordBatch):
            picked = pa.Table.from_batches([picked])
        self._parts.append((uniq[new], picked))

    def table(self, user_ranks: np.ndarray) -> pa.Table | None:
        """The columns in output order (`BuildResult.user_ranks`); users never seen get nulls. `None`
        when nothing was added."""
        if not self._parts:
            return None
        ranks = np.concatenate([r for r, _ in self._parts])
        table = pa.concat_tables([t for _, t in self._parts])
        order = np.argsort(ranks)
        ranks = ranks[order]
        pos = np.minimum(np.searchsorted(ranks, user_ranks), len(ranks) - 1)
        found = ranks[pos] == user_ranks
        return table.take(pa.array(np.where(found, order[pos], 0), mask=~found))


class TwoPassLoader(abc.ABC):
    """The skeleton of a loader built on the grouping engine (see `ggr_hf.data.engine`).

    Subclasses set `name` (the bundle's name), `has_events` and `ts_divisor` (the output timestamps are
    `floor(time / ts_divisor)`; loaders feed microseconds) and implement the hooks `count_users`,
    `read_events` and `item_table` (and, where they apply, `user_table` and `event_names`). The hooks
    share `self.drops` (the drop counts, from construction on), and during `run` `self.work` (the
    scratch folder) and `self.progress`.
    """

    name: str = ""
    has_events: bool = False
    ts_divisor: int = 1_000_000

    def __init__(self) -> None:
        self.drops = DropCounter()
        self.progress = True
        self.work: WorkDir | None = None

    @abc.abstractmethod
    def count_users(self, counter: UserCounter) -> None:
        """Pass 1: adds every event's user to `counter` (e.g. with `count_user_batch`)."""

    @abc.abstractmethod
    def read_events(self, index: UserIndex, builder: SequenceBuilder) -> None:
        """Pass 2: feeds the candidate users' events (`index.select`) to `builder.add`."""

    @abc.abstractmethod
    def item_table(self, result: BuildResult) -> pa.Table:
        """The item table, one row per kept item in internal id order (`result.item_keys`)."""

    def user_table(self, result: BuildResult) -> pa.Table | None:
        """Extra user columns, one row per output user (`result.user_ranks`), or `None`."""
        return None

    def event_names(self) -> Sequence[str] | None:
        """The event types `event_ids` index, or `None` without events."""
        return None

    def parquet_batches(
        self,
        sources: Iterable[tuple[Path, Sequence[str]]],
        batch_rows: int,
        *,
        desc: str,
        unit: str = "file",
        read_dictionary: Sequence[str] | None = None,
    ) -> Iterator[tuple[Path, pa.RecordBatch]]:
        """`(path, batch)` over the given columns of every file, with a progress bar over the files.

        Memory the allocator cached for the previous file is handed back before each file.
        """
        sources = list(sources)
        for path, columns in iter_progress(sources, desc=desc, unit=unit, progress=self.progress):
            release_memory()
            for batch in iter_parquet_batches(
                path, list(columns), batch_rows, read_dictionary=read_dictionary
            ):
                yield path, batch

    def run(
        self, *, min_events: int, work_dir: str | Path | None, progress: bool, bucket_rows: int
    ) -> RecDataBundle:
        """Runs both passes and returns the bundle (named `self.name`).

        Args:
            min_events (`int`): keep users with at least this many events (raw in pass 1, cleaned after).
            work_dir (`str` or `Path`, *optional*): scratch folder; the returned sequences are
                memory-mapped from it (see `WorkDir`).
            progress (`bool`): show progress bars.
            bucket_rows (`int`): rows per in-memory sorting bucket.
        """
        self.progress = progress
        self.work = WorkDir(work_dir)
        try:
            counter = UserCounter()
            self.count_users(counter)
            index = UserIndex.build(*counter.result(), min_events=min_events, drops=self.drops)
            del counter
            release_memory()
            logger.info("%s: %d users have at least %d raw events", self.name, len(index), min_events)
            builder = SequenceBuilder(
                self.work.path / "buckets",
                index.counts,
                has_events=self.has_events,
                ts_divisor=self.ts_divisor,
                bucket_rows=bucket_rows,
            )
            self.read_events(index, builder)
            release_memory()
            result = builder.finish(min_events, self.drops, progress=progress)
            release_memory()
            return self.work.bundle(
                self.name,
                result,
                self.item_table(result),
                index,
                self.drops,
                user_columns=self.user_table(result),
                event_names=self.event_names(),
            )
        finally:
            self.work.cleanup()
