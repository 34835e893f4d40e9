"""Speed and peak memory of `ggr-hf data prepare merrec` against a plain pandas implementation.

The script

1. generates (once, then reuses) a synthetic data set in MerRec's exact schema and layout: monthly
   folders of parquet shards with all 25 MerRec columns, heavy-tailed user activity (so that the
   paper's `min_events=2000` keeps about a third of the events), Zipf-like item popularity, MerRec's
   event-type mix and 0.2% exact duplicate events;
2. measures the raw data's in-memory size (the Arrow size of every column of every shard);
3. runs `data prepare merrec` (the real command line, in a fresh process) and the pandas baseline (in
   another fresh process), each reporting its wall time and its own peak RSS
   (`VmHWM` of `/proc/self/status`, the process's high-water mark);
4. checks that both produced the same sequences, item order and item categories.

The pandas baseline is what one would write by hand: read all shards with `pd.read_parquet` (same column
projection), drop nulls, map event names, pre-filter users, drop duplicates, re-filter, sort by
(user, time, event, item), `groupby(...).agg(list)`, take first-seen item attributes, write parquet.

Usage (about 4 minutes on 2 cores for the default 20 million events, most of it in pandas)::

    python benchmarks/bench_prepare_merrec.py --events 20000000 --work /tmp/ggr-hf-bench

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EVENTS = ("item_view", "item_like", "item_add_to_cart_tap", "offer_make", "buy_start", "buy_comp")
# MerRec's event mix (from the event counts of merrec_2000).
EVENT_P = np.array([0.8200, 0.1632, 0.01225, 0.00354, 0.00065, 0.00036])
ITEM_COLUMNS = ["brand_name", "price", "item_condition_name", "size_name", "color"]
READ_COLUMNS = [
    "user_id",
    "stime",
    "event_id",
    "item_id",
    "name",
    "c0_name",
    "c1_name",
    "c2_name",
    *ITEM_COLUMNS,
]
MONTHS = ("20230501", "20230601", "20230701", "20230801", "20230901", "20231001")
WORDS = np.array(
    [
        "vintage",
        "nike",
        "adidas",
        "dress",
        "shirt",
        "jacket",
        "shoes",
        "sneakers",
        "bag",
        "wallet",
        "watch",
        "ring",
        "necklace",
        "phone",
        "case",
        "charger",
        "laptop",
        "tablet",
        "camera",
        "lens",
        "book",
        "novel",
        "comic",
        "manga",
        "game",
        "console",
        "controller",
        "card",
        "pokemon",
        "lego",
        "figure",
        "doll",
        "toy",
        "baby",
        "kids",
        "women",
        "men",
        "size",
        "small",
        "medium",
        "large",
        "new",
        "used",
        "rare",
        "bundle",
        "lot",
        "set",
        "box",
        "sealed",
        "original",
        "authentic",
        "handmade",
        "leather",
        "cotton",
        "silk",
        "wool",
        "denim",
        "gold",
        "silver",
        "black",
        "white",
        "red",
        "blue",
        "green",
        "pink",
        "brown",
        "gray",
    ]
)


# ---------------------------------------------------------------------------------------------------
# Synthetic MerRec
# ---------------------------------------------------------------------------------------------------


def _unique_ids(rng: np.random.Generator, lo: int, hi: int, n: int) -> np.ndarray:
    ids = np.unique(rng.integers(lo, hi, int(n * 1.2) + 10))[:n]
    return rng.permutation(ids).astype(np.int64)


def generate(root: Path, events: int, shards: int, months: int, seed: int) -> list[Path]:
    """Writes the synthetic MerRec shards under `root` (skipped when the same parameters exist)."""
    params = {"events": events, "shards": shards, "months": months, "seed": seed, "version": 2}
    marker = root / "params.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return sorted(root.rglob("*.parquet"))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n_users = max(events // 228, 10)  # MerRec: 1.27e9 events / 5.56e6 users
    n_items = max(events // 16, 10)  # MerRec: about 16 events per item
    activity = rng.lognormal(0.0, 1.75, n_users)
    user_p = activity / activity.sum()
    item_p = 1.0 / (np.arange(n_items) + 10.0) ** 0.9
    item_p /= item_p.sum()
    user_ids = _unique_ids(rng, 10**8, 10**9, n_users)
    item_ids = _unique_ids(rng, 10**10, 10**11, n_items)
    # Item attributes, static per item.
    words = rng.integers(0, len(WORDS), size=(n_items, 4))
    name = pc.binary_join_element_wise(*[pa.array(WORDS[words[:, k]]) for k in range(4)], " ")
    c2 = rng.integers(0, 1000, n_items)
    c1, c0 = c2 // 7, c2 // 70
    brand = rng.integers(0, 5000, n_items)
    attrs = {
        "product_id": pc.binary_join_element_wise("p", pa.array(item_ids).cast(pa.string()), ""),
        "name": name,
        "price": pa.array(np.round(rng.lognormal(3, 1, n_items), 2)),
        "c0_id": pa.array(c0),
        "c1_id": pa.array(c1),
        "c2_id": pa.array(c2),
        "c0_name": pa.array([f"top category {i}" for i in range(c0.max() + 1)]).take(pa.array(c0)),
        "c1_name": pa.array([f"category {i}" for i in range(c1.max() + 1)]).take(pa.array(c1)),
        "c2_name": pa.array([f"leaf category {i}" for i in range(1000)]).take(
            pa.array(c2, mask=rng.random(n_items) < 0.1)
        ),
        "brand_id": pa.array(brand),
        "brand_name": pa.array([f"brand {i}" for i in range(5000)]).take(
            pa.array(brand, mask=rng.random(n_items) < 0.4)
        ),
        "item_condition_id": pa.array(rng.integers(1, 7, n_items)),
        "size_id": pa.array(rng.integers(0, 50, n_items)),
        "color": pa.array(["black", "white", "red", "blue", "green", "pink", "gray", "brown"]).take(
            pa.array(rng.integers(0, 8, n_items))
        ),
        "shipper_id": pa.array(rng.integers(1, 6, n_items)),
    }
    attrs["item_condition_name"] = pc.binary_join_element_wise(
        "condition ", attrs["item_condition_id"].cast(pa.string()), ""
    )
    attrs["size_name"] = pc.binary_join_element_wise("size ", attrs["size_id"].cast(pa.string()), "")
    attrs["shipper_name"] = pc.binary_join_element_wise("shipper ", attrs["shipper_id"].cast(pa.string()), "")
    per_shard = events // shards
    shards_per_month = -(-shards // months)
    paths = []
    for s in range(shards):
        n = per_shard if s < shards - 1 else events - per_shard * (shards - 1)
        month, part = divmod(s, shards_per_month)
        start = np.datetime64(f"{MONTHS[month][:4]}-{MONTHS[month][4:6]}-01T00:00:00", "us").astype(np.int64)
        span = 28 * 86400 * 10**6 // shards_per_month
        ts = np.sort(rng.integers(start + part * span, start + (part + 1) * span, n))
        u = rng.choice(n_users, size=n, p=user_p)
        it = rng.choice(n_items, size=n, p=item_p)
        ev = rng.choice(len(EVENTS), size=n, p=EVENT_P / EVENT_P.sum())
        dup = rng.random(n) < 0.002  # exact duplicates of the previous row
        src = np.arange(n)
        src[1:][dup[1:]] = np.flatnonzero(dup[1:])
        u, it, ev, ts = u[src], it[src], ev[src], ts[src]
        take = pa.array(it)
        table = {
            "user_id": pa.array(user_ids[u]),
            "sequence_id": pc.binary_join_element_wise(
                "seq", pa.array(u).cast(pa.string()), pa.array([str(month)] * n), "-"
            ),
            "session_id": pc.binary_join_element_wise(
                "ses", pa.array(u * 97 + ts // (1800 * 10**6)).cast(pa.string()), ""
            ),
            "sequence_length": pa.array(rng.integers(1, 500, n)),
            "stime": pa.array(ts, pa.timestamp("us")),
            "event_id": pa.array(np.array(EVENTS)[ev]),
            "item_id": pa.array(item_ids[it]),
        }
        for column in (
            "product_id", "name", "price", "c0_id", "c1_id", "c2_id", "c0_name", "c1_name", "c2_name",
            "brand_id", "brand_name", "item_condition_id", "item_condition_name", "size_id", "size_name",
            "color", "shipper_id", "shipper_name",
        ):  # fmt: skip
            table[column] = attrs[column].take(take)
        path = root / MONTHS[month] / f"{part:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(table), path)
        paths.append(path)
        print(f"  wrote {path} ({n:,} rows)", flush=True)
    marker.write_text(json.dumps(params))
    return sorted(paths)


def raw_in_memory_bytes(paths: list[Path]) -> int:
    """The Arrow in-memory size of all columns of all shards, read one shard at a time."""
    total = 0
    for path in paths:
        table = pq.read_table(path)
        total += table.nbytes
        del table
    return total


# ---------------------------------------------------------------------------------------------------
# The two contenders, each run in its own process
# ---------------------------------------------------------------------------------------------------


def import_ours():
    from ggr_hf.cli import main

    return main


def run_ours(main, raw: Path, out: Path, min_events: int) -> None:
    args = ["data", "prepare", "merrec", "--raw", str(raw), "--out", str(out), "--force"]
    code = main([*args, "--min-events", str(min_events), "--no-progress"])
    if code != 0:
        raise SystemExit(code)


def import_pandas():
    import pandas as pd

    return pd


def run_pandas(pd, raw: Path, out: Path, min_events: int) -> None:
    paths = sorted(raw.rglob("*.parquet"))
    df = pd.concat([pd.read_parquet(p, columns=READ_COLUMNS) for p in paths], ignore_index=True)
    df = df.dropna(subset=["user_id", "item_id", "stime", "event_id"])
    df["event"] = df["event_id"].map({name: i for i, name in enumerate(EVENTS)})
    if df["event"].isna().any():
        raise ValueError("unknown event_id")
    df["event"] = df["event"].astype("int64")
    counts = df.groupby("user_id").size()
    df = df[df["user_id"].isin(counts.index[counts >= min_events])]
    df = df.drop_duplicates(subset=["user_id", "item_id", "stime", "event"])
    counts = df.groupby("user_id").size()
    df = df[df["user_id"].isin(counts.index[counts >= min_events])]
    items = df.drop_duplicates("item_id").sort_values("item_id")
    items = items.assign(category_name=items["c2_name"].fillna(items["c1_name"]).fillna(items["c0_name"]))
    codes = pd.Index(items["item_id"]).get_indexer(df["item_id"]) + 1
    df = df.assign(item_code=codes, ts=df["stime"].astype("int64") // 10**6)
    df = df.sort_values(["user_id", "stime", "event", "item_id"], kind="stable")
    seqs = df.groupby("user_id", sort=True).agg(
        item_ids=("item_code", list), timestamps=("ts", list), event_ids=("event", list)
    )
    out.mkdir(parents=True, exist_ok=True)
    seqs.reset_index().to_parquet(out / "sequences.parquet")
    items[["item_id", "name", "category_name", *ITEM_COLUMNS]].to_parquet(out / "items.parquet")


def _peak_rss() -> int:
    """This process's peak resident memory (VmHWM), in bytes.

    Not `getrusage(...).ru_maxrss`: Linux carries that high-water mark across fork and exec, so a child
    started by a parent holding a lot of memory would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(kind: str, raw: Path, out: Path, min_events: int) -> None:
    """Runs one contender in this (fresh) process and prints its timings and peak memory."""
    t0, c0 = time.perf_counter(), _cpu()
    module = import_ours() if kind == "ours" else import_pandas()
    t1, c1 = time.perf_counter(), _cpu()
    rss_after_import = _peak_rss()
    (run_ours if kind == "ours" else run_pandas)(module, raw, out, min_events)
    t2, c2 = time.perf_counter(), _cpu()
    result = {
        "import_seconds": t1 - t0,
        "import_cpu_seconds": c1 - c0,
        "seconds": t2 - t1,
        "cpu_seconds": c2 - c1,
        "import_rss": rss_after_import,
        "peak_rss": _peak_rss(),
    }
    print("RESULT " + json.dumps(result), flush=True)


