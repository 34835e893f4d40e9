"""Two processes sharing one data cache (issue 13, part 8): real processes race on one folder; the
loser waits and reuses, nobody reads a half-written cache, a lock held too long is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ggr_hf.data.cache import FINGERPRINT_FILE, compute_fingerprint
from ggr_hf.data.locking import cache_lock, lock_path
from ggr_hf.data.registry import load_dataset_bundle
from ggr_hf.errors import GGRError

from .test_movielens import EXPECTED_SEQUENCES, make_fake_wheel, write_recbole

ROOT = Path(__file__).resolve().parents[2]

# Each child slows the step that writes the cache down, so that the two really overlap.
PREPARE = """
import sys, time
from ggr_hf.data import schema
from ggr_hf.data.cache import prepare_dataset
save = schema.RecDataBundle.save_to_disk
def slow_save(self, directory):
    time.sleep(1.0)
    save(self, directory)
schema.RecDataBundle.save_to_disk = slow_save
bundle = prepare_dataset("release", sys.argv[1], sys.argv[2], release_name="merrec", progress=False)
print("users", bundle.num_users)
"""

# `pip download` stand-in writing the wheel in two halves: a second process that did not wait would
# open a half-written wheel.
MOVIELENS = """
import sys, time
from pathlib import Path
from ggr_hf.data import movielens
wheel = Path(sys.argv[1]).read_bytes()
def slow_download(directory):
    with open(Path(directory) / movielens.RECBOLE_WHEEL, "wb") as f:
        f.write(wheel[: len(wheel) // 2]); f.flush(); time.sleep(1.0); f.write(wheel[len(wheel) // 2 :])
movielens._pip_download = slow_download
bundle = movielens.load_movielens(cache_dir=sys.argv[2])
print("sequences", [(s["item_ids"], s["timestamps"]) for s in bundle.sequences])
"""


def _spawn(script: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


@pytest.fixture
def release_raw(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    pq.write_table(
        pa.table(
            {
                "user_id": ["u1", "u2"],
                "item_id": pa.array([["a", "b"], ["b", "c", "a"]]),
                "timestamp": pa.array([[1_600_000_000, 1_600_000_100], [5, 6, 7]], pa.list_(pa.int64())),
                "event_id": pa.array([[0, 5], [0, 0, 1]], pa.list_(pa.int64())),
            }
        ),
        root / "merrec_2000.parquet",
    )
    pq.write_table(pa.table({"item_id": ["a", "b", "c"], "title": ["A", "B", "C"]}), root / "items.parquet")
    return root


def test_two_prepares_racing_on_one_folder_build_once_and_leave_a_correct_cache(tmp_path, release_raw):
    out = tmp_path / "cache" / "merrec"
    procs = [_spawn(PREPARE, str(release_raw), str(out)) for _ in range(2)]
    results = [_finish(p) for p in procs]
    for code, stdout, stderr in results:
        assert code == 0, stderr
        assert "users 2" in stdout
    summaries = [stdout.splitlines()[0] for _, stdout, _ in results]
    # One built it, the other waited for the lock and then reused the finished cache.
    assert sorted("(cached)" in line for line in summaries) == [False, True], summaries
    bundle = load_dataset_bundle("bundle", out)
    assert bundle.name == "merrec" and bundle.num_users == 2
    assert bundle.sequences[0]["timestamps"] == [1_600_000_000, 1_600_000_100]
    fingerprint = compute_fingerprint("release", release_raw, {"release_name": "merrec"})
    assert json.loads((out / FINGERPRINT_FILE).read_text()) == fingerprint
    # No temporaries and no lock file left beside the cache.
    assert sorted(p.name for p in out.parent.iterdir()) == ["merrec"]


def test_two_processes_filling_the_movielens_cache_never_read_a_half_written_wheel(tmp_path):
    wheel = make_fake_wheel(tmp_path / "fake.whl", write_recbole(tmp_path / "src"))
    cache = tmp_path / "cache"
    procs = [_spawn(MOVIELENS, str(wheel), str(cache)) for _ in range(2)]
    results = [_finish(p) for p in procs]
    expected = f"sequences {[(items, times) for items, times in EXPECTED_SEQUENCES]}"
    for code, stdout, stderr in results:
        assert code == 0, stderr
        assert stdout.strip() == expected
    parsed = [p.name for p in cache.iterdir() if p.name.startswith("ml-100k")]
    assert len(parsed) == 1 and not any(".tmp" in p.name or "lock" in p.name for p in cache.iterdir())


def test_a_lock_held_too_long_is_named_and_readers_wait_for_writers(tmp_path, release_raw):
    out = tmp_path / "merrec"
    with cache_lock(lock_path(out)):
        # Another process preparing into the same folder waits, then gives up naming the lock and us.
        code, _, stderr = _finish(
            _spawn(PREPARE, str(release_raw), str(out), env={"GGR_HF_LOCK_TIMEOUT": "1"})
        )
        assert code != 0
        assert (
            ".merrec.lock" in stderr
            and f"process {os.getpid()}" in stderr
            and "GGR_HF_LOCK_TIMEOUT" in stderr
        )
        assert not out.exists()
        # In this process too (a lock is per open file): a reader times out against the writer.
        with (
            pytest.raises(GGRError, match="held this cache's lock"),
            cache_lock(lock_path(out), shared=True, timeout=0.2),
        ):
            pass
    with (
        cache_lock(lock_path(out), shared=True) as held,
        cache_lock(lock_path(out), shared=True, timeout=0.2),
    ):
        assert held  # readers share
    assert list(tmp_path.iterdir()) == [release_raw]  # the last holder removed the lock file
