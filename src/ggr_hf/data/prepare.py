"""`prepare_dataset`: raw public files -> a cached `RecDataBundle`, and the out-of-core grouping engine.

This module has two parts.

**The registry and the cache.** `prepare_dataset(name, raw_dir, out_dir, **options)` runs the loader
registered under `name` (`pixelrec`, `merrec`, `ebnerd`, `release`) and saves the bundle to `out_dir`
with `RecDataBundle.save_to_disk`. Next to it goes `fingerprint.json`: the loader's name, version and
options, and the path, size and modification time of every input file. A later call with the same
fingerprint loads the cache; any change (a shard added, a file touched, another `min_events`) rebuilds
it. The bundle is written into a temporary sibling folder that is renamed onto `out_dir` only once it
is complete (its `bundle.json` marker written last), so an interrupted prepare never leaves a folder
at `out_dir` that looks complete; the stale temporary folder is removed by the next prepare.

**The grouping engine** (`UserCounter`, `UserIndex`, `KeyCoder`, `SequenceBuilder`), shared by the
loaders. The public data sets are large (MerRec: 1.27 billion events in about 1,800 parquet shards), so
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
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .schema import DataFormatError, DropCounter, RecDataBundle

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "FINGERPRINT_FILE",
    "arrow_dataset",
    "AttributeCollector",
    "BuildResult",
    "check_bundle",
    "check_columns",
    "compute_fingerprint",
    "count_invalid",
    "DatasetSpec",
    "get_dataset_spec",
    "hash_strings",
    "int_column",
    "iter_parquet_batches",
    "keep_valid",
    "KeyCoder",
    "natural_order",
    "open_parquet",
    "prefetch",
    "prepare_dataset",
    "print_summary",
    "read_parquet_table",
    "release_memory",
    "repair_utf8",
    "repair_utf8_values",
    "SequenceBuilder",
    "summarize",
    "timestamps_to_microseconds",
    "user_keys",
    "UserCounter",
    "UserIndex",
    "users_dataset",
    "valid_mask",
    "WorkDir",
]

FINGERPRINT_FILE = "fingerprint.json"
# Bumped when the cache layout written by `prepare_dataset` changes.
PREPARE_FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------------
# Small Arrow / NumPy helpers shared by the loaders
# ---------------------------------------------------------------------------------------------------

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def hash_strings(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit FNV-1a hash of every value of a string or binary array, vectorised with NumPy.

    Used to turn string user ids into integer keys without a Python dictionary of millions of
    strings. Nulls hash like the empty string; callers mask them separately. Collisions are detected
    by `UserCounter` (it keeps the smallest and largest string per key), never silently merged.

    Args:
        array (`pa.Array` or `pa.ChunkedArray`): string, large_string, binary or large_binary values.

    Returns:
        `np.ndarray` of shape `(len(array),)` and dtype int64.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if pa.types.is_string(array.type):
        array = array.cast(pa.binary())
    elif pa.types.is_large_string(array.type):
        array = array.cast(pa.large_binary())
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    offset_type = np.int64 if pa.types.is_large_binary(array.type) else np.int32
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[array.offset : array.offset + n + 1].astype(
        np.int64
    )
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    # Longest first: at byte k only the strings longer than k are still active, a prefix of `order`.
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    sorted_starts = starts[order]
    ascending_neg = -sorted_lengths
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    max_len = int(sorted_lengths[0]) if n else 0
    for k in range(max_len):
        # The number of strings longer than k, from the descending lengths.
        n_active = int(np.searchsorted(ascending_neg, -k, side="left"))
        if n_active == 0:
            break
        active = slice(0, n_active)
        h[active] ^= data[sorted_starts[active] + k].astype(np.uint64)
        h[active] *= _FNV_PRIME
    out = np.empty(n, dtype=np.uint64)
    out[order] = h
    return out.view(np.int64)


def natural_order(values: pa.Array) -> np.ndarray:
    """Indices that sort ids in a "natural" order: by length, then by value.

    For ids that share a prefix and differ by a number (`i2`, `i10`, `u3`) this is the numeric order,
    which keeps internal ids close to the publisher's. Integers are sorted numerically.
    """
    if pa.types.is_integer(values.type):
        return np.argsort(values.to_numpy(zero_copy_only=False), kind="stable")
    table = pa.table({"len": pc.binary_length(values.cast(pa.binary())), "value": values})
    return pc.sort_indices(table, sort_keys=[("len", "ascending"), ("value", "ascending")]).to_numpy()


def release_memory() -> None:
    """Returns memory Arrow's allocator keeps cached for reuse to the system.

    Called between phases and shards: the allocator otherwise holds on to the high-water mark of
    every phase, which shows up as resident memory long after the buffers are freed.
    """
    pa.default_memory_pool().release_unused()


def valid_mask(array: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """The validity of an Arrow column as a NumPy mask, or None when it has no nulls (the usual case)."""
    if array.null_count == 0:
        return None
    return pc.is_valid(array).to_numpy(zero_copy_only=False)


def keep_valid(checks: Iterable[tuple[str, np.ndarray | None]], drops: DropCounter) -> np.ndarray | None:
    """Combines row validity masks and counts each dropped row once, under the first reason it fails.

    Args:
        checks: `(reason, mask)` pairs in priority order; a mask is a boolean array `[num_rows]` (true:
            the row is fine) or `None` when every row passes.
        drops (`DropCounter`): receives the count per reason.

    Returns:
        The combined boolean mask `[num_rows]`, or `None` when every row passes every check.
    """
    ok = None
    for reason, mask in checks:
        if mask is None:
            continue
        bad = ~mask if ok is None else ok & ~mask
        drops.add(reason, int(np.count_nonzero(bad)))
        ok = mask if ok is None else ok & mask
    return ok


def _repair_utf8_array(array: pa.Array) -> tuple[pa.Array, int]:
    """One text array (string, list of strings, dictionary of strings) with invalid UTF-8 replaced by
    U+FFFD, and how many values changed."""
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        values, changed = _repair_utf8_array(array.values)
        if not changed:
            return array, 0
        return type(array).from_arrays(array.offsets, values, mask=pc.is_null(array)), changed
    if pa.types.is_dictionary(array.type):
        dictionary, bad = repair_utf8_values(array.dictionary)
        if bad is None:
            return array, 0
        indices = pc.fill_null(array.indices, 0).to_numpy(zero_copy_only=False)
        valid = pc.is_valid(array.indices).to_numpy(zero_copy_only=False)
        changed = int(np.count_nonzero(bad[indices[valid]]))
        return pa.DictionaryArray.from_arrays(array.indices, dictionary), changed
    fixed, bad = repair_utf8_values(array)
    return fixed, 0 if bad is None else int(bad.sum())


def repair_utf8_values(array: pa.Array) -> tuple[pa.Array, np.ndarray | None]:
    """A string (or binary) array as strings with invalid UTF-8 replaced by U+FFFD.

    Returns:
        The string array, and the boolean mask `[len(array)]` of the replaced values (`None`: all valid).
    """
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        # Same memory layout; the view is checked below instead of by a failing cast.
        array = array.view(pa.large_string() if pa.types.is_large_binary(array.type) else pa.string())
    try:
        array.validate(full=True)
        return array, None
    except pa.ArrowInvalid:
        pass
    # Only reached for a column that holds bad bytes: decode value by value.
    raw = array.view(pa.large_binary() if pa.types.is_large_string(array.type) else pa.binary()).to_pylist()
    out, bad = [], np.zeros(len(raw), dtype=bool)
    for i, value in enumerate(raw):
        if value is None:
            out.append(None)
            continue
        try:
            out.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(value.decode("utf-8", errors="replace"))
            bad[i] = True
    return pa.array(out, array.type), bad


def _is_text_type(arrow_type: pa.DataType) -> bool:
    if (
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_dictionary(arrow_type)
    ):
        return _is_text_type(arrow_type.value_type)
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def repair_utf8(table: pa.Table, path: Path, drops: DropCounter) -> pa.Table:
    """Replaces invalid UTF-8 in the string columns of `table` by U+FFFD and counts the values repaired.

    Parquet readers do not check that `string` columns hold UTF-8, so a bad title would only fail much
    later, far from its file (when `datasets` or the user reads it). The check is one pass in C++ per
    column; only a column that fails is decoded in Python. Repaired values are counted as
    `non_utf8_text_replaced` (values, not rows dropped) and logged with the file and column.

    Args:
        table (`pa.Table`): rows read from `path`; string, list-of-string and dictionary-encoded string
            columns are checked.
        path (`Path`): the file the rows came from, for the log.
        drops (`DropCounter`): receives the count.

    Returns:
        `pa.Table`: `table`, with the repaired columns replaced.
    """
    for i, name in enumerate(table.column_names):
        column = table.column(i)
        if not _is_text_type(column.type):
            continue
        chunks, changed = [], 0
        for chunk in column.chunks:
            fixed, n = _repair_utf8_array(chunk)
            chunks.append(fixed)
            changed += n
        if changed:
            logger.warning(
                "%s: column '%s' has %d value(s) that are not UTF-8; bad bytes replaced", path, name, changed
            )
            drops.add("non_utf8_text_replaced", changed)
            table = table.set_column(i, name, pa.chunked_array(chunks, column.type))
    return table


def count_invalid(valid: np.ndarray | None) -> int:
    return 0 if valid is None else int(len(valid) - np.count_nonzero(valid))


def int_column(array: pa.Array | pa.ChunkedArray, fill: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """An integer Arrow column as int64 NumPy values (nulls become `fill`) and its `valid_mask`."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    valid = valid_mask(array)
    values = pc.fill_null(array, fill) if valid is not None else array
    return values.cast(pa.int64()).to_numpy(zero_copy_only=False), valid


