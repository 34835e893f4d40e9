"""PixelRec / Pixel8M: the publisher's CSV headers and layout, checked against hand-worked answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ggr_hf.data.pixelrec import (
    PIXELREC_CATEGORIES,
    default_tag_map_path,
    find_pixelrec_files,
    input_files,
    load_pixelrec,
    load_tag_categories,
)
from ggr_hf.data.schema import DataFormatError

ITEM_HEADER = (
    "item_id,view_number,comment_number,thumbup_number,share_number,coin_number,favorite_number,"
    "barrage_number,title,tag,description"
)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "PixelRec"
    write(
        root / "pixelrec_interaction" / "Pixel8M.csv",
        "item_id,user_id,timestamp\n"
        "i2,u10,300\n"
        "i10,u10,100\n"
        "i2,u2,50\n"
        "i10,u10,100\n"  # duplicate
        "i99,u2,60\n"  # not in the item info
        "i1,u2,70\n"
        ",u3,5\n"  # null item
        "i1,,5\n"  # null user
        "i1,u4,\n",  # null timestamp
    )
    info = (
        ITEM_HEADER + "\n"
        'i1,10,1,1,1,1,1,1,"Hello, world",Comedy,"two\nlines"\n'
        "i2,20,,2,2,2,2,2,标题,日常,desc\n"
        "i3,5,0,0,0,0,0,0,never seen,Gaming,x\n"
    ).encode() + b"i10,30,3,3,3,3,3,3,bad \xff title,A Tag Nobody Mapped,d\n"
    write(root / "pixelrec_iteminfo" / "item_info.csv", info)
    return root


def test_sequences_items_categories_and_drops(raw):
    bundle = load_pixelrec(raw, progress=False)
    bundle.validate()
    assert bundle.name == "pixelrec"
    # Natural id order: u2 before u10, i1 < i2 < i10; i3 is never interacted with.
    assert bundle.users["original_id"] == ["u2", "u10"]
    assert bundle.items["original_id"] == ["i1", "i2", "i10"]
    assert bundle.sequences[0]["item_ids"] == [2, 1]  # u2: i2 @50, i1 @70 (i99 dropped)
    assert bundle.sequences[0]["timestamps"] == [50, 70]
    assert bundle.sequences[1]["item_ids"] == [3, 2]  # u10: i10 @100 (duplicate dropped), i2 @300
    assert bundle.sequences[1]["timestamps"] == [100, 300]
    assert bundle.dropped == {
        "duplicate_event": 1,
        "item_not_in_item_info": 1,
        "non_utf8_text_replaced": 1,
        "null_item_id": 1,
        "null_timestamp": 1,
        "null_user_id": 1,
        "unmapped_tag_items_kept": 1,
    }
    items = bundle.items
    assert items["title"] == ["Hello, world", "标题", "bad \ufffd title"]
    assert items["description"][0] == "two\nlines"
    assert items["comment_number"] == [1, None, 3]
    assert items["view_number"] == [10, 20, 30]
    assert items["tag"] == ["Comedy", "日常", "A Tag Nobody Mapped"]
    assert items["categories"] == [["Entertainment", "Real life"], ["Real life"], []]


def test_a_replacement_tag_table_and_a_tag_separator(raw, tmp_path):
    table = write(
        tmp_path / "my_tags.csv",
        "# my own table\ntag,categories\ncomedy,Music|Gaming\n日常,Science & technology\nnobody,Music\n",
    )
    bundle = load_pixelrec(raw, tag_map=table, tag_separator=" ", progress=False)
    # "A Tag Nobody Mapped" splits into four tags; only "Nobody" is in the table.
    assert bundle.items["categories"] == [["Gaming", "Music"], ["Science & technology"], ["Music"]]
    assert bundle.dropped["unmapped_tag_items_kept"] == 1
    assert table in input_files(raw, tag_map=table)


def test_tag_table_errors_name_file_and_line(tmp_path):
    bad = write(tmp_path / "t.csv", "tag,categories\nComedy,Entertainment\nDance,Dancing\n")
    with pytest.raises(
        DataFormatError, match=r"t\.csv, line 3: column 'categories' has unknown category 'Dancing'"
    ):
        load_tag_categories(bad)
    dup = write(tmp_path / "d.csv", "tag,categories\nComedy,Entertainment\n comedy ,Music\n")
    with pytest.raises(DataFormatError, match="line 3: column 'tag' repeats"):
        load_tag_categories(dup)
    with pytest.raises(DataFormatError, match="missing column 'categories'"):
        load_tag_categories(write(tmp_path / "h.csv", "tag,cats\na,Music\n"))


def test_packaged_tag_table_uses_exactly_the_eight_categories():
    table = load_tag_categories()
    assert default_tag_map_path().name == "pixelrec_tag_categories.csv"
    used = {c for cats in table.values() for c in cats}
    assert used == set(PIXELREC_CATEGORIES) and len(PIXELREC_CATEGORIES) == 8
    assert table["comedy"] == ("Entertainment", "Real life") and table["搞笑"] == table["comedy"]


def test_variant_picks_among_several_interaction_files(raw):
    write(raw / "pixelrec_interaction" / "Pixel200K.csv", "item_id,user_id,timestamp\ni1,u9,1\n")
    with pytest.raises(DataFormatError, match="several interaction files"):
        load_pixelrec(raw, progress=False)
    inter, items = find_pixelrec_files(raw, variant="Pixel200K")
    assert [p.name for p in inter] == ["Pixel200K.csv"] and [p.name for p in items] == ["item_info.csv"]
    bundle = load_pixelrec(raw, variant="Pixel200K", progress=False)
    assert bundle.name == "pixel200k" and bundle.users["original_id"] == ["u9"]
    with pytest.raises(FileNotFoundError, match="Pixel1M"):
        load_pixelrec(raw, variant="Pixel1M", progress=False)


def test_min_events_filter(raw):
    bundle = load_pixelrec(raw, min_events=3, progress=False)
    assert bundle.num_users == 0
    assert bundle.dropped["user_below_min_events"] == 4


def test_bad_timestamp_and_missing_column_name_file_and_column(raw, tmp_path):
    bad = write(raw / "pixelrec_interaction" / "Pixel8M.csv", "item_id,user_id,timestamp\ni1,u1,yesterday\n")
    with pytest.raises(
        DataFormatError, match="column 'timestamp' has a non-numeric value 'yesterday'"
    ) as err:
        load_pixelrec(raw, progress=False)
    assert str(bad) in str(err.value)
    write(raw / "pixelrec_interaction" / "Pixel8M.csv", "item_id,user_id,timestamp\ni1,u1,1.7e9\n")
    assert load_pixelrec(raw, progress=False).sequences[0]["timestamps"] == [1_700_000_000]
    info = write(tmp_path / "x" / "info.csv", "item_id,title,description\ni1,t,d\n")
    with pytest.raises(DataFormatError, match="missing column 'tag'") as err:
        load_pixelrec(raw, item_info=info, progress=False)
    assert str(info) in str(err.value)


def test_unparsable_row_names_the_file(raw):
    write(raw / "pixelrec_interaction" / "Pixel8M.csv", "item_id,user_id,timestamp\ni1,u1,5\ni2,u2\n")
    with pytest.raises(DataFormatError, match="Pixel8M.csv: cannot parse"):
        load_pixelrec(raw, progress=False)


def test_no_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no interaction CSV"):
        load_pixelrec(tmp_path / "empty", progress=False)
