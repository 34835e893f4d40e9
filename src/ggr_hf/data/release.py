"""The GGR release's processed files (zhykoties/Multi-Head-Recommendation-with-Human-Priors).

The authors train from two parquet files per data set, so their users can start from those:

- a sequence file, one row per user, with the list columns `item_id`, `timestamp` and, for MerRec,
  `event_id` (integers 0..5 in the order of `MERREC_EVENT_NAMES`, or the names themselves), a
  `user_id` column and possibly per-user scalar columns (e.g. the user clusters `user_cluster_*`);
- an item-info parquet keyed by `item_id`, with the text columns (`title`, `tag`, `description`, ...)
  and attribute columns (`tag`, `cluster_*`, `interact_count`, ...).

`load_release` turns them into a `RecDataBundle`:

- `sequences`: each user's events sorted by (timestamp, event, item id) with a stable rule for ties;
  exact duplicates (same item, timestamp and event) are dropped and counted (`duplicate_event`); rows
  with the same `user_id` are merged;
- `items`: every referenced item: `item_id`, `original_id`, `title` (the info's `title`, else empty)
  and every other info column. Internal item ids follow the natural order of the release's ids (by
  length, then value; numeric order for integers). Unlike the other loaders, items missing from the
  item-info file are kept, as the release's own loader does, with empty text (counted as
  `items_without_item_info_kept`);
- `users`: `user_id`, `original_id` (the release's `user_id`, else the row number) and the file's
  per-user scalar columns (from the user's first row);
- `event_names`: given, or `MERREC_EVENT_NAMES` for `name="merrec"`, or the integers / the sorted
  names found.

Timestamps are integers in `timestamp_unit` (by default `"auto"`: inferred from their magnitude and
logged, see `ggr_hf.data.timestamps`) or Arrow timestamps; they are stored in seconds. A time outside
1970-01-01 .. 2100-01-01 after conversion is a `GGRDataError` naming the file, the column, the value
and the unit to pass. Nothing is filtered by default (`min_events=1`): the release's files are already filtered, and
its training code's `> max(min_seq_len, 2 * eval_pred_len)` rule belongs to the evaluation split.

Bad input: a missing file or column, a list column of another type, lists of different lengths in one
row, an event id out of range or unknown, an unreadable file: `DataFormatError` naming the file and the
column. Null users are skipped (`null_user_id`), null items, timestamps or events inside lists are
skipped (`null_item_id`, `null_timestamp`, `null_event_id`). Item-info text that is not valid UTF-8 has
its bad bytes replaced by U+FFFD, counted (in values) as `non_utf8_text_replaced` and logged with the
file and column.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ggr_hf.errors import GGRFileNotFoundError, GGRInputError

from .arrow_utils import (
    check_columns,
    int_column,
    iter_parquet_batches,
    iter_progress,
    keep_valid,
    list_lengths,
    open_parquet,
    read_parquet_table,
    repair_utf8,
    take_rows,
    user_keys,
)
from .engine import BuildResult, SequenceBuilder, UserCounter, UserIndex
from .merrec import MERREC_EVENT_ALIASES, MERREC_EVENT_NAMES
from .pipeline import FirstRowPerUser, TwoPassLoader, count_user_batch
from .schema import DataFormatError, DropCounter, RecDataBundle
from .timestamps import TimestampReader

logger = logging.getLogger(__name__)

__all__ = ["RELEASE_NAMES", "find_release_files", "input_files", "load_release", "load_release_dir"]

LOADER_VERSION = "2"  # 2: `timestamp_unit` defaults to "auto"; every time checked

# Event ids are stored as int8 codes.
MAX_EVENT_TYPES = 128
# The data sets the release ships files for, and the neutral default name.
RELEASE_NAMES = ("release", "merrec", "pixel8m", "ebnerd")


def find_release_files(raw_dir: str | Path) -> tuple[Path, Path]:
    """The sequence file (a list column `item_id`) and the item-info file (a scalar `item_id`) in a folder."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise GGRFileNotFoundError(f"release folder {raw_dir} does not exist")
    seqs, infos = [], []
    for path in sorted(raw_dir.rglob("*.parquet")):
        schema = open_parquet(path).schema_arrow
        if "item_id" not in schema.names:
            continue
        t = schema.field("item_id").type
        (seqs if pa.types.is_list(t) or pa.types.is_large_list(t) else infos).append(path)
    if len(seqs) != 1 or len(infos) != 1:
        raise DataFormatError(
            f"{raw_dir}: expected one sequence parquet (list column 'item_id') and one item-info parquet "
            f"(scalar 'item_id'), found {len(seqs)} and {len(infos)}: {[p.name for p in seqs + infos]}"
        )
    return seqs[0], infos[0]