def _time_unit_per_second(arrow_type: pa.DataType) -> int:
    return {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[arrow_type.unit]


def timestamps_to_microseconds(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None]:
    """A timestamp column (any unit) or an integer column (seconds) as int64 microseconds + validity.

    Microseconds keep the publishers' sub-second order for sorting; the output sequences are floored
    to seconds at the end (`SequenceBuilder(ts_divisor=1_000_000)`).
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if pa.types.is_timestamp(array.type):
        per_s = _time_unit_per_second(array.type)
        values, valid = int_column(array.cast(pa.int64()))
        # Nanoseconds are floored to microseconds; coarser units are scaled up exactly.
        if per_s > 1_000_000:
            values = np.floor_divide(values, per_s // 1_000_000)
        elif per_s < 1_000_000:  # microseconds (the usual unit) need no copy
            values = values * (1_000_000 // per_s)
        return values, valid
    if pa.types.is_integer(array.type):
        values, valid = int_column(array)
        return values * 1_000_000, valid
    raise TypeError(f"not a timestamp or integer column: {array.type}")


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


def user_keys(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None, pa.Array | None]:
    """User ids as int64 keys: integers as they are, strings hashed with `hash_strings`.

    Returns:
        `(keys, valid, originals)`: keys with nulls set to 0, the `valid_mask` (None: no nulls), and for
        string ids the valid strings (aligned with the valid keys), else None.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if pa.types.is_integer(array.type):
        keys, valid = int_column(array)
        return keys, valid, None
    valid = valid_mask(array)
    keys = hash_strings(array)
    originals = array if valid is None else array.filter(pa.array(valid))
    return keys, valid, originals.cast(pa.string())


# Column type families used to check a file's schema (a shard with another schema is an error).
_TYPE_FAMILIES: dict[str, Callable[[pa.DataType], bool]] = {
    "integer": pa.types.is_integer,
    "string": lambda t: (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or (
            pa.types.is_dictionary(t)
            and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type))
        )
    ),
    "timestamp": pa.types.is_timestamp,
    "numeric": lambda t: pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t),
    "boolean": pa.types.is_boolean,
}
_TYPE_FAMILIES["integer or string"] = lambda t: _TYPE_FAMILIES["integer"](t) or _TYPE_FAMILIES["string"](t)
_TYPE_FAMILIES["timestamp or integer"] = lambda t: pa.types.is_timestamp(t) or pa.types.is_integer(t)
for _inner in ("integer", "string", "timestamp", "numeric"):
    _TYPE_FAMILIES[f"list<{_inner}>"] = lambda t, _f=_TYPE_FAMILIES[_inner]: (
        (pa.types.is_list(t) or pa.types.is_large_list(t)) and _f(t.value_type)
    )


