"""The accelerate training loop: a model, its training windows, the arguments and an evaluation callback.

The loop knows nothing of data-set names, priors or model cards (that is `ggr_hf.experiments`). It
uses accelerate's own pieces: the seedable sampler (`DataLoaderConfiguration(use_seedable_sampler=
True)`) for an epoch order that depends only on (seed, epoch), the trigger (`set_trigger` /
`check_trigger`) for early stopping, `ProjectConfiguration(automatic_checkpoint_naming=True)` for
`output_dir/checkpoints/checkpoint_N`, and `save_state` / `load_state` for resumable checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    DistributedType,
    ProjectConfiguration,
    set_seed,
)
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup
from transformers.utils import logging as transformers_logging

from ggr_hf.hub.loading import save_model
from ggr_hf.training.arguments import GGRTrainingArguments

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
TRAINER_STATE_NAME = "trainer_state.json"
BEST_STATE_NAME = "best_model.safetensors"
EVAL_LOG_NAME = "eval_log.jsonl"

EvaluateFn = Callable[[torch.nn.Module], dict[str, Any]]

__all__ = [
    "CHECKPOINT_DIR",
    "EvaluateFn",
    "TrainResult",
    "build_accelerator",
    "derive_seed",
    "latest_checkpoint",
    "train",
]


@dataclass
class TrainResult:
    """What `train` returns.

    Args:
        best_metric: the best validation value of `args.selection_metric` (-inf without evaluation).
        best_epoch: the epoch (1-based) that reached it (-1 without evaluation).
        steps: optimiser steps taken, counting those before a resume.
        seconds: wall time of this call.
        history: one record per evaluation (`epoch`, `step`, `train_loss`, and on the main process
            `validation`, the callback's metrics).
        model: the model holding the best weights on the main process: the one passed to `train`, or
            a full copy when the weights were sharded (FSDP, ZeRO-3).
    """

    best_metric: float
    best_epoch: int
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    model: torch.nn.Module | None = None


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (e.g. seed, step), the same in every process."""
    state = np.random.SeedSequence([int(k) & (2**64 - 1) for k in keys]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def build_accelerator(args: GGRTrainingArguments) -> Accelerator:
    """The `Accelerator` for `args`; the launcher (`accelerate launch --config_file ...`) decides the
    distribution.

    `args.mixed_precision` wins when it is not `"no"`; otherwise the launcher's setting applies (e.g.
    bf16 in `recipes/accelerate_configs/deepspeed_zero2.yaml`). A head with no compatible target in
    a process's batch gets no gradient in that step, so DDP must look for unused parameters.

    The seedable sampler orders epoch e by the seed `data_seed + e`. Consecutive training seeds
    would then share orders (seed 1's first epoch is seed 0's second), so the data seed is mixed
    from the training seed.
    """
    return Accelerator(
        cpu=args.cpu,
        mixed_precision=None if args.mixed_precision == "no" else args.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True, data_seed=derive_seed(args.seed)
        ),
        project_config=ProjectConfiguration(
            project_dir=str(args.output_dir),
            automatic_checkpoint_naming=True,
            total_limit=args.save_total_limit,
        ),
    )


def _checkpoint_number(path: Path) -> int | None:
    match = re.fullmatch(r"checkpoint_(\d+)", path.name)
    return int(match.group(1)) if match else None


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under `output_dir/checkpoints` (`checkpoint_N`, highest N).

    accelerate's `load_state()` would take the highest N even when that save was interrupted; a
    checkpoint is complete once `trainer_state.json`, written last, is there.
    """
    root = Path(output_dir) / CHECKPOINT_DIR
    done = [
        d
        for d in (root.iterdir() if root.is_dir() else [])
        if _checkpoint_number(d) is not None and (d / TRAINER_STATE_NAME).is_file()
    ]
    return max(done, key=_checkpoint_number, default=None)


def _resolve_checkpoint(value: str, output_dir: Path) -> Path:
    path = latest_checkpoint(output_dir) if value == "latest" else Path(value)
    if path is None:
        raise FileNotFoundError(
            f"resume_from_checkpoint=latest: no checkpoint under {output_dir / CHECKPOINT_DIR}"
        )
    if not (path / TRAINER_STATE_NAME).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {TRAINER_STATE_NAME})")
    return path


def _is_sharded(accelerator: Accelerator) -> bool:
    """True when no process holds all the weights (FSDP, DeepSpeed ZeRO-3)."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        plugin = accelerator.state.deepspeed_plugin
        return plugin is not None and plugin.zero_stage == 3
    return False


def _scheduler_step_multiplier(accelerator: Accelerator) -> int:
    """How many times accelerate steps the LR scheduler per optimiser step.

    `AcceleratedScheduler` steps it once per process (it assumes a schedule written for the data
    size, not the step count) unless batches are split; DeepSpeed's engine steps it once.
    """
    if accelerator.distributed_type == DistributedType.DEEPSPEED or accelerator.split_batches:
        return 1
    return accelerator.num_processes


def _check_accelerator(accelerator: Accelerator, args: GGRTrainingArguments) -> None:
    if not accelerator.dataloader_config.use_seedable_sampler:
        raise ValueError("train needs an Accelerator with the seedable sampler: use build_accelerator(args)")
    project = accelerator.project_configuration
    wants_checkpoints = args.checkpoint_every_epochs > 0 or args.resume_from_checkpoint
    if wants_checkpoints and (
        not project.automatic_checkpoint_naming
        or Path(project.project_dir or "").resolve() != Path(args.output_dir).resolve()
    ):
        raise ValueError(
            "checkpoints need an Accelerator whose project_dir is training.output_dir with automatic "
            "checkpoint naming: use build_accelerator(args)"
        )


@contextlib.contextmanager
def _quiet_saves() -> Iterator[None]:
    """Silences transformers' "Writing model shards" bar: one per save is noise in a training run."""
    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()


def _save_best(model: torch.nn.Module, target: Path) -> None:
    """The best model so far, saved atomically (never half-written); the card is written once at the
    end of the run, not at every improvement."""
    with _quiet_saves():
        save_model(model, target, model_card=False)


def train(
    model: torch.nn.Module,
    train_dataset: Dataset,
    args: GGRTrainingArguments,
    evaluate: EvaluateFn,
    *,
    data_collator: Callable[[list], dict[str, torch.Tensor]] | None = None,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Trains `model` on `train_dataset`, selecting the best epoch with `evaluate`.

    Runs unchanged on one process or under `accelerate launch` / `torchrun` (DDP, FSDP, DeepSpeed):
    `args.batch_size` windows per process and step, negatives shared across processes
    (`args.gather_negatives`), per-process losses weighted so the gradient is that of the global
    batch (`args.pair_weighted_loss`). Only the main process evaluates and writes; the others wait.

    Writes `output_dir/eval_log.jsonl` (one line per evaluation), with `save_best` the best model to
    `output_dir/best`, and with `checkpoint_every_epochs` resumable states to
    `output_dir/checkpoints/checkpoint_N`. On return the main process's model (`TrainResult.model`)
    holds the best weights; the other processes' copies hold the last ones.

    Args:
        model: a GGR model: its forward takes a collated batch plus `negative_seeds` and
            `gather_negatives`, and returns `loss` and `num_pairs` (the batch's training pairs).
        train_dataset: the training windows (map-style; shuffled per epoch).
        args: the loop's settings.
        evaluate: called on the main process with the unwrapped model in eval mode; returns the
            validation metrics, which must hold `args.selection_metric`.
        data_collator: turns a list of windows into the model's batch (input ids `(batch, seq_len)`
            and targets); default: `train_dataset.collate`.
        accelerator: built with `build_accelerator(args)` when not given (needed as is for
            checkpoints: its project folder is `args.output_dir`).
    """
    accelerator = accelerator or build_accelerator(args)
    _check_accelerator(accelerator, args)
    set_seed(args.seed)
    out_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
    world, rank = accelerator.num_processes, accelerator.process_index
    loader = DataLoader(
        train_dataset,
        batch_size=args.batch_size,
        shuffle=True,
        collate_fn=data_collator or train_dataset.collate,
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train_dataset) / (args.batch_size * world))
    total = steps_per_epoch * args.epochs
    if args.max_steps > 0:
        total = min(total, args.max_steps)
    mult = _scheduler_step_multiplier(accelerator)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, int(args.warmup_ratio * total) * mult, total * mult
    )
    # With sharded weights no process can evaluate the training model alone: the main process
    # evaluates a full copy refreshed from the gathered weights.
    sharded = _is_sharded(accelerator)
    replica = copy.deepcopy(model) if sharded and accelerator.is_main_process else None
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    best, best_epoch, best_state, step, start_epoch, stale = -math.inf, -1, None, 0, 0, 0
    history: list[dict] = []
    if args.resume_from_checkpoint:
        ckpt = _resolve_checkpoint(args.resume_from_checkpoint, out_dir)
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / TRAINER_STATE_NAME).read_text())
        start_epoch, step, stale = state["epoch"], state["step"], state["stale"]
        best, best_epoch, history = state["best_metric"], state["best_epoch"], state["history"]
        # `load_state` does not restore the save counter: the next checkpoint follows the loaded one.
        accelerator.project_configuration.iteration = state["checkpoint"] + 1
        if accelerator.is_main_process and (ckpt / BEST_STATE_NAME).is_file():
            best_state = load_file(str(ckpt / BEST_STATE_NAME), device=str(accelerator.device))
        logger.info("resumed from %s at epoch %d, step %d", ckpt, start_epoch, step)

    start = time.time()
    bar = tqdm(
        total=total,
        initial=step,
        desc="train",
        leave=False,
        disable=not (args.progress and accelerator.is_local_main_process),
    )
    gather = args.gather_negatives and world > 1
    for epoch in range(start_epoch, args.epochs):
        if args.max_steps > 0 and step >= args.max_steps:
            break
        model.train()
        # The seedable sampler orders the epoch by (data seed, epoch) alone: a resumed run sees the
        # order the uninterrupted one saw, and every process draws the same permutation, of which
        # process r takes the batches r, r + W, r + 2W, ... (one step of W processes x B windows is
        # one step of one process with W x B windows).
        loader.set_epoch(epoch)
        running, seen = 0.0, 0
        for batch in loader:
            # Negatives depend on (seed, step, rank, draw) only: the same after a resume, and one
            # process with negative_draws = W draws what W gathering processes draw together.
            seeds = [
                derive_seed(args.seed, step, rank * args.negative_draws + j)
                for j in range(args.negative_draws)
            ]
            out = model(**batch, negative_seeds=seeds, gather_negatives=gather)
            loss = out.loss
            # One all-reduce gives the global pair count (for the weighting) and the loss to log.
            stats = torch.tensor(
                [float(out.num_pairs), float(loss.detach()) * out.num_pairs],
                dtype=torch.float64,
                device=accelerator.device,
            )
            stats = accelerator.reduce(stats, reduction="sum") if world > 1 else stats
            n_global = float(stats[0])
            if world > 1 and args.pair_weighted_loss:
                # DDP averages gradients over processes: the mean over the global batch's pairs is
                # sum_r n_r * loss_r / N = mean_r (W * n_r / N) * loss_r.
                loss = loss * (world * out.num_pairs / max(n_global, 1.0))
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            running += float(stats[1]) / max(n_global, 1.0)
            seen += 1
            bar.update(1)
            if step % args.log_every == 0:
                bar.set_postfix(loss=f"{running / seen:.4f}")
            if args.max_steps > 0 and step >= args.max_steps:
                break
        done = args.max_steps > 0 and step >= args.max_steps
        stop = False
        if (epoch + 1) % args.eval_every_epochs == 0 or epoch == args.epochs - 1 or done:
            eval_model = _evaluation_model(accelerator, model, sharded, replica)
            record = {"epoch": epoch + 1, "step": step, "train_loss": running / max(seen, 1)}
            if accelerator.is_main_process:
                # Back to training mode at the next epoch's start; the returned model stays in eval mode.
                metrics = evaluate(eval_model.eval())
                record["validation"] = metrics
                with (out_dir / EVAL_LOG_NAME).open("a") as f:
                    f.write(json.dumps(record) + "\n")
                value = float(metrics[args.selection_metric])
                if value > best:
                    best, best_epoch, stale = value, epoch + 1, 0
                    best_state = {k: v.detach().clone() for k, v in eval_model.state_dict().items()}
                    if args.save_best:
                        _save_best(eval_model, out_dir / "best")
                else:
                    stale += 1
                logger.info("epoch %d: validation %s = %.4f", epoch + 1, args.selection_metric, value)
                if args.patience > 0 and stale >= args.patience:
                    accelerator.set_trigger()
            history.append(record)
            # The main process decides; the trigger's all-reduce makes every process take the branch.
            stop = accelerator.check_trigger()
        if args.checkpoint_every_epochs and (epoch + 1) % args.checkpoint_every_epochs == 0:
            _save_checkpoint(
                accelerator,
                {
                    "epoch": epoch + 1,
                    "step": step,
                    "best_metric": best,
                    "best_epoch": best_epoch,
                    "stale": stale,
                    "history": history,
                    "checkpoint": accelerator.save_iteration,
                },
                best_state,
            )
        if stop or done:
            break
    bar.close()
    final = _evaluation_model(accelerator, model, sharded, replica)
    if best_state is not None and accelerator.is_main_process:
        final.load_state_dict(best_state)
    accelerator.wait_for_everyone()
    return TrainResult(best, best_epoch, step, time.time() - start, history, model=final)


def _evaluation_model(
    accelerator: Accelerator, model: torch.nn.Module, sharded: bool, replica: torch.nn.Module | None
) -> torch.nn.Module:
    """The model the main process evaluates and saves: the unwrapped model, or with sharded weights
    the main process's full replica refreshed from them (gathering them is a collective: every
    process must call this)."""
    if not sharded:
        return accelerator.unwrap_model(model)
    state = accelerator.get_state_dict(model)
    if replica is not None:
        replica.load_state_dict(state)
        return replica
    return accelerator.unwrap_model(model)


def _save_checkpoint(
    accelerator: Accelerator, trainer_state: dict, best_state: dict[str, torch.Tensor] | None
) -> None:
    """Everything a resumed run needs, in `checkpoints/checkpoint_N` (accelerate's naming);
    `trainer_state.json`, written last, marks it complete."""
    path = Path(accelerator.project_dir) / CHECKPOINT_DIR / f"checkpoint_{accelerator.save_iteration}"
    if path.exists():
        # A previous run in the same output folder: overwrite its checkpoint, as a save_pretrained
        # would (accelerate refuses an existing folder).
        if accelerator.is_main_process:
            shutil.rmtree(path)
        accelerator.wait_for_everyone()
    saved = Path(accelerator.save_state())
    if accelerator.is_main_process:
        if best_state is not None:
            save_file({k: v.contiguous() for k, v in best_state.items()}, str(saved / BEST_STATE_NAME))
        (saved / TRAINER_STATE_NAME).write_text(json.dumps(trainer_state, indent=2))
    accelerator.wait_for_everyone()