def input_files(raw_dir: str | Path, **options) -> list[Path]:
    """The files `load_release_dir` reads (for the cache fingerprint)."""
    return list(find_release_files(raw_dir))


def load_release_dir(
    raw_dir: str | Path,
    *,
    release_name: str = "release",
    event_names: Sequence[str] | None = None,
    timestamp_unit: str = "auto",
    min_events: int = 1,
    work_dir: str | Path | None = None,
    progress: bool = True,
    bucket_rows: int = 1_000_000,
) -> RecDataBundle:
    """`load_release` on the two parquet files found in `raw_dir` (see `find_release_files`).

    Args:
        raw_dir (`str` or `Path`): a folder with the release's sequence and item-info parquet files.
        release_name (`str`, *optional*): the data set the files are for (`merrec`, `pixel8m`, `ebnerd`);
            the bundle's name (`RELEASE_NAMES`, case-insensitive).
        event_names, timestamp_unit, min_events, work_dir, progress, bucket_rows: see `load_release`.

    Raises:
        `GGRInputError` for a `release_name` outside `RELEASE_NAMES` (a misspelt `merrec` would lose the
        event names).
    """
    if not isinstance(release_name, str) or release_name.lower() not in RELEASE_NAMES:
        raise GGRInputError(
            f"release_name (--release-name) {release_name!r} is not a known release data set; known: "
            f"{', '.join(RELEASE_NAMES)}"
        )
    release_name = release_name.lower()
    seq_path, info_path = find_release_files(raw_dir)
    return load_release(
        seq_path,
        info_path,
        name=release_name,
        event_names=event_names,
        timestamp_unit=timestamp_unit,
        min_events=min_events,
        work_dir=work_dir,
        progress=progress,
        bucket_rows=bucket_rows,
    )


def _list_check(path: Path, schema: pa.Schema, column: str, families: tuple[str, ...]) -> None:
    if column not in schema.names:
        raise DataFormatError(f"{path}: missing column '{column}'")
    t = schema.field(column).type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        raise DataFormatError(f"{path}: column '{column}' has type {t}, expected a list")
    inner = t.value_type
    ok = {
        "integer": pa.types.is_integer(inner),
        "string": pa.types.is_string(inner) or pa.types.is_large_string(inner),
        "timestamp": pa.types.is_timestamp(inner),
    }
    if not any(ok[f] for f in families):
        raise DataFormatError(
            f"{path}: column '{column}' has type {t}, expected a list of {' or '.join(families)}"
        )


