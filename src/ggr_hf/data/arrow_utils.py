"""Arrow and NumPy helpers the loaders share: hashing, ordering, validity, UTF-8 repair, typed columns
and parquet reading with errors named by file.

Nothing here materialises one Python object per row: the helpers work on whole Arrow arrays or NumPy
columns, so that they scale to the public data sets' hundreds of millions of events.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ggr_hf.errors import GGRFileNotFoundError

from .schema import DataFormatError, DropCounter

logger = logging.getLogger(__name__)

__all__ = [
    "arrow_dataset",
    "check_columns",
    "count_invalid",
    "family_target_type",
    "hash_strings",
    "int_column",
    "iter_parquet_batches",
    "iter_progress",
    "keep_valid",
    "list_lengths",
    "natural_order",
    "open_parquet",
    "prefetch",
    "read_parquet_table",
    "release_memory",
    "repair_utf8",
    "repair_utf8_values",
    "take_rows",
    "timestamps_to_microseconds",
    "type_family",
    "user_keys",
    "valid_mask",
]

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


def take_rows(ok: np.ndarray | None, *columns: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
    """`columns` (aligned NumPy arrays) restricted to the rows `ok` keeps, e.g. `keep_valid`'s mask.

    `ok=None` keeps every row and returns the columns as they are; `None` columns stay `None`.
    """
    if ok is None:
        return columns
    keep = np.flatnonzero(ok)
    return tuple(None if c is None else c[keep] for c in columns)


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
    """The number of rows a `valid_mask` marks invalid (0 for `None`)."""
    return 0 if valid is None else int(len(valid) - np.count_nonzero(valid))


def int_column(array: pa.Array | pa.ChunkedArray, fill: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """An integer Arrow column as int64 NumPy values (nulls become `fill`) and its `valid_mask`."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    valid = valid_mask(array)
    values = pc.fill_null(array, fill) if valid is not None else array
    return values.cast(pa.int64()).to_numpy(zero_copy_only=False), valid


def list_lengths(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The length of every list of a list column as int64 NumPy values `[len(array)]`, null lists as 0."""
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False)
    return lengths.astype(np.int64, copy=False)


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
for _inner in ("integer", "string", "timestamp", "numeric", "timestamp or integer"):
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
        raise GGRFileNotFoundError(f"{path}: file not found")
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


def prefetch(iterable: Iterable, depth: int = 1):
    """Iterates `iterable` in a background thread, `depth` items ahead.

    Parquet decoding releases the GIL, so on two cores the next batch is read while this one is
    processed. Exceptions from the producer are re-raised in the consumer.
    """
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


def arrow_dataset(table: pa.Table) -> datasets.Dataset:
    """An in-memory `datasets.Dataset` over an Arrow table (no copy through Python objects).

    A fresh fingerprint is given because `datasets` would otherwise hash the whole table (pickling
    every buffer), which costs seconds for a million-item table.
    """
    return datasets.Dataset(table, fingerprint=uuid.uuid4().hex)


def iter_progress(iterable: Iterable, *, desc: str, unit: str, progress: bool, total: int | None = None):
    """tqdm over `iterable`, or the iterable itself when progress bars are off."""
    return tqdm(iterable, desc=desc, unit=unit, total=total, disable=not progress, leave=False)
