"""HSTU's forward + backward on the CPU against `torch.nn.TransformerEncoder` of the same width,
depth and sequence length, measured in the same run (issue 14, part 4), with the largest costs of
the HSTU step from `torch.profiler`.

Sizes: the release's "size1" (d = 128, 4 layers, 4 heads), batch 32, sequence lengths 50 and 200.
The softmax encoder uses `dim_feedforward = 4 d` (the usual ratio; HSTU has no feed-forward block),
`batch_first`, dropout 0 and a causal mask, as HSTU does; HSTU runs with timestamps (its time bias).

Run alone on an idle machine: `python benchmarks/bench_hstu.py` (about a minute). Writes
`benchmarks/results/hstu.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from ggr_hf.models.hstu.configuration_hstu import HSTUConfig
from ggr_hf.models.hstu.modeling_hstu import HSTUModel

D, LAYERS, HEADS, BATCH, ITEMS = 128, 4, 4, 32, 10_000


def step_time(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "hstu.json"))
    parser.add_argument("--profile", action="store_true", help="print the HSTU step's top operators")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for seq_len in (50, 200):
        config = HSTUConfig(
            num_items=ITEMS,
            hidden_size=D,
            num_layers=LAYERS,
            num_attention_heads=HEADS,
            attention_dim=D // HEADS,
            linear_dim=D // HEADS,
            max_seq_len=seq_len,
            dropout=0.0,
        )
        hstu = HSTUModel(config).train()
        ids = torch.randint(1, ITEMS + 1, (BATCH, seq_len))
        ts = torch.cumsum(torch.randint(1, 10**5, (BATCH, seq_len)), 1)

        def hstu_step(hstu=hstu, ids=ids, ts=ts) -> None:
            hstu(ids, timestamps=ts).last_hidden_state.sum().backward()

        layer = nn.TransformerEncoderLayer(D, HEADS, 4 * D, dropout=0.0, batch_first=True)
        encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False).train()
        embed = nn.Embedding(ITEMS + 1, D)
        mask = nn.Transformer.generate_square_subsequent_mask(seq_len)

        def softmax_step(encoder=encoder, embed=embed, ids=ids, mask=mask) -> None:
            encoder(embed(ids), mask=mask, is_causal=True).sum().backward()

        hstu_s, softmax_s = step_time(hstu_step, args.repeats), step_time(softmax_step, args.repeats)
        rows.append(
            {"seq_len": seq_len, "hstu_s": hstu_s, "softmax_s": softmax_s, "ratio": hstu_s / softmax_s}
        )
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    hstu_step()
            print(f"seq_len {seq_len}: HSTU step, top operators by self CPU time")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    result = {"threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print("| seq_len | HSTU fwd+bwd s | softmax encoder fwd+bwd s | HSTU / softmax |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['seq_len']} | {r['hstu_s']:.4f} | {r['softmax_s']:.4f} | {r['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
