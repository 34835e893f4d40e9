"""MerRec (Mercari, Hugging Face `mercari-us/merrec`) from its monthly folders of parquet shards.

The publisher's layout is one folder per month (`20230501/`, `20230601/`, ...), each holding about 300
parquet shards; the files are read in sorted path order. One row is one event, with (among others) the
columns `user_id`, `stime` (timestamp), `event_id` (string), `item_id` (int64), `name`, `price`,
`c0_name`, `c1_name`, `c2_name`, `brand_name`, `item_condition_name`, `size_name`, `color`.

What `load_merrec` builds:

- `sequences`: one row per user, the user's events sorted by (`stime`, event type, item id), with
  `timestamps` in whole seconds (floored) and `event_ids` indexing `MERREC_EVENT_NAMES`;
- `event_names`: the six canonical event types, in the funnel order used by the paper's event prior:
  `item_view, item_like, item_add_to_cart_tap, offer_make, buy_start, buy_comp`;
- `items`: `item_id`, `original_id` (MerRec's item id), `title` (`name`), `category_name` (the first
  non-null of `c2_name, c1_name, c0_name`: the finest category known), `c0_name`, `c1_name`, `c2_name`
  and the `item_columns` (default: brand, price, condition, size, colour). An item's attributes come
  from its first row in file order among the rows read for candidate users (see step 2 below);
- `users`: `user_id`, `original_id`.

The paper keeps users with at least 2000 events ("merrec_2000"): `min_events=2000` is the default.

Scale: the full data set is 1.27 billion events in about 1,800 shards. The loader never holds more than
one batch of one shard plus one bucket of the grouping engine (see `ggr_hf.data.engine`):

1. every shard's schema is checked first (footers only), so a bad shard fails in seconds, not hours;
2. pass 1 reads `user_id` only and counts events per user; users under `min_events` are dropped here;
3. pass 2 reads the needed columns, keeps the remaining users' rows and hands them to the engine,
   which sorts, de-duplicates and re-applies `min_events` bucket by bucket.

Bad input, and what happens (the rules apply in this order; a row is counted once, under the first
rule it breaks; the counts are in `bundle.dropped`):

- a missing, unreadable or truncated shard: `DataFormatError` naming the file;
- a shard lacking a column or with an incompatible type (e.g. `item_id` as string, `stime` as string,
  `price` as string where other shards have numbers): `DataFormatError` naming the file and column;
- an `stime` outside 1970-01-01 .. 2100-01-01 (integer `stime` is read in `timestamp_unit`, inferred
  from its magnitude by default, see `ggr_hf.data.timestamps`): `GGRDataError` naming the file, the
  column, the value and the unit to pass;
- null `user_id`: skipped, `null_user_id`;
- fewer than `min_events` events: skipped, `user_below_min_events` (counted in events);
- null `item_id`, `stime` or `event_id`: skipped, `null_item_id` / `null_stime` / `null_event_id`;
- an `event_id` outside the six types (aliases such as `add_to_cart` are accepted): `DataFormatError`
  naming the file, the column and the values, unless `skip_unknown_events=True`, which skips and counts
  them as `unknown_event_id`;
- duplicate events (same user, item, `stime` to the microsecond, and event type): all but the first
  are skipped, `duplicate_event`;
- text that is not valid UTF-8 in a kept item's attributes (`name`, the category names, the
  `item_columns`): the bad bytes become U+FFFD, counted (in values) as `non_utf8_text_replaced` and
  logged with the file and column.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ggr_hf.errors import GGRFileNotFoundError

from .arrow_utils import (
    check_columns,
    family_target_type,
    int_column,
    keep_valid,
    open_parquet,
    prefetch,
    repair_utf8,
    take_rows,
    type_family,
    user_keys,
    valid_mask,
)
from .engine import AttributeCollector, BuildResult, SequenceBuilder, UserCounter, UserIndex
from .pipeline import TwoPassLoader, count_user_batch
from .schema import DataFormatError, RecDataBundle
from .timestamps import TimestampReader

logger = logging.getLogger(__name__)

__all__ = [
    "CATEGORY_COLUMNS",
    "DEFAULT_ITEM_COLUMNS",
    "MERREC_EVENT_ALIASES",
    "MERREC_EVENT_NAMES",
    "find_shards",
    "input_files",
    "load_merrec",
]

LOADER_VERSION = "2"  # 2: integer `stime` in `timestamp_unit`, every time checked

MERREC_EVENT_NAMES = ("item_view", "item_like", "item_add_to_cart_tap", "offer_make", "buy_start", "buy_comp")
# Other spellings seen in derived files (the GGR release calls add-to-cart `add_to_cart`).
MERREC_EVENT_ALIASES = {"add_to_cart": "item_add_to_cart_tap", "item_add_to_cart": "item_add_to_cart_tap"}
# Finest first: `category_name` is the first non-null of these.
CATEGORY_COLUMNS = ("c2_name", "c1_name", "c0_name")
DEFAULT_ITEM_COLUMNS = ("brand_name", "price", "item_condition_name", "size_name", "color")

_REQUIRED = {
    "user_id": "integer or string",
    "stime": "timestamp or integer",
    "event_id": "string",
    "item_id": "integer",
    "name": "string",
    "c0_name": "string",
    "c1_name": "string",
    "c2_name": "string",
}

_EVENT_LOOKUP = list(MERREC_EVENT_NAMES) + list(MERREC_EVENT_ALIASES)
_EVENT_CODES = np.array(
    [MERREC_EVENT_NAMES.index(MERREC_EVENT_ALIASES.get(v, v)) for v in _EVENT_LOOKUP], dtype=np.int8
)


def find_shards(raw_dir: str | Path) -> list[Path]:
    """The parquet shards under `raw_dir` (monthly sub-folders or flat), in sorted path order."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise GGRFileNotFoundError(f"MerRec folder {raw_dir} does not exist")
    shards = sorted(
        p
        for p in raw_dir.rglob("*.parquet")
        if not any(part.startswith(".") for part in p.relative_to(raw_dir).parts)
    )
    if not shards:
        raise GGRFileNotFoundError(f"no parquet shards (*.parquet) under {raw_dir}")
    return shards


