"""The out-of-core grouping engine the loaders share (`UserCounter`, `UserIndex`, `KeyCoder`,
`SequenceBuilder`, `AttributeCollector`).

The public data sets are large (MerRec: 1.27 billion events in about 1,800 parquet shards), so
nothing here materialises one Python object per interaction and nothing holds all events in memory:

1. pass 1 streams the user column only (parquet column projection) and counts rows per user
   (`UserCounter`: Arrow hash aggregation, merged across batches);
2. the users whose raw count reaches `min_events` become candidates (`UserIndex`), ranked in the order
   of their original ids;
3. pass 2 streams the needed columns again and keeps the candidates' rows; item keys get dense codes
   in first-seen order (`KeyCoder`, which also tells the loader which rows hold an item's first
   occurrence, for its attributes), and `(rank, item code, time, event)` rows are appended to
   temporary Arrow files, one per contiguous range of ranks ("buckets" of about `bucket_rows` rows);
4. each bucket is sorted by (user, time, event, item key) with NumPy (the keys packed into one uint64
   word where they fit), exact duplicates are dropped, `min_events` is applied again to the cleaned
   counts, and the bucket becomes one batch of the output, its list columns built from offsets
   (`pyarrow.ListArray.from_arrays`);
5. internal item ids `1..N` are given in the order of the item keys, over the items that kept events
   reference, and the item lists are rewritten once through a dense lookup table.

Peak memory is about one input batch, one bucket, 16 bytes per distinct item and the final item
table, whatever the number of shards; the temporary disk space is about 21 bytes per candidate event.
The two passes themselves are driven by `ggr_hf.data.pipeline.TwoPassLoader`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrow_utils import iter_progress, natural_order, release_memory
from .schema import DataFormatError, DropCounter

__all__ = [
    "AttributeCollector",
    "BuildResult",
    "KeyCoder",
    "SequenceBuilder",
    "UserCounter",
    "UserIndex",
]


def _pack_words(keys: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Integer keys (primary first) offset to 0 and packed, least significant first, into uint64 words.

    Comparing the words lexicographically compares the keys lexicographically; with one word a single
    NumPy sort replaces a much slower multi-key `np.lexsort`.
    """
    shifted = []
    for k in keys:
        k = np.asarray(k)
        if len(k) == 0:
            shifted.append((np.zeros(0, np.uint64), 1))
            continue
        lo, hi = int(k.min()), int(k.max())
        bits = max(int(hi - lo).bit_length(), 1)
        # One pass, one fresh array: k - lo as int64, reinterpreted as uint64 (it is >= 0).
        shifted.append((np.subtract(k, lo, dtype=np.int64).view(np.uint64), bits))
    words: list[np.ndarray] = []
    current, used = None, 0
    for values, bits in reversed(shifted):
        if current is None:
            current, used = values, bits
        elif used + bits <= 64:
            np.left_shift(values, np.uint64(used), out=values)
            current |= values
            used += bits
        else:
            words.append(current)
            current, used = values, bits
    words.append(current)
    return words[::-1]


