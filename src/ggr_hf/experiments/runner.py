"""The multi-seed runner `compare` and `ablate` share: one experiment trained once per seed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ggr_hf.experiments.config import ExperimentConfig
from ggr_hf.experiments.experiment import (
    Experiment,
    ExperimentRun,
    check_output_dir,
    run_experiment_with_model,
)

__all__ = ["SeedRun", "check_seed_folders", "run_seeds", "slug"]

Report = Callable[[str], None]


@dataclass
class SeedRun:
    """One seed's run: its seed, its result and model (`ExperimentRun`) and its wall time."""

    seed: int
    run: ExperimentRun
    seconds: float


def slug(name: str) -> str:
    """A folder name for a variant name: `HSTU + item:genres` -> `hstu___item_genres`."""
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def _seed_configs(
    cfg: ExperimentConfig, seeds: list[int], output_dir: str | Path
) -> list[tuple[int, ExperimentConfig]]:
    return [
        (seed, cfg.replace(training={"seed": seed, "output_dir": str(Path(output_dir) / f"seed{seed}")}))
        for seed in seeds
    ]


def check_seed_folders(cfg: ExperimentConfig, seeds: list[int], output_dir: str | Path) -> None:
    """Checks every seed's run folder before anything trains (see [`check_output_dir`]): a recipe
    of many variants refuses an occupied folder at once, not after training the variants before it."""
    for _, scfg in _seed_configs(cfg, seeds, output_dir):
        check_output_dir(scfg.training)


def run_seeds(
    cfg: ExperimentConfig,
    exp: Experiment,
    seeds: list[int],
    output_dir: str | Path,
    *,
    label: str,
    report: Report | None = None,
) -> Iterator[SeedRun]:
    """Trains `cfg` once per seed on the prepared `exp`, each run in `output_dir/seed{seed}`, and
    evaluates it on test; yields each run as it ends (so the caller may evaluate the model further
    before the next one is trained).

    Every seed's folder is checked before the first one trains: a folder holding an earlier run is
    refused unless `cfg.training.overwrite_output_dir` (`--set training.overwrite_output_dir=true`)
    or `resume_from_checkpoint`.

    Args:
        cfg: the experiment; `training.seed` and `training.output_dir` are set per run.
        exp: the data, split and priors, shared by the seeds.
        seeds: training seeds.
        output_dir: parent of the runs' folders.
        label: names the runs in the report lines.
        report: called with one line per finished run (its test Recall@10 and NDCG@10), e.g. `print`.

    Raises:
        `GGRInputError`: a seed's folder is not empty (see [`check_output_dir`]).
    """
    configs = _seed_configs(cfg, seeds, output_dir)
    check_seed_folders(cfg, seeds, output_dir)
    for seed, scfg in configs:
        start = time.time()
        run = run_experiment_with_model(scfg, exp=exp)
        seconds = time.time() - start
        if report is not None:
            test = run.result["test"]
            report(
                f"{label} seed {seed}: test recall@10 {test['recall@10']:.4f} "
                f"ndcg@10 {test['ndcg@10']:.4f} ({seconds:.0f} s)"
            )
        yield SeedRun(seed, run, seconds)