def input_files(raw_dir: str | Path, **options) -> list[Path]:
    """The files `load_merrec` reads (for the cache fingerprint)."""
    return find_shards(raw_dir)


def _check_schemas(shards: list[Path], item_columns: Sequence[str]) -> dict[str, str]:
    """Checks every shard's schema; returns the type family of each item column (same in all shards)."""
    families: dict[str, str] = {}
    user_family: tuple[Path, str] | None = None
    for path in shards:
        schema = open_parquet(path).schema_arrow
        check_columns(path, schema, _REQUIRED)
        # Integer and string user ids cannot be one user column (their keys are made differently).
        family = type_family(schema.field("user_id").type)
        user_family = user_family or (path, family)
        if family != user_family[1]:
            raise DataFormatError(
                f"{path}: column 'user_id' has type {schema.field('user_id').type} ({family}), but "
                f"{user_family[0]} has {user_family[1]} user ids"
            )
        for column in item_columns:
            if column not in schema.names:
                raise DataFormatError(f"{path}: missing column '{column}' (requested in item_columns)")
            family = type_family(schema.field(column).type)
            if family_target_type(family) is None:
                raise DataFormatError(
                    f"{path}: column '{column}' has unsupported type {schema.field(column).type}"
                )
            expected = families.setdefault(column, family)
            # Integers and floats mix freely (both become float64); anything else must match.
            if family != expected and {family, expected} != {"integer", "numeric"}:
                raise DataFormatError(
                    f"{path}: column '{column}' has type {schema.field(column).type} ({family}), "
                    f"but earlier shards have {expected}"
                )
            if {family, expected} == {"integer", "numeric"}:
                families[column] = "numeric"
    return families


