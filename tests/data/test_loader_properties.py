"""Property-based tests (hypothesis) of every loader's schema checks: random malformed small files
(missing or extra columns, wrong types, empty files, garbage bytes, implausible times) end in the
documented exceptions only, `GGRDataError` (`DataFormatError`) or `GGRFileNotFoundError`, never
another type. Bounded: a few dozen examples per loader, no deadline, a few seconds each."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggr_hf.data.ebnerd import load_ebnerd
from ggr_hf.data.merrec import load_merrec
from ggr_hf.data.movielens import load_movielens
from ggr_hf.data.pixelrec import load_pixelrec
from ggr_hf.data.release import load_release_dir
from ggr_hf.errors import GGRDataError, GGRFileNotFoundError

DOCUMENTED = (GGRDataError, GGRFileNotFoundError)
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)

TOKENS = st.sampled_from(
    ["1", "2", "-3", "0", "1600000000", "1600000000000", "1600000000000000000", "1.5", "1e30", "", " ",
     "abc", "i1", "u1", "i2", "99999999999999999999", '"', "\\N", "nan", "Comedy", "M", "25"]
)  # fmt: skip
GARBAGE = st.binary(max_size=64)


def _runs(load, *args, **kwargs) -> None:
    """Calls a loader; success or a documented exception pass, anything else fails the test."""
    with contextlib.suppress(DOCUMENTED):
        load(*args, **kwargs)


TIMES = st.sampled_from(
    ["1600000000", "1600000000400", "1600000000000000000", "0", "5", "1.5e9"]
) | st.integers(-10, 2**63 - 1).map(str)


def _row(draw, sep: str, fields: list[st.SearchStrategy[str]]) -> str:
    """One line: mostly well-formed values, now and then a random token or a field too many / few."""
    values = [draw(field) if draw(st.integers(0, 19)) else draw(TOKENS) for field in fields]
    if not draw(st.integers(0, 9)):
        values = values[:-1] if draw(st.booleans()) else [*values, draw(TOKENS)]
    return sep.join(values) + "\n"


def _lines(draw, sep: str, fields: list[st.SearchStrategy[str]], rows: int = 4) -> str:
    return "".join(_row(draw, sep, fields) for _ in range(draw(st.integers(0, rows))))


def _text_or_garbage(draw, text: str) -> bytes:
    return draw(GARBAGE) if not draw(st.integers(0, 14)) else text.encode()


def _one(*values: str) -> st.SearchStrategy[str]:
    return st.sampled_from(values)


# ---------------------------------------------------------------------------------------------------
# Text formats
# ---------------------------------------------------------------------------------------------------

USER, ITEM, RATING = _one("1", "2"), _one("10", "20", "30"), _one("1", "3", "5")


@SETTINGS
@given(st.data())
def test_movielens_grouplens_and_recbole_files(data):
    draw = data.draw
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if draw(st.booleans()):
            flags = [_one("0", "1")] * 19
            files = {
                "u.data": _lines(draw, "\t", [USER, ITEM, RATING, TIMES]),
                "u.item": _lines(
                    draw,
                    "|",
                    [ITEM, _one("Movie (1995)"), _one("01-Jan-1995", ""), _one(""), _one("x"), *flags],
                ),
                "u.user": _lines(
                    draw, "|", [USER, _one("24", "x"), _one("M"), _one("writer"), _one("12345")]
                ),
            }
        else:
            inter = {
                "user_id:token": USER,
                "item_id:token": ITEM,
                "rating:float": RATING,
                "timestamp:float": TIMES,
            }
            names = draw(st.permutations(list(inter)))[: draw(st.sampled_from([4, 4, 4, 3]))]
            files = {
                "ml.inter": "\t".join(names) + "\n" + _lines(draw, "\t", [inter[n] for n in names]),
                "ml.item": "item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
                + _lines(draw, "\t", [ITEM, _one("Movie"), _one("Drama", "")]),
                "ml.user": "user_id:token\tage:token\tgender:token\toccupation:token\n"
                + _lines(draw, "\t", [USER, _one("24", "-1"), _one("M"), _one("writer")]),
            }
        for name, text in files.items():
            if draw(st.integers(0, 9)):  # now and then a file is missing
                (folder / name).write_bytes(_text_or_garbage(draw, text))
        _runs(load_movielens, folder, timestamp_unit=draw(st.sampled_from(["auto", "s", "ms"])))


@SETTINGS
@given(st.data())
def test_pixelrec_csvs(data):
    draw = data.draw
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fields = {"item_id": _one("i1", "i2", "i9", ""), "user_id": _one("u1", "u2", ""), "timestamp": TIMES}
        columns = draw(st.permutations(list(fields)))
        if not draw(st.integers(0, 5)):
            columns = columns[: draw(st.integers(1, 2))] + ["extra"]
        fields["extra"] = TOKENS
        inter = ",".join(columns) + "\n" + _lines(draw, ",", [fields[c] for c in columns])
        info = "item_id,title,tag\n" + _lines(
            draw, ",", [_one("i1", "i2", "i3"), _one("T", ""), _one("Gaming", "x")]
        )
        (root / "Pixel8M.csv").write_bytes(_text_or_garbage(draw, inter))
        (root / "item_info.csv").write_bytes(_text_or_garbage(draw, info))
        _runs(load_pixelrec, root, progress=False, timestamp_unit=draw(st.sampled_from(["auto", "s", "ns"])))


# ---------------------------------------------------------------------------------------------------
# Parquet formats: random columns of random types
# ---------------------------------------------------------------------------------------------------

SCALARS = {
    "int64": st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 3) | st.just(1_600_000_000),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "string": st.text(max_size=4) | st.sampled_from(["item_view", "buy_comp", "sport", "u1"]),
    "float64": st.floats(allow_nan=True, allow_infinity=True),
    "timestamp": st.integers(-(2**62), 2**62) | st.just(1_600_000_000_000_000),
}
ARROW = {
    "int64": pa.int64(),
    "int32": pa.int32(),
    "uint32": pa.uint32(),
    "string": pa.string(),
    "float64": pa.float64(),
    "timestamp": pa.int64(),  # cast to timestamp[us] after building
}


def _column(draw, kind: str, n: int) -> pa.Array:
    is_list = kind.startswith("list<")
    inner = kind[5:-1] if is_list else kind
    value = st.none() | SCALARS[inner]
    if is_list:
        values = [draw(st.none() | st.lists(value, max_size=3)) for _ in range(n)]
        array = pa.array(values, pa.list_(ARROW[inner]))
        if inner == "timestamp":
            array = array.cast(pa.list_(pa.timestamp("us")))
    else:
        array = pa.array([draw(value) for _ in range(n)], ARROW[inner])
        if inner == "timestamp":
            array = array.cast(pa.timestamp("us"))
    return array


def _table(draw, columns: dict[str, list[str]]) -> pa.Table:
    n = draw(st.integers(0, 4))
    out = {}
    for name, kinds in columns.items():
        if draw(st.integers(0, 11)):  # now and then a column is missing
            # Mostly the right type (the first), so that the later checks are reached too.
            kind = kinds[0] if draw(st.integers(0, 3)) else draw(st.sampled_from(kinds))
            out[name] = _column(draw, kind, n)
    return pa.table(out) if out else pa.table({"unrelated": pa.array([1] * n)})


def _write(draw, path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if draw(st.integers(0, 14)):
        pq.write_table(table, path)
    else:
        path.write_bytes(draw(GARBAGE))


ANY = ["int64", "string", "float64", "timestamp", "list<int64>", "list<string>", "list<timestamp>"]


@SETTINGS
@given(st.data())
def test_merrec_shards(data):
    draw = data.draw
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for month in ("20230501", "20230601")[: draw(st.integers(1, 2))]:
            table = _table(
                draw,
                {
                    "user_id": ["int64", "string", "float64"],
                    "stime": ["timestamp", "int64", "string"],
                    "event_id": ["string", "int64"],
                    "item_id": ["int64", "string"],
                    "name": ["string", "int64"],
                    "c0_name": ["string"],
                    "c1_name": ["string"],
                    "c2_name": ["string", "float64"],
                    "price": ["float64", "string"],
                },
            )
            _write(draw, root / month / "000.parquet", table)
        _runs(
            load_merrec, root, min_events=1, item_columns=("price",), skip_unknown_events=True, progress=False
        )


@SETTINGS
@given(st.data())
def test_release_pairs(data):
    draw = data.draw
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seq = _table(
            draw,
            {
                "user_id": ["int64", "string", "float64"],
                "item_id": ["list<int64>", "list<string>", "int64"],
                "timestamp": ["list<int64>", "list<timestamp>", *ANY],
                "event_id": ["list<int64>", "list<string>", "string"],
            },
        )
        _write(draw, root / "seq.parquet", seq)
        info = _table(draw, {"item_id": ["int64", "string", "float64"], "title": ["string", "int64"]})
        _write(draw, root / "items.parquet", info)
        name = draw(st.sampled_from(["merrec", "release"]))
        _runs(load_release_dir, root, release_name=name, progress=False)


@SETTINGS
@given(st.data())
def test_ebnerd_folders(data):
    draw = data.draw
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        articles = _table(
            draw,
            {
                "article_id": ["int32", "int64", "string"],
                "title": ["string"],
                "subtitle": ["string", "int64"],
                "topics": ["list<string>", "string"],
                "category": ["int32", "string"],
                "subcategory": ["list<int64>", "int64"],
                "category_str": ["string", "float64"],
                "published_time": ["timestamp", "int64"],
            },
        )
        _write(draw, root / "articles.parquet", articles)
        history = _table(
            draw,
            {
                "user_id": ["uint32", "int64", "string"],
                "impression_time_fixed": ["list<timestamp>", "list<int64>", "timestamp"],
                "article_id_fixed": ["list<int64>", "list<string>", "int64"],
            },
        )
        _write(draw, root / "train" / "history.parquet", history)
        _runs(load_ebnerd, root, min_events=1, progress=False)


@pytest.mark.parametrize("unit", ["auto", "s", "ms", "us", "ns"])
def test_every_unit_on_extreme_integer_times_is_documented(unit, tmp_path):
    """The times pandas can produce at the edges of int64 never escape as an overflow."""
    values = [-(2**63), -1, 0, 1, 2**31, 1_600_000_000, 2**53, 2**63 - 1]
    for i, t in enumerate(values):
        root = tmp_path / f"{unit}-{i}"
        root.mkdir()
        pq.write_table(
            pa.table({"item_id": pa.array([["a"]]), "timestamp": pa.array([[t]], pa.list_(pa.int64()))}),
            root / "seq.parquet",
        )
        pq.write_table(pa.table({"item_id": ["a"]}), root / "items.parquet")
        _runs(load_release_dir, root, timestamp_unit=unit, progress=False)


def test_a_huge_integer_event_id_is_a_data_error_not_a_memory_error(tmp_path):
    """Found by `test_release_pairs`: the names `0..max id` used to be built, 2**63 of them."""
    pq.write_table(
        pa.table(
            {
                "item_id": pa.array([["a", "b"]]),
                "timestamp": pa.array([[1, 2]], pa.list_(pa.int64())),
                "event_id": pa.array([[0, 2**62]], pa.list_(pa.int64())),
            }
        ),
        tmp_path / "seq.parquet",
    )
    pq.write_table(pa.table({"item_id": ["a", "b"]}), tmp_path / "items.parquet")
    with pytest.raises(
        GGRDataError, match=r"seq.parquet: column 'event_id' has the value 4611686018427387904"
    ):
        load_release_dir(tmp_path, progress=False)


def test_merrec_shards_with_integer_and_string_user_ids_are_a_data_error(tmp_path):
    """Found by `test_merrec_shards`: the user counts of the two shards failed to merge (ArrowInvalid)."""
    for month, users in (("20230501", pa.array([1], pa.int64())), ("20230601", pa.array(["u1"]))):
        (tmp_path / month).mkdir()
        table = {
            "user_id": users,
            "stime": pa.array([1_600_000_000], pa.int64()),
            "event_id": ["item_view"],
            "item_id": pa.array([1], pa.int64()),
            **{c: ["x"] for c in ("name", "c0_name", "c1_name", "c2_name")},
        }
        pq.write_table(pa.table(table), tmp_path / month / "000.parquet")
    with pytest.raises(GGRDataError, match=r"20230601/000.parquet: column 'user_id' has type string"):
        load_merrec(tmp_path, min_events=1, item_columns=(), progress=False)