def _sort_order(keys: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Lexicographic order of integer keys (primary first), and the packed words in that order.

    The first packed word is sorted with one `argsort`; rows that tie on it (rare: equal user, time
    and, usually, event) are then ordered by the remaining words, on that small subset only. Rows equal
    in every key are interchangeable, so no stable sort is needed.
    """
    words = _pack_words(keys)
    order = np.argsort(words[0])
    words = [w[order] for w in words]
    if len(words) > 1 and len(order) > 1:
        tie = np.zeros(len(order), dtype=bool)
        eq = words[0][1:] == words[0][:-1]
        tie[1:] |= eq
        tie[:-1] |= eq
        pos = np.flatnonzero(tie)
        if len(pos):
            # Tied rows of one primary value are contiguous, so sorting the subset by all words and
            # writing it back into the same positions orders every run.
            sub = np.lexsort([w[pos] for w in reversed(words)])
            order[pos] = order[pos[sub]]
            for w in words:
                w[pos] = w[pos[sub]]
    return order, words


# ---------------------------------------------------------------------------------------------------
# Pass 1: counting rows per user
# ---------------------------------------------------------------------------------------------------


class UserCounter:
    """Counts rows per user key over a stream of batches, in bounded memory.

    Partial counts are Arrow hash aggregations of each batch; they are merged (summed) whenever they
    grow past twice the last merged size, so memory stays about proportional to the number of users.
    With `originals` (string ids hashed by `hash_strings`), the smallest and largest original per key
    are kept too: they differ only if two ids collide on the 64-bit hash, which is then an error.
    """

    def __init__(self) -> None:
        self._parts: list[pa.Table] = []
        self._rows = 0
        self._merged_rows = 0
        self._with_originals: bool | None = None

    def add(
        self, keys: np.ndarray, originals: pa.Array | None = None, weights: np.ndarray | None = None
    ) -> None:
        """Adds one batch of user keys (int64, no nulls).

        Args:
            keys (`np.ndarray` of int64): one key per row.
            originals (`pa.Array`, *optional*): for hashed string ids, the strings (aligned with keys).
            weights (`np.ndarray` of int64, *optional*): rows each key stands for (default 1), e.g. the
                length of a user's history list.
        """
        if len(keys) == 0:
            return
        if self._with_originals is None:
            self._with_originals = originals is not None
        columns = {"key": pa.array(keys, pa.int64())}
        aggs = []
        if weights is None:
            aggs.append(("key", "count"))
        else:
            columns["w"] = pa.array(weights, pa.int64())
            aggs.append(("w", "sum"))
        if originals is not None:
            columns["orig"] = originals
            aggs += [("orig", "min"), ("orig", "max")]
        part = pa.table(columns).group_by("key").aggregate(aggs)
        # Columns by name: the position of the key column among the aggregates differs across versions.
        count = "key_count" if weights is None else "w_sum"
        part = self._normalise(part, {"count": count, "orig_min": "orig_min", "orig_max": "orig_max"})
        self._parts.append(part)
        self._rows += part.num_rows
        if self._rows > max(2 * self._merged_rows, 4_000_000):
            self._merge()

    @staticmethod
    def _normalise(table: pa.Table, names: dict[str, str]) -> pa.Table:
        columns = {"key": table.column("key")}
        for new, old in names.items():
            if old in table.column_names:
                columns[new] = table.column(old)
        return pa.table(columns)

    def _merge(self) -> None:
        if len(self._parts) <= 1:
            return
        table = pa.concat_tables(self._parts)
        aggs = [("count", "sum")]
        if self._with_originals:
            aggs += [("orig_min", "min"), ("orig_max", "max")]
        merged = table.group_by("key").aggregate(aggs)
        merged = self._normalise(
            merged, {"count": "count_sum", "orig_min": "orig_min_min", "orig_max": "orig_max_max"}
        )
        self._parts = [merged]
        self._rows = self._merged_rows = merged.num_rows

    def result(self) -> tuple[np.ndarray, np.ndarray, pa.Array | None]:
        """Returns `(keys, counts, originals)`; `originals` is None for integer ids."""
        self._merge()
        if not self._parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), None
        table = self._parts[0]
        keys = table.column("key").to_numpy()
        counts = table.column("count").to_numpy().astype(np.int64)
        if not self._with_originals:
            return keys, counts, None
        lo, hi = table.column("orig_min"), table.column("orig_max")
        clash = pc.not_equal(lo, hi)
        if pc.any(clash).as_py():
            first = pc.filter(table, clash).slice(0, 1).to_pylist()[0]
            raise DataFormatError(
                f"user ids {first['orig_min']!r} and {first['orig_max']!r} share a 64-bit hash; "
                "this is astronomically unlikely; please report it"
            )
        return keys, counts, lo.combine_chunks()


@dataclass
class UserIndex:
    """The candidate users of pass 2: their keys, and their ranks in the order of the original ids.

    Attributes:
        sorted_keys (`np.ndarray` of int64): candidate keys in ascending order, for `lookup`.
        rank_of_sorted (`np.ndarray` of int64): the rank of each key of `sorted_keys`.
        counts (`np.ndarray` of int64): raw row count per rank (from pass 1).
        original_ids (`pa.Array` of string): the publisher's id per rank.
    """

    sorted_keys: np.ndarray
    rank_of_sorted: np.ndarray
    counts: np.ndarray
    original_ids: pa.Array
    _value_set: pa.Array | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        keys: np.ndarray,
        counts: np.ndarray,
        originals: pa.Array | None,
        min_events: int,
        drops: DropCounter,
    ) -> UserIndex:
        """Keeps the users with at least `min_events` raw rows; the others' rows are counted as dropped."""
        keep = counts >= max(int(min_events), 1)
        drops.add("user_below_min_events", int(counts[~keep].sum()))
        keys, counts = keys[keep], counts[keep]
        originals = pa.array(keys, pa.int64()) if originals is None else originals.filter(pa.array(keep))
        by_rank = natural_order(originals)  # position in `keys` of the user with rank r
        ranks = np.empty(len(keys), dtype=np.int64)
        ranks[by_rank] = np.arange(len(keys))
        key_order = np.argsort(keys, kind="stable")
        return cls(
            sorted_keys=keys[key_order],
            rank_of_sorted=ranks[key_order],
            counts=counts[by_rank],
            original_ids=originals.take(pa.array(by_rank)).cast(pa.string()),
        )

    def __len__(self) -> int:
        return len(self.sorted_keys)

    def select(self, keys: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The rows of a batch that belong to candidates, and their ranks.

        Args:
            keys (`np.ndarray` of int64): user keys of the batch.
            valid (`np.ndarray` of bool, *optional*): rows whose user id is not null.

        Returns:
            `(rows, ranks)`: int64 row indices (ascending) and the rank of each.
        """
        n = len(self.sorted_keys)
        if n == 0 or len(keys) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if n <= 500_000:
            if self._value_set is None:
                self._value_set = pa.array(self.sorted_keys)
            key_array = pa.array(keys, pa.int64())
            hit = pc.is_in(key_array, value_set=self._value_set).to_numpy(zero_copy_only=False)
            if valid is not None:
                hit &= valid
            rows = np.flatnonzero(hit)
            pos = pc.index_in(key_array.take(pa.array(rows)), value_set=self._value_set).to_numpy()
            return rows, self.rank_of_sorted[pos]
        ranks = self.lookup(keys)
        if valid is not None:
            ranks[~valid] = -1
        rows = np.flatnonzero(ranks >= 0)
        return rows, ranks[rows]

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Ranks of `keys` (int64), -1 for keys that are not candidates."""
        n = len(self.sorted_keys)
        if n == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        if n <= 500_000:
            # A hash lookup beats a binary search while the candidate set stays cache-sized.
            if self._value_set is None:
                self._value_set = pa.array(self.sorted_keys)
            pos = pc.index_in(pa.array(keys, pa.int64()), value_set=self._value_set)
            pos = pc.fill_null(pos, -1).to_numpy(zero_copy_only=False)
            return np.where(pos >= 0, self.rank_of_sorted[np.maximum(pos, 0)], -1)
        # Large candidate sets: binary search with sorted queries, which walks memory in order.
        order = np.argsort(keys)
        pos = np.minimum(np.searchsorted(self.sorted_keys, keys[order]), n - 1)
        found = self.sorted_keys[pos] == keys[order]
        out = np.empty(len(keys), dtype=np.int64)
        out[order] = np.where(found, self.rank_of_sorted[pos], -1)
        return out


# ---------------------------------------------------------------------------------------------------
# Pass 2: bucketed grouping
# ---------------------------------------------------------------------------------------------------


class KeyCoder:
    """Gives int64 keys (e.g. MerRec item ids) dense codes `0, 1, 2, ...` in first-seen order.

    Vectorised and in bounded time per batch: the known keys are kept sorted, in two levels (a large
    `main` level and a small `recent` one merged into it when it grows past 1/8 of it), so that adding a
    batch never re-sorts everything seen so far.
    """

    def __init__(self) -> None:
        self._levels = [
            (np.zeros(0, np.int64), np.zeros(0, np.int64)),
            (np.zeros(0, np.int64), np.zeros(0, np.int64)),
        ]
        self.size = 0

    def _find(self, uniq: np.ndarray) -> np.ndarray:
        codes = np.full(len(uniq), -1, dtype=np.int64)
        for keys, level_codes in self._levels:
            if len(keys) == 0:
                continue
            pos = np.minimum(np.searchsorted(keys, uniq), len(keys) - 1)
            hit = keys[pos] == uniq
            codes[hit] = level_codes[pos[hit]]
        return codes

    @staticmethod
    def _merge(
        a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        keys = np.concatenate([a[0], b[0]])
        # A stable sort of two sorted runs is a linear merge (timsort).
        order = np.argsort(keys, kind="stable")
        return keys[order], np.concatenate([a[1], b[1]])[order]

    def encode(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes of `values`; new keys get the next codes, in the order of their first row.

        Returns:
            `(codes, new_rows)`: a code per value, and the row of the first occurrence of every key
            that was new in this batch (their codes are consecutive, in the order of these rows).
        """
        if len(values) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        order = np.argsort(values)
        sorted_values = values[order]
        starts = np.empty(len(values), dtype=bool)
        starts[0] = True
        np.not_equal(sorted_values[1:], sorted_values[:-1], out=starts[1:])
        uniq = sorted_values[starts]
        # The sort is not stable: the first occurrence of a value is the smallest row of its run.
        first_rows = np.minimum.reduceat(order, np.flatnonzero(starts))
        ucodes = self._find(uniq)
        new = ucodes < 0
        new_rows = np.sort(first_rows[new])
        if len(new_rows):
            # New codes in first-seen order: the k-th new row (by position) gets size + k.
            rank = np.empty(len(new_rows), np.int64)
            rank[np.argsort(first_rows[new], kind="stable")] = np.arange(len(new_rows))
            ucodes[new] = self.size + rank
            self.size += len(new_rows)
            main, recent = self._levels
            recent = self._merge(recent, (uniq[new], ucodes[new]))
            if len(recent[0]) * 8 > len(main[0]):
                main, recent = self._merge(main, recent), (recent[0][:0], recent[1][:0])
            self._levels = [main, recent]
        codes = np.empty(len(values), dtype=np.int64)
        codes[order] = ucodes[np.cumsum(starts) - 1]
        return codes, new_rows

    def keys_by_code(self) -> np.ndarray:
        """The key of every code, indexed by code."""
        out = np.empty(self.size, dtype=np.int64)
        for keys, codes in self._levels:
            out[codes] = keys
        return out


@dataclass
class BuildResult:
    """What `SequenceBuilder.finish` produced.

    Attributes:
        sequences_path (`Path`): an Arrow stream file with `user_id`, `item_ids`, `timestamps` and,
            when events were given, `event_ids`; `datasets.Dataset.from_file` memory-maps it.
        user_ranks (`np.ndarray` of int64): for each output user (row), its `UserIndex` rank.
        item_keys (`np.ndarray` of int64): the loader's key of internal item `i` at position `i - 1`
            (ascending: internal ids follow the order of the keys).
        item_codes (`np.ndarray` of int64): the `KeyCoder` code of internal item `i` at position `i - 1`.
        num_interactions (`int`): total events written.
    """

    sequences_path: Path
    user_ranks: np.ndarray
    item_keys: np.ndarray
    item_codes: np.ndarray
    num_interactions: int


def _sequence_schema(has_events: bool) -> pa.Schema:
    fields = [
        pa.field("user_id", pa.int64()),
        pa.field("item_ids", pa.list_(pa.int64())),
        pa.field("timestamps", pa.list_(pa.int64())),
    ]
    if has_events:
        fields.append(pa.field("event_ids", pa.list_(pa.int64())))
    return pa.schema(fields)


class SequenceBuilder:
    """Groups `(rank, item, time[, event])` rows into per-user, time-ordered sequences out of core.

    Args:
        work_dir (`Path`): where the temporary bucket files and the output file go.
        counts (`np.ndarray` of int64): raw rows per rank (`UserIndex.counts`), to size the buckets.
        has_events (`bool`): whether rows carry an event type.
        ts_divisor (`int`): the output timestamps are `floor(time / ts_divisor)` (e.g. 1_000_000 when
            times are microseconds); sorting and de-duplication use the full-precision time.
        bucket_rows (`int`): target rows per bucket; a bucket is held in memory while it is sorted.
        flush_rows (`int`): rows buffered in memory before they are appended to the bucket files.
    """

    def __init__(
        self,
        work_dir: str | Path,
        counts: np.ndarray,
        *,
        has_events: bool,
        ts_divisor: int = 1,
        bucket_rows: int = 1_000_000,
        flush_rows: int = 1_000_000,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.has_events = has_events
        self.ts_divisor = int(ts_divisor)
        self.flush_rows = int(flush_rows)
        self.items = KeyCoder()
        total = int(counts.sum())
        # At most 512 open bucket files; bigger buckets rather than more files.
        bucket_rows = max(int(bucket_rows), -(-total // 512), 1)
        cum = np.cumsum(counts)
        cuts = np.searchsorted(cum, np.arange(1, max(-(-total // bucket_rows), 1)) * bucket_rows, side="left")
        starts = np.unique(np.concatenate([[0], cuts + 1]))
        self.bucket_starts = starts[starts < max(len(counts), 1)].astype(np.int64)
        self._buffers: list[list[tuple]] = [[] for _ in self.bucket_starts]
        self._buffered = 0
        self._writers: dict[int, tuple[pa.NativeFile, pa.ipc.RecordBatchStreamWriter]] = {}
        self._schema = pa.schema(
            [("rank", pa.int32()), ("item", pa.int64()), ("ts", pa.int64())]
            + ([("event", pa.int8())] if has_events else [])
        )

    def _bucket_path(self, b: int) -> Path:
        return self.work_dir / f"bucket-{b:05d}.arrow"

    def add(
        self, ranks: np.ndarray, items: np.ndarray, ts: np.ndarray, events: np.ndarray | None = None
    ) -> np.ndarray:
        """Adds rows of candidate users (ranks >= 0, no nulls), partitioned into buckets.

        Args:
            ranks, items, ts, events (`np.ndarray` of shape `(n,)`): user rank, item key (int64),
                time (int64, any unit) and event type (small int) per row.

        Returns:
            `np.ndarray`: the rows (indices into this batch) holding the first occurrence of items
            never seen before, in the order of their codes (see `KeyCoder.encode`), so that a loader
            can keep each item's first-seen attributes.
        """
        n = len(ranks)
        if n == 0:
            return np.zeros(0, np.int64)
        if self.has_events and events is None:
            raise ValueError("this builder expects events")
        codes, new_rows = self.items.encode(np.asarray(items, dtype=np.int64))
        if len(self.bucket_starts) == 1:
            self._buffers[0].append((ranks, codes, ts, events))
        else:
            # int16 bucket numbers (at most 512 buckets): NumPy's stable sort is then a radix sort.
            buckets = (np.searchsorted(self.bucket_starts, ranks, side="right") - 1).astype(np.int16)
            order = np.argsort(buckets, kind="stable")
            bounds = np.searchsorted(buckets[order], np.arange(len(self.bucket_starts) + 1))
            ranks, codes, ts = ranks[order], codes[order], ts[order]
            if events is not None:
                events = events[order]
            for b in np.flatnonzero(np.diff(bounds)):
                s = slice(bounds[b], bounds[b + 1])
                self._buffers[b].append(
                    (ranks[s], codes[s], ts[s], events[s] if events is not None else None)
                )
        self._buffered += n
        if self._buffered >= self.flush_rows:
            self._flush()
        return new_rows

    def _flush(self) -> None:
        for b, parts in enumerate(self._buffers):
            if not parts:
                continue
            cols = [
                pa.array(np.concatenate([p[0] for p in parts]).astype(np.int32, copy=False)),
                pa.array(np.concatenate([p[1] for p in parts]).astype(np.int64, copy=False)),
                pa.array(np.concatenate([p[2] for p in parts]).astype(np.int64, copy=False)),
            ]
            if self.has_events:
                cols.append(pa.array(np.concatenate([p[3] for p in parts]).astype(np.int8, copy=False)))
            if b not in self._writers:
                sink = pa.OSFile(str(self._bucket_path(b)), "wb")
                self._writers[b] = (sink, pa.ipc.new_stream(sink, self._schema))
            self._writers[b][1].write_batch(pa.record_batch(cols, schema=self._schema))
            self._buffers[b] = []
        self._buffered = 0

    def finish(self, min_events: int, drops: DropCounter, *, progress: bool = False) -> BuildResult:
        """Sorts, de-duplicates and filters every bucket, then writes the output sequences file.

        Rows are ordered by (user, full-precision time, event, item key). Duplicates are rows equal in
        user, item, time and event: all but the first are dropped (`duplicate_event`). Users left with
        fewer than `min_events` rows are dropped (`user_below_min_events`, counted in rows). Internal
        item ids follow the order of the item keys, over the items that kept events reference.
        """
        self._flush()
        for sink, writer in self._writers.values():
            writer.close()
            sink.close()
        min_events = max(int(min_events), 1)
        keys_by_code = self.items.keys_by_code()
        used = np.zeros(self.items.size, dtype=bool)
        schema = _sequence_schema(self.has_events)
        draft_path = self.work_dir / "sequences.draft.arrow"
        user_ranks: list[np.ndarray] = []
        next_user = 0
        total = 0
        # Stage 1, bucket by bucket: sort, de-duplicate, filter, and write with provisional item ids
        # (codes + 1), noting which codes are used.
        with pa.OSFile(str(draft_path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for b in iter_progress(
                sorted(self._writers), desc="group users", unit="bucket", progress=progress
            ):
                path = self._bucket_path(b)
                with pa.memory_map(str(path)) as source:
                    table = pa.ipc.open_stream(source).read_all()
                cols = {name: table.column(name).to_numpy() for name in table.column_names}
                del table
                path.unlink()
                # Item keys (not codes) as the last sort key, so that ties resolve like the final ids.
                sort_keys = [cols["rank"], cols["ts"]]
                if self.has_events:
                    sort_keys.append(cols["event"])
                sort_keys.append(keys_by_code[cols["item"]])
                order, words = _sort_order(sort_keys)
                del sort_keys
                dup = np.ones(len(order), dtype=bool)
                dup[0] = False
                for w in words:
                    dup[1:] &= w[1:] == w[:-1]
                del words
                drops.add("duplicate_event", int(dup.sum()))
                rank = cols["rank"][order]
                r0 = int(rank[0])
                keep = ~dup
                ok_user = np.bincount(rank[keep] - r0) >= min_events
                row_ok = keep & ok_user[rank - r0]
                drops.add("user_below_min_events", int(keep.sum() - row_ok.sum()))
                idx = order[row_ok]
                rank = rank[row_ok]
                n = len(idx)
                if n == 0:
                    continue
                codes = cols["item"][idx]
                used[codes] = True
                starts = np.flatnonzero(np.concatenate([[True], rank[1:] != rank[:-1]]))
                offsets = pa.array(np.concatenate([starts, [n]]).astype(np.int32))
                arrays = [
                    pa.array(np.arange(next_user, next_user + len(starts), dtype=np.int64)),
                    pa.ListArray.from_arrays(offsets, pa.array(codes + 1)),
                    pa.ListArray.from_arrays(
                        offsets, pa.array(np.floor_divide(cols["ts"][idx], self.ts_divisor))
                    ),
                ]
                if self.has_events:
                    arrays.append(
                        pa.ListArray.from_arrays(offsets, pa.array(cols["event"][idx].astype(np.int64)))
                    )
                writer.write_batch(pa.record_batch(arrays, schema=schema))
                user_ranks.append(rank[starts].astype(np.int64))
                next_user += len(starts)
                total += n
                del cols, idx, codes, rank
                release_memory()
        # Stage 2: internal item ids in key order over the used items; rewrite the item lists.
        used_codes = np.flatnonzero(used)
        used_codes = used_codes[np.argsort(keys_by_code[used_codes], kind="stable")]
        item_id_of_code = np.zeros(self.items.size + 1, dtype=np.int64)
        item_id_of_code[used_codes + 1] = np.arange(1, len(used_codes) + 1)
        out_path = self.work_dir / "sequences.arrow"
        with (
            pa.memory_map(str(draft_path)) as source,
            pa.OSFile(str(out_path), "wb") as sink,
            pa.ipc.new_stream(sink, schema) as writer,
        ):
            for batch in pa.ipc.open_stream(source):
                items = batch.column("item_ids")
                values = item_id_of_code[items.values.to_numpy()]
                remapped = pa.ListArray.from_arrays(items.offsets, pa.array(values))
                writer.write_batch(batch.set_column(1, "item_ids", remapped))
        draft_path.unlink()
        return BuildResult(
            sequences_path=out_path,
            user_ranks=np.concatenate(user_ranks) if user_ranks else np.zeros(0, np.int64),
            item_keys=keys_by_code[used_codes],
            item_codes=used_codes.astype(np.int64),
            num_interactions=total,
        )


class AttributeCollector:
    """Keeps item (or user) attribute rows out of core, one row per code, and gathers them at the end.

    The loader appends the attributes of the rows `SequenceBuilder.add` reports as first occurrences
    (so each code is written once, in code order); `gather` returns the rows of the kept items in
    internal id order.
    """

    def __init__(self, path: str | Path, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.schema = pa.schema([pa.field("__code", pa.int64()), *schema])
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._next = 0

    def add(self, table: pa.Table) -> None:
        """Appends the attributes of the next `len(table)` codes."""
        if table.num_rows == 0:
            return
        rows = table.cast(pa.schema(list(self.schema)[1:]))
        codes = pa.array(np.arange(self._next, self._next + table.num_rows, dtype=np.int64))
        self._next += table.num_rows
        self._writer.write_table(rows.add_column(0, "__code", codes))

    def gather(self, codes: np.ndarray) -> pa.Table:
        """The attribute rows of `codes` (e.g. `BuildResult.item_codes`), in that order.

        Rows were appended in code order, so row `c` of the file is code `c`: the file is memory-mapped
        (no copy) and the wanted rows are taken once.
        """
        self._writer.close()
        self._sink.close()
        if self._next < (int(codes.max()) + 1 if len(codes) else 0):
            raise RuntimeError(f"attributes were collected for {self._next} codes, fewer than needed")
        with pa.memory_map(str(self.path)) as source:
            table = pa.ipc.open_stream(source).read_all()
            out = table.take(pa.array(codes, pa.int64())).drop_columns(["__code"])
            out = out.combine_chunks()
        del table
        self.path.unlink(missing_ok=True)
        return out