def _event_codes(array: pa.Array) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """`event_id` strings -> (codes into MERREC_EVENT_NAMES, -1 where null or unknown; `valid_mask`;
    mask of the non-null unknown values, or None when there are none)."""
    valid = valid_mask(array)
    if pa.types.is_dictionary(array.type):
        # Map the few dictionary values, then gather by index: no per-row string work.
        value_codes, _, value_unknown = _event_codes(array.dictionary)
        if len(value_codes) == 0:
            return np.full(len(array), -1, np.int8), valid, None
        indices = array.indices
        indices = (pc.fill_null(indices, 0) if valid is not None else indices).to_numpy(zero_copy_only=False)
        codes = value_codes[indices]
        unknown = None
        if value_unknown is not None:
            unknown = value_unknown[indices]
            if valid is not None:
                unknown &= valid
            if not unknown.any():
                unknown = None
        if valid is not None:
            codes = np.where(valid, codes, -1).astype(np.int8)
        return codes, valid, unknown
    index = pc.index_in(array, value_set=pa.array(_EVENT_LOOKUP, array.type))
    index = pc.fill_null(index, -1).to_numpy(zero_copy_only=False)
    known = index >= 0
    codes = np.where(known, _EVENT_CODES[np.maximum(index, 0)], -1).astype(np.int8)
    unknown = ~known if valid is None else valid & ~known
    return codes, valid, unknown if unknown.any() else None


def load_merrec(
    raw_dir: str | Path,
    *,
    min_events: int = 2000,
    skip_unknown_events: bool = False,
    item_columns: Sequence[str] = DEFAULT_ITEM_COLUMNS,
    timestamp_unit: str = "auto",
    work_dir: str | Path | None = None,
    progress: bool = True,
    bucket_rows: int = 1_000_000,
    batch_rows: int = 1 << 18,
) -> RecDataBundle:
    """Reads MerRec's parquet shards into a `RecDataBundle` (see the module docstring for the rules).

    Args:
        raw_dir (`str` or `Path`): the folder of monthly folders, as downloaded from the Hub.
        min_events (`int`, *optional*, defaults to 2000): keep users with at least this many events
            (after cleaning); the paper's "merrec_2000".
        skip_unknown_events (`bool`, *optional*, defaults to `False`): skip and count events whose
            `event_id` is not one of the six types, instead of raising.
        item_columns (`Sequence[str]`, *optional*): extra item attribute columns to keep.
        timestamp_unit (`str`, *optional*, defaults to `"auto"`): the unit of an integer `stime` column
            (`"s"`, `"ms"`, `"us"`, `"ns"`, or `"auto"`: inferred from the magnitude, see
            `ggr_hf.data.timestamps`); typed timestamps carry their own.
        work_dir (`str` or `Path`, *optional*): scratch folder for the grouping engine; the returned
            sequences are memory-mapped from it, so keep it as long as the bundle is used. Without it a
            temporary folder is used and the sequences are read into memory.
        progress (`bool`, *optional*, defaults to `True`): show progress bars.
        bucket_rows (`int`, *optional*): rows per in-memory sorting bucket (memory vs. file count).
        batch_rows (`int`, *optional*): rows read from a shard at a time.

    Returns:
        `RecDataBundle` named `"merrec"`, with `event_names = MERREC_EVENT_NAMES`.
    """
    times = TimestampReader(timestamp_unit)
    loader = _MerRecLoader(find_shards(raw_dir), skip_unknown_events, item_columns, batch_rows, times)
    return loader.run(min_events=min_events, work_dir=work_dir, progress=progress, bucket_rows=bucket_rows)


