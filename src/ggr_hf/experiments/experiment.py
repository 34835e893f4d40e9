"""One experiment end to end: data set by name -> split -> priors -> model -> training loop -> metrics.

The wiring the training loop does not know: the data set comes from the data registry, the priors
from `ggr_hf.priors.builder`, the model from `GGRConfig`; the loop gets the training windows and a
validation callback; the main process then evaluates on test and writes `results.json`, the
experiment file and the model card.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.data.collator import TrainingWindows
from ggr_hf.data.registry import load_dataset_bundle
from ggr_hf.data.schema import RecDataBundle
from ggr_hf.data.splits import SplitData, temporal_split
from ggr_hf.evaluation.evaluator import evaluate_model, evaluate_popularity
from ggr_hf.experiments.config import DataArguments, ExperimentConfig
from ggr_hf.hub.card import build_model_card
from ggr_hf.modeling_ggr import GGRForRecommendation
from ggr_hf.priors.builder import BuiltPriors, apply_priors, build_priors, item_category_matrix
from ggr_hf.training.arguments import GGRTrainingArguments
from ggr_hf.training.loop import TrainResult, build_accelerator, train

logger = logging.getLogger(__name__)

EXPERIMENT_FILE = "ggr_experiment.json"
RESULTS_FILE = "results.json"

__all__ = [
    "EXPERIMENT_FILE",
    "Experiment",
    "ExperimentRun",
    "build_model",
    "launch_experiment",
    "load_data",
    "prepare_experiment",
    "run_experiment",
    "run_experiment_with_model",
    "train_model",
    "write_run_outputs",
]


@dataclass
class Experiment:
    """Everything derived from the data for one experiment.

    Args:
        bundle: the data set (graph-cluster priors add their item column).
        split: the temporal split.
        priors: the resolved priors and their data.
        item_categories: `(num_items + 1, num_categories)` multi-hot categories for the diversity
            metrics, or None without `data.category_field`.
        model_config: the model's configuration.
    """

    bundle: RecDataBundle
    split: SplitData
    priors: BuiltPriors
    item_categories: torch.Tensor | None
    model_config: GGRConfig

    def evaluate(self, model: GGRForRecommendation, split: str = "validation", **kwargs) -> dict[str, Any]:
        """Full-ranking metrics of `model` on `split` (`"validation"` or `"test"`); `kwargs` go to
        `evaluate_model` (e.g. `fusion`, `batch_size`)."""
        return evaluate_model(
            model,
            getattr(self.split, split),
            item_categories=self.item_categories,
            user_groups=self.priors.user_groups,
            **kwargs,
        )

    def popularity(self, split: str = "test") -> dict[str, Any]:
        """The most-popular floor on `split` (training popularity, history suppressed)."""
        return evaluate_popularity(
            self.split.item_popularity(), getattr(self.split, split), item_categories=self.item_categories
        )


@dataclass
class ExperimentRun:
    """One trained model: its metrics (`run_experiment`'s dict) and the model, holding the
    validation-selected weights on the main process."""

    result: dict[str, Any]
    model: GGRForRecommendation


def load_data(args: DataArguments) -> RecDataBundle:
    """Opens the data set named by `args.dataset` through the data registry; `max_users` keeps the
    first users only."""
    options = args.synthetic if args.dataset == "synthetic" else {}
    bundle = load_dataset_bundle(args.dataset, args.path, **options)
    if args.max_users:
        kept = bundle.sequences.select(range(min(args.max_users, len(bundle.sequences))))
        bundle = dataclasses.replace(bundle, sequences=kept)
    return bundle


def prepare_experiment(cfg: ExperimentConfig, bundle: RecDataBundle | None = None) -> Experiment:
    """Loads and splits the data, builds the priors and the model config."""
    bundle = bundle if bundle is not None else load_data(cfg.data)
    split = temporal_split(bundle, k=cfg.data.split_k, min_len=cfg.data.min_seq_len)
    priors = build_priors(bundle, cfg.model.get("priors") or [], split)
    for name, clusters in priors.item_clusters.items():
        # Clusters learnt from data become an ordinary item column (string group names), usable by
        # metrics (`data.category_field`) and by later item priors.
        values = next(p["values"] for p in priors.specs if p["name"] == name)
        column = [values[c] for c in clusters[1:].tolist()]
        items = bundle.items.remove_columns([name]) if name in bundle.items.column_names else bundle.items
        bundle = dataclasses.replace(bundle, items=items.add_column(name, column))
    config = GGRConfig(num_items=bundle.num_items, **{**cfg.model, "priors": priors.specs})
    cats = item_category_matrix(bundle, cfg.data.category_field) if cfg.data.category_field else None
    return Experiment(bundle, split, priors, cats, config)


def build_model(exp: Experiment, seed: int | None = None) -> GGRForRecommendation:
    """Builds the model with the experiment's priors; `seed` makes the initial weights reproducible."""
    if seed is not None:
        set_seed(seed)
    model = GGRForRecommendation(exp.model_config)
    apply_priors(model, exp.priors)
    model.backbone.prepare_from_items(exp.bundle.items)
    return model


def train_model(
    model: GGRForRecommendation,
    exp: Experiment,
    args: GGRTrainingArguments,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """The training loop on the experiment's training windows, selecting on validation."""
    windows = TrainingWindows(
        exp.split, model.config.max_seq_len, model.config.horizon, user_groups=exp.priors.user_groups
    )
    return train(
        model,
        windows,
        args,
        lambda m: exp.evaluate(m, "validation", batch_size=args.eval_batch_size),
        data_collator=windows.collate,
        accelerator=accelerator,
    )


def run_experiment(
    cfg: ExperimentConfig,
    exp: Experiment | None = None,
    test: bool = True,
    accelerator: Accelerator | None = None,
) -> dict[str, Any]:
    """Trains one model as `cfg` says and evaluates it (validation-selected) on the test split.

    Under several processes every process trains; only the main one evaluates on the test split
    and writes `results.json`, the experiment file and the model card, and every process returns
    its result. Without an `accelerator`, one is built from `cfg.training` (`build_accelerator`); the
    caller of a multi-process run should end it with `accelerator.end_training()`.

    Returns:
        `dict` with `validation`, `test` and `popularity_test` (with `test`), `train` (steps,
        seconds, best epoch), `num_parameters` and `num_heads`.
    """
    return run_experiment_with_model(cfg, exp, test, accelerator).result


def run_experiment_with_model(
    cfg: ExperimentConfig,
    exp: Experiment | None = None,
    test: bool = True,
    accelerator: Accelerator | None = None,
) -> ExperimentRun:
    """`run_experiment`, also returning the trained model (for further evaluations)."""
    # Created here, not in `train`, so that under a launcher only the main process writes below.
    accelerator = accelerator or build_accelerator(cfg.training)
    exp = exp or prepare_experiment(cfg)
    model = build_model(exp, seed=cfg.training.seed)
    trained = train_model(model, exp, cfg.training, accelerator=accelerator)
    model = trained.model or model
    out: dict[str, Any] = {
        "train": {"steps": trained.steps, "seconds": trained.seconds, "best_epoch": trained.best_epoch},
        "validation": {cfg.training.selection_metric: trained.best_metric},
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "num_heads": model.num_heads,
    }
    if accelerator.is_main_process:
        if test:
            out["test"] = exp.evaluate(model, "test", batch_size=cfg.training.eval_batch_size)
            out["popularity_test"] = exp.popularity("test")
        write_run_outputs(cfg, out)
    if accelerator.num_processes > 1:
        # The other processes waited for the test metrics; they return the main process's result.
        holder = [out]
        broadcast_object_list(holder, from_process=0)
        out = holder[0]
    return ExperimentRun(out, model)


def write_run_outputs(cfg: ExperimentConfig, out: dict[str, Any]) -> None:
    """`results.json` in the output folder; beside the best model the experiment file (what
    `ggr-hf evaluate` / `recommend` need to find the data again) and, with test metrics, the card."""
    out_dir = Path(cfg.training.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULTS_FILE).write_text(json.dumps(out, indent=2))
    best = out_dir / "best"
    if not (cfg.training.save_best and best.is_dir()):
        return
    (best / EXPERIMENT_FILE).write_text(json.dumps(cfg.to_dict(), indent=2))
    if "test" in out:
        metrics = {k: v for k, v in out["test"].items() if k != "head_share@10"}
        metrics.update(split="test", split_k=cfg.data.split_k)
        build_model_card(best, metrics=metrics, training_args=cfg.to_dict(), dataset_name=cfg.data.dataset)


def launch_experiment(cfg: ExperimentConfig, test: bool = True) -> tuple[dict[str, Any], bool]:
    """`run_experiment` as the entry point of a run on one process or many (`accelerate launch`,
    `torchrun`): builds the accelerator, loads the data main process first (it may fill a cache),
    trains and evaluates, and always ends the run, which destroys the process group (without it a
    multi-process run exits with SIGABRT).

    Returns:
        `tuple[dict, bool]`: `run_experiment`'s result (the same on every process) and whether this
        process is the main one (the one that should print).
    """
    accelerator = build_accelerator(cfg.training)
    logger.info(
        "%d process(es), %s, %d windows per process and step",
        accelerator.num_processes,
        accelerator.distributed_type,
        cfg.training.batch_size,
    )
    try:
        with accelerator.main_process_first():
            exp = prepare_experiment(cfg)
        out = run_experiment(cfg, exp=exp, test=test, accelerator=accelerator)
        return out, accelerator.is_main_process
    finally:
        accelerator.end_training()