def load_release(
    seq_path: str | Path,
    item_info_path: str | Path,
    *,
    name: str = "release",
    event_names: Sequence[str] | None = None,
    timestamp_unit: str = "auto",
    min_events: int = 1,
    work_dir: str | Path | None = None,
    progress: bool = True,
    bucket_rows: int = 1_000_000,
    batch_rows: int = 2048,
) -> RecDataBundle:
    """Reads the release's processed parquet pair into a `RecDataBundle` (see the module docstring).

    Args:
        seq_path (`str` or `Path`): the sequence file (one row per user, list columns).
        item_info_path (`str` or `Path`): the item-info file keyed by `item_id`.
        name (`str`, *optional*): the bundle's name, e.g. `"merrec"` (which also sets the event names).
        event_names (`Sequence[str]`, *optional*): names of the event ids, in order.
        timestamp_unit (`str`, *optional*, defaults to `"auto"`): unit of integer timestamps: `"s"`,
            `"ms"`, `"us"`, `"ns"`, or `"auto"` (inferred from the magnitude, see `ggr_hf.data.timestamps`).
        min_events (`int`, *optional*, defaults to 1): keep users with at least this many events.
        work_dir (`str` or `Path`, *optional*): scratch folder (see `ggr_hf.data.merrec.load_merrec`).
        progress (`bool`, *optional*, defaults to `True`): show progress bars.
        bucket_rows (`int`, *optional*): rows per in-memory sorting bucket.
        batch_rows (`int`, *optional*): sequence rows (users) read at a time in the first pass; the second
            pass sizes its batches to about 2 million events from the average length seen.
    """
    seq_path, item_info_path = Path(seq_path), Path(item_info_path)
    times = TimestampReader(timestamp_unit)
    schema = open_parquet(seq_path).schema_arrow
    _list_check(seq_path, schema, "item_id", ("integer", "string"))
    _list_check(seq_path, schema, "timestamp", ("integer", "timestamp"))
    has_events = "event_id" in schema.names
    if has_events:
        _list_check(seq_path, schema, "event_id", ("integer", "string"))
    has_user = "user_id" in schema.names
    if has_user:
        check_columns(seq_path, schema, {"user_id": "integer or string"})
    extra_columns = [
        f.name
        for f in schema
        if f.name not in ("user_id", "item_id", "timestamp", "event_id")
        and not (pa.types.is_list(f.type) or pa.types.is_large_list(f.type))
    ]
    info_schema = open_parquet(item_info_path).schema_arrow
    check_columns(item_info_path, info_schema, {"item_id": "integer or string"})
    if event_names is None and name.lower() == "merrec":
        event_names = MERREC_EVENT_NAMES
    loader = _ReleaseLoader(
        name,
        seq_path,
        item_info_path,
        info_schema,
        has_user,
        schema.field("event_id").type.value_type if has_events else None,
        event_names,
        extra_columns,
        times,
        batch_rows,
    )
    return loader.run(min_events=min_events, work_dir=work_dir, progress=progress, bucket_rows=bucket_rows)


