"""The accelerate training loop and the end-to-end experiment (data -> priors -> model -> metrics)."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.data.collator import TrainingWindows
from ggr_hf.data.schema import RecDataBundle
from ggr_hf.data.splits import SplitData, temporal_split
from ggr_hf.evaluation.evaluator import evaluate_model, evaluate_popularity
from ggr_hf.modeling_ggr import GGRForRecommendation
from ggr_hf.priors.builder import BuiltPriors, apply_priors, build_priors, item_category_matrix
from ggr_hf.training.config import DataArguments, ExperimentConfig, TrainingArguments

logger = logging.getLogger(__name__)


@dataclass
class Experiment:
    """Everything derived from the data for one experiment."""

    bundle: RecDataBundle
    split: SplitData
    priors: BuiltPriors
    item_categories: torch.Tensor | None
    model_config: GGRConfig


@dataclass
class TrainResult:
    best_metric: float
    best_epoch: int
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)


def load_data(args: DataArguments) -> RecDataBundle:
    """Loads the data set named by `args` (see `DataArguments.dataset`)."""
    if args.dataset == "ml-100k":
        from ggr_hf.data.movielens import load_movielens

        bundle = load_movielens(args.path) if args.path else load_movielens()
    elif args.dataset == "movielens":
        from ggr_hf.data.movielens import load_movielens

        if not args.path:
            raise ValueError("data.path is required with data.dataset: movielens")
        bundle = load_movielens(args.path)
    elif args.dataset == "synthetic":
        from ggr_hf.data.synthetic import make_synthetic

        bundle = make_synthetic(**args.synthetic)
    elif args.dataset == "bundle":
        if not args.path:
            raise ValueError("data.path is required with data.dataset: bundle")
        bundle = RecDataBundle.load_from_disk(args.path)
    else:
        raise ValueError(
            f"data.dataset must be ml-100k, movielens, synthetic or bundle, got {args.dataset!r}"
        )
    if args.max_users:
        bundle = RecDataBundle(
            name=bundle.name,
            sequences=bundle.sequences.select(range(min(args.max_users, len(bundle.sequences)))),
            items=bundle.items,
            users=bundle.users,
            event_names=bundle.event_names,
            dropped=bundle.dropped,
        )
    return bundle


def prepare_experiment(cfg: ExperimentConfig, bundle: RecDataBundle | None = None) -> Experiment:
    """Loads and splits the data, builds the priors and the model config."""
    bundle = bundle if bundle is not None else load_data(cfg.data)
    split = temporal_split(bundle, k=cfg.data.split_k, min_len=cfg.data.min_seq_len)
    priors = build_priors(bundle, cfg.model.get("priors") or [], split)
    model_kwargs = dict(cfg.model)
    model_kwargs["priors"] = priors.specs
    config = GGRConfig(num_items=bundle.num_items, **model_kwargs)
    cats = None
    if cfg.data.category_field:
        cats = item_category_matrix(bundle, cfg.data.category_field)
    return Experiment(bundle, split, priors, cats, config)


def build_model(exp: Experiment, seed: int | None = None) -> GGRForRecommendation:
    """Builds the model with the experiment's priors; `seed` makes the initial weights reproducible."""
    if seed is not None:
        set_seed(seed)
    model = GGRForRecommendation(exp.model_config)
    apply_priors(model, exp.priors)
    return model


def _save_atomic(model: GGRForRecommendation, target: Path) -> None:
    """`save_pretrained` into a temporary folder renamed into place: never a half-written model."""
    from ggr_hf.hub import save_model

    # The card is written once at the end of the run, not at every improvement.
    save_model(model, target, model_card=False)


