"""Training at scale through the real path: `ggr-hf data prepare merrec` -> datasets bundle -> collator ->
accelerate loop, 16 heads against plain HSTU and against the dense all-heads loss (issue 14, part 3).

The script

1. generates (once, then reuses; `bench_prepare_merrec.generate`, imported) a synthetic data set in
   MerRec's exact schema. The default, 20 million raw events kept with `--min-events 1000`, prepares to
   about 3,700 users, 1.10 million items and 10.3 million events (the paper's `min_events=2000` keeps
   only 7.3 million events and 1.0 million items of the same raw data);
2. runs the real command line `ggr-hf data prepare merrec` in a subprocess (cached: a second run reuses
   the prepared folder) and checks the prepared data's size against `--min-items` / `--min-kept-events`;
3. writes one experiment YAML per variant (what `ggr-hf train --config` reads) and trains each in its own
   fresh process through the library's own wiring (`prepare_experiment`, `build_model`, `train_model`:
   `TrainingWindows` + collator + `DataLoader` + `accelerate`), for `--warmup + --steps` optimiser steps
   (`training.max_steps`). Validation is replaced by a constant (the loop still calls it once at the
   end): it would score every validation user against the whole catalogue and is not what is measured.
   The variants, all with the same backbone (HSTU), batch, windows, negatives per head and seed:

   - `plain`: HSTU without priors (one head, catalogue-wide negatives, next item);
   - `ggr16`: 16 heads, 8 item categories (MerRec's `c0_name`, the top-level category, mapped round-robin
     onto 8 groups; single label) x LT/ST_2 (horizon 2), multiplicative, in-group negatives, the paper's
     per-head loss (`calibration: none`), pair-only (the library's `forward`);
   - `dense16`: the same model and loop with `forward` replaced by the dense all-heads form of the same
     loss (`bench_heads.loss_dense`: every head on every position, a `batch x T x heads x d` tensor); on
     the first batch the child checks that both forms give the same loss;
   - `ggr16_fused`: `ggr16` with ggr-hf's default `calibration: fused` (the per-head loss plus the fused
     term: every head's query at every position against catalogue-wide negatives), what a user who
     keeps the defaults trains;
   - `ggr16_quarter`: `ggr16` on the same sequences with the item ids folded onto the first quarter of
     the catalogue (`id -> (id - 1) % (items // 4) + 1`), i.e. the same events and a 4x smaller item
     table: the difference of the two training peaks is what the catalogue costs. The folded set is
     written once beside the prepared one, so that this child too reads a memory-mapped bundle.

4. Every step is timed by hooks on the real objects (forward pre/post hooks on the model, a wrapper
   around `accelerator.backward`, optimiser step pre/post hooks, wrappers around the collator, the
   head x item mask and the negative sampler): the share of the step outside forward / backward /
   optimiser, and the data path (that share plus the mask and the negatives, which run inside forward;
   the library's `forward` builds the mask and the negatives' pool once, the dense form every step).
   `--profile` adds a few steps under `torch.profiler` to the `ggr16` child and keeps its top operators.
   Peak memory is the child's `VmHWM`, reset (`/proc/self/clear_refs`) once the data and model are built,
   so that the training peak is separate from the set-up's.

Writes `benchmarks/results/train_scale.json` (or `--out`).

Usage (estimated 10-12 minutes and under 4 GB per process on 2 cores, the first run about 2 minutes more
to generate the raw data; `--profile` adds about a minute)::

    python benchmarks/bench_train_scale.py --work /tmp/ggr-hf-bench --profile
    python benchmarks/bench_train_scale.py --smoke      # 200k raw events, a few steps: about 30 s

Not part of the test suite; `tests/test_bench_train_scale.py` runs the dense / pair-only agreement check
and the item folding at small sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_prepare_merrec import generate  # noqa: E402  (the benchmarks folder is not a package)

VARIANTS = ("plain", "ggr16", "dense16", "ggr16_quarter", "ggr16_fused")
NUM_GROUPS = 8
CATEGORY_FIELD = "c0_name"
RESULT = Path(__file__).resolve().parent / "results" / "train_scale.json"

FULL = dict(
    events=20_000_000,
    shards=20,
    min_events=1000,
    min_items=1_000_000,
    min_kept_events=10_000_000,
    batch=32,
    seq=200,
    hidden=64,
    layers=2,
    negatives=1024,
    warmup=5,
    steps=50,
)
SMOKE = dict(
    events=200_000,
    shards=2,
    min_events=100,
    min_items=0,
    min_kept_events=0,
    batch=8,
    seq=50,
    hidden=32,
    layers=1,
    negatives=64,
    warmup=2,
    steps=3,
)


# ---------------------------------------------------------------------------------------------------
# Configuration: one experiment YAML per variant
# ---------------------------------------------------------------------------------------------------


def category_mapping(values: list[str], groups: int = NUM_GROUPS) -> dict[str, str]:
    """Maps the distinct top-level categories round-robin onto `groups` groups (`cat0`, `cat1`, ...)."""
    return {v: f"cat{i % groups}" for i, v in enumerate(sorted(values))}


def experiment_dict(
    variant: str, prepared: Path, mapping: dict[str, str], settings: dict, output_dir: Path
) -> dict[str, Any]:
    """The experiment (the sections `ggr-hf train --config` reads) of one variant."""
    model: dict[str, Any] = {
        "backbone_type": "hstu",
        "backbone_config": {
            "hidden_size": settings["hidden"],
            "num_layers": settings["layers"],
            "num_attention_heads": 2,
            "attention_dim": 32,
            "linear_dim": 32,
            "max_seq_len": settings["seq"],
            # No dropout: the dense child compares the two loss forms on the same weights and batch.
            "dropout": 0.0,
        },
        "num_negatives": settings["negatives"],
        # The paper's per-head loss, which the dense form computes; `ggr16_fused` adds ggr-hf's default
        # fused calibration term to measure what that default costs.
        "calibration": "fused" if variant == "ggr16_fused" else "none",
    }
    if variant != "plain":
        model["priors"] = [
            {
                "type": "item",
                "name": "category",
                "field": CATEGORY_FIELD,
                "mapping": mapping,
                "label": "first",
            },
            {"type": "temporal", "segments": 2, "horizon": 2},
        ]
        model["composition"] = "multiplicative"
    return {
        "data": {"dataset": "bundle", "path": str(prepared), "split_k": 1, "category_field": None},
        "model": model,
        "training": {
            "output_dir": str(output_dir / variant),
            "overwrite_output_dir": True,
            "epochs": 1000,
            "max_steps": settings["warmup"]
            + settings["steps"]
            + (settings.get("profile_steps", 0) if variant == "ggr16" else 0),
            "batch_size": settings["batch"],
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
            "cpu": True,
            "save_best": False,
            "progress": False,
            "log_every": 1000,
            "seed": 0,
        },
    }


# ---------------------------------------------------------------------------------------------------
# Child process: one variant through the real training loop, with timing hooks
# ---------------------------------------------------------------------------------------------------


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    """Resets this process's `VmHWM` to its current RSS (Linux >= 4.0); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def fold_items(bundle, factor: int):
    """The same sequences over a `factor` times smaller catalogue: item `i` becomes
    `(i - 1) % (num_items // factor) + 1`, and the item table keeps its first `num_items // factor` rows.

    Args:
        bundle (`RecDataBundle`): a prepared data set.
        factor (`int`): how many times smaller the catalogue gets.

    Returns:
        `RecDataBundle` with the same users, events and timestamps.
    """
    import dataclasses

    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    kept = max(bundle.num_items // factor, 1)
    table = bundle.sequences.with_format("arrow")[:]
    column = table.column("item_ids").combine_chunks()
    flat = pc.list_flatten(column).to_numpy()
    folded = pa.array((flat - 1) % kept + 1, type=column.type.value_type)
    # Offsets relative to the first list: `list_flatten` drops values before it in a sliced array.
    rebuilt = pa.ListArray.from_arrays(pc.subtract(column.offsets, column.offsets[0]), folded)
    table = table.set_column(table.schema.get_field_index("item_ids"), "item_ids", rebuilt)
    return dataclasses.replace(
        bundle, sequences=datasets.Dataset(table), items=bundle.items.select(range(kept))
    )


class StepProbe:
    """Per-step wall times of the real loop's parts, taken by hooks on the objects it uses.

    A step runs from the end of the previous optimiser step to the end of its own, so the steps' times
    add up to the loop's wall time. Inside a step: `forward` (the model call, which includes `masks`,
    the per-step head x item mask, and `negatives`, the sampler), `backward` (`accelerator.backward`),
    `optimizer` (`optimizer.step`) and `collate`; the rest of the step is outside these (the
    `DataLoader`, accelerate's device move, scheduler, logging).
    """

    def __init__(self, model, accelerator, collate_owner, on_step=None):
        import torch

        self.torch = torch
        self.steps: list[dict[str, float]] = []
        self.current: dict[str, float] = defaultdict(float)
        self.last_end: float | None = None
        self.on_step = on_step
        self.count = 0
        model.register_forward_pre_hook(self._forward_start, with_kwargs=True)
        model.register_forward_hook(self._forward_end)
        accelerator.backward = self._timed("backward", accelerator.backward)
        # `head_item_mask` builds the head x item mask: every step in the dense form, once in the
        # library's `forward` (which keeps it between steps, `_training_mask`).
        for name, key in (("_training_negatives", "negatives"), ("head_item_mask", "masks")):
            if hasattr(model, name):
                setattr(model, name, self._timed(key, getattr(model, name)))
        collate_owner.collate = self._timed("collate", collate_owner.collate)
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        register_optimizer_step_pre_hook(self._opt_start)
        register_optimizer_step_post_hook(self._opt_end)

    def _timed(self, key: str, fn):
        record = self.torch.autograd.profiler.record_function

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            with record(f"ggr:{key}"):
                out = fn(*args, **kwargs)
            self.current[key] += time.perf_counter() - t0
            return out

        return wrapper

    def _forward_start(self, module, args, kwargs):
        targets = kwargs.get("target_ids")
        if targets is not None:
            targets = targets if targets.dim() == 3 else targets.unsqueeze(-1)
            # Events trained: input positions with a next-item target; pairs: (position, offset) targets.
            self.current["events"] += float((targets[..., 0] > 0).sum())
            self.current["targets"] += float((targets > 0).sum())
        self._forward_t0 = time.perf_counter()

    def _forward_end(self, module, args, output):
        self.current["forward"] += time.perf_counter() - self._forward_t0

    def _opt_start(self, optimizer, args, kwargs):
        self._opt_t0 = time.perf_counter()

    def _opt_end(self, optimizer, args, kwargs):
        now = time.perf_counter()
        self.current["optimizer"] += now - self._opt_t0
        if self.last_end is not None:
            self.current["total"] = now - self.last_end
            self.steps.append(dict(self.current))
        self.last_end = now
        self.current = defaultdict(float)
        self.count += 1
        if self.on_step is not None:
            self.on_step(self.count)


def summarize(steps: list[dict[str, float]]) -> dict[str, Any]:
    """Medians and shares of the measured steps."""
    total = sum(s["total"] for s in steps)
    part = {
        k: sum(s.get(k, 0.0) for s in steps)
        for k in ("forward", "backward", "optimizer", "negatives", "masks", "collate")
    }
    outside = total - part["forward"] - part["backward"] - part["optimizer"]
    return {
        "steps": len(steps),
        "step_seconds_median": statistics.median(s["total"] for s in steps),
        "forward_backward_seconds_median": statistics.median(s["forward"] + s["backward"] for s in steps),
        "events_per_second": sum(s["events"] for s in steps) / total,
        "targets_per_second": sum(s["targets"] for s in steps) / total,
        "share": {
            **{k: v / total for k, v in part.items()},
            "outside_forward_backward_optimizer": outside / total,
            # The data path: what is outside the model's compute plus the per-step mask and the
            # negative sampling, which run inside `forward`.
            "data_path": (outside + part["negatives"] + part["masks"]) / total,
        },
    }


def child(variant: str, config_path: Path, warmup: int, profile_steps: int) -> None:
    t0 = time.perf_counter()
    import torch
    from bench_heads import loss_dense

    from ggr_hf.experiments.config import load_experiment_config
    from ggr_hf.experiments.experiment import build_model, load_data, prepare_experiment, train_model
    from ggr_hf.training.loop import build_accelerator

    cfg = load_experiment_config(config_path)
    exp = prepare_experiment(cfg, load_data(cfg.data))
    metric = cfg.training.selection_metric
    exp.evaluate = lambda *args, **kwargs: {metric: 0.0}
    model = build_model(exp, seed=cfg.training.seed)
    accelerator = build_accelerator(cfg.training)
    result: dict[str, Any] = {
        "variant": variant,
        "num_items": exp.bundle.num_items,
        "num_heads": model.num_heads,
    }
    measured_until = cfg.training.max_steps - profile_steps
    state: dict[str, Any] = {}

    def on_step(count: int) -> None:
        if count == measured_until:
            result["training_peak_rss"] = _status("VmHWM")
        if profile_steps and count == measured_until:
            state["profiler"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            state["profiler"].__enter__()
        if profile_steps and count == cfg.training.max_steps:
            state["profiler"].__exit__(None, None, None)

    # `train_model` builds its `TrainingWindows` inside; the probe times the collator at class level.
    from ggr_hf.data.collator import TrainingWindows

    probe = StepProbe(model, accelerator, TrainingWindows, on_step=on_step)
    if variant == "dense16":
        pair_forward = model.forward

        def dense_forward(**batch):
            inputs = {k: batch[k] for k in ("input_ids", "timestamps", "target_ids")}
            if "loss_check" not in result:
                # Both forms on the first real batch, same weights and negatives (seed 7 in both).
                a = float(pair_forward(**inputs, negative_seeds=[7]).loss)
                b = float(loss_dense(model, inputs))
                result["loss_check"] = {
                    "pair_only": a,
                    "dense": b,
                    "equal": abs(a - b) <= 1e-5 * abs(b) + 1e-6,
                }
            return SimpleNamespace(loss=loss_dense(model, inputs), num_pairs=1)

        model.forward = dense_forward
    result["setup_seconds"] = time.perf_counter() - t0
    result["setup_peak_rss"] = _status("VmHWM")
    result["rss_before_training"] = _status("VmRSS")
    result["peak_reset"] = _reset_peak()
    t1 = time.perf_counter()
    train_model(model, exp, cfg.training, accelerator=accelerator)
    result["train_seconds"] = time.perf_counter() - t1
    result["final_peak_rss"] = _status("VmHWM")
    measured = probe.steps[warmup - 1 : measured_until - 1]
    result.update(summarize(measured))
    if profile_steps:
        prof = state["profiler"]
        result["profile_top"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        spans = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key.startswith("ggr:")}
        result["profile_spans_us"] = spans
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------------


def run_child(variant: str, config_path: Path, warmup: int, profile_steps: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--config",
        str(config_path),
        "--warmup",
        str(warmup),
    ]
    cmd += ["--profile-steps", str(profile_steps)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed with code {proc.returncode}:\n{proc.stderr[-4000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def prepare(raw: Path, out: Path, min_events: int) -> float:
    """`ggr-hf data prepare merrec` in a subprocess (reuses an up-to-date cache); its wall time."""
    cmd = [
        sys.executable,
        "-m",
        "ggr_hf.cli",
        "data",
        "prepare",
        "merrec",
        "--raw",
        str(raw),
        "--out",
        str(out),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "--min-events", str(min_events), "--no-progress"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"data prepare failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def prepared_stats(path: Path) -> tuple[dict[str, int], list[str]]:
    """Users, items and events of a prepared folder, and its distinct top-level categories."""
    import pyarrow.compute as pc

    from ggr_hf.data.schema import RecDataBundle

    bundle = RecDataBundle.load_from_disk(path)
    categories = pc.unique(bundle.items.with_format("arrow")[:].column(CATEGORY_FIELD)).to_pylist()
    stats = {"users": bundle.num_users, "items": bundle.num_items, "events": bundle.num_interactions}
    return stats, [c for c in categories if c is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="200k raw events, tiny model, a few steps")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ggr-hf-bench"))
    parser.add_argument("--out", type=Path, help=f"default {RESULT} (--smoke: WORK/train_scale_smoke.json)")
    parser.add_argument("--profile", action="store_true", help="profile 5 extra steps of ggr16")
    for key, value in FULL.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"default {value:,}")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-steps", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.config, args.warmup, args.profile_steps)
        return
    settings = dict(SMOKE if args.smoke else FULL)
    settings.update({k: getattr(args, k) for k in FULL if getattr(args, k) is not None})
    settings["profile_steps"] = 5 if args.profile else 0
    if settings["warmup"] < 1 or settings["steps"] < 1:
        # The first step has no previous step end to be timed from: it is always a warm-up step.
        parser.error("--warmup and --steps must be at least 1")
    work = args.work
    started = time.perf_counter()
    raw = work / f"merrec-synth-{settings['events']}"
    print(f"generating {settings['events']:,} raw events under {raw} (reused when present) ...", flush=True)
    generate(raw, settings["events"], settings["shards"], 3, 0)
    prepared = work / f"merrec-prepared-{settings['events']}-min{settings['min_events']}"
    prepare_seconds = prepare(raw, prepared, settings["min_events"])
    stats, categories = prepared_stats(prepared)
    print(
        f"prepared in {prepare_seconds:.1f} s: {stats['users']:,} users, {stats['items']:,} items, {stats['events']:,} events"
    )
    if stats["items"] < settings["min_items"] or stats["events"] < settings["min_kept_events"]:
        raise SystemExit(
            f"the prepared data is smaller than asked ({stats['items']:,} items < {settings['min_items']:,} or "
            f"{stats['events']:,} events < {settings['min_kept_events']:,}): raise --events or lower --min-events"
        )
    import yaml

    # Written once to disk, so that the quarter child reads a memory-mapped bundle like the others.
    quarter = prepared.with_name(prepared.name + "-items-quarter")
    if not (quarter / "bundle.json").is_file():
        import datasets

        from ggr_hf.data.schema import RecDataBundle

        datasets.disable_progress_bars()
        fold_items(RecDataBundle.load_from_disk(prepared), 4).save_to_disk(quarter)
    mapping = category_mapping(categories)
    configs = work / "train-scale-configs"
    configs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for variant in VARIANTS:
        path = configs / f"{variant}.yaml"
        path.write_text(
            yaml.safe_dump(
                experiment_dict(
                    variant,
                    quarter if variant == "ggr16_quarter" else prepared,
                    mapping,
                    settings,
                    work / "train-scale-runs",
                )
            )
        )
        profile_steps = settings["profile_steps"] if variant == "ggr16" else 0
        results[variant] = r = run_child(variant, path, settings["warmup"], profile_steps)
        print(
            f"{variant:14s} {r['num_items']:>10,} items {r['num_heads']:>3} heads  step {r['step_seconds_median']:.3f} s  "
            f"fwd+bwd {r['forward_backward_seconds_median']:.3f} s  {r['events_per_second']:,.0f} events/s  "
            f"data path {100 * r['share']['data_path']:.1f}%  training peak {r['training_peak_rss'] / 2**20:,.0f} MiB "
            f"(+{(r['training_peak_rss'] - r['rss_before_training']) / 2**20:,.0f})  "
            f"(set-up {r['setup_seconds']:.0f} s)",
            flush=True,
        )
    plain, ggr, dense, small, fused = (results[v] for v in VARIANTS)
    d = settings["hidden"]
    item_diff = ggr["num_items"] - small["num_items"]
    summary = {
        "ggr16_over_plain_step": ggr["step_seconds_median"] / plain["step_seconds_median"],
        "ggr16_fused_over_plain_step": fused["step_seconds_median"] / plain["step_seconds_median"],
        "dense_over_ggr16_step": dense["step_seconds_median"] / ggr["step_seconds_median"],
        "dense_over_ggr16_forward_backward": dense["forward_backward_seconds_median"]
        / ggr["forward_backward_seconds_median"],
        "ggr16_data_path_share": ggr["share"]["data_path"],
        "loss_check": dense.get("loss_check"),
        "catalogue": {
            "items_removed": item_diff,
            "training_peak_difference_bytes": ggr["training_peak_rss"] - small["training_peak_rss"],
            # Embedding, its gradient and AdamW's two moments, float32.
            "item_table_bytes_expected": 4 * item_diff * d * 4,
            # What training adds on top of the set-up (the embedding itself exists before training).
            "training_growth_difference_bytes": (ggr["training_peak_rss"] - ggr["rss_before_training"])
            - (small["training_peak_rss"] - small["rss_before_training"]),
            "gradient_and_adam_bytes_expected": 3 * item_diff * d * 4,
            # Two lookups of the table in a step hold a second dense gradient at the backward's peak:
            # five tables in all (the library looked the history up apart from the loss's items until
            # 2026-12-03; kept to compare with older results).
            "item_table_bytes_with_second_gradient": 5 * item_diff * d * 4,
        },
    }
    print(json.dumps(summary, indent=2))
    if ggr.get("profile_top"):
        print(ggr["profile_top"])
    target = args.out or (work / "train_scale_smoke.json" if args.smoke else RESULT)
    target.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "settings": settings,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0],
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "prepared": {**stats, "prepare_seconds": prepare_seconds},
        "variants": results,
        "summary": summary,
        "total_seconds": time.perf_counter() - started,
    }
    target.write_text(json.dumps(out, indent=2))
    print(f"wrote {target} ({out['total_seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
