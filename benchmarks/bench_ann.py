"""Approximate fused top-k (`ggr_hf.retrieval`, faiss IVF per prior group) against the exact one.

Issue 14, part 2. Goal: Recall@10 of the approximate list against the exact list >= 0.95 at a
query-time speed-up >= 5x at 10M items. The case (as `bench_fused_topk.py`, except d):

- items: `--items` vectors of size d = `--dim` (64 by default: 10M x 256 floats are 10 GB, with the
  exact index's reordered copy and faiss's copies beyond this machine's 24 GB), drawn around
  `--item-clusters` random directions (learned item embeddings are clustered; a uniform random table has
  no structure any index could use; `--item-clusters 0` draws them uniformly), normalised;
- 16 heads = 2 temporal segments x 8 categories, each item in 1-3 categories (P = 0.6 / 0.3 / 0.1);
- 256 users; each head's query is near its own items: the normalised mean of 3 random items of the
  head's category plus noise (`--query-noise`), times 20 (the logit scale). Random directions as
  queries would make recall meaningless: their top-10 are near-ties in a 64-d space;
- exact = `fused_topk` on a `FusionIndex` (what `recommend()` uses), approximate = `ApproximateIndex`
  searched with the same queries, k = 10, max fusion, in the same process and run.

Reported per `nprobe` of a sweep: Recall@10 (the share of the exact top-10 items the approximate
top-10 holds, averaged over users), query time (best of `--repeats` after a warm-up) and the speed-up;
once: build time (k-means, assignment, adding), index memory (faiss codes, ids and centroids) and the
process's peak memory. Threads: torch and faiss both use `--threads` (default: all cores).

`python benchmarks/bench_ann.py` runs 1M and 10M items (minutes; run it alone on the machine),
`--smoke` 20k items (64 clusters, 128 lists) in seconds. Writes `benchmarks/results/ann.json`
(`--output`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from ggr_hf.heads.fusion import build_fusion_index, fused_topk
from ggr_hf.retrieval import ApproximateIndex, import_faiss

USERS, K, CATEGORIES, SEGMENTS, SCALE = 256, 10, 8, 2, 20.0
CHUNK = 1 << 20


def make_catalogue(num_items: int, dim: int, clusters: int, seed: int = 0):
    """Normalised item vectors (row 0 padding) and the 16-head compatibility, built in chunks so the
    peak stays near the table's own size."""
    gen = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(max(clusters, 1), dim, generator=gen), dim=-1)
    table = torch.empty(num_items + 1, dim)
    for lo in range(0, num_items + 1, CHUNK):
        hi = min(num_items + 1, lo + CHUNK)
        noise = torch.randn(hi - lo, dim, generator=gen)
        if clusters:
            # Noise of norm ~0.7 around a unit centre: clusters overlap, as real embedding clusters do.
            which = torch.randint(0, clusters, (hi - lo,), generator=gen)
            block = centers[which] + noise * (0.7 / dim**0.5)
        else:
            block = noise
        table[lo:hi] = F.normalize(block, dim=-1)
    n_cats = 1 + torch.multinomial(
        torch.tensor([0.6, 0.3, 0.1]), num_items + 1, replacement=True, generator=gen
    )
    cats = torch.empty(num_items + 1, CATEGORIES, dtype=torch.bool)
    for lo in range(0, num_items + 1, CHUNK):
        hi = min(num_items + 1, lo + CHUNK)
        ranks = torch.rand(hi - lo, CATEGORIES, generator=gen).argsort(1)
        cats[lo:hi] = ranks < n_cats[lo:hi].unsqueeze(1)
    compatible = cats.repeat(1, SEGMENTS)  # head = segment * CATEGORIES + category
    compatible[0] = False
    return table, compatible


def make_queries(table: torch.Tensor, compatible: torch.Tensor, noise: float, seed: int = 1) -> torch.Tensor:
    """`(USERS, heads, d)`: per head, the normalised mean of 3 random items of its category plus noise."""
    gen = torch.Generator().manual_seed(seed)
    num_heads, dim = compatible.shape[1], table.shape[1]
    queries = torch.empty(USERS, num_heads, dim)
    for h in range(num_heads):
        items = compatible[:, h].nonzero(as_tuple=True)[0]
        pick = items[torch.randint(0, len(items), (USERS, 3), generator=gen)]
        base = table[pick].mean(1) + torch.randn(USERS, dim, generator=gen) * (noise / dim**0.5)
        queries[:, h] = F.normalize(base, dim=-1)
    return queries * SCALE


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def recall_at_k(approx_items: torch.Tensor, exact_items: torch.Tensor) -> float:
    hits = (approx_items.unsqueeze(2) == exact_items.unsqueeze(1)).any(2) & (approx_items > 0)
    return float((hits.sum(1).float() / (exact_items > 0).sum(1).clamp(min=1)).mean())