def type_family(arrow_type: pa.DataType) -> str:
    """The family (`string`, `integer`, `numeric`, `boolean`, ...) an Arrow type belongs to."""
    for family in ("string", "integer", "numeric", "boolean", "timestamp"):
        if _TYPE_FAMILIES[family](arrow_type):
            return family
    return str(arrow_type)


def family_target_type(family: str) -> pa.DataType | None:
    """The Arrow type a column of a family is cast to in the output tables."""
    return {"string": pa.string(), "integer": pa.int64(), "numeric": pa.float64(), "boolean": pa.bool_()}.get(
        family
    )


def open_parquet(path: Path, read_dictionary: Sequence[str] | None = None) -> pq.ParquetFile:
    """Opens a parquet file, turning unreadable (e.g. truncated) files into `DataFormatError`."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return pq.ParquetFile(str(path), read_dictionary=read_dictionary)
    except (OSError, pa.ArrowException) as err:
        raise DataFormatError(f"{path}: not a readable parquet file ({err})") from err


def read_parquet_table(path: Path, columns: list[str]) -> pa.Table:
    """A whole (small) parquet file, read errors named by file."""
    pf = open_parquet(path)
    try:
        return pf.read(columns=columns)
    except (OSError, pa.ArrowException) as err:
        raise DataFormatError(f"{path}: cannot read columns {columns} ({err})") from err


def check_columns(path: Path, schema: pa.Schema, required: dict[str, str]) -> None:
    """Checks that `schema` (of `path`) has each required column with a type of the given family.

    Raises:
        `DataFormatError` naming the file, the column, and the type found.
    """
    for column, family in required.items():
        if column not in schema.names:
            raise DataFormatError(f"{path}: missing column '{column}' (expected {family})")
        found = schema.field(column).type
        if not _TYPE_FAMILIES[family](found):
            raise DataFormatError(f"{path}: column '{column}' has type {found}, expected {family}")


def iter_parquet_batches(
    path: Path, columns: list[str], batch_size: int = 1 << 20, read_dictionary: Sequence[str] | None = None
):
    """`ParquetFile.iter_batches` with read errors (corrupt pages, bad compression) named by file.

    Columns in `read_dictionary` come back dictionary-encoded, which skips materialising one string per
    row for low-cardinality columns.
    """
    pf = open_parquet(path, read_dictionary)
    try:
        yield from pf.iter_batches(batch_size=batch_size, columns=columns)
    except (OSError, pa.ArrowException) as err:
        raise DataFormatError(f"{path}: cannot read columns {columns} ({err})") from err


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


def prefetch(iterable: Iterable, depth: int = 1):
    """Iterates `iterable` in a background thread, `depth` items ahead.

    Parquet decoding releases the GIL, so on two cores the next batch is read while this one is
    processed. Exceptions from the producer are re-raised in the consumer.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                if stop.is_set():
                    return
                q.put((None, item))
            q.put((None, done))
        except BaseException as err:  # handed to the consumer
            q.put((err, None))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            err, item = q.get()
            if err is not None:
                raise err
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)


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