def train(
    model: GGRForRecommendation,
    exp: Experiment,
    args: TrainingArguments,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Trains `model` on the training split, selecting the best epoch on validation.

    Writes `output_dir/eval_log.jsonl` (one line per evaluation) and, with `save_best`, the best
    model to `output_dir/best`. On return `model` holds the best weights.
    """
    accelerator = accelerator or Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    set_seed(args.seed)
    out_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
    windows = TrainingWindows(
        exp.split, model.config.max_seq_len, model.config.horizon, user_groups=exp.priors.user_groups
    )
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        windows, batch_size=args.batch_size, shuffle=True, collate_fn=windows.collate, generator=generator
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.weight_decay,
    )
    steps_per_epoch = math.ceil(len(windows) / (args.batch_size * accelerator.num_processes))
    total = steps_per_epoch * args.epochs
    if args.max_steps > 0:
        total = min(total, args.max_steps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(args.warmup_ratio * total), total)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    best, best_epoch, best_state, step = -math.inf, -1, None, 0
    history: list[dict] = []
    stale = 0
    start = time.time()
    bar = tqdm(total=total, desc="train", disable=not (args.progress and accelerator.is_local_main_process))
    log_path = out_dir / "eval_log.jsonl"
    for epoch in range(args.epochs):
        model.train()
        running, seen = 0.0, 0
        for batch in loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            running += float(loss.detach())
            seen += 1
            bar.update(1)
            if step % args.log_every == 0:
                bar.set_postfix(loss=f"{running / seen:.4f}")
            if args.max_steps > 0 and step >= args.max_steps:
                break
        done = args.max_steps > 0 and step >= args.max_steps
        if (epoch + 1) % args.eval_every_epochs == 0 or epoch == args.epochs - 1 or done:
            unwrapped = accelerator.unwrap_model(model)
            record = {"epoch": epoch + 1, "step": step, "train_loss": running / max(seen, 1)}
            if accelerator.is_main_process:
                metrics = evaluate_model(
                    unwrapped,
                    exp.split.validation,
                    item_categories=exp.item_categories,
                    batch_size=args.eval_batch_size,
                    user_groups=exp.priors.user_groups,
                )
                record["validation"] = metrics
                with log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                value = float(metrics[args.selection_metric])
                if value > best:
                    best, best_epoch, stale = value, epoch + 1, 0
                    best_state = copy.deepcopy(unwrapped.state_dict())
                    if args.save_best:
                        _save_atomic(unwrapped, out_dir / "best")
                else:
                    stale += 1
                logger.info("epoch %d: validation %s = %.4f", epoch + 1, args.selection_metric, value)
            history.append(record)
            stop = torch.tensor(int(args.patience > 0 and stale >= args.patience), device=accelerator.device)
            stop = accelerator.reduce(stop, reduction="sum")
            if int(stop) > 0:
                break
        if done:
            break
    bar.close()
    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None:
        unwrapped.load_state_dict(best_state)
    accelerator.wait_for_everyone()
    return TrainResult(best, best_epoch, step, time.time() - start, history)


def run_experiment(cfg: ExperimentConfig, exp: Experiment | None = None, test: bool = True) -> dict:
    """Trains one model as `cfg` says and evaluates it (validation-selected) on the test split.

    Returns a dict with `validation`, `test`, `popularity_test`, `train` (steps, seconds, best
    epoch) and the number of parameters.
    """
    exp = exp or prepare_experiment(cfg)
    model = build_model(exp, seed=cfg.training.seed)
    result = train(model, exp, cfg.training)
    out: dict = {
        "train": {"steps": result.steps, "seconds": result.seconds, "best_epoch": result.best_epoch},
        "validation": {cfg.training.selection_metric: result.best_metric},
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "num_heads": model.num_heads,
    }
    if test:
        out["test"] = evaluate_model(
            model,
            exp.split.test,
            item_categories=exp.item_categories,
            batch_size=cfg.training.eval_batch_size,
            user_groups=exp.priors.user_groups,
        )
        out["popularity_test"] = evaluate_popularity(
            exp.split.item_popularity(), exp.split.test, item_categories=exp.item_categories
        )
    out_dir = Path(cfg.training.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(out, indent=2))
    best = out_dir / "best"
    if cfg.training.save_best and best.is_dir():
        # What `ggr-hf evaluate` / `recommend` need to find the data again, and the model card.
        (best / "ggr_experiment.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        if test:
            from ggr_hf.modelcard import build_model_card

            metrics = {**out["test"], "split": "test", "split_k": cfg.data.split_k}
            metrics.pop("head_share@10", None)
            build_model_card(
                best, metrics=metrics, training_args=cfg.to_dict(), dataset_name=cfg.data.dataset
            )
    return out


def set_torch_threads() -> None:
    """Uses every core for intra-op parallelism unless the user chose (OMP_NUM_THREADS)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))


__all__ = [
    "Experiment",
    "TrainResult",
    "build_model",
    "load_data",
    "prepare_experiment",
    "run_experiment",
    "train",
]
