"""The shared two-pass pipeline, its small helpers, and the one bundle validator."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pytest

from ggr_hf.data.arrow_utils import list_lengths, take_rows
from ggr_hf.data.engine import BuildResult, SequenceBuilder, UserCounter, UserIndex
from ggr_hf.data.pipeline import FirstRowPerUser, TwoPassLoader, count_user_batch
from ggr_hf.data.schema import DataFormatError, DropCounter, RecDataBundle


def test_take_rows_and_list_lengths():
    a, b, c = take_rows(np.array([True, False, True]), np.arange(3), np.array([5, 6, 7]), None)
    assert a.tolist() == [0, 2] and b.tolist() == [5, 7] and c is None
    same = np.arange(3)
    assert take_rows(None, same)[0] is same
    assert list_lengths(pa.array([[1, 2], None, []], pa.list_(pa.int64()))).tolist() == [2, 0, 0]


def test_count_user_batch_counts_null_users_in_events():
    counter, drops = UserCounter(), DropCounter()
    count_user_batch(counter, pa.array([1, None, 2, 1]), drops, weights=np.array([3, 5, 1, 2]))
    count_user_batch(counter, pa.array([2, None]), drops)
    keys, counts, _ = counter.result()
    assert dict(zip(keys.tolist(), counts.tolist())) == {1: 5, 2: 2}
    assert drops.as_dict() == {"null_user_id": 6}
    strings = UserCounter()
    count_user_batch(strings, pa.array(["u2", None, "u10"]), drops)
    assert strings.result()[2].to_pylist() and drops.as_dict() == {"null_user_id": 7}


def test_first_row_per_user_keeps_file_order_and_fills_unseen_users():
    firsts = FirstRowPerUser(4)
    batch = pa.record_batch({"age": pa.array([30, 31, 40])})
    firsts.add(np.array([2, 0, 2]), np.array([0, 1, 2]), batch)
    firsts.add(np.array([0, 3]), np.array([0, 1]), pa.table({"age": pa.array([99, 50])}))
    assert firsts.table(np.array([3, 2, 1, 0])).column("age").to_pylist() == [50, 30, None, 31]
    assert FirstRowPerUser(2).table(np.array([0, 1])) is None


class _ListLoader(TwoPassLoader):
    """A loader over in-memory `(user, item, time)` rows: the skeleton with the least of its own."""

    name = "toy"
    ts_divisor = 1

    def __init__(self, rows: list[tuple[int, int, int]]) -> None:
        super().__init__()
        self.rows = np.array(rows, dtype=np.int64)

    def count_users(self, counter: UserCounter) -> None:
        count_user_batch(counter, pa.array(self.rows[:, 0]), self.drops)

    def read_events(self, index: UserIndex, builder: SequenceBuilder) -> None:
        rows, ranks = index.select(self.rows[:, 0])
        builder.add(ranks, self.rows[rows, 1], self.rows[rows, 2])

    def item_table(self, result: BuildResult) -> pa.Table:
        n = len(result.item_keys)
        return pa.table(
            {
                "item_id": pa.array(np.arange(1, n + 1)),
                "original_id": pa.array(result.item_keys).cast(pa.string()),
                "title": pa.array([""] * n),
            }
        )


def test_two_pass_loader_runs_the_engine_and_counts_drops(tmp_path):
    rows = [(7, 100, 5), (7, 50, 1), (7, 50, 1), (3, 100, 2), (9, 100, 1), (9, 60, 2)]
    loader = _ListLoader(rows)
    bundle = loader.run(min_events=2, work_dir=None, progress=False, bucket_rows=10)
    bundle.validate()
    assert bundle.name == "toy" and bundle.users["original_id"] == ["7", "9"]
    assert bundle.items["original_id"] == ["50", "60", "100"]
    assert bundle.sequences["item_ids"] == [[1, 3], [3, 2]]
    assert bundle.dropped == {"duplicate_event": 1, "user_below_min_events": 1}
    assert not loader.work.path.exists()  # a temporary scratch folder is removed, the data in memory


def _bundle(item_ids, timestamps, event_ids=None, event_names=None) -> RecDataBundle:
    columns = {"user_id": list(range(len(item_ids))), "item_ids": item_ids, "timestamps": timestamps}
    if event_ids is not None:
        columns["event_ids"] = event_ids
    items = {"item_id": [1, 2], "original_id": ["a", "b"], "title": ["", ""]}
    return RecDataBundle(
        name="t",
        sequences=datasets.Dataset.from_dict(columns),
        items=datasets.Dataset.from_dict(items),
        event_names=event_names,
    )


def test_validate_names_the_column_and_the_user():
    _bundle([[1], [2, 1]], [[1], [4, 4]], [[0], [1, 0]], ["view", "buy"]).validate()
    with pytest.raises(DataFormatError, match="user 1: column 'timestamps' is not sorted"):
        _bundle([[1], [2, 1]], [[1], [5, 4]]).validate()
    with pytest.raises(DataFormatError, match="user 0: columns 'item_ids' and 'timestamps' differ"):
        _bundle([[1, 2]], [[1]]).validate()
    with pytest.raises(DataFormatError, match="user 1: column 'event_ids' has the wrong length"):
        _bundle([[1], [2]], [[1], [2]], [[0], []]).validate()
    with pytest.raises(DataFormatError, match=r"'event_ids' has ids outside 0\.\.1"):
        _bundle([[1]], [[1]], [[2]], ["view", "buy"]).validate()
    shuffled = _bundle([[1], [2]], [[1], [2]])
    with pytest.raises(DataFormatError, match="'user_id' must be 0..num_users-1"):
        shuffled.sequences = shuffled.sequences.select([1, 0])
        shuffled.validate()
