"""Serving latency of `recommend()` with the item table loaded once, against a plain NumPy dot
product + `argpartition` over the same embeddings (issue 14, part 5), measured in the same run.

One head (plain HSTU, d = 128, 50 items of history), 100k and 1M items, one user and a batch of 64
users, k = 10, the history excluded on both sides. `recommend()` runs the backbone, checks its
inputs and takes the exact top-k block by block (`ggr_hf.heads.fusion.fused_topk`, on the model's
cached `fusion_index()`); NumPy scores the same query vectors (taken from the model) against the
same normalised table. Reports p50 and p99 over repeated calls.

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

D, HISTORY, K = 128, 50, 10


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "serving.json"))
    args = parser.parse_args()
    rows = []
    for num_items in args.items:
        torch.manual_seed(0)
        config = GGRConfig(
            num_items=num_items,
            backbone_config=dict(
                hidden_size=D,
                num_layers=2,
                num_attention_heads=2,
                attention_dim=32,
                linear_dim=32,
                max_seq_len=HISTORY,
            ),
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
            rows.append(
                {
                    "items": num_items,
                    "batch": batch,
                    "recommend_p50_ms": 1e3 * p50,
                    "recommend_p99_ms": 1e3 * p99,
                    "numpy_p50_ms": 1e3 * n50,
                    "numpy_p99_ms": 1e3 * n99,
                    "p50_ratio": p50 / n50,
                }
            )
    result = {"threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print("| items | users | recommend() p50 / p99 ms | NumPy p50 / p99 ms | p50 ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['items']:,} | {r['batch']} | {r['recommend_p50_ms']:.1f} / {r['recommend_p99_ms']:.1f} "
            f"| {r['numpy_p50_ms']:.1f} / {r['numpy_p99_ms']:.1f} | {r['p50_ratio']:.2f}x |"
        )


if __name__ == "__main__":
    main()
