"""MerRec: monthly folders of parquet shards in the publisher's schema, checked against hand-worked answers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ggr_hf.data.merrec import MERREC_EVENT_NAMES, find_shards, load_merrec
from ggr_hf.data.schema import DataFormatError

T0 = dt.datetime(2023, 5, 1)
T0_S = int(T0.replace(tzinfo=dt.timezone.utc).timestamp())

# MerRec's columns and dtypes, as in the Hugging Face parquet files.
SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("sequence_id", pa.string()),
        ("session_id", pa.string()),
        ("sequence_length", pa.int64()),
        ("stime", pa.timestamp("us")),
        ("event_id", pa.string()),
        ("item_id", pa.int64()),
        ("product_id", pa.string()),
        ("name", pa.string()),
        ("price", pa.float64()),
        ("c0_id", pa.int64()),
        ("c1_id", pa.int64()),
        ("c2_id", pa.int64()),
        ("c0_name", pa.string()),
        ("c1_name", pa.string()),
        ("c2_name", pa.string()),
        ("brand_id", pa.int64()),
        ("brand_name", pa.string()),
        ("item_condition_id", pa.int64()),
        ("item_condition_name", pa.string()),
        ("size_id", pa.int64()),
        ("size_name", pa.string()),
        ("color", pa.string()),
        ("shipper_id", pa.int64()),
        ("shipper_name", pa.string()),
    ]
)


def event(user, micros, event_id, item, *, name=None, c2="Sneakers", c1="Shoes", c0="Men", price=10.0):
    """One MerRec row; `micros` counts microseconds after 2023-05-01 00:00 (None: null stime)."""
    return {
        "user_id": user,
        "sequence_id": f"s{user}",
        "session_id": f"x{user}",
        "sequence_length": 1,
        "stime": None if micros is None else T0 + dt.timedelta(microseconds=micros),
        "event_id": event_id,
        "item_id": item,
        "product_id": f"p{item}",
        "name": name if name is not None else f"item {item}",
        "price": price,
        "c0_id": 1,
        "c1_id": 2,
        "c2_id": 3,
        "c0_name": c0,
        "c1_name": c1,
        "c2_name": c2,
        "brand_id": 4,
        "brand_name": "Nike",
        "item_condition_id": 1,
        "item_condition_name": "New",
        "size_id": 5,
        "size_name": "9",
        "color": "Black",
        "shipper_id": 1,
        "shipper_name": "USPS",
    }


def write_shard(path: Path, rows: list[dict], schema: pa.Schema = SCHEMA) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


S = 1_000_000  # one second in microseconds


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "merrec"
    write_shard(
        root / "20230501" / "part-000.parquet",
        [
            event(900, 5 * S, "item_view", 111, name="Air Max (first name)"),
            event(900, 2 * S + 400_000, "item_like", 222, c2=None),  # category falls back to c1
            event(7, 1 * S, "item_view", 111, name="Air Max (later name)"),
            event(900, 2 * S + 400_000, "item_like", 222, c2=None),  # exact duplicate
            event(None, 1 * S, "item_view", 111),  # null user
            event(55, 3 * S, "item_view", 333),
        ],
    )
    write_shard(
        root / "20230501" / "part-001.parquet",
        [
            event(7, 9 * S, "buy_comp", 333, c2=None, c1=None),  # category falls back to c0
            event(900, 2 * S + 100_000, "add_to_cart", 111),  # alias of item_add_to_cart_tap
        ],
    )
    write_shard(
        root / "20230601" / "part-000.parquet",
        [
            event(7, 40 * S, "offer_make", 222),
            event(900, 40 * S, "buy_start", 222),
            event(7, 41 * S, "item_view", None),  # null item
            event(900, 2 * S + 100_000, "item_view", 111),  # same second as the add-to-cart, view first
        ],
    )
    return root


def test_sequences_events_items_and_drops_are_the_hand_worked_ones(raw):
    bundle = load_merrec(raw, min_events=3, progress=False)
    bundle.validate()
    assert bundle.name == "merrec"
    assert bundle.event_names == list(MERREC_EVENT_NAMES)
    # Users in numeric order of their ids: 7, then 900 (55 has one event < 3).
    assert bundle.users["original_id"] == ["7", "900"]
    # Items in numeric order of their ids: 111 -> 1, 222 -> 2, 333 -> 3.
    assert bundle.items["original_id"] == ["111", "222", "333"]
    seq = bundle.sequences
    assert seq["user_id"] == [0, 1]
    # User 7: view 111 @1s, buy_comp 333 @9s, offer 222 @40s (null item dropped).
    assert seq[0]["item_ids"] == [1, 3, 2]
    assert seq[0]["event_ids"] == [0, 5, 3]
    assert seq[0]["timestamps"] == [T0_S + 1, T0_S + 9, T0_S + 40]
    # User 900, by time to the microsecond, then event type: view 111 @2.1s, cart 111 @2.1s,
    # like 222 @2.4s (duplicate dropped), view 111 @5s, buy_start 222 @40s.
    assert seq[1]["item_ids"] == [1, 1, 2, 1, 2]
    assert seq[1]["event_ids"] == [0, 2, 1, 0, 4]
    assert seq[1]["timestamps"] == [T0_S + 2, T0_S + 2, T0_S + 2, T0_S + 5, T0_S + 40]
    assert bundle.dropped == {
        "duplicate_event": 1,
        "null_item_id": 1,
        "null_user_id": 1,
        "user_below_min_events": 1,
    }
    items = bundle.items
    # First row in file order gives the attributes; category = first non-null of c2, c1, c0.
    assert items["title"] == ["Air Max (first name)", "item 222", "item 333"]
    assert items["category_name"] == ["Sneakers", "Shoes", "Men"]
    assert items["c2_name"] == ["Sneakers", None, None]
    assert items["brand_name"] == ["Nike"] * 3 and items["price"] == [10.0] * 3
    assert bundle.num_interactions == 8


def test_paper_default_keeps_users_with_2000_events(tmp_path):
    rows = [event(1, i * S, "item_view", 10 + i % 7) for i in range(2000)]
    rows += [event(2, i * S, "item_view", 10 + i % 7) for i in range(1999)]
    write_shard(tmp_path / "m" / "20230501" / "0.parquet", rows)
    bundle = load_merrec(tmp_path / "m", progress=False)
    assert bundle.users["original_id"] == ["1"]
    assert len(bundle.sequences[0]["item_ids"]) == 2000
    assert bundle.dropped == {"user_below_min_events": 1999}


def test_duplicates_can_push_a_user_below_the_threshold(tmp_path):
    rows = [event(1, 0, "item_view", 5), event(1, 0, "item_view", 5), event(1, S, "item_view", 6)]
    write_shard(tmp_path / "m" / "a.parquet", rows)
    bundle = load_merrec(tmp_path / "m", min_events=3, progress=False)
    assert bundle.num_users == 0 and bundle.num_items == 0
    assert bundle.dropped == {"duplicate_event": 1, "user_below_min_events": 2}


def test_unknown_event_type_is_an_error_naming_file_column_and_value(raw):
    bad = write_shard(raw / "20230601" / "part-001.parquet", [event(7, 50 * S, "item_teleport", 222)])
    with pytest.raises(DataFormatError) as err:
        load_merrec(raw, min_events=3, progress=False)
    assert str(bad) in str(err.value) and "'event_id'" in str(err.value) and "item_teleport" in str(err.value)
    bundle = load_merrec(raw, min_events=3, skip_unknown_events=True, progress=False)
    assert bundle.dropped["unknown_event_id"] == 1
    assert bundle.sequences[0]["item_ids"] == [1, 3, 2]


def _with_bad_bytes(table: pa.Table, column: str, values: list[bytes | None]) -> pa.Table:
    """`table` with `column` replaced by string values holding the given raw bytes (not checked)."""
    bad = pa.array(values, pa.binary()).view(pa.string())
    return table.set_column(table.schema.get_field_index(column), column, bad)


def test_non_utf8_titles_are_repaired_counted_and_logged(tmp_path, caplog):
    rows = [event(1, S, "item_view", 5), event(1, 2 * S, "item_view", 6), event(1, 3 * S, "item_view", 5)]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    table = _with_bad_bytes(table, "name", [b"Air \xff Max", b"fine", b"later \xfe"])
    table = _with_bad_bytes(table, "c2_name", [b"Sneak\xc3", b"Bags", b"x"])
    path = tmp_path / "m" / "20230501" / "a.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    bundle = load_merrec(tmp_path / "m", min_events=1, progress=False)
    # Only first-seen rows give item attributes: item 5's title and category, item 6's are fine.
    assert bundle.items["title"] == ["Air \ufffd Max", "fine"]
    assert bundle.items["category_name"] == ["Sneak\ufffd", "Bags"]
    assert bundle.dropped == {"non_utf8_text_replaced": 2}  # name and c2_name of item 5
    assert str(path) in caplog.text and "'name'" in caplog.text


def test_null_time_and_event_are_counted(tmp_path):
    rows = [event(1, S, "item_view", 5), event(1, None, "item_view", 6), event(1, 2 * S, None, 7)]
    write_shard(tmp_path / "m" / "a.parquet", rows)
    bundle = load_merrec(tmp_path / "m", min_events=1, progress=False)
    assert bundle.sequences[0]["item_ids"] == [1]
    assert bundle.dropped == {"null_event_id": 1, "null_stime": 1}


def test_shard_missing_a_column_names_file_and_column(raw):
    schema = pa.schema([f for f in SCHEMA if f.name != "c1_name"])
    rows = [{k: v for k, v in event(7, S, "item_view", 1).items() if k != "c1_name"}]
    bad = write_shard(raw / "20230701" / "part-000.parquet", rows, schema)
    with pytest.raises(DataFormatError, match="c1_name") as err:
        load_merrec(raw, progress=False)
    assert str(bad) in str(err.value)


def test_shard_with_an_incompatible_type_names_file_and_column(raw):
    schema = pa.schema([pa.field("item_id", pa.string()) if f.name == "item_id" else f for f in SCHEMA])
    row = event(7, S, "item_view", 1)
    row["item_id"] = "1"
    bad = write_shard(raw / "20230701" / "part-000.parquet", [row], schema)
    with pytest.raises(DataFormatError, match="'item_id' has type string") as err:
        load_merrec(raw, progress=False)
    assert str(bad) in str(err.value)
    # Numeric attribute types may differ between shards (int price here, float elsewhere).
    schema = pa.schema([pa.field("price", pa.int64()) if f.name == "price" else f for f in SCHEMA])
    row = event(7, S, "item_view", 1)
    row["price"] = 3
    write_shard(raw / "20230701" / "part-000.parquet", [row], schema)
    items = load_merrec(raw, min_events=3, progress=False).items
    assert items["original_id"][:2] == ["1", "111"] and items["price"][:2] == [3.0, 10.0]


def test_truncated_shard_is_an_error_naming_the_file(raw):
    shard = raw / "20230601" / "part-000.parquet"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="part-000.parquet") as err:
        load_merrec(raw, progress=False)
    assert "20230601" in str(err.value)


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        find_shards(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no parquet shards"):
        load_merrec(tmp_path / "empty", progress=False)


def test_string_user_ids_and_many_buckets_give_the_same_answer(raw, tmp_path):
    reference = load_merrec(raw, min_events=1, progress=False)
    # The same events with string user ids, through tiny buckets and batches.
    schema = pa.schema([pa.field("user_id", pa.string()) if f.name == "user_id" else f for f in SCHEMA])
    for shard in find_shards(raw):
        table = pq.read_table(shard)
        ids = table.column("user_id").cast(pa.string())
        table = table.set_column(0, "user_id", ids)
        out = tmp_path / "str" / shard.relative_to(raw)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.cast(schema), out)
    bundle = load_merrec(tmp_path / "str", min_events=1, progress=False, bucket_rows=2, batch_rows=2)
    assert bundle.users["original_id"] == reference.users["original_id"] == ["7", "55", "900"]
    for column in ("item_ids", "timestamps", "event_ids"):
        assert bundle.sequences[column] == reference.sequences[column]
    assert bundle.items["title"] == reference.items["title"]


def test_work_dir_keeps_sequences_memory_mapped(raw, tmp_path):
    bundle = load_merrec(raw, min_events=1, progress=False, work_dir=tmp_path / "work")
    assert (tmp_path / "work" / "buckets" / "sequences.arrow").exists()
    assert bundle.sequences.cache_files
    assert np.array_equal(np.array(bundle.sequences["user_id"]), np.arange(3))