def arrow_dataset(table: pa.Table) -> datasets.Dataset:
    """An in-memory `datasets.Dataset` over an Arrow table (no copy through Python objects).

    A fresh fingerprint is given because `datasets` would otherwise hash the whole table (pickling
    every buffer), which costs seconds for a million-item table.
    """
    return datasets.Dataset(table, fingerprint=uuid.uuid4().hex)


@contextlib.contextmanager
def _datasets_progress(enabled: bool):
    """Turns `datasets`' own progress bars off while saving when progress is off."""
    was_enabled = datasets.is_progress_bar_enabled()
    if not enabled and was_enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and was_enabled:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _large_write_batches(rows: int = 100_000):
    """Lets `Dataset.save_to_disk` write batches of up to `rows` rows instead of 1,000.

    `save_to_disk` writes `datasets.config.DEFAULT_MAX_BATCH_SIZE` rows at a time (still capped at about
    100 MB by `datasets`), with a fixed Python cost per batch: seconds for a million-item table.
    """
    previous = datasets.config.DEFAULT_MAX_BATCH_SIZE
    datasets.config.DEFAULT_MAX_BATCH_SIZE = max(previous, rows)
    try:
        yield
    finally:
        datasets.config.DEFAULT_MAX_BATCH_SIZE = previous


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


