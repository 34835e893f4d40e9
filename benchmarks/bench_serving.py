"""Serving latency of `recommend()` with the item table loaded once, against a plain NumPy dot
product + `argpartition` over the same embeddings (issue 14, part 5), measured in the same run.

One head (plain HSTU, d = 128, 50 items of history), 100k and 1M items, one user and a batch of 64
users, k = 10, the history excluded on both sides. `recommend()` runs the backbone, checks its
inputs and takes the exact top-k block by block (`ggr_hf.heads.fusion.fused_topk`, on the model's
cached `fusion_index()`); NumPy scores the same query vectors (taken from the model) against the
same normalised table. Reports p50 and p99 over repeated calls, and p50 of recommend()'s two parts:
the backbone + head queries (`user_queries`), which NumPy does not compute, and the retrieval from
those queries (`fused_topk` with the history excluded), which is what NumPy computes.

Run alone on an idle machine: `python benchmarks/bench_serving.py` (about two minutes). Writes
`benchmarks/results/serving.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ggr_hf import GGRConfig, GGRForRecommendation
from ggr_hf.heads.fusion import _fused_topk, fused_topk

D, HISTORY, K = 128, 50, 10
BACKBONE = dict(
    hidden_size=D, num_layers=2, num_attention_heads=2, attention_dim=32, linear_dim=32, max_seq_len=HISTORY
)


def percentiles(fn, calls: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def numpy_topk(table: np.ndarray, queries: np.ndarray, histories: np.ndarray) -> np.ndarray:
    scores = queries @ table.T  # [B, I+1]
    scores[:, 0] = -np.inf
    np.put_along_axis(scores, histories, -np.inf, axis=1)
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def rowwise(queries: np.ndarray, table: np.ndarray) -> np.ndarray:
    out = np.empty((len(queries), len(table)), dtype=np.float32)
    for row in range(len(queries)):
        np.dot(table, queries[row], out=out[row])
    return out


def product_forms(table: np.ndarray, calls: int) -> list[dict]:
    """NumPy's matrix-matrix product against one matrix-vector product per row, for the few query rows
    of a one-user request with several heads per item (why `_block_scores` goes row by row up to 3)."""
    rng = np.random.default_rng(0)
    out = []
    for rows in (1, 2, 3, 4, 8):
        q = rng.standard_normal((rows, table.shape[1]), dtype=np.float32)
        gemm, _ = percentiles(lambda q=q: q @ table.T, calls)
        gemv, _ = percentiles(lambda q=q: rowwise(q, table), calls)
        out.append({"items": len(table) - 1, "rows": rows, "gemm_ms": 1e3 * gemm, "rowwise_ms": 1e3 * gemv})
    return out


def multi_head(num_items: int, calls: int) -> dict:
    """One user of a 16-head GGR model (8 multi-label item groups, 1-3 per item, x LT/ST_2,
    multiplicative): `recommend()` against the same request with torch on all threads and 32,768-item
    chunks (the path before `single_threaded_torch`). No NumPy reference: the goal is for one head."""
    groups = [f"g{i}" for i in range(8)]
    config = GGRConfig(
        num_items=num_items,
        backbone_config=BACKBONE,
        priors=[
            {"type": "item", "field": "genres", "values": groups},
            {"type": "temporal", "segments": 2, "horizon": 2},
        ],
        composition="multiplicative",
    )
    model = GGRForRecommendation(config).eval()
    gen = torch.Generator().manual_seed(0)
    membership = torch.zeros(num_items + 1, len(groups), dtype=torch.bool)
    for _ in range(3):  # up to 3 draws per item: 1-3 groups
        membership[
            torch.arange(1, num_items + 1), torch.randint(0, len(groups), (num_items,), generator=gen)
        ] = True
    model.set_item_groups(model.config.priors[0]["name"], membership)
    index = model.fusion_index()
    history = torch.randint(1, num_items + 1, (1, HISTORY), generator=gen)

    def all_threads() -> None:
        with torch.no_grad():
            queries, active = model.user_queries(history, None, None, None, None)
            _fused_topk(queries, index, K, active, history, "max", 32768)

    new, _ = percentiles(lambda: model.recommend(history, k=K), calls)
    old, _ = percentiles(all_threads, calls)
    return {
        "items": num_items,
        "heads": model.num_heads,
        "blocks": len(index.blocks),
        "recommend_p50_ms": 1e3 * new,
        "all_threads_p50_ms": 1e3 * old,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "serving.json"))
    args = parser.parse_args()
    rows, forms = [], []
    for num_items in args.items:
        torch.manual_seed(0)
        config = GGRConfig(
            num_items=num_items,
            backbone_config=BACKBONE,
        )
        model = GGRForRecommendation(config).eval()
        model.fusion_index()  # the item table, loaded once
        for batch in (1, 64):
            histories = torch.randint(1, num_items + 1, (batch, HISTORY))
            with torch.no_grad():
                q, _ = model.user_queries(histories, None, None, None, None)
            table = model.fusion_index()
            dense_table = np.zeros((num_items + 1, D), dtype=np.float32)
            dense_table[table.order.numpy()] = table.table.numpy()
            q_np, h_np = q[:, 0].numpy().copy(), histories.numpy()
            ours = model.recommend(histories, k=K).item_ids.numpy()
            theirs = numpy_topk(dense_table, q_np, h_np)
            assert (ours == theirs).all(), "recommend() and NumPy disagree"
            calls = args.calls if batch == 1 else max(5, args.calls // 5)
            p50, p99 = percentiles(lambda m=model, h=histories: m.recommend(h, k=K), calls)
            n50, n99 = percentiles(lambda t=dense_table, q=q_np, h=h_np: numpy_topk(t, q, h), calls)
            # recommend()'s two parts: the backbone + head queries, and the retrieval NumPy also does.
            with torch.no_grad():
                u50, _ = percentiles(
                    lambda m=model, h=histories: m.user_queries(h, None, None, None, None), calls
                )
            r50, _ = percentiles(lambda q=q, t=table, h=histories: fused_topk(q, t, K, exclude=h), calls)

            def all_threads(m=model, t=table, h=histories):
                # The same request with torch's ops on all threads around NumPy's product (before
                # `single_threaded_torch`), for the same-run comparison.
                with torch.no_grad():
                    queries, _ = m.user_queries(h, None, None, None, None)
                    _fused_topk(queries, t, K, None, h, "max", None)

            a50, _ = percentiles(all_threads, calls)
            rows.append(
                {
                    "items": num_items,
                    "batch": batch,
                    "recommend_p50_ms": 1e3 * p50,
                    "recommend_p99_ms": 1e3 * p99,
                    "numpy_p50_ms": 1e3 * n50,
                    "numpy_p99_ms": 1e3 * n99,
                    "p50_ratio": p50 / n50,
                    "queries_p50_ms": 1e3 * u50,
                    "retrieval_p50_ms": 1e3 * r50,
                    "retrieval_p50_ratio": r50 / n50,
                    "all_threads_p50_ms": 1e3 * a50,
                }
            )
        forms += product_forms(dense_table, max(5, args.calls // 5))
    heads16 = multi_head(args.items[0], max(5, args.calls // 5))
    result = {
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
        "numpy_product_forms": forms,
        "sixteen_heads_one_user": heads16,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(
        "| items | users | recommend() p50 / p99 ms | NumPy p50 / p99 ms | p50 ratio "
        "| of which queries p50 ms | retrieval only p50 ms | retrieval p50 ratio "
        "| queries + retrieval, torch on all threads p50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['items']:,} | {r['batch']} | {r['recommend_p50_ms']:.1f} / {r['recommend_p99_ms']:.1f} "
            f"| {r['numpy_p50_ms']:.1f} / {r['numpy_p99_ms']:.1f} | {r['p50_ratio']:.2f}x "
            f"| {r['queries_p50_ms']:.1f} | {r['retrieval_p50_ms']:.1f} | {r['retrieval_p50_ratio']:.2f}x "
            f"| {r['all_threads_p50_ms']:.1f} |"
        )
    print("\n| items | query rows | NumPy q @ table.T ms | one matrix-vector product per row ms |")
    print("|---|---|---|---|")
    for f in forms:
        print(f"| {f['items']:,} | {f['rows']} | {f['gemm_ms']:.1f} | {f['rowwise_ms']:.1f} |")
    print(
        f"\n16 heads ({heads16['blocks']} signature blocks), one user, {heads16['items']:,} items: recommend() p50 "
        f"{heads16['recommend_p50_ms']:.1f} ms; torch on all threads, 32,768-item chunks: "
        f"{heads16['all_threads_p50_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
