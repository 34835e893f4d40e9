"""EB-NeRD: history / behaviors / articles parquet files in the publisher's dtypes, hand-worked answers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ggr_hf.data.ebnerd import (
    EBNERD_CATEGORY_GROUP_MAP,
    EBNERD_CATEGORY_GROUPS,
    category_group_of,
    input_files,
    load_ebnerd,
)
from ggr_hf.data.schema import DataFormatError

T0 = dt.datetime(2023, 5, 18, 7, 0, 0)
T0_S = int(T0.replace(tzinfo=dt.timezone.utc).timestamp())
US = pa.timestamp("us")

HISTORY = pa.schema(
    [
        ("user_id", pa.uint32()),
        ("impression_time_fixed", pa.list_(US)),
        ("scroll_percentage_fixed", pa.list_(pa.float32())),
        ("article_id_fixed", pa.list_(pa.int32())),
        ("read_time_fixed", pa.list_(pa.float32())),
    ]
)
BEHAVIORS = pa.schema(
    [
        ("impression_id", pa.uint32()),
        ("article_id", pa.int32()),
        ("impression_time", US),
        ("read_time", pa.float32()),
        ("scroll_percentage", pa.float32()),
        ("device_type", pa.int8()),
        ("article_ids_inview", pa.list_(pa.int32())),
        ("article_ids_clicked", pa.list_(pa.int32())),
        ("user_id", pa.uint32()),
        ("is_sso_user", pa.bool_()),
        ("gender", pa.int8()),
        ("postcode", pa.int8()),
        ("age", pa.int8()),
        ("is_subscriber", pa.bool_()),
        ("session_id", pa.uint32()),
        ("next_read_time", pa.float32()),
        ("next_scroll_percentage", pa.float32()),
    ]
)
ARTICLES = pa.schema(
    [
        ("article_id", pa.int32()),
        ("title", pa.string()),
        ("subtitle", pa.string()),
        ("last_modified_time", US),
        ("premium", pa.bool_()),
        ("body", pa.string()),
        ("published_time", US),
        ("image_ids", pa.list_(pa.int64())),
        ("article_type", pa.string()),
        ("url", pa.string()),
        ("ner_clusters", pa.list_(pa.string())),
        ("entity_groups", pa.list_(pa.string())),
        ("topics", pa.list_(pa.string())),
        ("category", pa.int16()),
        ("subcategory", pa.list_(pa.int16())),
        ("category_str", pa.string()),
        ("total_inviews", pa.int32()),
        ("total_pageviews", pa.int32()),
        ("total_read_time", pa.float32()),
        ("sentiment_score", pa.float32()),
        ("sentiment_label", pa.string()),
    ]
)


def t(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def history_row(user, clicks):
    """clicks: [(article_id, seconds after T0)]."""
    return {
        "user_id": user,
        "impression_time_fixed": [None if s is None else t(s) for _, s in clicks],
        "scroll_percentage_fixed": [50.0] * len(clicks),
        "article_id_fixed": [a for a, _ in clicks],
        "read_time_fixed": [3.0] * len(clicks),
    }


def behaviors_row(user, seconds, clicked, **user_columns):
    row = {
        "impression_id": 1,
        "article_id": None,
        "impression_time": t(seconds),
        "read_time": 1.0,
        "scroll_percentage": None,
        "device_type": 2,
        "article_ids_inview": clicked + [999],
        "article_ids_clicked": clicked,
        "user_id": user,
        "is_sso_user": False,
        "gender": None,
        "postcode": None,
        "age": None,
        "is_subscriber": False,
        "session_id": 1,
        "next_read_time": 1.0,
        "next_scroll_percentage": 1.0,
    }
    row.update(user_columns)
    return row


def article(aid, title, subtitle, topics, category, category_str, subcategory=()):
    return {
        "article_id": aid,
        "title": title,
        "subtitle": subtitle,
        "last_modified_time": t(-100),
        "premium": False,
        "body": f"body of {aid}",
        "published_time": t(-3600.5),
        "image_ids": [1],
        "article_type": "article_default",
        "url": f"https://ekstrabladet.dk/{aid}",
        "ner_clusters": [],
        "entity_groups": [],
        "topics": topics,
        "category": category,
        "subcategory": list(subcategory),
        "category_str": category_str,
        "total_inviews": None,
        "total_pageviews": None,
        "total_read_time": None,
        "sentiment_score": 0.9,
        "sentiment_label": "Neutral",
    }


def write(path: Path, rows, schema):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "ebnerd_small"
    write(
        root / "articles.parquet",
        [
            article(3001, "Politi efterlyser", "Manden er farlig", ["Kriminalitet"], 140, "krimi", [141]),
            article(3002, "Superliga", "", ["Sport", "Fodbold"], 142, "sport"),
            article(3003, "Ny regering", "Statsministeren", [], 118, "nyheder", [119, 120]),
            article(3004, "Quiz", None, ["Underholdning"], 999, "nyt_afsnit"),  # not in the group map
            article(3002, "Superliga (dup)", "", [], 142, "sport"),  # duplicated id: first row kept
        ],
        ARTICLES,
    )
    write(
        root / "train" / "history.parquet",
        [
            # user 20: out of time order in the file; 7777 is not in articles.parquet.
            history_row(20, [(3002, 30), (3001, 10.9), (7777, 11), (3003, 20), (3001, 10.9)]),
            history_row(10, [(3003, 5), (None, 6), (3004, 7)]),
            history_row(30, [(3001, 1)]),  # too few clicks
        ],
        HISTORY,
    )
    write(
        root / "validation" / "history.parquet",
        [history_row(30, [(3002, 100), (3003, 101)])],
        HISTORY,
    )
    write(
        root / "train" / "behaviors.parquet",
        [
            behaviors_row(10, 50, [3001], gender=1, age=40, is_subscriber=True),
            behaviors_row(10, 60, [3002], gender=2),
            behaviors_row(30, 70, []),
        ],
        BEHAVIORS,
    )
    write(root / "validation" / "behaviors.parquet", [behaviors_row(30, 200, [3004], age=30)], BEHAVIORS)
    return root


def test_history_sequences_items_and_drops(raw):
    bundle = load_ebnerd(raw, min_events=2, progress=False)
    bundle.validate()
    assert bundle.name == "ebnerd" and bundle.event_names is None
    assert bundle.users["original_id"] == ["10", "20"]
    # Articles referenced by kept clicks, in id order.
    assert bundle.items["original_id"] == ["3001", "3002", "3003", "3004"]
    # User 10: 3003 @5, 3004 @7 (a null article id dropped).
    assert bundle.sequences[0]["item_ids"] == [3, 4]
    assert bundle.sequences[0]["timestamps"] == [T0_S + 5, T0_S + 7]
    # User 20 sorted by time: 3001 @10.9 (duplicate dropped; floored to 10 s), 3003 @20, 3002 @30.
    assert bundle.sequences[1]["item_ids"] == [1, 3, 2]
    assert bundle.sequences[1]["timestamps"] == [T0_S + 10, T0_S + 20, T0_S + 30]
    assert bundle.dropped == {
        "article_not_in_articles": 1,
        "duplicate_article_row": 1,
        "duplicate_event": 1,
        "null_article_id": 1,
        "unmapped_category_items_kept": 1,
        "user_below_min_events": 1,
    }
    items = bundle.items
    assert items["category_group"] == ["crime", "sport", "news", "other"]
    assert items["category_str"] == ["krimi", "sport", "nyheder", "nyt_afsnit"]
    assert items["category"] == [140, 142, 118, 999]
    assert items["subcategory"] == [[141], [], [119, 120], []]
    assert items["title"] == ["Politi efterlyser", "Superliga", "Ny regering", "Quiz"]
    assert items["text"] == [
        "Politi efterlyser\nManden er farlig\nTopics: Kriminalitet",
        "Superliga\nTopics: Sport, Fodbold",
        "Ny regering\nStatsministeren",
        "Quiz\nTopics: Underholdning",
    ]
    assert items["topics"][1] == ["Sport", "Fodbold"]
    assert items["published_time"] == [T0_S - 3601] * 4
    assert "body" not in items.column_names


def test_paper_default_is_512_clicks(tmp_path, raw):
    rows = [
        history_row(1, [(3001 + i % 3, i) for i in range(512)]),
        history_row(2, [(3001, i) for i in range(511)]),
    ]
    write(raw / "train" / "history.parquet", rows, HISTORY)
    bundle = load_ebnerd(raw, progress=False)
    assert bundle.users["original_id"] == ["1"] and len(bundle.sequences[0]["item_ids"]) == 512
    assert bundle.dropped["user_below_min_events"] == 511


def test_splits_and_behaviors_are_merged_per_user(raw):
    bundle = load_ebnerd(
        raw,
        min_events=3,
        splits=("train", "validation"),
        include_behaviors=True,
        include_body=True,
        progress=False,
    )
    assert bundle.users["original_id"] == ["10", "20", "30"]
    # User 10: history 3003 @5, 3004 @7, then behaviors clicks 3001 @50, 3002 @60.
    assert bundle.sequences[0]["item_ids"] == [3, 4, 1, 2]
    # User 30: train 3001 @1, validation 3002 @100, 3003 @101, validation behaviors 3004 @200.
    assert bundle.sequences[2]["item_ids"] == [1, 2, 3, 4]
    assert bundle.sequences[2]["timestamps"] == [T0_S + 1, T0_S + 100, T0_S + 101, T0_S + 200]
    users = bundle.users
    assert users["gender"] == [1, None, None]  # first behaviors row of each user
    assert users["age"] == [40, None, None]
    assert users["is_subscriber"] == [True, None, False]
    assert bundle.items["body"][0] == "body of 3001"


def test_custom_category_groups(raw):
    bundle = load_ebnerd(
        raw, min_events=2, category_groups={"KRIMI": "blue", "sport": "green"}, progress=False
    )
    assert bundle.items["category_group"] == ["blue", "green", "other", "other"]


def test_category_group_map_covers_the_six_groups():
    assert set(EBNERD_CATEGORY_GROUP_MAP.values()) == set(EBNERD_CATEGORY_GROUPS)
    assert category_group_of("Nyheder") == "news"
    assert category_group_of(None) == "other" and category_group_of("unknown") == "other"


def test_mismatched_list_lengths_name_file_columns_and_user(raw):
    row = history_row(44, [(3001, 1), (3002, 2)])
    row["impression_time_fixed"] = row["impression_time_fixed"][:1]
    bad = write(raw / "train" / "history.parquet", [row], HISTORY)
    with pytest.raises(DataFormatError, match="user_id 44") as err:
        load_ebnerd(raw, min_events=1, progress=False)
    assert str(bad) in str(err.value) and "impression_time_fixed" in str(err.value)


def test_null_click_times_are_counted(raw):
    write(raw / "train" / "history.parquet", [history_row(1, [(3001, 1), (3002, None)])], HISTORY)
    bundle = load_ebnerd(raw, min_events=1, progress=False)
    assert bundle.sequences[0]["item_ids"] == [1]
    assert bundle.dropped["null_impression_time"] == 1


def test_missing_files_and_columns(raw):
    (raw / "validation" / "history.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="validation"):
        load_ebnerd(raw, splits=("train", "validation"), progress=False)
    (raw / "train" / "behaviors.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="train/behaviors.parquet"):
        input_files(raw, include_behaviors=True)
    table = pq.read_table(raw / "articles.parquet").drop_columns(["category_str"])
    pq.write_table(table, raw / "articles.parquet")
    with pytest.raises(DataFormatError, match="articles.parquet: missing column 'category_str'"):
        load_ebnerd(raw, min_events=1, progress=False)
    (raw / "articles.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="articles.parquet"):
        load_ebnerd(raw, progress=False)


def test_wrong_dtype_and_truncated_file(raw):
    table = pq.read_table(raw / "train" / "history.parquet")
    table = table.set_column(
        3, "article_id_fixed", table.column("article_id_fixed").cast(pa.list_(pa.string()))
    )
    pq.write_table(table, raw / "train" / "history.parquet")
    with pytest.raises(DataFormatError, match="'article_id_fixed' has type list<element: string>"):
        load_ebnerd(raw, progress=False)
    path = raw / "train" / "history.parquet"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataFormatError, match="history.parquet"):
        load_ebnerd(raw, progress=False)


def test_non_utf8_title_and_topics_are_repaired_and_counted(raw, caplog):
    path = raw / "articles.parquet"
    table = pq.read_table(path)
    titles = [b"Politi \xffefterlyser", b"Superliga", b"Ny regering", b"Quiz", b"dup"]
    table = table.set_column(1, "title", pa.array(titles, pa.binary()).view(pa.string()))
    topics = pa.ListArray.from_arrays(
        pa.array([0, 1, 3, 3, 4, 4]),
        pa.array([b"Krimi", b"Sport", b"Fod\xc3", b"Under"], pa.binary()).view(pa.string()),
    )
    table = table.set_column(table.schema.get_field_index("topics"), "topics", topics)
    pq.write_table(table, path)
    bundle = load_ebnerd(raw, min_events=2, progress=False)
    assert bundle.items["title"][0] == "Politi \ufffdefterlyser"
    assert bundle.items["topics"][1] == ["Sport", "Fod\ufffd"]
    assert bundle.items["text"][1] == "Superliga\nTopics: Sport, Fod\ufffd"
    assert bundle.dropped["non_utf8_text_replaced"] == 2
    assert str(path) in caplog.text and "'title'" in caplog.text and "'topics'" in caplog.text