# ---------------------------------------------------------------------------------------------------
# Checking and summarising a bundle, vectorised
# ---------------------------------------------------------------------------------------------------


def _sequence_table(bundle: RecDataBundle) -> pa.Table:
    ds = bundle.sequences
    if ds._indices is not None:  # a selected/shuffled view: materialise the rows it points at
        ds = ds.flatten_indices()
    return ds.data.table


def summarize(bundle: RecDataBundle) -> dict:
    """`RecDataBundle.summary()` computed with Arrow, so it is fast on hundreds of millions of events."""
    table = _sequence_table(bundle)
    interactions = int(pc.sum(pc.list_value_length(table.column("item_ids"))).as_py() or 0)
    return {
        "name": bundle.name,
        "users": bundle.num_users,
        "items": bundle.num_items,
        "interactions": interactions,
        "events": list(bundle.event_names or []),
        "dropped": dict(bundle.dropped),
    }


def check_bundle(bundle: RecDataBundle) -> None:
    """The invariants of `RecDataBundle.validate`, checked batch by batch with Arrow and NumPy.

    Raises:
        `DataFormatError` naming the column that breaks an invariant.
    """
    name = bundle.name
    for col in ("user_id", "item_ids", "timestamps"):
        if col not in bundle.sequences.column_names:
            raise DataFormatError(f"{name}: sequences lack the column '{col}'")
    for col in ("item_id", "original_id", "title"):
        if col not in bundle.items.column_names:
            raise DataFormatError(f"{name}: items table lacks the column '{col}'")
    n_items = len(bundle.items)
    item_col = bundle.items.data.table.column("item_id").to_numpy()
    if not np.array_equal(item_col, np.arange(1, n_items + 1)):
        raise DataFormatError(f"{name}: items table column 'item_id' must be 1..{n_items} in order")
    has_events = "event_ids" in bundle.sequences.column_names
    n_events = len(bundle.event_names or [])
    next_user = 0
    for batch in _sequence_table(bundle).to_batches(max_chunksize=1 << 16):
        users = batch.column("user_id").to_numpy()
        if not np.array_equal(users, np.arange(next_user, next_user + len(users))):
            raise DataFormatError(f"{name}: sequences column 'user_id' must be 0..num_users-1 in order")
        next_user += len(users)
        items, ts = batch.column("item_ids"), batch.column("timestamps")
        lengths = pc.list_value_length(items).to_numpy(zero_copy_only=False)
        if not np.array_equal(lengths, pc.list_value_length(ts).to_numpy(zero_copy_only=False)):
            raise DataFormatError(f"{name}: columns 'item_ids' and 'timestamps' differ in length")
        flat_items = pc.list_flatten(items).to_numpy()
        if len(flat_items) and (flat_items.min() < 1 or flat_items.max() > n_items):
            raise DataFormatError(f"{name}: column 'item_ids' has ids outside 1..{n_items}")
        flat_ts = pc.list_flatten(ts).to_numpy()
        parents = pc.list_parent_indices(ts).to_numpy()
        same_user = parents[1:] == parents[:-1]
        if np.any((flat_ts[1:] < flat_ts[:-1]) & same_user):
            raise DataFormatError(f"{name}: column 'timestamps' is not sorted within a user")
        if has_events:
            events = batch.column("event_ids")
            if not np.array_equal(lengths, pc.list_value_length(events).to_numpy(zero_copy_only=False)):
                raise DataFormatError(f"{name}: column 'event_ids' has the wrong length")
            flat_ev = pc.list_flatten(events).to_numpy()
            if len(flat_ev) and n_events and (flat_ev.min() < 0 or flat_ev.max() >= n_events):
                raise DataFormatError(f"{name}: column 'event_ids' has ids outside 0..{n_events - 1}")


