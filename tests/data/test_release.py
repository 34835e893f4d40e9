"""The GGR release's processed layout: one parquet row per user with list columns + an item-info parquet."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ggr_hf.data.cache import prepare_dataset
from ggr_hf.data.merrec import MERREC_EVENT_NAMES
from ggr_hf.data.release import find_release_files, load_release, load_release_dir
from ggr_hf.data.schema import DataFormatError

INT_LIST = pa.list_(pa.int64())


@pytest.fixture
def merrec_release(tmp_path):
    root = tmp_path / "release"
    root.mkdir()
    pq.write_table(
        pa.table(
            {
                "user_id": ["u10", "u2", "u1"],
                "item_id": pa.array([["7", "5"], ["3"], ["5", "3", "5", "11"]], pa.list_(pa.string())),
                "timestamp": pa.array([[9, 8], [2], [3, 1, 3, 3]], INT_LIST),
                "event_id": pa.array([[2, 2], [5], [0, 1, 0, 4]], INT_LIST),
                "user_cluster_v1": pa.array([6, 5, 4], pa.int64()),
            }
        ),
        root / "merrec_2000.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "item_id": ["3", "5", "11", "99"],
                "title": ["three", "five", "eleven", "unused"],
                "tag": ["a", "b", "c", "d"],
            }
        ),
        root / "merrec_2000_items.parquet",
    )
    return root


def test_release_pair_is_read_with_event_names_and_user_columns(merrec_release):
    bundle = load_release_dir(merrec_release, release_name="merrec", progress=False)
    bundle.validate()
    assert bundle.name == "merrec" and bundle.event_names == list(MERREC_EVENT_NAMES)
    # Natural order: "3" < "5" < "7" < "11"; users u1 < u2 < u10.
    assert bundle.items["original_id"] == ["3", "5", "7", "11"]
    assert bundle.users["original_id"] == ["u1", "u2", "u10"]
    assert bundle.users["user_cluster_v1"] == [4, 5, 6]
    # u1: 3 @1 (like), 5 @3 (view, the duplicate dropped), 11 @3 (buy_start): ties by event then item.
    assert bundle.sequences[0]["item_ids"] == [1, 2, 4]
    assert bundle.sequences[0]["event_ids"] == [1, 0, 4]
    assert bundle.sequences[0]["timestamps"] == [1, 3, 3]
    assert bundle.sequences[2]["item_ids"] == [2, 3]  # u10: 5 @8, 7 @9
    assert bundle.items["title"] == ["three", "five", "", "eleven"]
    assert bundle.items["tag"] == ["a", "b", None, "c"]
    assert bundle.dropped == {"duplicate_event": 1, "items_without_item_info_kept": 1}


def test_integer_ids_string_events_and_millisecond_times(tmp_path):
    seq, info = tmp_path / "s.parquet", tmp_path / "i.parquet"
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array([[30, 4, 30], [4]], pa.list_(pa.int32())),
                "timestamp": pa.array([[5000, 1999, 7000], [1]], INT_LIST),
                "event_id": pa.array(
                    [["add_to_cart", "item_view", None], ["buy_comp"]], pa.list_(pa.string())
                ),
            }
        ),
        seq,
    )
    pq.write_table(pa.table({"item_id": pa.array([4, 30], pa.int64()), "title": ["four", "thirty"]}), info)
    bundle = load_release(seq, info, event_names=MERREC_EVENT_NAMES, timestamp_unit="ms", progress=False)
    assert bundle.users["original_id"] == ["0", "1"]  # no user_id column: the row number
    assert bundle.sequences[0]["item_ids"] == [1, 2]
    assert bundle.sequences[0]["timestamps"] == [1, 5]
    assert bundle.sequences[0]["event_ids"] == [0, 2]  # add_to_cart is item_add_to_cart_tap
    assert bundle.dropped == {"null_event_id": 1}
    # Without names: the sorted names found.
    assert load_release(seq, info, progress=False).event_names == ["add_to_cart", "buy_comp", "item_view"]


def test_bad_release_files(tmp_path, merrec_release):
    seq = merrec_release / "merrec_2000.parquet"
    info = merrec_release / "merrec_2000_items.parquet"
    table = pq.read_table(seq)
    bad = table.set_column(3, "event_id", pa.array([[2, 2], [6], [0, 1, 0, 4]], INT_LIST))
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(DataFormatError, match="'event_id' has the value 6, outside 0..5"):
        load_release(tmp_path / "bad.parquet", info, name="merrec", progress=False)
    short = table.set_column(2, "timestamp", pa.array([[9], [2], [3, 1, 3, 3]], INT_LIST))
    pq.write_table(short, tmp_path / "short.parquet")
    with pytest.raises(DataFormatError, match="'item_id' and 'timestamp' differ in length"):
        load_release(tmp_path / "short.parquet", info, progress=False)
    pq.write_table(table.drop_columns(["timestamp"]), tmp_path / "nots.parquet")
    with pytest.raises(DataFormatError, match="nots.parquet: missing column 'timestamp'"):
        load_release(tmp_path / "nots.parquet", info, progress=False)
    pq.write_table(table, merrec_release / "another.parquet")
    with pytest.raises(DataFormatError, match="expected one sequence parquet"):
        find_release_files(merrec_release)


def test_release_through_prepare(tmp_path, merrec_release):
    bundle = prepare_dataset(
        "release", merrec_release, tmp_path / "out", release_name="merrec", progress=False, verbose=False
    )
    assert (
        bundle.name == "merrec" and bundle.num_users == 3 and bundle.event_names == list(MERREC_EVENT_NAMES)
    )


def test_non_utf8_item_info_text_is_repaired_and_counted(tmp_path, merrec_release):
    path = merrec_release / "merrec_2000_items.parquet"
    info = pq.read_table(path)
    bad = pa.array([b"three", b"f\xffve", b"eleven", b"unused"], pa.binary()).view(pa.string())
    pq.write_table(info.set_column(1, "title", bad), path)
    bundle = load_release(merrec_release / "merrec_2000.parquet", path, name="merrec", progress=False)
    titles = dict(zip(bundle.items["original_id"], bundle.items["title"]))
    assert titles == {"3": "three", "5": "f\ufffdve", "7": "", "11": "eleven"}
    assert bundle.dropped["non_utf8_text_replaced"] == 1
