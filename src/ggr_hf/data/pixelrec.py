"""PixelRec / Pixel8M (westlake-repl/PixelRec) from the publisher's CSV files.

The publisher ships interaction CSVs (`Pixel200K.csv`, `Pixel1M.csv`, `Pixel8M.csv`, ...; header
`item_id,user_id,timestamp`: string ids such as `i12` / `u34`, Unix seconds) and item-info CSVs
(header `item_id,view_number,comment_number,thumbup_number,share_number,coin_number,favorite_number,
barrage_number,title,tag,description`, possibly with more text columns such as `title_en`). Pass the
folder that holds them (sub-folders such as `pixelrec_interaction/` and `pixelrec_iteminfo/` are
searched too); files are recognised by their header, and `variant="Pixel8M"` picks the interaction
file(s) whose name starts with it when there are several.

What `load_pixelrec` builds:

- `sequences`: one row per user, the interactions sorted by (`timestamp`, item id);
- `items`: the items that kept interactions reference: `item_id`, `original_id`, `title`, `tag`,
  `description`, the other text columns, the `*_number` counts (int64), and `categories`
  (list<string>), the paper's item prior: the item's tag mapped onto the 8 categories
  `PIXELREC_CATEGORIES` through the tag table (multi-label; see below);
- `users`: `user_id`, `original_id`.

Internal item and user ids follow the "natural" order of the publisher's ids (by length, then value:
`i2` before `i10`). No user filter is applied by default (`min_events=1`): Pixel8M is already the
publisher's own subset; the evaluation split needs more than `2K` items per user and filters there.

**The tag table is this project's, and meant to be replaced.** The real tag vocabulary of Pixel8M and
the authors' mapping of its 112 tags were not available to this project offline. The packaged
`resources/pixelrec_tag_categories.csv` maps plausible Bilibili-style tags (Chinese partition names and
their English renderings) onto the 8 categories; replace it with your own table (`tag_map=...`,
`--tag-map`). Its format: a CSV with header `tag,categories`, the categories of a tag separated by
`|`, lines starting with `#` ignored; tags match after trimming and case folding. The GGR release keeps
its mapping in `code/REC/data/Pixel8M_tag_dict.py`; converting that dictionary into this CSV gives the
paper's exact prior.

The rule for tags: the whole `tag` field is one tag unless `tag_separator` is given (then each part is
a tag and the categories are their union). A non-empty tag missing from the table maps to no category;
such items are kept with the categories of their other tags (possibly none) and counted as
`unmapped_tag_items_kept`, and the most frequent unmapped tags are logged. Items with an empty tag get
no category.

Bad input, and what happens (counts in `bundle.dropped`, in this order):

- no interaction or item-info CSV, several interaction files and no `variant`, a missing column, an
  unparsable row (wrong number of fields), a non-integer `timestamp` or `*_number`: `DataFormatError`
  (`FileNotFoundError` for missing files) naming the file and column;
- an interaction CSV with a header and no rows: `DataFormatError` "no interactions in FILE";
- a `timestamp` outside 1970-01-01 .. 2100-01-01 once read in `timestamp_unit` (`"auto"` by default:
  inferred from the magnitude, see `ggr_hf.data.timestamps`): `GGRDataError` naming the file, the
  column, the value and the unit to pass;
- an empty (null) `user_id`, `item_id` or `timestamp`: skipped, `null_user_id` / `null_item_id` /
  `null_timestamp`;
- an item id absent from the item-info files: skipped, `item_not_in_item_info`;
- users with fewer than `min_events` interactions: skipped, `user_below_min_events`;
- duplicate interactions (same user, item and timestamp): skipped, `duplicate_event`;
- a duplicated item-info row (same `item_id`, e.g. in two files): the first is kept,
  `duplicate_item_info_row`;
- item-info text that is not valid UTF-8: decoded with replacement characters (`errors="replace"`),
  counted as `non_utf8_text_replaced` (values, not dropped).
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from ggr_hf.errors import GGRError, GGRFileNotFoundError

from .arrow_utils import (
    hash_strings,
    iter_progress,
    keep_valid,
    natural_order,
    prefetch,
    repair_utf8_values,
    valid_mask,
)
from .engine import BuildResult, SequenceBuilder, UserCounter, UserIndex
from .pipeline import TwoPassLoader
from .schema import DataFormatError, DropCounter, RecDataBundle
from .timestamps import TimestampReader

logger = logging.getLogger(__name__)

__all__ = [
    "INTERACTION_COLUMNS",
    "PIXELREC_CATEGORIES",
    "default_tag_map_path",
    "find_pixelrec_files",
    "input_files",
    "load_pixelrec",
    "load_tag_categories",
]

LOADER_VERSION = "2"  # 2: `timestamp` in `timestamp_unit` ("auto"), every time checked

# The paper's 8 item categories, in its order.
PIXELREC_CATEGORIES = (
    "Entertainment",
    "Real life",
    "Performance & Arts",
    "Informational & Educational",
    "Fictional character",
    "Gaming",
    "Music",
    "Science & technology",
)
INTERACTION_COLUMNS = ("item_id", "user_id", "timestamp")
_ITEM_REQUIRED = ("item_id", "title", "tag")


def default_tag_map_path() -> Path:
    """The packaged tag table (this project's; see the module docstring)."""
    return Path(str(resources.files("ggr_hf.data") / "resources" / "pixelrec_tag_categories.csv"))


def load_tag_categories(path: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """Reads a tag -> categories table.

    Args:
        path (`str` or `Path`, *optional*): a CSV with header `tag,categories` (`|`-separated
            categories, `#` comment lines); the packaged table when omitted.

    Returns:
        `dict` from the case-folded, trimmed tag to its categories (in `PIXELREC_CATEGORIES` order).

    Raises:
        `DataFormatError` naming the file and line for an unknown category, a duplicate tag or a
        missing column.
    """
    path = Path(path) if path is not None else default_tag_map_path()
    if not path.exists():
        raise GGRFileNotFoundError(f"{path}: tag table not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [
        (n, line)
        for n, line in enumerate(lines, start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not kept:
        raise DataFormatError(f"{path}: empty tag table")
    reader = csv.reader(io.StringIO("\n".join(line for _, line in kept)))
    header = [h.strip() for h in next(reader)]
    for column in ("tag", "categories"):
        if column not in header:
            raise DataFormatError(f"{path}: missing column '{column}' (header line {kept[0][0]})")
    t, c = header.index("tag"), header.index("categories")
    rank = {name: i for i, name in enumerate(PIXELREC_CATEGORIES)}
    table: dict[str, tuple[str, ...]] = {}
    for (line_no, _), row in zip(kept[1:], reader):
        if len(row) <= max(t, c):
            raise DataFormatError(f"{path}, line {line_no}: expected columns 'tag' and 'categories'")
        tag = row[t].strip().casefold()
        cats = [x.strip() for x in row[c].split("|") if x.strip()]
        for cat in cats:
            if cat not in rank:
                raise DataFormatError(
                    f"{path}, line {line_no}: column 'categories' has unknown category {cat!r}; "
                    f"known: {list(PIXELREC_CATEGORIES)}"
                )
        if tag in table:
            raise DataFormatError(f"{path}, line {line_no}: column 'tag' repeats {row[t]!r}")
        table[tag] = tuple(sorted(set(cats), key=rank.__getitem__))
    return table


def _header(path: Path) -> list[str]:
    with open(path, "rb") as f:
        first = f.readline()
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: the header line is not UTF-8") from err
    return [h.strip() for h in next(csv.reader([text]), [])]


def _checked_header(path: Path, required: Sequence[str]) -> list[str]:
    """The header of `path`, which must name every `required` column."""
    header = _header(path)
    for column in required:
        if column not in header:
            raise DataFormatError(f"{path}: missing column '{column}'")
    return header


def find_pixelrec_files(
    raw_dir: str | Path,
    *,
    variant: str | None = None,
    interactions: str | Path | None = None,
    item_info: str | Path | Sequence[str | Path] | None = None,
) -> tuple[list[Path], list[Path]]:
    """The interaction and item-info CSVs to read, recognised by their headers.

    Returns:
        `(interaction_files, item_info_files)`.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise GGRFileNotFoundError(f"PixelRec folder {raw_dir} does not exist")

    def resolve(p: str | Path) -> Path:
        p = Path(p)
        return p if p.is_absolute() else raw_dir / p

    found_inter, found_items, unrecognised = [], [], []
    for path in sorted(raw_dir.rglob("*.csv")):
        if any(part.startswith(".") for part in path.relative_to(raw_dir).parts):
            continue
        columns = _header(path)
        header = set(columns)
        if "item_id" in header and ("title" in header or "tag" in header):
            found_items.append(path)
        elif set(INTERACTION_COLUMNS) <= header:
            found_inter.append(path)
        else:
            shown = ",".join(columns)[:60] if any(columns) else "empty"
            unrecognised.append(f"{path.relative_to(raw_dir)} (header: {shown})")

    def not_found(what: str) -> GGRError:
        if unrecognised:
            # A file the user meant is there but its header does not match: name it, not "no file".
            return DataFormatError(f"{what}; CSVs with other headers: {'; '.join(unrecognised[:3])}")
        return GGRFileNotFoundError(what)

    if interactions is not None:
        inter = [resolve(interactions)]
    else:
        inter = found_inter
        if variant:
            v = variant.lower()
            inter = [p for p in inter if p.stem.lower() == v or p.stem.lower().startswith(v)]
        if not inter:
            raise not_found(
                f"no interaction CSV (header {','.join(INTERACTION_COLUMNS)})"
                + (f" named {variant}*" if variant else "")
                + f" under {raw_dir}"
            )
        if len(inter) > 1 and not variant:
            names = ", ".join(str(p.relative_to(raw_dir)) for p in inter)
            raise DataFormatError(
                f"{raw_dir}: several interaction files ({names}); pass variant=... (--variant), e.g. Pixel8M"
            )
    if item_info is not None:
        items = [resolve(p) for p in ([item_info] if isinstance(item_info, (str, Path)) else item_info)]
    else:
        items = found_items
        if variant:
            matching = [p for p in items if p.stem.lower().startswith(variant.lower())]
            items = matching or items
        if not items:
            raise not_found(f"no item-info CSV (a header with item_id, title, tag) under {raw_dir}")
    for p in inter + items:
        if not p.exists():
            raise GGRFileNotFoundError(f"{p}: file not found")
    return inter, items


def input_files(
    raw_dir: str | Path,
    *,
    variant: str | None = None,
    interactions: str | Path | None = None,
    item_info: str | Path | Sequence[str | Path] | None = None,
    tag_map: str | Path | None = None,
    **options,
) -> list[Path]:
    """The files `load_pixelrec` reads, the tag table included (for the cache fingerprint)."""
    inter, items = find_pixelrec_files(
        raw_dir, variant=variant, interactions=interactions, item_info=item_info
    )
    return [*inter, *items, Path(tag_map) if tag_map is not None else default_tag_map_path()]


def _decode_text(column: pa.Array, drops: DropCounter) -> pa.Array:
    """Binary CSV text -> UTF-8 strings; invalid bytes become U+FFFD and are counted."""
    text, bad = repair_utf8_values(column)
    if bad is not None:
        drops.add("non_utf8_text_replaced", int(bad.sum()))
    return text


def _to_int(path: Path, name: str, column: pa.Array) -> pa.Array:
    """A string CSV column -> int64 (floats such as `1.6e9` floored); errors name the file and column."""
    try:
        return column.cast(pa.int64())
    except pa.ArrowInvalid:
        pass
    # The slow path only for columns that are not plain integers: blanks and floats.
    column = pc.utf8_trim_whitespace(column)
    column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
    try:
        return column.cast(pa.int64())
    except pa.ArrowInvalid:
        pass
    try:
        return pc.floor(column.cast(pa.float64())).cast(pa.int64())
    except pa.ArrowInvalid:
        ok = pc.match_substring_regex(column, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
        bad = column.filter(pc.invert(pc.fill_null(ok, True)))
        value = repr(bad[0].as_py()) if len(bad) else "(unknown)"
        raise DataFormatError(f"{path}: column '{name}' has a non-numeric value {value}") from None


def _read_item_info(paths: list[Path], drops: DropCounter) -> pa.Table:
    """All item-info rows, one per item id (first wins), sorted in natural id order."""
    tables = []
    for path in paths:
        header = _checked_header(path, _ITEM_REQUIRED)
        try:
            raw = pv.read_csv(
                path,
                parse_options=pv.ParseOptions(newlines_in_values=True),
                convert_options=pv.ConvertOptions(column_types={c: pa.binary() for c in header}),
            )
        except (pa.ArrowInvalid, OSError) as err:
            raise DataFormatError(f"{path}: cannot parse the item-info CSV ({err})") from err
        columns = {}
        for name in raw.column_names:
            col = raw.column(name).combine_chunks()
            if name == "item_id":
                ids = _decode_text(col, DropCounter())
                columns[name] = pc.utf8_trim_whitespace(ids)
            elif name.endswith("_number"):
                columns[name] = _to_int(path, name, _decode_text(col, DropCounter()))
            else:
                columns[name] = _decode_text(col, drops)
        tables.append(pa.table(columns))
    table = pa.concat_tables(tables, promote_options="permissive")
    ids = table.column("item_id").combine_chunks()
    valid = pc.and_(pc.is_valid(ids), pc.not_equal(ids, "")).to_numpy(zero_copy_only=False)
    drops.add("null_item_info_id", int((~valid).sum()))
    table = table.filter(pa.array(valid))
    # First row per id: a stable natural sort puts duplicates next to each other, the first first.
    order = natural_order(table.column("item_id").combine_chunks())
    table = table.take(pa.array(order))
    sorted_ids = table.column("item_id").combine_chunks()
    first = np.ones(len(sorted_ids), dtype=bool)
    if len(sorted_ids) > 1:
        first[1:] = pc.not_equal(sorted_ids.slice(1), sorted_ids.slice(0, len(sorted_ids) - 1)).to_numpy(
            zero_copy_only=False
        )
    drops.add("duplicate_item_info_row", int((~first).sum()))
    return table.filter(pa.array(first))


def _categories(
    tags: pa.Array, table: dict[str, tuple[str, ...]], separator: str | None, drops: DropCounter
) -> pa.Array:
    """The `categories` column: each item's tag(s) through the tag table (see the module docstring)."""
    encoded = tags.dictionary_encode()
    values = encoded.dictionary.to_pylist()
    counts = np.bincount(
        pc.fill_null(encoded.indices, len(values)).to_numpy(zero_copy_only=False), minlength=len(values) + 1
    )
    rank = {name: i for i, name in enumerate(PIXELREC_CATEGORIES)}
    mapped, unmapped = [], Counter()
    for value, n in zip(values, counts):
        parts = [value] if separator is None else value.split(separator)
        parts = [p.strip() for p in parts if p.strip()]
        cats: set[str] = set()
        missing = [p for p in parts if p.casefold() not in table]
        for p in parts:
            cats.update(table.get(p.casefold(), ()))
        if missing:
            unmapped.update({m: int(n) for m in missing})
            drops.add("unmapped_tag_items_kept", int(n))
        mapped.append(sorted(cats, key=rank.__getitem__))
    if unmapped:
        logger.warning(
            "pixelrec: tags not in the tag table (no category from them): %s", dict(unmapped.most_common(10))
        )
    per_value = pa.array(mapped + [[]], pa.list_(pa.string()))
    return per_value.take(pc.fill_null(encoded.indices, len(values)))


def _interaction_batches(path: Path, block_size: int):
    """Streams an interaction CSV as batches of (item_id, user_id, timestamp) strings."""
    _checked_header(path, INTERACTION_COLUMNS)
    try:
        reader = pv.open_csv(
            path,
            read_options=pv.ReadOptions(block_size=block_size),
            convert_options=pv.ConvertOptions(
                column_types={c: pa.string() for c in INTERACTION_COLUMNS},
                include_columns=list(INTERACTION_COLUMNS),
                strings_can_be_null=True,
            ),
        )
        yield from reader
    except (pa.ArrowInvalid, OSError) as err:
        raise DataFormatError(f"{path}: cannot parse the interaction CSV ({err})") from err


def load_pixelrec(
    raw_dir: str | Path,
    *,
    variant: str | None = None,
    interactions: str | Path | None = None,
    item_info: str | Path | Sequence[str | Path] | None = None,
    tag_map: str | Path | None = None,
    tag_separator: str | None = None,
    timestamp_unit: str = "auto",
    min_events: int = 1,
    work_dir: str | Path | None = None,
    progress: bool = True,
    bucket_rows: int = 1_000_000,
    block_size: int = 16 << 20,
) -> RecDataBundle:
    """Reads PixelRec / Pixel8M into a `RecDataBundle` (see the module docstring for the rules).

    Args:
        raw_dir (`str` or `Path`): the folder with the publisher's CSVs.
        variant (`str`, *optional*): e.g. `"Pixel8M"`: the interaction file(s) whose name starts with it.
        interactions (`str` or `Path`, *optional*): an explicit interaction CSV (relative to `raw_dir`).
        item_info (`str`, `Path` or a sequence of them, *optional*): explicit item-info CSV(s).
        tag_map (`str` or `Path`, *optional*): a tag table replacing the packaged one.
        tag_separator (`str`, *optional*): split the `tag` field into several tags on this string.
        timestamp_unit (`str`, *optional*, defaults to `"auto"`): the unit of the `timestamp` column
            (`"s"` as published, `"ms"`, `"us"`, `"ns"`, or `"auto"`: inferred from the magnitude).
        min_events (`int`, *optional*, defaults to 1): keep users with at least this many interactions.
        work_dir (`str` or `Path`, *optional*): scratch folder (see `ggr_hf.data.merrec.load_merrec`).
        progress (`bool`, *optional*, defaults to `True`): show progress bars.
        bucket_rows (`int`, *optional*): rows per in-memory sorting bucket.
        block_size (`int`, *optional*): bytes of CSV parsed at a time.

    Returns:
        `RecDataBundle` named `"pixelrec"` (or the lower-cased `variant`, e.g. `"pixel8m"`).
    """
    inter_paths, info_paths = find_pixelrec_files(
        raw_dir, variant=variant, interactions=interactions, item_info=item_info
    )
    loader = _PixelRecLoader(
        (variant or "pixelrec").lower(),
        inter_paths,
        info_paths,
        load_tag_categories(tag_map),
        tag_separator,
        block_size,
        TimestampReader(timestamp_unit),
    )
    return loader.run(min_events=min_events, work_dir=work_dir, progress=progress, bucket_rows=bucket_rows)


class _PixelRecLoader(TwoPassLoader):
    # Times are fed in microseconds (any `timestamp_unit`) so that sub-second order survives the sort.
    ts_divisor = 1_000_000

    def __init__(
        self,
        name: str,
        inter_paths: list[Path],
        info_paths: list[Path],
        tags: dict[str, tuple[str, ...]],
        tag_separator: str | None,
        block_size: int,
        times: TimestampReader,
    ) -> None:
        super().__init__()
        self.name, self.inter_paths, self.times = name, inter_paths, times
        self.tags, self.tag_separator, self.block_size = tags, tag_separator, block_size
        self.info = _read_item_info(info_paths, self.drops)

    def count_users(self, counter: UserCounter) -> None:
        # Parse the CSV once into compact integer columns (user hash, item index, time) while counting
        # interactions per user; pass 2 then reads that instead of parsing the CSV again.
        item_vocab = self.info.column("item_id").combine_chunks()
        self.compact_path = self.work.path / "interactions.arrow"
        schema = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("ts", pa.int64())])
        with pa.OSFile(str(self.compact_path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for path in iter_progress(
                self.inter_paths, desc="pixelrec: parse", unit="file", progress=self.progress
            ):
                rows = 0
                for batch in prefetch(_interaction_batches(path, self.block_size)):
                    rows += batch.num_rows
                    users, items = batch.column("user_id"), batch.column("item_id")
                    ts = _to_int(path, "timestamp", batch.column("timestamp"))
                    item_index = pc.index_in(items, value_set=item_vocab)
                    ok = keep_valid(
                        [
                            ("null_user_id", valid_mask(users)),
                            ("null_item_id", valid_mask(items)),
                            ("null_timestamp", valid_mask(ts)),
                            ("item_not_in_item_info", valid_mask(item_index)),
                        ],
                        self.drops,
                    )
                    if ok is not None:
                        keep = pa.array(ok)
                        users, item_index, ts = users.filter(keep), item_index.filter(keep), ts.filter(keep)
                    micros = self.times.integers_to_microseconds(
                        ts.to_numpy(zero_copy_only=False), source=str(path), column="timestamp"
                    )
                    keys = hash_strings(users)
                    counter.add(keys, users)
                    writer.write_batch(
                        pa.record_batch(
                            [pa.array(keys), item_index.cast(pa.int64()), pa.array(micros)], schema=schema
                        )
                    )
                if rows == 0:
                    raise DataFormatError(f"no interactions in {path} (the file has a header and no rows)")

    def read_events(self, index: UserIndex, builder: SequenceBuilder) -> None:
        with pa.memory_map(str(self.compact_path)) as source:
            for batch in pa.ipc.open_stream(source):
                keys = batch.column(0).to_numpy()
                rows, ranks = index.select(keys)
                builder.add(ranks, batch.column(1).to_numpy()[rows], batch.column(2).to_numpy()[rows])
        self.compact_path.unlink()

    def item_table(self, result: BuildResult) -> pa.Table:
        picked = self.info.take(pa.array(result.item_keys))
        columns = {
            "item_id": pa.array(np.arange(1, len(result.item_keys) + 1, dtype=np.int64)),
            "original_id": picked.column("item_id"),
            "title": pc.fill_null(picked.column("title"), ""),
        }
        for name in picked.column_names:
            if name not in columns:
                columns[name] = picked.column(name)
        columns["categories"] = _categories(
            pc.fill_null(picked.column("tag"), "").combine_chunks(), self.tags, self.tag_separator, self.drops
        )
        return pa.table(columns)
