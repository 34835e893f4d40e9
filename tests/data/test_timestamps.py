"""Timestamp units and plausibility in every loader, the `--timestamp-unit` flag, and the messages of
issue 13: integer times in ms or ns (pandas' `astype("int64")`) used to be read as seconds, overflow and
reorder each user's events with exit code 0."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ggr_hf.cli import main
from ggr_hf.data.cache import compute_fingerprint, prepare_dataset
from ggr_hf.data.ebnerd import load_ebnerd
from ggr_hf.data.merrec import load_merrec
from ggr_hf.data.movielens import load_movielens
from ggr_hf.data.pixelrec import load_pixelrec
from ggr_hf.data.registry import get_dataset_spec, load_dataset_bundle
from ggr_hf.data.release import load_release, load_release_dir
from ggr_hf.data.timestamps import TimestampReader, check_timestamp_unit, infer_timestamp_unit
from ggr_hf.errors import GGRDataError, GGRInputError
from ggr_hf.experiments.config import DataArguments
from ggr_hf.experiments.experiment import load_data

# Three events of one user, 0.4 s and then ~11.6 days apart (in seconds since the epoch): the order a
# wrong unit used to scramble (ns read as seconds overflowed int64 microseconds and wrapped around).
SECONDS = np.array([1_600_000_000, 1_600_000_000, 1_601_000_000])
SUBSECOND_MS = np.array([1_600_000_000_400, 1_600_000_000_100, 1_601_000_000_000])
UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


# ---------------------------------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", list(UNITS))
def test_auto_infers_each_unit_from_the_magnitude_and_logs_it(unit, caplog):
    values = SECONDS * UNITS[unit]
    with caplog.at_level(logging.INFO, logger="ggr_hf.data.timestamps"):
        seconds = TimestampReader("auto").integers_to_seconds(values, source="f.csv", column="timestamp")
    assert seconds.tolist() == SECONDS.tolist()
    assert infer_timestamp_unit(int(values[0])) == unit
    assert "f.csv" in caplog.text and "'timestamp'" in caplog.text and "auto" in caplog.text


def test_explicit_unit_wrong_for_the_data_names_file_column_value_and_the_unit_to_pass():
    ns = SECONDS * 1_000_000_000
    with pytest.raises(GGRDataError) as info:
        TimestampReader("s").integers_to_microseconds(ns, source="data/u.data", column="timestamp")
    msg = str(info.value)
    assert "data/u.data" in msg and "'timestamp'" in msg and str(ns[0]) in msg
    assert "timestamp_unit='ns'" in msg and "--timestamp-unit ns" in msg and "\n" not in msg


def test_mixed_magnitudes_negative_and_far_future_times_are_errors():
    with pytest.raises(GGRDataError, match="mixed magnitudes"):
        TimestampReader().integers_to_seconds(
            np.array([1_600_000_000, 1_600_000_000_000]), source="f", column="t"
        )
    reader = TimestampReader()
    reader.integers_to_seconds(np.array([1_600_000_000]), source="f", column="t")
    with pytest.raises(GGRDataError, match="mixed magnitudes"):  # across the batches of one file
        reader.integers_to_seconds(np.array([1_600_000_000_000]), source="f", column="t")
    with pytest.raises(GGRDataError, match="time -5 .* outside 1970-01-01"):
        TimestampReader().integers_to_seconds(np.array([-5, 10]), source="f", column="t")
    with pytest.raises(GGRDataError, match="outside 1970-01-01 .. 2100-01-01"):
        TimestampReader("s").integers_to_seconds(np.array([5_000_000_000]), source="f", column="t")
    big = pa.array([2**64 - 1], pa.uint64())
    with pytest.raises(GGRDataError, match="int64"):
        TimestampReader().arrow_to_microseconds(big, source="f", column="t")


def test_nulls_are_passed_through_unchecked_and_typed_times_keep_their_unit():
    values = np.array([1_600_000_000_000, -(2**62)])
    out = TimestampReader("ms").integers_to_microseconds(
        values, source="f", column="t", valid=np.array([True, False])
    )
    assert out[0] == 1_600_000_000_000_000
    typed = pa.array([dt.datetime(2023, 5, 1), None], pa.timestamp("ns"))
    micros, valid = TimestampReader("s").arrow_to_microseconds(typed, source="f", column="t")
    assert micros[0] == int(dt.datetime(2023, 5, 1, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
    assert valid.tolist() == [True, False]
    with pytest.raises(GGRDataError, match=r"timestamp\[s\] value .* outside"):
        TimestampReader().arrow_to_microseconds(pa.array([-10], pa.timestamp("s")), source="f", column="t")


def test_unknown_unit_is_an_input_error():
    assert check_timestamp_unit("ms") == "ms"
    with pytest.raises(GGRInputError, match="timestamp_unit must be one of auto, s, ms, us, ns, got 'sec'"):
        TimestampReader("sec")


# ---------------------------------------------------------------------------------------------------
# Every loader: ms and ns give the seconds order (they used to overflow and reorder)
# ---------------------------------------------------------------------------------------------------


def _movielens_folder(root: Path, times: np.ndarray) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"1\t{item}\t4\t{t}" for item, t in zip((10, 20, 30), times.tolist())]
    (root / "u.data").write_text("\n".join(lines) + "\n")
    items = "".join(
        f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|0|1" + "|0" * 17 + "\n" for i in (10, 20, 30)
    )
    (root / "u.item").write_text(items)
    (root / "u.user").write_text("1|24|M|technician|85711\n")
    return root


@pytest.mark.parametrize("unit", ["ms", "ns"])
def test_movielens_times_in_ms_or_ns_keep_each_users_order(tmp_path, unit):
    times = SUBSECOND_MS * (UNITS[unit] // 1_000)
    folder = _movielens_folder(tmp_path / unit, times)
    for option in ("auto", unit):
        seq = load_movielens(folder, timestamp_unit=option).sequences[0]
        # 20 came 0.3 s before 10; the third event ~11.6 days later, all in seconds.
        assert seq["item_ids"] == [2, 1, 3]
        assert seq["timestamps"] == [1_600_000_000, 1_600_000_000, 1_601_000_000]
    with pytest.raises(GGRDataError, match=rf"u\.data: column 'timestamp'.*timestamp_unit='{unit}'"):
        load_movielens(folder, timestamp_unit="s")


def test_movielens_option_through_the_registry_and_the_experiment_yaml(tmp_path):
    folder = _movielens_folder(tmp_path / "ml", SUBSECOND_MS)
    assert load_dataset_bundle("movielens", folder, timestamp_unit="ms").sequences[0]["item_ids"] == [2, 1, 3]
    bundle = load_data(DataArguments(dataset="movielens", path=str(folder), timestamp_unit="ms"))
    assert bundle.sequences[0]["timestamps"][2] == 1_601_000_000
    with pytest.raises(GGRDataError, match="timestamp_unit"):
        load_data(DataArguments(dataset="movielens", path=str(folder), timestamp_unit="s"))
    with pytest.raises(GGRInputError, match="timestamp_unit do not apply to data.dataset: synthetic"):
        load_data(DataArguments(dataset="synthetic", timestamp_unit="ms"))


def _pixelrec_folder(root: Path, times: np.ndarray) -> Path:
    (root / "inter").mkdir(parents=True)
    (root / "info").mkdir(parents=True)
    rows = "".join(f"i{item},u1,{t}\n" for item, t in zip((1, 2, 3), times.tolist()))
    (root / "inter" / "Pixel8M.csv").write_text("item_id,user_id,timestamp\n" + rows)
    (root / "info" / "item_info.csv").write_text(
        "item_id,title,tag\n" + "".join(f"i{i},t{i},Gaming\n" for i in (1, 2, 3))
    )
    return root


@pytest.mark.parametrize("unit", ["ms", "ns"])
def test_pixelrec_times_in_ms_or_ns_keep_each_users_order(tmp_path, unit):
    root = _pixelrec_folder(tmp_path / unit, SUBSECOND_MS * (UNITS[unit] // 1_000))
    seq = load_pixelrec(root, progress=False).sequences[0]
    assert seq["item_ids"] == [2, 1, 3] and seq["timestamps"] == SECONDS.tolist()
    with pytest.raises(GGRDataError, match="Pixel8M.csv: column 'timestamp'"):
        load_pixelrec(root, timestamp_unit="s", progress=False)


def test_pixelrec_header_only_csv_is_no_interactions_not_the_filters(tmp_path):
    root = _pixelrec_folder(tmp_path / "p", SECONDS)
    csv = root / "inter" / "Pixel8M.csv"
    csv.write_text("item_id,user_id,timestamp\n")
    with pytest.raises(GGRDataError, match=f"no interactions in {csv}"):
        prepare_dataset("pixelrec", root, tmp_path / "out", progress=False, verbose=False)


def _release_pair(root: Path, times: np.ndarray) -> Path:
    root.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "user_id": ["u1"],
                "item_id": pa.array([["a", "b", "c"]]),
                "timestamp": pa.array([times.tolist()], pa.list_(pa.int64())),
                "event_id": pa.array([[0, 0, 5]], pa.list_(pa.int64())),
            }
        ),
        root / "merrec_2000.parquet",
    )
    pq.write_table(pa.table({"item_id": ["a", "b", "c"], "title": ["A", "B", "C"]}), root / "items.parquet")
    return root


@pytest.mark.parametrize("unit", ["ms", "ns"])
def test_release_times_in_ms_or_ns_keep_each_users_order(tmp_path, unit):
    root = _release_pair(tmp_path / unit, SUBSECOND_MS * (UNITS[unit] // 1_000))
    seq = load_release_dir(root, release_name="merrec", progress=False).sequences[0]
    assert seq["item_ids"] == [2, 1, 3] and seq["timestamps"] == SECONDS.tolist()
    with pytest.raises(GGRDataError, match="merrec_2000.parquet: column 'timestamp'"):
        load_release_dir(root, timestamp_unit="s", progress=False)


def test_unknown_release_name_lists_the_known_ones(tmp_path):
    root = _release_pair(tmp_path / "r", SECONDS)
    with pytest.raises(
        GGRInputError, match="'mercec' is not a known release data set; known: release, merrec"
    ):
        load_release_dir(root, release_name="mercec", progress=False)
    assert load_release_dir(root, release_name="MerRec", progress=False).event_names[0] == "item_view"


def test_merrec_integer_stime_in_ns_is_read_in_order(tmp_path):
    shard = tmp_path / "raw" / "20230501" / "000.parquet"
    shard.parent.mkdir(parents=True)
    ns = SUBSECOND_MS * 1_000_000  # pandas' `astype("int64")` of a datetime column
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([1, 1, 1], pa.int64()),
                "stime": pa.array(ns.tolist(), pa.int64()),
                "event_id": ["item_view"] * 3,
                "item_id": pa.array([10, 20, 30], pa.int64()),
                "name": ["a", "b", "c"],
                "c0_name": ["x"] * 3,
                "c1_name": ["x"] * 3,
                "c2_name": ["x"] * 3,
            }
        ),
        shard,
    )
    bundle = load_merrec(tmp_path / "raw", min_events=1, item_columns=(), progress=False)
    assert bundle.sequences[0]["item_ids"] == [2, 1, 3]
    assert bundle.sequences[0]["timestamps"] == SECONDS.tolist()
    with pytest.raises(GGRDataError, match="000.parquet: column 'stime'"):
        load_merrec(tmp_path / "raw", min_events=1, item_columns=(), timestamp_unit="us", progress=False)


def test_ebnerd_integer_click_times_and_typed_ones_agree(tmp_path):
    def write(root: Path, times: pa.Array) -> Path:
        (root / "train").mkdir(parents=True)
        pq.write_table(
            pa.table(
                {
                    "article_id": pa.array([1, 2, 3], pa.int32()),
                    "title": ["a", "b", "c"],
                    "subtitle": ["", "", ""],
                    "topics": pa.array([[], [], []], pa.list_(pa.string())),
                    "category": pa.array([1, 1, 1], pa.int16()),
                    "subcategory": pa.array([[], [], []], pa.list_(pa.int16())),
                    "category_str": ["sport"] * 3,
                }
            ),
            root / "articles.parquet",
        )
        pq.write_table(
            pa.table(
                {
                    "user_id": pa.array([7], pa.uint32()),
                    "impression_time_fixed": pa.array([times], pa.list_(times.type)),
                    "article_id_fixed": pa.array([[1, 2, 3]], pa.list_(pa.int32())),
                }
            ),
            root / "train" / "history.parquet",
        )
        return root

    typed = pa.array(SUBSECOND_MS.tolist(), pa.int64()).cast(pa.timestamp("ms"))
    a = load_ebnerd(write(tmp_path / "typed", typed), min_events=1, progress=False).sequences[0]
    ints = pa.array((SUBSECOND_MS * 1_000_000).tolist(), pa.int64())
    b = load_ebnerd(write(tmp_path / "ints", ints), min_events=1, progress=False).sequences[0]
    assert a["item_ids"] == b["item_ids"] == [2, 1, 3]
    assert a["timestamps"] == b["timestamps"] == SECONDS.tolist()


# ---------------------------------------------------------------------------------------------------
# Command line, registry options, fingerprint
# ---------------------------------------------------------------------------------------------------


def test_cli_flag_registry_option_and_fingerprint(tmp_path, capsys):
    root = _pixelrec_folder(tmp_path / "p", SUBSECOND_MS)
    for name in ("pixelrec", "merrec", "ebnerd", "release"):
        assert "timestamp_unit" in get_dataset_spec(name).accepted_options()
    assert compute_fingerprint("pixelrec", root, {"timestamp_unit": "ms"}) != compute_fingerprint(
        "pixelrec", root
    )
    out = tmp_path / "out"
    base = ["data", "prepare", "pixelrec", "--raw", str(root), "--out", str(out), "--no-progress"]
    assert main([*base, "--timestamp-unit", "s"]) == 2
    err = capsys.readouterr().err
    assert "Pixel8M.csv" in err and "'timestamp'" in err and "--timestamp-unit ms" in err
    assert not out.exists()
    assert main([*base, "--timestamp-unit", "ms"]) == 0
    assert load_dataset_bundle("bundle", out).sequences[0]["item_ids"] == [2, 1, 3]
    try:
        code = main([*base, "--timestamp-unit", "seconds"])
    except SystemExit as exit_:  # argparse's own exit for a value outside `choices`
        code = exit_.code
    assert code == 2 and "seconds" in capsys.readouterr().err
    with pytest.raises(GGRInputError, match="timestamp_unit"):
        load_release(root / "x.parquet", root / "y.parquet", timestamp_unit="minutes")