def run_case(args, num_items: int, nlist: int | None, nprobes: list[int] | None) -> dict:
    start = time.perf_counter()
    table, compatible = make_catalogue(num_items, args.dim, args.item_clusters)
    queries = make_queries(table, compatible, args.query_noise)
    made = time.perf_counter() - start

    start = time.perf_counter()
    exact_index = build_fusion_index(table, compatible)
    exact_build = time.perf_counter() - start
    exact_s, (_, exact_items, _) = timed(partial(fused_topk, queries, exact_index, K), args.repeats)
    # The exact index holds a reordered copy of the table (2.4 GiB at 10M x 64): freed before faiss
    # makes its own copies, so the peak is the larger of the two, not their sum.
    del exact_index

    start = time.perf_counter()
    ann = ApproximateIndex.from_tensors(table, compatible, nlist=nlist, seed=0)
    ann_build = time.perf_counter() - start
    if nprobes is None:
        base = max(1, ann.nlist // 64)
        nprobes = sorted({min(ann.nlist, base * m) for m in (1, 2, 4, 8)})
    sweep = []
    for nprobe in nprobes:
        seconds, (_, items, heads) = timed(
            lambda nprobe=nprobe: ann.search_queries(queries, table, compatible, K, nprobe=nprobe),
            args.repeats,
        )
        ok = heads >= 0
        compatible_only = bool(compatible[items[ok], heads[ok]].all())
        sweep.append(
            {
                "nprobe": nprobe,
                "recall_at_10": recall_at_k(items, exact_items),
                "seconds": seconds,
                "speedup": exact_s / seconds,
                "only_compatible_items": compatible_only,
            }
        )
    meeting = [r for r in sweep if r["recall_at_10"] >= 0.95]
    return {
        "items": num_items,
        "dim": args.dim,
        "heads": compatible.shape[1],
        "users": USERS,
        "pairs_per_item": float(compatible.sum()) / num_items,
        "item_clusters": args.item_clusters,
        "query_noise": args.query_noise,
        "generate_seconds": made,
        "exact_build_seconds": exact_build,
        "exact_seconds": exact_s,
        "ann_build_seconds": ann_build,
        "nlist": ann.nlist,
        "groups": len(ann.groups),
        "ann_index_mib": ann.memory_bytes() / 2**20,
        "sweep": sweep,
        "best_speedup_at_recall_0_95": max((r["speedup"] for r in meeting), default=None),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--nlist", type=int, help="inverted lists (default: ApproximateIndex's choice)")
    parser.add_argument("--nprobe", type=int, nargs="+", help="lists searched (default: a sweep)")
    parser.add_argument("--item-clusters", type=int, help="default 1024 (64 with --smoke)")
    parser.add_argument("--query-noise", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--smoke", action="store_true", help="20k items, 1 repeat: seconds")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "ann.json"))
    args = parser.parse_args()
    if args.smoke:
        args.items, args.repeats = [20_000], 1
        if args.nlist is None:
            args.nlist = 128
        if args.item_clusters is None:
            # Fewer clusters than lists, as in the full runs (1,024 clusters, 2,048-4,096 lists).
            args.item_clusters = 64
    if args.item_clusters is None:
        args.item_clusters = 1024
    faiss = import_faiss()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rows = [run_case(args, n, args.nlist, args.nprobe) for n in args.items]
    result = {
        "machine": f"{args.threads} threads, torch {torch.__version__}, faiss {faiss.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(result["machine"])
    print("| items | nlist | nprobe | Recall@10 | exact s | approx s | speed-up | build s | index MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for s in r["sweep"]:
            print(
                f"| {r['items']:,} | {r['nlist']} | {s['nprobe']} | {s['recall_at_10']:.3f} | "
                f"{r['exact_seconds']:.3f} | {s['seconds']:.3f} | {s['speedup']:.1f}x | "
                f"{r['ann_build_seconds']:.1f} | {r['ann_index_mib']:,.0f} |"
            )
        print(f"peak RSS after {r['items']:,} items: {r['peak_rss_mib']:,.0f} MiB")


if __name__ == "__main__":
    main()
