"""Speed and peak memory of GGR's pair-only training loss and sparse fusion against their dense forms.

Two places where GGR could build a `batch x positions x heads` (training) or `batch x heads x items`
(inference) tensor, and where ggr-hf does not:

- **training**: `GGRForRecommendation.forward` applies each head only to the (position, head) pairs that
  have a compatible target (`GGRHeads.forward_selected` inside `infonce_loss`). The baseline is the
  straightforward form: every head on every position (`GGRHeads.forward`), then the same loss. Both use
  the same negatives (seeded), and the script checks that both give the same loss.
- **inference**: `score_items` loops over heads and scores each head's own items (`fuse_scores`). The
  baseline scores every item with every head and masks (`fuse_scores_dense`). The script checks that
  both rankings are the same.

Every case runs in a fresh process per variant (so that each peak resident memory, `VmHWM`, is its own)
and reports the dense / ggr-hf ratios measured in the same run. Times are medians over repeated steps
after warm-up; memory is the peak above what the process held before the first step.

Usage (about 2 minutes on 2 CPU cores; `--quick` about 1 minute, nearly all of it process start-up)::

    python benchmarks/bench_heads.py
    python benchmarks/bench_heads.py --quick      # tiny sizes: checks that the script works

Its timings are never part of the test suite; `tests/test_benchmarks.py` runs only the agreement check,
at small sizes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from ggr_hf import GGRConfig, GGRForRecommendation
from ggr_hf.heads.fusion import fuse_scores, fuse_scores_dense
from ggr_hf.losses import infonce_loss, offset_weights

# name -> setting. Groups are multi-label (each item in 1-3 groups), as genres and Pixel8M tags are.
CASES = {
    "train, ML-100K-like (19 groups x LT/ST_2, 38 heads)": dict(
        kind="train",
        items=1682,
        groups=19,
        segments=2,
        horizon=4,
        batch=128,
        seq=50,
        hidden=64,
        negatives=512,
    ),
    "train, Pixel8M-like (8 groups x LT/ST_8, 64 heads)": dict(
        kind="train",
        items=50_000,
        groups=8,
        segments=8,
        horizon=8,
        batch=64,
        seq=50,
        hidden=128,
        negatives=1024,
    ),
    "inference, ML-100K-like (38 heads, 1,682 items)": dict(
        kind="infer", items=1682, groups=19, segments=2, horizon=4, batch=256, seq=50, hidden=64
    ),
    "inference, Pixel8M-like (64 heads, 50,000 items)": dict(
        kind="infer", items=50_000, groups=8, segments=8, horizon=8, batch=128, seq=50, hidden=128
    ),
}
QUICK = dict(items=300, batch=8, seq=12, hidden=16, negatives=32)


def build(case: dict) -> GGRForRecommendation:
    config = GGRConfig(
        num_items=case["items"],
        backbone_config={
            "hidden_size": case["hidden"],
            "max_seq_len": case["seq"],
            "num_layers": 2,
            "dropout": 0.0,
        },
        priors=[
            {"type": "item", "field": "group", "values": [f"g{i}" for i in range(case["groups"])]},
            {"type": "temporal", "segments": case["segments"], "horizon": case["horizon"]},
        ],
        composition="multiplicative",
        num_negatives=case.get("negatives", 128),
        # The paper's per-head loss, which the dense reference computes (the fused calibration term
        # is outside what this benchmark compares).
        calibration="none",
    )
    torch.manual_seed(0)
    model = GGRForRecommendation(config)
    g = torch.Generator().manual_seed(0)
    membership = torch.zeros(case["items"] + 1, case["groups"], dtype=torch.bool)
    for extra in range(3):
        # Every item gets one group; a third of them a second and a ninth a third one.
        keep = torch.rand(case["items"], generator=g) < (1.0, 1 / 3, 1 / 9)[extra]
        groups = torch.randint(0, case["groups"], (case["items"],), generator=g)
        membership[1:][keep, groups[keep]] = True
    model.set_item_groups("group", membership)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.normal_(0, 0.05)
    return model


def batch(case: dict) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, case["items"] + 1, (case["batch"], case["seq"] + case["horizon"]), generator=g)
    ts = torch.cumsum(torch.randint(1, 3600, ids.shape, generator=g), 1)
    # Targets: the next `horizon` items after each position.
    targets = torch.stack([ids[:, 1 + p : 1 + p + case["seq"]] for p in range(case["horizon"])], dim=-1)
    return {"input_ids": ids[:, : case["seq"]], "timestamps": ts[:, : case["seq"]], "target_ids": targets}


def loss_pair_only(model: GGRForRecommendation, inputs: dict) -> torch.Tensor:
    return model(**inputs, negative_seeds=[7]).loss


def loss_dense(model: GGRForRecommendation, inputs: dict) -> torch.Tensor:
    """The same loss with every head applied to every position (a `batch x seq x heads x d` tensor)."""
    ids, targets = inputs["input_ids"], inputs["target_ids"]
    attention_mask = ids != 0
    hidden = model.backbone(input_ids=ids, timestamps=inputs["timestamps"], attention_mask=attention_mask)
    queries = F.normalize(model.heads(hidden.last_hidden_state), dim=-1)  # [B, T, H, d]
    mask = model.head_item_mask()
    valid = (targets > 0) & attention_mask.unsqueeze(-1)
    compat = model.compatibility(targets, valid, None, None, head_item_mask=mask)
    negatives = model._training_negatives(mask, ids.device, [7], False)
    table = model.backbone.all_item_embeddings()
    return infonce_loss(
        queries,
        targets,
        compat,
        lambda i: table[i],
        negatives,
        model.current_logit_scale(),
        offset_weights(targets.shape[-1], model.config.offset_discount),
        prior_weighting=model.config.prior_weighting,
        false_negative_threshold=model.config.false_negative_threshold,
    ).loss


def scores(model: GGRForRecommendation, inputs: dict, dense: bool) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        h = model._last_states(inputs["input_ids"], inputs["timestamps"], None)
        q = F.normalize(model.heads(h), dim=-1) * model.current_logit_scale()
        items = model.backbone.all_item_embeddings()
        if dense:
            return fuse_scores_dense(q, items, model.head_item_mask())
        return fuse_scores(q, items, model.head_items())


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(name: str, variant: str, quick: bool, repeats: int) -> None:
    case = {**CASES[name], **(QUICK if quick else {})}
    model = build(case)
    inputs = batch(case)
    if case["kind"] == "train":
        model.train()
        fn = loss_pair_only if variant == "ggr-hf" else loss_dense

        def step():
            model.zero_grad(set_to_none=True)
            loss = fn(model, inputs)
            loss.backward()
            return float(loss)
    else:
        model.eval()

        def step():
            s, _ = scores(model, inputs, dense=variant == "dense")
            return float(s[:, 1:].float().mean())

    base = _rss("VmRSS")
    value = step()  # warm-up (also the value compared across variants)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(
        "RESULT "
        + json.dumps({"seconds": statistics.median(times), "peak": _rss("VmHWM") - base, "value": value})
    )


def measure(name: str, variant: str, quick: bool, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--variant", variant, "--repeats", str(repeats)]
    proc = subprocess.run([*cmd, *(["--quick"] if quick else [])], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} / {variant} failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def check_agreement(quick: bool) -> str:
    """Same loss and same fused scores and attributions, on the first case of each kind."""
    for name, case in CASES.items():
        case = {**case, **(QUICK if quick else {"items": 2000, "batch": 16})}
        model, inputs = build(case), batch(case)
        if case["kind"] == "train":
            a, b = loss_pair_only(model, inputs), loss_dense(model, inputs)
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (name, float(a), float(b))
        else:
            (sa, ha), (sb, hb) = scores(model, inputs, False), scores(model, inputs, True)
            assert torch.allclose(sa, sb, rtol=1e-5, atol=1e-5) and torch.equal(ha, hb), name
    return "checked: the same loss and the same fused scores and head attributions in both forms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the script works")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=["ggr-hf", "dense"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.variant, args.quick, args.repeats)
        return
    print(check_agreement(args.quick))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} steps")
    print()
    print(
        "| case | ggr-hf s/step | dense s/step | time ratio (dense / ggr-hf) | ggr-hf peak MiB | dense peak MiB | memory ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in CASES:
        ours = measure(name, "ggr-hf", args.quick, args.repeats)
        dense = measure(name, "dense", args.quick, args.repeats)
        print(
            f"| {name} | {ours['seconds']:.3f} | {dense['seconds']:.3f} | {dense['seconds'] / ours['seconds']:.1f}x "
            f"| {ours['peak'] / 2**20:,.0f} | {dense['peak'] / 2**20:,.0f} "
            f"| {dense['peak'] / max(ours['peak'], 1):.1f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
