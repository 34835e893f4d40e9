"""Exact fused top-k at the paper's catalogue scale against the hardware's matrix-product rate.

Issue 14, part 1. Useful work of fused scoring = 2 x d FLOPs per compatible (user, head, item)
triple. At d=256, 256 users and 1M items, with 16 heads (2 temporal segments x 8 multi-label
categories, 1-3 categories per item) and with 1 head, this script measures in ONE run:

- `fused_topk` (`ggr_hf.heads.fusion`, what `recommend()` uses): seconds per batch and GFLOP/s of
  useful work;
- `torch.mm` of the same total size (`(256, d) @ (d, number of compatible (head, item) pairs)`):
  GFLOP/s, the roofline reference;
- the plain single-head top-k (`(256, d) @ (d, 1M)` + `topk`): the time ratio 16 heads / 1 head
  against the ratio of useful work;
- the previous sparse form (`fuse_scores` + `topk` over a `(256, 1M)` score matrix) and the dense
  masked form (`fuse_scores_dense`, `(256, 16, items)` scores), each in its own process for its peak
  memory; the dense form needs 16 GiB of scores alone at 1M items, so it runs at `--dense-items`.

Run alone on an idle machine (2 cores here): `python benchmarks/bench_fused_topk.py`
(`--items 200000` for a quick look). Writes `benchmarks/results/fused_topk.json`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ggr_hf.heads.fusion import build_fusion_index, fuse_scores, fuse_scores_dense, fused_topk

D, USERS, K, CATEGORIES, SEGMENTS = 256, 256, 10, 8, 2


def make_case(num_items: int, heads: int, seed: int = 0):
    """Items in 1-3 of 8 categories (P = 0.6, 0.3, 0.1); 16 heads = segment x category, or 1 head."""
    gen = torch.Generator().manual_seed(seed)
    table = F.normalize(torch.randn(num_items + 1, D, generator=gen), dim=-1)
    queries = F.normalize(torch.randn(USERS, heads, D, generator=gen), dim=-1) * 20.0
    if heads == 1:
        compatible = torch.ones(num_items + 1, 1, dtype=torch.bool)
    else:
        n_cats = 1 + torch.multinomial(
            torch.tensor([0.6, 0.3, 0.1]), num_items + 1, replacement=True, generator=gen
        )
        ranks = torch.rand(num_items + 1, CATEGORIES, generator=gen).argsort(1)
        cats = ranks < n_cats.unsqueeze(1)  # [I+1, C]
        compatible = cats.repeat_interleave(1, dim=1).repeat(1, SEGMENTS)  # head = segment * C + category
    compatible[0] = False
    return table, queries, compatible


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def in_process(args) -> dict:
    torch.manual_seed(0)
    table, queries, compatible = make_case(args.items, args.heads)
    pairs = int(compatible.sum())
    out = {"items": args.items, "heads": args.heads, "pairs": pairs, "heads_per_item": pairs / args.items}
    if args.variant == "fused":
        index = build_fusion_index(table, compatible)
        out["seconds"] = timed(lambda: fused_topk(queries, index, K), args.repeats)
    elif args.variant == "mm":
        q = queries[:, 0]
        weight = torch.randn(D, pairs)
        out["seconds"] = timed(lambda: torch.mm(q, weight), args.repeats)
    elif args.variant == "single":
        q = queries[:, 0]
        out["seconds"] = timed(lambda: torch.mm(q, table.T).topk(K, dim=1), args.repeats)
    elif args.variant == "sparse":
        head_items = [compatible[:, h].nonzero(as_tuple=True)[0] for h in range(args.heads)]
        out["seconds"] = timed(
            lambda: fuse_scores(queries, table, head_items)[0].topk(K, dim=1), args.repeats
        )
    elif args.variant == "dense":
        out["seconds"] = timed(
            lambda: fuse_scores_dense(queries, table, compatible)[0].topk(K, dim=1), args.repeats
        )
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["useful_gflop"] = 2 * D * USERS * pairs / 1e9
    out["gflops"] = out["useful_gflop"] / out["seconds"]
    return out


def run(variant: str, items: int, heads: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--variant", variant, "--items", str(items), "--heads", str(heads)]
    proc = subprocess.run([*cmd, "--repeats", str(repeats)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {
            "variant": variant,
            "items": items,
            "heads": heads,
            "error": proc.stderr.strip().splitlines()[-1:],
        }
    return {"variant": variant, **json.loads(proc.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dense-items", type=int, default=100_000)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "fused_topk.json"))
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(in_process(args)))
        return
    rows = [
        run("fused", args.items, 16, args.repeats),
        run("mm", args.items, 16, args.repeats),
        run("fused", args.items, 1, args.repeats),
        run("single", args.items, 1, args.repeats),
        run("sparse", args.items, 16, 1),
        run("fused", args.dense_items, 16, args.repeats),
        run("dense", args.dense_items, 16, 1),
    ]
    fused, mm, fused1, single, sparse, fused_small, dense = rows
    work_ratio = fused["pairs"] / args.items
    summary = {
        "machine": f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "fused_gflops_vs_mm": fused["gflops"] / mm["gflops"],
        "fused16_over_single_time": fused["seconds"] / single["seconds"],
        "useful_work_ratio": work_ratio,
        "time_ratio_over_work_ratio": fused["seconds"] / single["seconds"] / work_ratio,
        "fused1_over_single_time": fused1["seconds"] / single["seconds"],
        "sparse_over_fused_time": sparse.get("seconds", float("nan")) / fused["seconds"],
        "dense_over_fused_time_at_dense_items": dense.get("seconds", float("nan")) / fused_small["seconds"],
        "dense_over_fused_peak_at_dense_items": dense.get("peak_mib", float("nan")) / fused_small["peak_mib"],
    }
    result = {"rows": rows, "summary": summary}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print("| variant | items | heads | s/batch | useful GFLOP/s | peak MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | {r['items']:,} | {r['heads']} | failed: {r['error']} | | |")
        else:
            print(
                f"| {r['variant']} | {r['items']:,} | {r['heads']} | {r['seconds']:.3f} | {r['gflops']:.1f} | {r['peak_mib']:,.0f} |"
            )
    for key, value in summary.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