def measure(kind: str, raw: Path, out: Path, min_events: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--raw",
        str(raw),
        "--out",
        str(out),
        "--min-events",
        str(min_events),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-3000:])
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed with code {proc.returncode}:\n{proc.stdout[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    if kind == "ours":
        print("\n".join(x for x in proc.stdout.splitlines() if not x.startswith("RESULT ")))
    return json.loads(line[len("RESULT ") :])


def compare(ours: Path, theirs: Path) -> str:
    """Checks that both outputs agree: users, every sequence, item ids and categories."""
    from ggr_hf.data.schema import RecDataBundle

    bundle = RecDataBundle.load_from_disk(ours)
    seq = bundle.sequences.data.table
    ref = pq.read_table(theirs / "sequences.parquet")
    assert bundle.users["original_id"] == [str(u) for u in ref.column("user_id").to_pylist()], "users differ"
    for column in ("item_ids", "timestamps", "event_ids"):
        a = pc.list_flatten(seq.column(column)).to_numpy()
        b = pc.list_flatten(ref.column(column)).to_numpy()
        assert np.array_equal(a, b), f"{column} differ"
    items = pq.read_table(theirs / "items.parquet")
    assert bundle.items["original_id"] == [str(i) for i in items.column("item_id").to_pylist()], (
        "items differ"
    )
    assert bundle.items["category_name"] == items.column("category_name").to_pylist(), "categories differ"
    return f"outputs agree: {len(ref):,} users, {len(items):,} items, {len(a):,} events"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--min-events", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ggr-hf-bench"))
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--child", choices=["ours", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.raw, args.out, args.min_events)
        return
    raw = args.work / f"merrec-synth-{args.events}"
    print(f"generating {args.events:,} events in {args.shards} shards under {raw} ...", flush=True)
    t0 = time.perf_counter()
    paths = generate(raw, args.events, args.shards, args.months, args.seed)
    print(f"  ready in {time.perf_counter() - t0:.0f} s", flush=True)
    disk = sum(p.stat().st_size for p in paths)
    mem = raw_in_memory_bytes(paths)
    print(
        f"raw data: {args.events:,} events, {disk / 2**20:,.0f} MiB parquet, {mem / 2**20:,.0f} MiB in memory (Arrow)"
    )
    ours = measure("ours", raw, args.work / "out-ours", args.min_events)
    rows = [("ggr-hf data prepare", ours)]
    if not args.skip_pandas:
        theirs = measure("pandas", raw, args.work / "out-pandas", args.min_events)
        rows.append(("pandas baseline", theirs))
    print()
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    header = (
        f"{'':22s} {'import s':>8s} {'work s':>7s} {'work CPU s':>10s} {'events/s':>11s} "
        f"{'total s':>7s} {'events/s':>11s} {'peak RSS MiB':>12s} {'% raw':>6s} {'RSS after import':>16s}"
    )
    print(header)
    print(f"{'':22s} {'':8s} {'':7s} {'':10s} {'(work)':>11s} {'':7s} {'(total)':>11s}")
    for label, r in rows:
        total = r["import_seconds"] + r["seconds"]
        print(
            f"{label:22s} {r['import_seconds']:8.1f} {r['seconds']:7.1f} {r['cpu_seconds']:10.1f} "
            f"{args.events / r['seconds']:11,.0f} {total:7.1f} {args.events / total:11,.0f} "
            f"{r['peak_rss'] / 2**20:12,.0f} {100 * r['peak_rss'] / mem:5.1f}% {r['import_rss'] / 2**20:13,.0f} MiB"
        )
    if not args.skip_pandas:
        ta, tb = theirs, ours
        print(
            f"speed-up (pandas / ours): work {ta['seconds'] / tb['seconds']:.1f}x, "
            f"CPU {ta['cpu_seconds'] / tb['cpu_seconds']:.1f}x, "
            f"total {(ta['seconds'] + ta['import_seconds']) / (tb['seconds'] + tb['import_seconds']):.1f}x; "
            f"peak memory ratio {ta['peak_rss'] / tb['peak_rss']:.1f}x"
        )
        print(compare(args.work / "out-ours", args.work / "out-pandas"))


if __name__ == "__main__":
    main()
