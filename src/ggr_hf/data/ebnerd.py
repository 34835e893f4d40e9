"""EB-NeRD (Ekstra Bladet News Recommendation Dataset, RecSys Challenge 2024) from its parquet files.

The publisher's layout is one folder per size (`ebnerd_demo/`, `ebnerd_small/`, `ebnerd_large/`), each
holding `articles.parquet` and one folder per split (`train/`, `validation/`) with `history.parquet`
and `behaviors.parquet`. Pass the size folder as `raw_dir`.

What `load_ebnerd` builds:

- `sequences`: one row per user, the clicked articles of `history.parquet` (`article_id_fixed`, with the
  click times `impression_time_fixed`, microseconds floored to seconds), from the `splits` asked for
  (default: `train`, as in the paper), plus, with `include_behaviors=True`, the clicks of
  `behaviors.parquet` (`article_ids_clicked` at `impression_time`). A user present in several files is
  one user; their clicks are merged and sorted by time (then article id);
- `items`: the clicked articles: `item_id`, `original_id` (the `article_id`), `title`, `subtitle`,
  `text` (title, subtitle and `Topics: ...`, one per line: the item text for semantic backbones),
  `topics`, `category`, `category_str`, `subcategory`, `category_group`, `published_time` (seconds)
  and, with `include_body=True`, `body`;
- `users`: `user_id`, `original_id`, and with `include_behaviors=True` the user columns of
  `behaviors.parquet` that exist (`gender`, `age`, `postcode`, `is_subscriber`, `is_sso_user`), from
  the user's first impression row.

The paper keeps users with at least 512 clicks in the large split's history (44,968 users):
`min_events=512` is the default.

**Category groups: this project's choice.** The paper groups EB-NeRD articles for its item prior but
does not list the groups. `category_group` maps Ekstra Bladet's `category_str` onto six groups
(`EBNERD_CATEGORY_GROUPS`):

- `news`: nyheder, nationen, dagsorden, opinionen, tilavis (general, national and opinion news);
- `crime`: krimi;
- `sport`: sport;
- `entertainment`: underholdning, musik, side9, horoskoper;
- `lifestyle` (lifestyle and consumer): forbrug, penge, biler, auto, vin, ferie, haandvaerkeren,
  sex_og_samliv;
- `other`: every other value, including formats and containers that say how rather than what
  (video, webtv, play, podcast, eblive, plus, incoming, services, rssfeed, abonnement, bibliotek,
  om_ekstra_bladet, migration_catalog, webmaster-test-sektion) and unknown or null values.

The four largest sections (nyheder, sport, underholdning, krimi) each get their own group so that the
group sizes stay comparable; the rest is grouped by topic. Pass `category_groups={...}` (lower-case
`category_str` -> group) to use another mapping; values it does not list go to `other`. The GGR
release's own table (`eb_nerd_512_tag_dict.py`) is multi-label and differs; convert it to this form if
you need that exact prior. Item counts of unlisted non-null values are reported as
`unmapped_category_items_kept` (the items are kept, in `other`).

Bad input, and what happens (counts in `bundle.dropped`, in this order):

- a missing file (`articles.parquet`, `<split>/history.parquet`, `<split>/behaviors.parquet` when
  asked) or column, a column of another type, an unreadable (truncated) file: `DataFormatError`
  (`FileNotFoundError` for a missing file) naming the file and column;
- a click time outside 1970-01-01 .. 2100-01-01 (click times stored as integers are read in
  `timestamp_unit`, see `ggr_hf.data.timestamps`): `GGRDataError` naming the file, column and value;
- a history row whose `article_id_fixed` and `impression_time_fixed` differ in length:
  `DataFormatError` naming the file, the columns and the user;
- null `user_id`: skipped, `null_user_id` (counted in clicks);
- users with fewer than `min_events` clicks: skipped, `user_below_min_events` (counted in clicks);
- null article id or click time inside a list: skipped, `null_article_id` / `null_impression_time`;
- an article id missing from `articles.parquet`: skipped, `article_not_in_articles`;
- duplicate clicks (same user, article and time to the microsecond): skipped, `duplicate_event`;
- a duplicated `article_id` row in `articles.parquet`: the first is kept, `duplicate_article_row`;
- article text that is not valid UTF-8 (`title`, `subtitle`, `topics`, `category_str`, ...): the bad
  bytes become U+FFFD, counted (in values) as `non_utf8_text_replaced` and logged with the column.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ggr_hf.errors import GGRFileNotFoundError, GGRInputError

from .arrow_utils import (
    check_columns,
    count_invalid,
    int_column,
    keep_valid,
    list_lengths,
    open_parquet,
    prefetch,
    read_parquet_table,
    repair_utf8,
    take_rows,
    timestamps_to_microseconds,
    user_keys,
)
from .engine import BuildResult, SequenceBuilder, UserCounter, UserIndex
from .pipeline import FirstRowPerUser, TwoPassLoader, count_user_batch
from .schema import DataFormatError, DropCounter, RecDataBundle
from .timestamps import TimestampReader

logger = logging.getLogger(__name__)

__all__ = [
    "EBNERD_CATEGORY_GROUPS",
    "EBNERD_CATEGORY_GROUP_MAP",
    "category_group_of",
    "input_files",
    "load_ebnerd",
]

LOADER_VERSION = "2"  # 2: click times checked; integer times read in `timestamp_unit`

EBNERD_CATEGORY_GROUPS = ("news", "crime", "sport", "entertainment", "lifestyle", "other")
EBNERD_CATEGORY_GROUP_MAP: dict[str, str] = {
    **dict.fromkeys(["nyheder", "nationen", "dagsorden", "opinionen", "tilavis"], "news"),
    "krimi": "crime",
    "sport": "sport",
    **dict.fromkeys(["underholdning", "musik", "side9", "horoskoper"], "entertainment"),
    **dict.fromkeys(
        ["forbrug", "penge", "biler", "auto", "vin", "ferie", "haandvaerkeren", "sex_og_samliv"], "lifestyle"
    ),
    **dict.fromkeys(
        [
            "video",
            "webtv",
            "play",
            "podcast",
            "eblive",
            "plus",
            "incoming",
            "services",
            "rssfeed",
            "abonnement",
            "bibliotek",
            "om_ekstra_bladet",
            "migration_catalog",
            "webmaster-test-sektion",
        ],
        "other",
    ),  # fmt: skip
}

_HISTORY_COLUMNS = {
    "user_id": "integer",
    "impression_time_fixed": "list<timestamp or integer>",
    "article_id_fixed": "list<integer>",
}
_BEHAVIOR_COLUMNS = {
    "user_id": "integer",
    "impression_time": "timestamp or integer",
    "article_ids_clicked": "list<integer>",
}
_ARTICLE_COLUMNS = {
    "article_id": "integer",
    "title": "string",
    "subtitle": "string",
    "topics": "list<string>",
    "category": "integer",
    "subcategory": "list<integer>",
    "category_str": "string",
}
_USER_ATTRIBUTES = ("gender", "age", "postcode", "is_subscriber", "is_sso_user")


def _files(
    raw_dir: Path, splits: Sequence[str], include_behaviors: bool
) -> tuple[Path, list[Path], list[Path]]:
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise GGRFileNotFoundError(f"EB-NeRD folder {raw_dir} does not exist")
    articles = raw_dir / "articles.parquet"
    if not articles.exists():
        raise GGRFileNotFoundError(f"{articles}: file not found (EB-NeRD's article table)")
    if isinstance(splits, str):
        # A bare string would be read letter by letter ("train" -> t/, r/, a/, ...).
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    if not splits or not all(isinstance(s, str) and s for s in splits):
        raise GGRInputError(f"splits must name split folders of {raw_dir} (e.g. ['train']), got {splits!r}")
    histories = [raw_dir / split / "history.parquet" for split in splits]
    behaviors = [raw_dir / split / "behaviors.parquet" for split in splits] if include_behaviors else []
    for path in histories + behaviors:
        if not path.exists():
            raise GGRFileNotFoundError(
                f"{path}: file not found (splits={list(splits)}; split folders here: "
                f"{sorted(p.name for p in raw_dir.iterdir() if p.is_dir())})"
            )
    return articles, histories, behaviors


def input_files(
    raw_dir: str | Path, *, splits: Sequence[str] = ("train",), include_behaviors: bool = False, **options
) -> list[Path]:
    """The files `load_ebnerd` reads (for the cache fingerprint)."""
    articles, histories, behaviors = _files(Path(raw_dir), splits, include_behaviors)
    return [articles, *histories, *behaviors]


def category_group_of(category_str: str | None, mapping: Mapping[str, str] | None = None) -> str:
    """The group of one `category_str` value (see the module docstring)."""
    mapping = EBNERD_CATEGORY_GROUP_MAP if mapping is None else mapping
    if category_str is None:
        return "other"
    return mapping.get(category_str.strip().lower(), "other")


def _read_articles(path: Path, include_body: bool, drops: DropCounter) -> pa.Table:
    """The article table, sorted by `article_id`, one row per article."""
    schema = open_parquet(path).schema_arrow
    required = dict(_ARTICLE_COLUMNS)
    if include_body:
        required["body"] = "string"
    check_columns(path, schema, required)
    columns = list(required)
    if "published_time" in schema.names:
        check_columns(path, schema, {"published_time": "timestamp"})
        columns.append("published_time")
    table = read_parquet_table(path, columns)
    ids, valid = int_column(table.column("article_id"))
    if valid is not None:
        drops.add("null_article_row", count_invalid(valid))
        table, ids = table.filter(pa.array(valid)), ids[valid]
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    first = np.concatenate([[True], ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, bool)
    drops.add("duplicate_article_row", int(len(ids) - first.sum()))
    return table.take(pa.array(order[first]))


def load_ebnerd(
    raw_dir: str | Path,
    *,
    min_events: int = 512,
    splits: Sequence[str] = ("train",),
    include_behaviors: bool = False,
    include_body: bool = False,
    category_groups: Mapping[str, str] | None = None,
    timestamp_unit: str = "auto",
    work_dir: str | Path | None = None,
    progress: bool = True,
    bucket_rows: int = 1_000_000,
    batch_rows: int = 1 << 15,
) -> RecDataBundle:
    """Reads EB-NeRD into a `RecDataBundle` (see the module docstring for layout and rules).

    Args:
        raw_dir (`str` or `Path`): a size folder, e.g. `ebnerd_large/`.
        min_events (`int`, *optional*, defaults to 512): keep users with at least this many clicks.
        splits (`Sequence[str]`, *optional*, defaults to `("train",)`): split folders to read.
        include_behaviors (`bool`, *optional*, defaults to `False`): add the clicks (and user columns)
            of `behaviors.parquet`.
        include_body (`bool`, *optional*, defaults to `False`): keep the article body in the items.
        category_groups (`Mapping[str, str]`, *optional*): lower-case `category_str` -> group, replacing
            `EBNERD_CATEGORY_GROUP_MAP`.
        timestamp_unit (`str`, *optional*, defaults to `"auto"`): the unit of click-time columns stored
            as integers (`"s"`, `"ms"`, `"us"`, `"ns"`, or `"auto"`, see `ggr_hf.data.timestamps`); the
            publisher's typed datetimes carry their own unit and are read as today.
        work_dir (`str` or `Path`, *optional*): scratch folder (see `ggr_hf.data.merrec.load_merrec`).
        progress (`bool`, *optional*, defaults to `True`): show progress bars.
        bucket_rows (`int`, *optional*): rows per in-memory sorting bucket.
        batch_rows (`int`, *optional*): history rows (users) read at a time.

    Returns:
        `RecDataBundle` named `"ebnerd"`.
    """
    splits = tuple(splits.split(",") if isinstance(splits, str) else splits)
    articles_path, histories, behaviors = _files(Path(raw_dir), splits, include_behaviors)
    for path in histories:
        check_columns(path, open_parquet(path).schema_arrow, _HISTORY_COLUMNS)
    for path in behaviors:
        check_columns(path, open_parquet(path).schema_arrow, _BEHAVIOR_COLUMNS)
    times = TimestampReader(timestamp_unit)
    loader = _EbnerdLoader(
        articles_path, histories, behaviors, include_body, category_groups, batch_rows, times
    )
    return loader.run(min_events=min_events, work_dir=work_dir, progress=progress, bucket_rows=bucket_rows)


class _EbnerdLoader(TwoPassLoader):
    name = "ebnerd"

    def __init__(
        self,
        articles_path: Path,
        histories: list[Path],
        behaviors: list[Path],
        include_body: bool,
        category_groups: Mapping[str, str] | None,
        batch_rows: int,
        times: TimestampReader,
    ) -> None:
        super().__init__()
        self.articles_path, self.times = articles_path, times
        self.category_groups = category_groups
        self.batch_rows = batch_rows
        self.articles = _read_articles(articles_path, include_body, self.drops)
        self.article_keys = self.articles.column("article_id").to_numpy(zero_copy_only=False).astype(np.int64)
        self.sources = [(p, "article_id_fixed") for p in histories] + [
            (p, "article_ids_clicked") for p in behaviors
        ]

    def count_users(self, counter: UserCounter) -> None:
        # Clicks per user, from the list lengths.
        sources = [(path, ["user_id", list_column]) for path, list_column in self.sources]
        for _, batch in self.parquet_batches(sources, self.batch_rows, desc="ebnerd: count clicks"):
            count_user_batch(counter, batch.column(0), self.drops, weights=list_lengths(batch.column(1)))

    def read_events(self, index: UserIndex, builder: SequenceBuilder) -> None:
        self.user_attrs = FirstRowPerUser(len(index))
        sources, attr_columns = [], {}
        for path, list_column in self.sources:
            if list_column == "article_id_fixed":
                sources.append((path, ["user_id", "impression_time_fixed", "article_id_fixed"]))
            else:
                schema = open_parquet(path).schema_arrow
                attr_columns[path] = [c for c in _USER_ATTRIBUTES if c in schema.names]
                sources.append(
                    (path, ["user_id", "impression_time", "article_ids_clicked", *attr_columns[path]])
                )
        for path, batch in prefetch(
            self.parquet_batches(sources, self.batch_rows, desc="ebnerd: read clicks")
        ):
            rows, ranks = _add_batch(path, batch, index, builder, self.article_keys, self.drops, self.times)
            if attr_columns.get(path) and len(rows):
                # The user columns of the user's first impression row.
                self.user_attrs.add(ranks, rows, batch.select(attr_columns[path]))

    def item_table(self, result: BuildResult) -> pa.Table:
        positions = np.searchsorted(self.article_keys, result.item_keys)
        kept_articles = repair_utf8(self.articles.take(pa.array(positions)), self.articles_path, self.drops)
        return _item_table(kept_articles, result.item_keys, self.category_groups, self.drops)

    def user_table(self, result: BuildResult) -> pa.Table | None:
        return self.user_attrs.table(result.user_ranks)


def _add_batch(
    path: Path,
    batch: pa.RecordBatch,
    index: UserIndex,
    builder: SequenceBuilder,
    article_keys: np.ndarray,
    drops: DropCounter,
    times: TimestampReader,
) -> tuple[np.ndarray, np.ndarray]:
    """Adds one batch of history or behaviors rows; returns the candidate rows and their ranks."""
    history = "article_id_fixed" in batch.schema.names
    keys, valid, _ = user_keys(batch.column("user_id"))
    rows, ranks = index.select(keys, valid)
    if len(rows) == 0:
        return rows, ranks
    take = pa.array(rows)
    if history:
        clicks = batch.column("article_id_fixed").take(take)
        click_times = batch.column("impression_time_fixed").take(take)
        len_clicks, len_times = list_lengths(clicks), list_lengths(click_times)
        if not np.array_equal(len_clicks, len_times):
            bad = int(np.flatnonzero(len_clicks != len_times)[0])
            user = batch.column("user_id")[int(rows[bad])].as_py()
            raise DataFormatError(
                f"{path}: columns 'article_id_fixed' and 'impression_time_fixed' differ in length for "
                f"user_id {user} ({len_clicks[bad]} vs {len_times[bad]})"
            )
        parents = pc.list_parent_indices(clicks).to_numpy()
        flat_items = pc.list_flatten(clicks)
        # Lists of equal length flatten in the same order, null lists included (both are skipped).
        ts, ts_valid = times.arrow_to_microseconds(
            pc.list_flatten(click_times), source=str(path), column="impression_time_fixed"
        )
    else:
        clicks = batch.column("article_ids_clicked").take(take)
        parents = pc.list_parent_indices(clicks).to_numpy()
        flat_items = pc.list_flatten(clicks)
        row_ts, row_valid = times.arrow_to_microseconds(
            batch.column("impression_time").take(take), source=str(path), column="impression_time"
        )
        ts = row_ts[parents]
        ts_valid = None if row_valid is None else row_valid[parents]
    items, item_valid = int_column(flat_items)
    flat_ranks = ranks[parents]
    pos = np.minimum(np.searchsorted(article_keys, items), max(len(article_keys) - 1, 0))
    known = article_keys[pos] == items if len(article_keys) else np.zeros(len(items), bool)
    ok = keep_valid(
        [
            ("null_article_id", item_valid),
            ("null_impression_time", ts_valid),
            ("article_not_in_articles", known),
        ],
        drops,
    )
    flat_ranks, items, ts = take_rows(ok, flat_ranks, items, ts)
    builder.add(flat_ranks, items, ts)
    return rows, ranks


def _item_table(
    articles: pa.Table, item_keys: np.ndarray, category_groups: Mapping[str, str] | None, drops: DropCounter
) -> pa.Table:
    mapping = {
        k.lower(): v
        for k, v in (EBNERD_CATEGORY_GROUP_MAP if category_groups is None else category_groups).items()
    }
    category_str = articles.column("category_str").combine_chunks()
    # Map the few distinct values in Python, then gather: one string per item, no per-item Python.
    encoded = (
        category_str.dictionary_encode() if not pa.types.is_dictionary(category_str.type) else category_str
    )
    values = encoded.dictionary.to_pylist()
    groups = [category_group_of(v, mapping) for v in values]
    indices = encoded.indices
    group = pa.array(groups + ["other"], pa.string()).take(pc.fill_null(indices, len(groups)))
    counts = np.bincount(
        pc.fill_null(indices, len(values)).to_numpy(zero_copy_only=False), minlength=len(values) + 1
    )
    unmapped = Counter(
        {
            v: int(n)
            for v, n in zip(values, counts)
            if v is not None and n and v.strip().lower() not in mapping
        }
    )
    if unmapped:
        drops.add("unmapped_category_items_kept", sum(unmapped.values()))
        logger.warning(
            "ebnerd: category_str values not in the group map (put in 'other'): %s",
            dict(unmapped.most_common(10)),
        )
    title = pc.fill_null(articles.column("title").cast(pa.string()), "")
    subtitle = articles.column("subtitle").cast(pa.string())
    topics = articles.column("topics").cast(pa.list_(pa.string()))
    null = pa.scalar(None, pa.string())
    topics_line = pc.if_else(
        pc.greater(pc.list_value_length(topics), 0),
        pc.binary_join_element_wise("Topics: ", pc.binary_join(topics, ", "), ""),
        null,
    )
    # One line per non-empty part: the item text semantic backbones read.
    parts = [pc.if_else(pc.equal(p, ""), null, p) for p in (title, subtitle)] + [topics_line]
    text = pc.fill_null(pc.binary_join_element_wise(*parts, "\n", null_handling="skip"), "")
    columns = {
        "item_id": pa.array(np.arange(1, len(item_keys) + 1, dtype=np.int64)),
        "original_id": pa.array(item_keys).cast(pa.string()),
        "title": title,
        "subtitle": pc.fill_null(subtitle, ""),
        "text": text,
        "topics": topics,
        "category": articles.column("category").cast(pa.int64()),
        "category_str": articles.column("category_str").cast(pa.string()),
        "subcategory": articles.column("subcategory").cast(pa.list_(pa.int64())),
        "category_group": group,
    }
    if "published_time" in articles.column_names:
        seconds, valid = timestamps_to_microseconds(articles.column("published_time"))
        seconds = np.floor_divide(seconds, 1_000_000)
        columns["published_time"] = pa.array(seconds, mask=None if valid is None else ~valid)
    if "body" in articles.column_names:
        columns["body"] = articles.column("body").cast(pa.string())
    return pa.table(columns)