class _ReleaseLoader(TwoPassLoader):
    def __init__(
        self,
        name: str,
        seq_path: Path,
        item_info_path: Path,
        info_schema: pa.Schema,
        has_user: bool,
        event_column: pa.DataType | None,
        event_names: Sequence[str] | None,
        extra_columns: list[str],
        times: TimestampReader,
        batch_rows: int,
    ) -> None:
        super().__init__()
        self.name, self.seq_path, self.item_info_path, self.info_schema = (
            name,
            seq_path,
            item_info_path,
            info_schema,
        )
        self.has_user = has_user
        self.has_events = event_column is not None
        self.string_events = self.has_events and not pa.types.is_integer(event_column)
        self.given_event_names = event_names
        self.extra_columns = extra_columns
        self.times = times
        self.batch_rows = batch_rows

    def _batches(self, columns: list[str], batch_rows: int, desc: str):
        """`(first row number, batch)` over the sequence file, with a progress bar over batches."""
        row = 0
        batches = iter_parquet_batches(self.seq_path, columns, batch_rows)
        for batch in iter_progress(
            batches, desc=f"{self.name}: {desc}", unit="batch", progress=self.progress
        ):
            yield row, batch
            row += batch.num_rows

    def _row_users(self, batch: pa.RecordBatch, first_row: int) -> pa.Array:
        """The batch's user ids: the `user_id` column, else the row numbers."""
        if self.has_user:
            return batch.column("user_id")
        return pa.array(np.arange(first_row, first_row + batch.num_rows, dtype=np.int64))

    def count_users(self, counter: UserCounter) -> None:
        # Events per user, the item vocabulary, and the event vocabulary when not given.
        items = UserCounter()
        found_events: set = set()
        max_event = -1
        columns = (
            ["item_id"] + (["user_id"] if self.has_user else []) + (["event_id"] if self.has_events else [])
        )
        for row, batch in self._batches(columns, self.batch_rows, "count"):
            lengths = list_lengths(batch.column("item_id"))
            count_user_batch(counter, self._row_users(batch, row), self.drops, weights=lengths)
            flat = pc.list_flatten(batch.column("item_id")).drop_null()
            ikeys, _, ioriginals = user_keys(flat)
            items.add(ikeys, ioriginals)
            if self.has_events:
                ev = pc.list_flatten(batch.column("event_id")).drop_null()
                if self.string_events:
                    found_events.update(pc.unique(ev).to_pylist())
                elif len(ev):
                    max_event = max(max_event, int(pc.max(ev).as_py()))
        self.item_index = UserIndex.build(*items.result(), min_events=1, drops=DropCounter())
        self.names, self.event_lookup = None, None
        if self.has_events:
            self.names, self.event_lookup = _event_vocabulary(
                self.seq_path, self.given_event_names, self.string_events, found_events, max_event
            )

    def event_names(self) -> list[str] | None:
        return self.names

    def read_events(self, index: UserIndex, builder: SequenceBuilder) -> None:
        # Rows -> the grouping engine, item keys replaced by their natural rank.
        self.extras = FirstRowPerUser(len(index))
        columns = ["item_id", "timestamp"] + (["event_id"] if self.has_events else [])
        columns += (["user_id"] if self.has_user else []) + self.extra_columns
        # Rows are whole histories (MerRec's average thousands of events): batches of ~2M events.
        events_per_row = max(int(index.counts.sum()) // max(len(index), 1), 1)
        rows_per_batch = int(np.clip(2_000_000 // events_per_row, 16, 1 << 16))
        for row, batch in self._batches(columns, rows_per_batch, "read"):
            keys, valid, _ = user_keys(self._row_users(batch, row))
            rows, ranks = index.select(keys, valid)
            if len(rows) == 0:
                continue
            if self.extra_columns:
                self.extras.add(ranks, rows, batch.select(self.extra_columns))
            _add_rows(self.seq_path, batch.take(pa.array(rows)), ranks, builder, self.item_index, self.drops,
                      self.times, self.event_lookup)  # fmt: skip

    def item_table(self, result: BuildResult) -> pa.Table:
        return _item_table(
            self.item_info_path, self.info_schema, self.item_index, result.item_keys, self.drops
        )

    def user_table(self, result: BuildResult) -> pa.Table | None:
        return self.extras.table(result.user_ranks)


def _event_vocabulary(
    path: Path, event_names: Sequence[str] | None, string_events: bool, found: set, max_event: int
) -> tuple[list[str], dict | int]:
    """The event names, and how to map the file's values (a dict for names, the count for integers)."""
    if string_events:
        names = list(event_names) if event_names is not None else sorted(v for v in found if v is not None)
        if len(names) > MAX_EVENT_TYPES:
            raise DataFormatError(
                f"{path}: column 'event_id' has {len(names)} distinct values (e.g. {names[:3]}); at most "
                f"{MAX_EVENT_TYPES} event types are supported"
            )
        lookup = {n: i for i, n in enumerate(names)}
        if event_names is not None and tuple(event_names) == MERREC_EVENT_NAMES:
            lookup.update({a: MERREC_EVENT_NAMES.index(t) for a, t in MERREC_EVENT_ALIASES.items()})
        unknown = sorted(v for v in found if v is not None and v not in lookup)
        if unknown:
            raise DataFormatError(
                f"{path}: column 'event_id' has unknown value(s) {unknown[:5]}; known: {names}"
            )
        return names, lookup
    if max_event >= MAX_EVENT_TYPES:
        # Events are stored as int8 codes; a huge id is a wrong column, not 2**63 event types.
        raise DataFormatError(
            f"{path}: column 'event_id' has the value {max_event}; integer event ids must be "
            f"0..{MAX_EVENT_TYPES - 1} (one per event type)"
        )
    names = list(event_names) if event_names is not None else [str(i) for i in range(max_event + 1)]
    if max_event >= len(names):
        raise DataFormatError(
            f"{path}: column 'event_id' has the value {max_event}, outside 0..{len(names) - 1} ({names})"
        )
    return names, len(names)


def _add_rows(
    path: Path,
    batch: pa.RecordBatch,
    ranks: np.ndarray,
    builder: SequenceBuilder,
    item_index: UserIndex,
    drops: DropCounter,
    times: TimestampReader,
    event_lookup: dict | int | None,
) -> None:
    items, time_lists = batch.column("item_id"), batch.column("timestamp")
    lengths = list_lengths(items)
    others = [("timestamp", time_lists)] + (
        [("event_id", batch.column("event_id"))] if event_lookup is not None else []
    )
    for column, values in others:
        if not np.array_equal(lengths, list_lengths(values)):
            raise DataFormatError(f"{path}: columns 'item_id' and '{column}' differ in length in some row")
    parents = pc.list_parent_indices(items).to_numpy()
    flat_items = pc.list_flatten(items)
    ikeys, item_valid, _ = user_keys(flat_items)
    item_ranks = item_index.lookup(ikeys)
    ts, ts_valid = times.arrow_to_microseconds(
        pc.list_flatten(time_lists), source=str(path), column="timestamp"
    )
    events, event_valid = None, None
    if event_lookup is not None:
        flat_events = pc.list_flatten(batch.column("event_id"))
        if isinstance(event_lookup, dict):
            names = list(event_lookup)
            idx = pc.index_in(flat_events, value_set=pa.array(names, flat_events.type))
            codes = np.array([event_lookup[n] for n in names], dtype=np.int64)
            pos, event_valid = int_column(idx)
            events = codes[pos] if len(codes) else pos
            raw_valid = pc.is_valid(flat_events).to_numpy(zero_copy_only=False)
            if event_valid is not None and (raw_valid & ~event_valid).any():
                bad = flat_events.filter(pa.array(raw_valid & ~event_valid))[0].as_py()
                raise DataFormatError(f"{path}: column 'event_id' has the unknown value {bad!r}")
        else:
            events, event_valid = int_column(flat_events)
            if len(events) and (events.min() < 0 or events.max() >= event_lookup):
                bad = int(events[(events < 0) | (events >= event_lookup)][0])
                raise DataFormatError(
                    f"{path}: column 'event_id' has the value {bad}, outside 0..{event_lookup - 1}"
                )
    flat_ranks = ranks[parents]
    ok = keep_valid(
        [("null_item_id", item_valid), ("null_timestamp", ts_valid), ("null_event_id", event_valid)], drops
    )
    flat_ranks, item_ranks, ts, events = take_rows(ok, flat_ranks, item_ranks, ts, events)
    builder.add(flat_ranks, item_ranks, ts, None if events is None else events.astype(np.int8))


def _item_table(
    path: Path, schema: pa.Schema, item_index: UserIndex, item_ranks: np.ndarray, drops: DropCounter
) -> pa.Table:
    """The kept items (by natural rank) with the info file's columns; items without info get nulls."""
    info = read_parquet_table(path, schema.names)
    keys, valid, _ = user_keys(info.column("item_id"))
    ranks = item_index.lookup(keys)
    if valid is not None:
        ranks[~valid] = -1
    # Position of each kept item's first info row.
    where = np.full(len(item_index), -1, dtype=np.int64)
    rows = np.flatnonzero(ranks >= 0)[::-1]  # reversed so that the first row is written last
    where[ranks[rows]] = rows
    pick = where[item_ranks]
    missing = pick < 0
    drops.add("items_without_item_info_kept", int(missing.sum()))
    picked = info.take(pa.array(np.maximum(pick, 0), mask=missing) if len(pick) else pa.array([], pa.int64()))
    picked = repair_utf8(picked, path, drops)
    columns = {
        "item_id": pa.array(np.arange(1, len(item_ranks) + 1, dtype=np.int64)),
        "original_id": item_index.original_ids.take(pa.array(item_ranks)),
        "title": pc.fill_null(picked.column("title").cast(pa.string()), "")
        if "title" in picked.column_names
        else pa.array([""] * len(item_ranks), pa.string()),
    }
    for name in picked.column_names:
        if name not in columns:
            columns[name] = picked.column(name)
    return pa.table(columns)