def print_summary(
    summary: dict,
    *,
    out_dir: str | Path | None = None,
    seconds: float | None = None,
    cached: bool = False,
    file=None,
) -> None:
    """Prints users, items, interactions and dropped rows by reason."""
    file = file or sys.stdout
    where = f" -> {out_dir}" if out_dir is not None else ""
    note = " (cached)" if cached else (f" in {seconds:.1f} s" if seconds is not None else "")
    print(f"{summary['name']}{where}{note}", file=file)
    print(f"  users         {summary['users']:>15,}", file=file)
    print(f"  items         {summary['items']:>15,}", file=file)
    print(f"  interactions  {summary['interactions']:>15,}", file=file)
    if summary.get("events"):
        print(f"  event types   {', '.join(summary['events'])}", file=file)
    dropped = summary.get("dropped") or {}
    if dropped:
        print("  dropped / repaired rows by reason:", file=file)
        width = max(len(k) for k in dropped)
        for reason, n in sorted(dropped.items()):
            print(f"    {reason:<{width}}  {n:>13,}", file=file)
    else:
        print("  dropped rows: none", file=file)


# ---------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """A data set `prepare_dataset` knows: where its loader lives and what it reads.

    The loader is `module.loader(raw_dir, *, work_dir=None, progress=True, **options)`; the module's
    `input_files(raw_dir, **options)` lists the files whose sizes and times make up the fingerprint,
    and its `LOADER_VERSION` is part of the fingerprint so that a changed loader rebuilds caches.
    """

    name: str
    module: str
    loader: str
    description: str

    def _module(self):
        return importlib.import_module(self.module, package=__package__)

    def load_function(self) -> Callable[..., RecDataBundle]:
        return getattr(self._module(), self.loader)

    def input_files(self, raw_dir: Path, options: dict) -> list[Path]:
        return list(self._module().input_files(raw_dir, **options))

    @property
    def version(self) -> str:
        return str(getattr(self._module(), "LOADER_VERSION", "0"))

    def option_names(self) -> list[str]:
        params = inspect.signature(self.load_function()).parameters
        return [
            p
            for p, v in params.items()
            if v.kind is inspect.Parameter.KEYWORD_ONLY and p not in _RUNTIME_OPTIONS
        ]


# Options that change how a loader runs, not what it produces: not part of the fingerprint.
_RUNTIME_OPTIONS = ("work_dir", "progress", "bucket_rows", "batch_rows", "block_size")

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "pixelrec", ".pixelrec", "load_pixelrec", "PixelRec / Pixel8M interaction + item-info CSVs"
        ),
        DatasetSpec("merrec", ".merrec", "load_merrec", "MerRec monthly folders of parquet shards"),
        DatasetSpec(
            "ebnerd", ".ebnerd", "load_ebnerd", "EB-NeRD split folder (train/history.parquet, articles)"
        ),
        DatasetSpec("release", ".release", "load_release_dir", "the GGR release's processed parquet pair"),
    )
}


def get_dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    return value


def _file_entry(path: Path, raw_dir: Path) -> list:
    st = path.stat()
    try:
        shown = str(path.resolve().relative_to(raw_dir.resolve()))
    except ValueError:
        shown = str(path.resolve())
    return [shown, st.st_size, st.st_mtime_ns]


def compute_fingerprint(name: str, raw_dir: str | Path, options: dict | None = None) -> dict:
    """The fingerprint of a prepare: loader name and version, options, and every input file's stat.

    Args:
        name (`str`): a registered data set.
        raw_dir (`str` or `Path`): the publisher's folder.
        options (`dict`, *optional*): the loader options (runtime-only options are ignored).

    Returns:
        a JSON-serialisable dict; two prepares with equal fingerprints produce the same bundle.
    """
    spec = get_dataset_spec(name)
    raw_dir = Path(raw_dir)
    options = {k: v for k, v in (options or {}).items() if k not in _RUNTIME_OPTIONS}
    files = sorted(spec.input_files(raw_dir, options))
    return {
        "format": PREPARE_FORMAT_VERSION,
        "dataset": spec.name,
        "loader_version": spec.version,
        "options": _jsonable(options),
        "files": [_file_entry(p, raw_dir) for p in files],
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Removes temporary folders left by prepares into `out_dir` whose process has died."""
    for prefix in (f".{out_dir.name}.tmp-", f".{out_dir.name}.old-"):
        for path in out_dir.parent.glob(prefix + "*"):
            try:
                pid = int(path.name[len(prefix) :].split("-")[0])
            except ValueError:
                continue
            if not _pid_alive(pid) or pid == os.getpid():
                shutil.rmtree(path, ignore_errors=True)


