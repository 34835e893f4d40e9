"""The grouping engine, the prepare cache (fingerprint, atomic writes) and the `data` command line."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ggr_hf.cli import main
from ggr_hf.cli.data import add_parsers
from ggr_hf.data import registry
from ggr_hf.data.arrow_utils import hash_strings, keep_valid, natural_order, prefetch, repair_utf8
from ggr_hf.data.cache import FINGERPRINT_FILE, compute_fingerprint, prepare_dataset
from ggr_hf.data.engine import KeyCoder, SequenceBuilder, UserCounter, UserIndex, _sort_order
from ggr_hf.data.schema import DataFormatError, DropCounter, RecDataBundle

# ---------------------------------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------------------------------


def test_hash_strings_is_deterministic_and_separates_values():
    values = pa.array(["u1", "u2", "u10", "", None, "a much longer user id string", "u1"])
    h = hash_strings(values)
    assert h.dtype == np.int64 and len(h) == 7
    assert h[0] == h[6]
    assert len(set(h[:4].tolist() + [h[5]])) == 5
    # Same values, sliced or large_string: same hashes.
    assert np.array_equal(hash_strings(values.slice(1, 3)), h[1:4])
    assert np.array_equal(hash_strings(values.cast(pa.large_string())), h)


def test_natural_order_puts_shorter_ids_first():
    ids = pa.array(["i10", "i2", "i1", "u3", "i100"])
    assert [ids[i].as_py() for i in natural_order(ids)] == ["i1", "i2", "u3", "i10", "i100"]
    assert natural_order(pa.array([30, 4, 100])).tolist() == [1, 0, 2]


def test_sort_order_matches_lexsort_with_ties():
    rng = np.random.default_rng(0)
    n = 5000
    keys = [
        rng.integers(0, 20, n),
        rng.integers(0, 50, n) * 10**9,  # big range: the keys spill over several packed words
        rng.integers(0, 3, n),
        rng.integers(-(2**40), 2**40, n),
    ]
    keys[3][::7] = keys[3][1::7][: len(keys[3][::7])]
    order, words = _sort_order(keys)
    expected = np.lexsort(keys[::-1])
    for k in keys:
        assert np.array_equal(k[order], k[expected])
    assert all(len(w) == n for w in words)


def test_key_coder_assigns_codes_in_first_seen_order():
    coder = KeyCoder()
    codes, new = coder.encode(np.array([50, 7, 50, 9]))
    assert codes.tolist() == [0, 1, 0, 2] and new.tolist() == [0, 1, 3]
    codes, new = coder.encode(np.array([9, 1000, 7, 3]))
    assert codes.tolist() == [2, 3, 1, 4] and new.tolist() == [1, 3]
    assert coder.keys_by_code().tolist() == [50, 7, 9, 1000, 3]


def test_user_counter_merges_weights_and_originals():
    counter = UserCounter()
    counter.add(np.array([5, 6, 5]), pa.array(["b", "a", "b"]))
    counter.add(np.array([6, 7]), pa.array(["a", "c"]), weights=np.array([10, 1]))
    counter._merge()
    keys, counts, originals = counter.result()
    got = dict(zip(keys.tolist(), zip(counts.tolist(), originals.to_pylist())))
    assert got == {5: (2, "b"), 6: (11, "a"), 7: (1, "c")}


def test_user_counter_reports_hash_collisions():
    counter = UserCounter()
    counter.add(np.array([1, 1]), pa.array(["x", "y"]))
    with pytest.raises(DataFormatError, match="share a 64-bit hash"):
        counter.result()


def test_user_index_keeps_users_with_enough_rows_in_natural_order():
    drops = DropCounter()
    index = UserIndex.build(
        np.array([11, 22, 33, 44]), np.array([5, 1, 3, 9]), pa.array(["u10", "u2", "u3", "u1"]), 3, drops
    )
    assert drops.as_dict() == {"user_below_min_events": 1}
    assert index.original_ids.to_pylist() == ["u1", "u3", "u10"]
    assert index.counts.tolist() == [9, 3, 5]
    assert index.lookup(np.array([11, 22, 44, 99])).tolist() == [2, -1, 0, -1]
    rows, ranks = index.select(np.array([33, 22, 11]), np.array([True, True, False]))
    assert rows.tolist() == [0] and ranks.tolist() == [1]


def _reference(rows, min_events):
    """Plain-Python grouping: sort by (user, time, event, item), drop duplicates, filter users."""
    by_user: dict[int, list] = {}
    for r, item, ts, ev in rows:
        by_user.setdefault(r, []).append((ts, ev, item))
    out, dup, small = {}, 0, 0
    for r in sorted(by_user):
        events = sorted(by_user[r])
        uniq = sorted(set(events))
        dup += len(events) - len(uniq)
        if len(uniq) < min_events:
            small += len(uniq)
            continue
        out[r] = uniq
    return out, dup, small


@pytest.mark.parametrize("bucket_rows", [1, 7, 10_000])
def test_sequence_builder_matches_a_plain_python_reference(tmp_path, bucket_rows):
    rng = np.random.default_rng(1)
    n_users, n = 12, 400
    counts = np.zeros(n_users, np.int64)
    rows = []
    for _ in range(n):
        r = int(rng.integers(0, n_users) ** 2 % n_users)
        rows.append(
            (
                r,
                int(rng.choice([10**12, 5, 77, 3000])),
                int(rng.integers(0, 30)) * 1_000_000,
                int(rng.integers(0, 3)),
            )
        )
    rows += rows[:40]  # exact duplicates
    for r, *_ in rows:
        counts[r] += 1
    builder = SequenceBuilder(
        tmp_path, counts, has_events=True, ts_divisor=1_000_000, bucket_rows=bucket_rows, flush_rows=50
    )
    for start in range(0, len(rows), 97):
        chunk = np.array(rows[start : start + 97])
        builder.add(chunk[:, 0], chunk[:, 1], chunk[:, 2], chunk[:, 3])
    drops = DropCounter()
    result = builder.finish(30, drops)
    expected, dup, small = _reference(rows, 30)
    table = datasets.Dataset.from_file(str(result.sequences_path)).data.table
    assert drops.as_dict().get("duplicate_event", 0) == dup
    assert drops.as_dict().get("user_below_min_events", 0) == small
    assert result.user_ranks.tolist() == sorted(expected)
    assert table.column("user_id").to_pylist() == list(range(len(expected)))
    keys = result.item_keys
    assert keys.tolist() == sorted({item for events in expected.values() for _, _, item in events})
    for u, r in enumerate(result.user_ranks):
        want = expected[int(r)]
        assert table.column("timestamps")[u].as_py() == [ts // 1_000_000 for ts, _, _ in want]
        assert table.column("event_ids")[u].as_py() == [ev for _, ev, _ in want]
        assert [int(keys[i - 1]) for i in table.column("item_ids")[u].as_py()] == [it for _, _, it in want]


# ---------------------------------------------------------------------------------------------------
# A tiny MerRec folder for the cache and command-line tests
# ---------------------------------------------------------------------------------------------------


def _write_merrec(root: Path, rows: list[tuple]) -> None:
    """rows: (month folder, user_id, seconds, event_id, item_id)."""
    by_month: dict[str, list] = {}
    for month, *rest in rows:
        by_month.setdefault(month, []).append(rest)
    for month, part in by_month.items():
        n = len(part)
        (root / month).mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "user_id": pa.array([r[0] for r in part], pa.int64()),
                "stime": pa.array(
                    [dt.datetime(2023, 5, 1) + dt.timedelta(seconds=r[1]) for r in part], pa.timestamp("us")
                ),
                "event_id": pa.array([r[2] for r in part], pa.string()),
                "item_id": pa.array([r[3] for r in part], pa.int64()),
                "name": pa.array([f"item {r[3]}" for r in part]),
                "price": pa.array([1.5] * n),
                "c0_name": pa.array(["Women"] * n),
                "c1_name": pa.array(["Shoes"] * n),
                "c2_name": pa.array([None] * n, pa.string()),
                "brand_name": pa.array(["Nike"] * n),
                "item_condition_name": pa.array(["New"] * n),
                "size_name": pa.array(["M"] * n),
                "color": pa.array(["red"] * n),
            }
        )
        pq.write_table(table, root / month / "000.parquet")


ROWS = [
    ("20230501", 1, 1, "item_view", 10),
    ("20230501", 1, 2, "item_like", 10),
    ("20230501", 2, 3, "item_view", 20),
    ("20230601", 1, 40, "buy_comp", 30),
    ("20230601", 2, 41, "item_view", 10),
    ("20230601", 3, 42, "item_view", 10),
]


def test_prepare_caches_and_rebuilds_when_raw_files_or_options_change(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _write_merrec(raw, ROWS)
    bundle = prepare_dataset("merrec", raw, out, min_events=2, progress=False)
    assert bundle.num_users == 2 and RecDataBundle.is_complete(out)
    assert json.loads((out / FINGERPRINT_FILE).read_text())["options"] == {"min_events": 2}
    printed = capsys.readouterr().out
    assert "users" in printed and "interactions" in printed and "user_below_min_events" in printed

    calls = []
    original = registry.DatasetSpec.load_function

    def counting(self):
        fn = original(self)

        @functools.wraps(fn)
        def wrapped(*a, **k):
            calls.append(1)
            return fn(*a, **k)

        return wrapped

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry.DatasetSpec, "load_function", counting)
        prepare_dataset("merrec", raw, out, min_events=2, progress=False)
        assert calls == [] and "(cached)" in capsys.readouterr().out
        # Another option: rebuilt.
        assert prepare_dataset("merrec", raw, out, min_events=1, progress=False).num_users == 3
        assert len(calls) == 1
        # A raw file touched (same content, new mtime): rebuilt.
        shard = raw / "20230601" / "000.parquet"
        st = shard.stat()
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        prepare_dataset("merrec", raw, out, min_events=1, progress=False)
        assert len(calls) == 2
        # A shard added: rebuilt, and the new events are there.
        _write_merrec(raw, [("20230701", 3, 90, "item_like", 40)])
        bundle = prepare_dataset("merrec", raw, out, min_events=2, progress=False)
        assert len(calls) == 3 and bundle.num_users == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_interrupted_prepare_leaves_no_complete_looking_cache(tmp_path, monkeypatch):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _write_merrec(raw, ROWS)

    def save_then_die(self, directory):
        (Path(directory) / "sequences").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(RecDataBundle, "save_to_disk", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("merrec", raw, out, min_events=1, progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [raw]

    # A crash that left a finished-looking temporary folder (killed before the rename): ignored, removed.
    monkeypatch.undo()
    stale = tmp_path / ".out.tmp-999999999-deadbeef"
    (stale / "sequences").mkdir(parents=True)
    (stale / "bundle.json").write_text("{}")
    assert not RecDataBundle.is_complete(out)
    prepare_dataset("merrec", raw, out, min_events=1, progress=False)
    assert not stale.exists() and RecDataBundle.is_complete(out)


def test_failed_rebuild_keeps_the_previous_cache(tmp_path, monkeypatch):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _write_merrec(raw, ROWS)
    prepare_dataset("merrec", raw, out, min_events=1, progress=False)
    before = (out / FINGERPRINT_FILE).read_text()
    monkeypatch.setattr(RecDataBundle, "validate", lambda b: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        prepare_dataset("merrec", raw, out, min_events=2, progress=False)
    assert (out / FINGERPRINT_FILE).read_text() == before and RecDataBundle.is_complete(out)


def test_prepare_rejects_unknown_options_and_foreign_folders(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _write_merrec(raw, ROWS)
    with pytest.raises(ValueError, match="variant"):
        prepare_dataset("merrec", raw, out, variant="Pixel8M")
    with pytest.raises(ValueError, match="unknown data set"):
        prepare_dataset("movielens-9000", raw, out)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        prepare_dataset("merrec", raw, out, progress=False)


def test_fingerprint_lists_files_with_size_and_mtime(tmp_path):
    raw = tmp_path / "raw"
    _write_merrec(raw, ROWS)
    fp = compute_fingerprint("merrec", raw, {"min_events": 3, "work_dir": "ignored"})
    assert fp["options"] == {"min_events": 3}
    assert [f[0] for f in fp["files"]] == ["20230501/000.parquet", "20230601/000.parquet"]
    assert all(isinstance(f[1], int) and isinstance(f[2], int) for f in fp["files"])


def test_validate_rejects_broken_bundles():
    good = RecDataBundle(
        name="t",
        sequences=datasets.Dataset.from_dict({"user_id": [0], "item_ids": [[1, 2]], "timestamps": [[5, 6]]}),
        items=datasets.Dataset.from_dict({"item_id": [1, 2], "original_id": ["a", "b"], "title": ["", ""]}),
    )
    good.validate()
    unsorted = RecDataBundle(
        name="t",
        sequences=datasets.Dataset.from_dict({"user_id": [0], "item_ids": [[1, 2]], "timestamps": [[6, 5]]}),
        items=good.items,
    )
    with pytest.raises(DataFormatError, match="timestamps"):
        unsorted.validate()
    out_of_range = RecDataBundle(
        name="t",
        sequences=datasets.Dataset.from_dict({"user_id": [0], "item_ids": [[3]], "timestamps": [[1]]}),
        items=good.items,
    )
    with pytest.raises(DataFormatError, match="item_ids"):
        out_of_range.validate()


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------


def test_cli_prepare_prints_a_summary_and_reuses_the_cache(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _write_merrec(raw, ROWS)
    args = [
        "data",
        "prepare",
        "merrec",
        "--raw",
        str(raw),
        "--out",
        str(out),
        "--min-events",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert (
        "merrec" in text
        and "users                       2" in text
        and "interactions                5" in text
    )
    assert main(args) == 0 and "(cached)" in capsys.readouterr().out
    assert main(["data", "list"]) == 0 and "ebnerd" in capsys.readouterr().out


def test_cli_reports_bad_input_and_wrong_flags(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _write_merrec(raw, [("20230501", 1, 1, "teleport", 10)])
    assert main(["data", "prepare", "merrec", "--raw", str(raw), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "000.parquet" in err and "event_id" in err and "teleport" in err
    assert main(["data", "prepare", "merrec", "--raw", str(raw), "--out", str(out), "--variant", "x"]) == 2
    assert "do not apply" in capsys.readouterr().err
    assert main(["data", "prepare", "merrec", "--raw", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert not out.exists()


def test_add_parsers_plugs_into_a_parent_parser(tmp_path):
    parser = argparse.ArgumentParser(prog="ggr-hf")
    sub = parser.add_subparsers(dest="command")
    add_parsers(sub)
    args = parser.parse_args(
        [
            "data",
            "prepare",
            "ebnerd",
            "--raw",
            "r",
            "--out",
            "o",
            "--min-clicks",
            "7",
            "--splits",
            "train,validation",
        ]
    )
    assert (
        args.run.__module__ == "ggr_hf.cli.data"
        and args.min_events == 7
        and args.splits == "train,validation"
    )


def test_prefetch_passes_items_errors_and_stops_early():
    assert list(prefetch(iter(range(5)))) == [0, 1, 2, 3, 4]

    def failing():
        yield 1
        raise DataFormatError("shard.parquet: broken page")

    got = []
    with pytest.raises(DataFormatError, match="broken page"):
        for x in prefetch(failing()):
            got.append(x)
    assert got == [1]
    stream = prefetch(iter(range(10**6)))
    assert next(stream) == 0
    stream.close()  # the producer thread is released, not left blocked on a full queue


def test_prepare_refuses_to_cache_an_empty_data_set(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _write_merrec(raw, ROWS)
    with pytest.raises(DataFormatError, match="no user is left"):
        prepare_dataset("merrec", raw, out, progress=False)  # the paper's 2000 events: nobody here
    assert not out.exists()


def test_keep_valid_counts_each_row_once_under_its_first_failing_reason():
    drops = DropCounter()
    null_item = np.array([True, False, True, False, True])
    null_time = np.array([True, False, False, True, True])
    ok = keep_valid([("null_item", null_item), ("all_fine", None), ("null_time", null_time)], drops)
    # Row 1 fails both checks and counts under the first; row 2 fails only the second; row 3 only the first.
    assert ok.tolist() == [True, False, False, False, True]
    assert drops.as_dict() == {"null_item": 2, "null_time": 1}
    assert keep_valid([("x", None)], drops) is None


def test_repair_utf8_fixes_strings_and_lists_and_keeps_nulls(tmp_path):
    strings = pa.array([b"ok", None, b"b\xffd"], pa.binary()).view(pa.string())
    lists = pa.ListArray.from_arrays(
        pa.array([0, 2, 2, 3]),
        pa.array([b"a", b"\xfe", b"c"], pa.binary()).view(pa.string()),
        mask=pa.array([False, True, False]),
    )
    # Dictionary-encoded text (how loaders read low-cardinality columns) counts rows, not entries.
    dictionary = pa.DictionaryArray.from_arrays(pa.array([1, 0, None, 1], pa.int32())[:3], strings[::2])
    table = pa.table({"s": strings, "l": lists, "n": [1, 2, 3], "d": dictionary})
    drops = DropCounter()
    fixed = repair_utf8(table, tmp_path / "f.parquet", drops)
    assert fixed.column("s").to_pylist() == ["ok", None, "b\ufffdd"]
    assert fixed.column("l").to_pylist() == [["a", "\ufffd"], None, ["c"]]
    assert fixed.column("d").to_pylist() == ["b\ufffdd", "ok", None]
    assert fixed.column("n").to_pylist() == [1, 2, 3] and fixed.schema == table.schema
    assert drops.as_dict() == {"non_utf8_text_replaced": 3}
    # Valid text is returned as is, with nothing counted.
    again = DropCounter()
    assert repair_utf8(fixed, tmp_path / "f.parquet", again).equals(fixed) and not again.as_dict()