class _MerRecLoader(TwoPassLoader):
    name = "merrec"
    has_events = True

    def __init__(
        self,
        shards: list[Path],
        skip_unknown_events: bool,
        item_columns: Sequence[str],
        batch_rows: int,
        times: TimestampReader,
    ) -> None:
        super().__init__()
        self.shards, self.times = shards, times
        self.skip_unknown_events = skip_unknown_events
        self.item_columns = [c for c in item_columns if c not in ("name", *CATEGORY_COLUMNS)]
        self.families = _check_schemas(shards, self.item_columns)
        self.batch_rows = batch_rows

    def event_names(self) -> Sequence[str]:
        return MERREC_EVENT_NAMES

    def count_users(self, counter: UserCounter) -> None:
        # One narrow column: bigger batches mean fewer partial aggregations to merge.
        sources = [(path, ["user_id"]) for path in self.shards]
        for _, batch in self.parquet_batches(
            sources, 4 * self.batch_rows, desc="merrec: count users", unit="shard"
        ):
            count_user_batch(counter, batch.column(0), self.drops)

    def read_events(self, index: UserIndex, builder: SequenceBuilder) -> None:
        # The candidates' events -> the grouping engine; first-seen item attributes aside.
        attr_schema = pa.schema(
            [("title", pa.string()), ("category_name", pa.string())]
            + [(c, pa.string()) for c in ("c0_name", "c1_name", "c2_name")]
            + [(c, family_target_type(self.families[c])) for c in self.item_columns]
        )
        self.attrs = AttributeCollector(self.work.path / "item_attrs.arrow", attr_schema)
        columns = ["user_id", "stime", "event_id", "item_id", "name", *CATEGORY_COLUMNS, *self.item_columns]
        # Low-cardinality strings are decoded as dictionaries (indices only); `name` is nearly unique.
        as_dictionary = [
            c
            for c in ("event_id", *CATEGORY_COLUMNS, *self.item_columns)
            if c == "event_id" or self.families.get(c, "string") == "string"
        ]
        batches = self.parquet_batches(
            [(path, columns) for path in self.shards],
            self.batch_rows,
            desc="merrec: read events",
            unit="shard",
            read_dictionary=as_dictionary,
        )
        for path, batch in prefetch(batches):
            self._add_batch(path, batch, index, builder)

    def item_table(self, result: BuildResult) -> pa.Table:
        item_table = self.attrs.gather(result.item_codes)
        items = pa.table(
            {
                "item_id": pa.array(np.arange(1, len(result.item_keys) + 1, dtype=np.int64)),
                "original_id": pa.array(result.item_keys).cast(pa.string()),
                "title": pc.fill_null(item_table.column("title"), ""),
            }
        )
        for name in item_table.column_names[1:]:
            items = items.append_column(name, item_table.column(name))
        return items

    def _add_batch(
        self, path: Path, batch: pa.RecordBatch, index: UserIndex, builder: SequenceBuilder
    ) -> None:
        drops, item_columns = self.drops, self.item_columns
        events, event_valid, unknown = _event_codes(batch.column("event_id"))
        if unknown is not None and not self.skip_unknown_events:
            unique = pc.unique(batch.column("event_id").filter(pa.array(unknown))).cast(pa.binary())
            values = [v.decode("utf-8", errors="replace") for v in unique.to_pylist()]
            raise DataFormatError(
                f"{path}: column 'event_id' has unknown value(s) {values[:5]} in {int(unknown.sum())} row(s); "
                f"known: {list(MERREC_EVENT_NAMES)}; pass skip_unknown_events=True (--skip-unknown-events) "
                "to skip and count them"
            )
        keys, user_valid, _ = user_keys(batch.column("user_id"))
        rows, ranks = index.select(keys, user_valid)  # null users were counted in pass 1
        if len(rows) == 0:
            return
        # From here on only the candidates' rows (in a typical batch a minority) are touched.
        item_keys, item_valid = int_column(batch.column("item_id"))
        ts, ts_valid = self.times.arrow_to_microseconds(
            batch.column("stime"), source=str(path), column="stime"
        )
        item_keys, ts, events = item_keys[rows], ts[rows], events[rows]
        item_valid = None if item_valid is None else item_valid[rows]
        ts_valid = None if ts_valid is None else ts_valid[rows]
        ok = keep_valid(
            [
                ("null_item_id", item_valid),
                ("null_stime", ts_valid),
                ("null_event_id", None if event_valid is None else event_valid[rows]),
                ("unknown_event_id", None if unknown is None else ~unknown[rows]),
            ],
            drops,
        )
        rows, ranks, item_keys, ts, events = take_rows(ok, rows, ranks, item_keys, ts, events)
        new_rows = rows[builder.add(ranks, item_keys, ts, events)]
        if len(new_rows) == 0:
            return
        # The attributes of items seen for the first time: their first row, in file order.
        picked = batch.select(["name", *CATEGORY_COLUMNS, *item_columns]).take(pa.array(new_rows))
        picked = repair_utf8(pa.Table.from_batches([picked]), path, drops)
        strings = {c: picked.column(c).cast(pa.string()) for c in ("name", *CATEGORY_COLUMNS)}
        table = pa.table(
            {
                "title": strings["name"],
                "category_name": pc.coalesce(*(strings[c] for c in CATEGORY_COLUMNS)),
                "c0_name": strings["c0_name"],
                "c1_name": strings["c1_name"],
                "c2_name": strings["c2_name"],
                **{c: picked.column(c) for c in item_columns},
            }
        )
        self.attrs.add(table)
