"""One experiment end to end: data set by name -> split -> priors -> model -> training loop -> metrics.

The wiring the training loop does not know: the data set comes from the data registry, the priors
from `ggr_hf.priors.builder`, the model from its config (`GGRConfig` or a baseline's, by `model_type`); the loop gets the training windows and a
validation callback; the main process then evaluates on test and writes `results.json`, the
experiment file and the model card.

The output folder cannot lie about the run (see `ggr_hf.hub.runs`): a run refuses a non-empty
folder unless `training.overwrite_output_dir` (`--overwrite`: the earlier run's files are removed
first) or `training.resume_from_checkpoint` (`--resume`) is set; it marks the folder as started
before training, and publishes `results.json`, `best/ggr_experiment.json` and the card followed, last,
by the completeness marker `run_complete.json` once it completes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed

from ggr_hf.configuration_recommender import RecommenderConfig
from ggr_hf.data.collator import TrainingWindows
from ggr_hf.data.registry import load_dataset_bundle
from ggr_hf.data.schema import RecDataBundle
from ggr_hf.data.splits import SplitData, temporal_split
from ggr_hf.errors import GGRConfigError, GGRInputError
from ggr_hf.evaluation.evaluator import evaluate_model, evaluate_popularity
from ggr_hf.experiments.config import DataArguments, ExperimentConfig
from ggr_hf.hub.card import build_model_card
from ggr_hf.hub.io import model_files, write_text_atomic
from ggr_hf.hub.runs import RUN_COMPLETE_NAME, RUN_STARTED_NAME, finish_run, start_run
from ggr_hf.modeling_recommender import RecommenderMixin
from ggr_hf.priors.builder import BuiltPriors, apply_priors, build_priors, item_category_matrix
from ggr_hf.recommenders import build_recommender, build_recommender_config
from ggr_hf.training.arguments import GGRTrainingArguments
from ggr_hf.training.checkpoints import CHECKPOINT_DIR
from ggr_hf.training.loop import EVAL_LOG_NAME, TrainResult, build_accelerator, train

logger = logging.getLogger(__name__)

EXPERIMENT_FILE = "ggr_experiment.json"
RESULTS_FILE = "results.json"
BEST_DIR = "best"
# What a run writes into its output folder, removed by `--overwrite` before a new run starts (the
# completeness marker first); `.best.tmp-*` are the staging folders of a save that was killed.
RUN_OUTPUTS = (RUN_COMPLETE_NAME, BEST_DIR, RESULTS_FILE, EVAL_LOG_NAME, CHECKPOINT_DIR, RUN_STARTED_NAME)

__all__ = [
    "BEST_DIR",
    "EXPERIMENT_FILE",
    "Experiment",
    "ExperimentRun",
    "begin_run",
    "build_model",
    "check_output_dir",
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
    model_config: RecommenderConfig

    def evaluate(self, model: RecommenderMixin, split: str = "validation", **kwargs) -> dict[str, Any]:
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
    model: RecommenderMixin


def load_data(args: DataArguments) -> RecDataBundle:
    """Opens the data set named by `args.dataset` through the data registry; `max_users` keeps the
    first users only."""
    options = dict(args.synthetic) if args.dataset == "synthetic" else {}
    if args.timestamp_unit is not None:
        options["timestamp_unit"] = args.timestamp_unit
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
    model_fields = dict(cfg.model)
    if priors.specs:
        # Resolved (with each prior's group names); a model type without priors never gets the key.
        model_fields["priors"] = priors.specs
    config = build_recommender_config(model_fields, bundle.num_items)
    cats = item_category_matrix(bundle, cfg.data.category_field) if cfg.data.category_field else None
    exp = Experiment(bundle, split, priors, cats, config)
    _check_selection_metric_on_data(exp, cfg.training.selection_metric)
    return exp


def _check_selection_metric_on_data(exp: Experiment, metric: str) -> None:
    """The config reader checks the metric name against the evaluator; some metrics also depend on
    the data (event types, a cutoff larger than the catalogue). Asked of the evaluator on one
    validation user, so a run never trains an epoch only to miss its selection metric."""
    if len(exp.split.validation) == 0:
        return
    computed = evaluate_popularity(
        exp.split.item_popularity(), exp.split.validation.subset(1), item_categories=exp.item_categories
    )
    if metric not in computed:
        names = sorted(k for k, v in computed.items() if isinstance(v, (int, float)))
        raise GGRConfigError(
            f"training.selection_metric {metric!r} is not computed on the data set {exp.bundle.name!r} "
            f"({exp.bundle.num_items} items, event types: {bool(exp.bundle.event_names)}); choose one of {names}"
        )


def build_model(exp: Experiment, seed: int | None = None) -> RecommenderMixin:
    """Builds the model of the experiment's config (GGR with its priors, or a baseline: the class
    comes from `model_type`); `seed` makes the initial weights reproducible."""
    if seed is not None:
        set_seed(seed)
    model = build_recommender(exp.model_config)
    apply_priors(model, exp.priors)
    model.prepare_from_items(exp.bundle.items)
    return model


def train_model(
    model: RecommenderMixin,
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


def check_output_dir(args: GGRTrainingArguments) -> None:
    """Refuses an output folder a run would mix its files into; reads only (every process may call it).

    A new run needs `args.output_dir` missing or empty, unless `overwrite_output_dir` (the earlier
    run's files are removed by [`begin_run`]) or `resume_from_checkpoint` (the run continues there).

    Raises:
        `GGRInputError`: the folder is a file, or is not empty (naming it, what it holds and the flags).
    """
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise GGRInputError(
            f"training.output_dir {out} is a file, not a folder: pass a folder (--output-dir) for the run"
        )
    if args.overwrite_output_dir or args.resume_from_checkpoint or not out.is_dir():
        return
    entries = sorted(p.name for p in out.iterdir())
    if entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise GGRInputError(
            f"training.output_dir {out} is not empty (it holds {shown}): pass --overwrite "
            "(training.overwrite_output_dir: true) to replace the earlier run, --resume "
            "(training.resume_from_checkpoint) to continue it, or choose another folder"
        )


def _remove_run_outputs(out: Path) -> None:
    """Removes an earlier run's files from `out`: the completeness marker first (from then on the
    folder reads as unfinished), then the rest, each moved by one rename into a hidden folder that
    is deleted last, so a crash leaves no mixture that looks finished."""
    (out / RUN_COMPLETE_NAME).unlink(missing_ok=True)
    trash = Path(tempfile.mkdtemp(prefix=".ggr-old-run-", dir=out))
    for path in [*(out / name for name in RUN_OUTPUTS), *out.glob(f".{BEST_DIR}.tmp-*")]:
        if path.exists() or path.is_symlink():
            path.rename(trash / path.name)
    shutil.rmtree(trash)
    left = sorted(p.name for p in out.iterdir())
    if left:
        logger.info("--overwrite kept files a run does not write in %s: %s", out, left)


def begin_run(args: GGRTrainingArguments) -> None:
    """Prepares `args.output_dir` for a run (on the main process only, after [`check_output_dir`]):
    with `overwrite_output_dir` the earlier run's files are removed, then the folder is marked as
    holding a run in progress (`run_started.json`; a resumed run loses its completeness marker)."""
    out = Path(args.output_dir)
    if args.overwrite_output_dir and out.is_dir():
        _remove_run_outputs(out)
    start_run(out)


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
    # Every process checks the folder before the main one writes to it.
    check_output_dir(cfg.training)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        begin_run(cfg.training)
    accelerator.wait_for_everyone()
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
    """Publishes the run: `results.json` in the output folder; beside the best model the experiment
    file (what `ggr-hf evaluate` / `recommend` need to find the data again) and, with test metrics,
    the card; then, last, `run_complete.json` with the hashes of the model's files, the experiment
    file and `results.json`. Metric and experiment files are written to a temporary name and moved."""
    out_dir = Path(cfg.training.output_dir)
    published = [write_text_atomic(out_dir / RESULTS_FILE, json.dumps(out, indent=2))]
    best = out_dir / BEST_DIR
    if cfg.training.save_best and best.is_dir():
        published.append(write_text_atomic(best / EXPERIMENT_FILE, json.dumps(cfg.to_dict(), indent=2)))
        published.extend(model_files(best))
        if "test" in out:
            metrics = {k: v for k, v in out["test"].items() if k != "head_share@10"}
            metrics.update(split="test", split_k=cfg.data.split_k)
            build_model_card(
                best, metrics=metrics, training_args=cfg.to_dict(), dataset_name=cfg.data.dataset
            )
    finish_run(out_dir, published)


def launch_experiment(cfg: ExperimentConfig, test: bool = True) -> tuple[dict[str, Any], bool]:
    """`run_experiment` as the entry point of a run on one process or many (`accelerate launch`,
    `torchrun`): builds the accelerator, loads the data main process first (it may fill a cache),
    trains and evaluates, and always ends the run, which destroys the process group (without it a
    multi-process run exits with SIGABRT).

    Returns:
        `tuple[dict, bool]`: `run_experiment`'s result (the same on every process) and whether this
        process is the main one (the one that should print).
    """
    # Before the data is loaded: a folder the run may not write to is reported at once.
    check_output_dir(cfg.training)
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