def _read_fingerprint(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / FINGERPRINT_FILE).read_text())
    except (OSError, ValueError):
        return None


def prepare_dataset(
    name: str,
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    verbose: bool = True,
    **options,
) -> RecDataBundle:
    """Reads a public data set from the publisher's files and caches it as a `RecDataBundle`.

    Args:
        name (`str`): `"pixelrec"`, `"merrec"`, `"ebnerd"` or `"release"` (see `DATASETS`).
        raw_dir (`str` or `Path`): the folder as the publisher ships it.
        out_dir (`str` or `Path`): the cache folder (created; replaced when the fingerprint changes).
        force (`bool`, *optional*, defaults to `False`): rebuild even if the cache is up to date.
        progress (`bool`, *optional*, defaults to `True`): show tqdm progress bars.
        verbose (`bool`, *optional*, defaults to `True`): print the summary.
        **options: the loader's keyword options (e.g. `min_events=2000`); unknown ones are an error.

    Returns:
        the bundle, loaded (memory-mapped) from `out_dir`.

    Raises:
        `ValueError` for an unknown data set or option, `FileNotFoundError` for a missing input,
        `DataFormatError` for malformed input (the message names the file and the column).
    """
    spec = get_dataset_spec(name)
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"raw folder {raw_dir} does not exist")
    allowed = set(spec.option_names()) | (
        set(_RUNTIME_OPTIONS) & set(inspect.signature(spec.load_function()).parameters)
    ) - {"work_dir", "progress"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"option(s) {', '.join(unknown)} do not apply to {spec.name}; it accepts: {', '.join(sorted(allowed))}"
        )
    fingerprint = compute_fingerprint(spec.name, raw_dir, options)
    if not force and RecDataBundle.is_complete(out_dir) and _read_fingerprint(out_dir) == fingerprint:
        bundle = RecDataBundle.load_from_disk(out_dir)
        if verbose:
            print_summary(summarize(bundle), out_dir=out_dir, cached=True)
        return bundle
    if (
        out_dir.exists()
        and any(out_dir.iterdir())
        and not ((out_dir / "bundle.json").exists() or (out_dir / FINGERPRINT_FILE).exists())
    ):
        raise FileExistsError(f"{out_dir} exists and is not a ggr-hf data set; refusing to overwrite it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{tag}"
    start = time.perf_counter()
    try:
        tmp.mkdir()
        work = tmp / "_work"
        bundle = spec.load_function()(raw_dir, work_dir=work, progress=progress, **options)
        if bundle.num_users == 0:
            # `datasets` cannot reload an empty saved table, and an empty cache is never what was meant.
            raise DataFormatError(
                f"{spec.name}: no user is left after the filters (options {options or 'default'}); "
                f"rows dropped by reason: {bundle.dropped}"
            )
        check_bundle(bundle)
        # The fingerprint goes in before `save_to_disk` writes the `bundle.json` marker, and the whole
        # folder only appears at `out_dir` by the rename below.
        (tmp / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=1))
        with _large_write_batches(), _datasets_progress(progress):
            bundle.save_to_disk(tmp)
        del bundle
        shutil.rmtree(work, ignore_errors=True)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{tag}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle = RecDataBundle.load_from_disk(out_dir)
    if verbose:
        print_summary(summarize(bundle), out_dir=out_dir, seconds=time.perf_counter() - start)
    return bundle


def iter_progress(iterable: Iterable, *, desc: str, unit: str, progress: bool, total: int | None = None):
    """tqdm over `iterable`, or the iterable itself when progress bars are off."""
    return tqdm(iterable, desc=desc, unit=unit, total=total, disable=not progress, leave=False)
