"""Training-step cost of every model of a `compare` models file, as a ratio to the first model
(plain HSTU in `recipes/configs/ml100k_baselines.yaml`), measured in one process in the same run.

`ggr-hf compare` reports each run's wall time, which depends on what else the machine was doing
and on how many epochs validation selection ran; this script isolates the cost of one optimiser step
(forward, loss, backward, AdamW) on the same real MovieLens-100K batches for every model, with the
models interleaved round by round so that a slow moment of the machine hits all of them alike. It
reports the median seconds per step, its ratio to the first model, and the parameters.

Run alone on an idle machine (about 3 minutes on 2 cores):

    python benchmarks/bench_model_steps.py
    python benchmarks/bench_model_steps.py --config recipes/configs/ml100k_main.yaml \
        --models recipes/configs/ml100k_baselines.yaml --steps 10 --rounds 3

Writes `benchmarks/results/model_steps.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from ggr_hf.data.collator import TrainingWindows
from ggr_hf.experiments.compare import load_model_list
from ggr_hf.experiments.config import load_experiment_config
from ggr_hf.experiments.experiment import build_model, prepare_experiment

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "recipes/configs/ml100k_main.yaml"))
    parser.add_argument("--models", default=str(ROOT / "recipes/configs/ml100k_baselines.yaml"))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/model_steps.json"))
    args = parser.parse_args()

    base = load_experiment_config(args.config)
    models = load_model_list(args.models)
    batch_size = base.training.batch_size
    runs = {}
    for name, section in models.items():
        exp = prepare_experiment(base.with_model(section))
        model = build_model(exp, seed=0).train()
        windows = TrainingWindows(
            exp.split, model.config.max_seq_len, model.config.horizon, user_groups=exp.priors.user_groups
        )
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(windows), generator=g).tolist()
        batches = [
            windows.collate([windows[i] for i in order[j : j + batch_size]])
            for j in range(0, args.steps * batch_size, batch_size)
        ]
        optimizer = torch.optim.AdamW(model.parameters(), lr=base.training.learning_rate)
        runs[name] = {"model": model, "batches": batches, "optimizer": optimizer, "times": []}

    def step(run: dict, i: int) -> None:
        out = run["model"](**run["batches"][i], negative_seeds=[i])
        out.loss.backward()
        run["optimizer"].step()
        run["optimizer"].zero_grad(set_to_none=True)

    for run in runs.values():  # warm-up: first-call allocations and caches
        step(run, 0)
    for _ in range(args.rounds):
        for run in runs.values():
            start = time.perf_counter()
            for i in range(args.steps):
                step(run, i)
            run["times"].append((time.perf_counter() - start) / args.steps)

    first = next(iter(runs))
    ref = statistics.median(runs[first]["times"])
    rows = []
    for name, run in runs.items():
        median = statistics.median(run["times"])
        rows.append(
            {
                "model": name,
                "seconds_per_step": median,
                "ratio": median / ref,
                "parameters": sum(p.numel() for p in run["model"].parameters()),
                "rounds": run["times"],
            }
        )
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "batch_size": batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "rows": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"median s/step over {args.rounds} rounds of {args.steps} steps, batch {batch_size}, {result['machine']}"
    )
    print(f"| model | s/step | ratio to {first} | params |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['seconds_per_step']:.3f} | {r['ratio']:.2f}x | {r['parameters'] / 1e3:.0f}k |"
        )


if __name__ == "__main__":
    main()
