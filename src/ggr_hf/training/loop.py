"""The accelerate training loop: a model, its training windows, the arguments and an evaluation callback.

The loop knows nothing of data-set names, priors or model cards (that is `ggr_hf.experiments`). It
uses accelerate's own pieces: the seedable sampler (`DataLoaderConfiguration(use_seedable_sampler=
True)`) for an epoch order that depends only on (seed, epoch), the trigger (`set_trigger` /
`check_trigger`) for early stopping, `ProjectConfiguration(automatic_checkpoint_naming=True)` for
`output_dir/checkpoints/checkpoint_N`, and `save_state` / `load_state` for resumable checkpoints
(`ggr_hf.training.checkpoints`: written atomically, refused on resume when the run changed).

Numerical faults stop the run: a NaN or infinite loss raises `GGRTrainingError` before the step
touches the weights, and weights that are no longer finite are caught at the end of the epoch,
before they could be evaluated, saved as the best model or checkpointed.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
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
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup
from transformers.utils import logging as transformers_logging

from ggr_hf.errors import GGRCheckpointError, GGRInputError, GGRTrainingError
from ggr_hf.hub.loading import save_model
from ggr_hf.training.arguments import GGRTrainingArguments
from ggr_hf.training.checkpoints import (
    BEST_STATE_NAME,
    CHECKPOINT_DIR,
    check_resumable,
    data_fingerprint,
    latest_checkpoint,
    model_shapes,
    read_trainer_state,
    resolve_checkpoint,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

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

    `args.save_total_limit` is applied by the loop once a new checkpoint is complete, not by
    accelerate's `total_limit` (which deletes the old checkpoints before writing the new one).
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
        ),
    )


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
        raise GGRInputError(
            "train: the accelerator has no seedable sampler (epoch orders would not survive a resume); "
            "use build_accelerator(args)"
        )
    project = accelerator.project_configuration
    wants_checkpoints = args.checkpoint_every_epochs > 0 or args.resume_from_checkpoint
    if wants_checkpoints and (
        not project.automatic_checkpoint_naming
        or Path(project.project_dir or "").resolve() != Path(args.output_dir).resolve()
    ):
        raise GGRInputError(
            f"train: checkpoints need an accelerator whose project_dir is training.output_dir "
            f"({args.output_dir}) with automatic checkpoint naming, got {project.project_dir!r}; use "
            "build_accelerator(args)"
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

    Raises:
        GGRFileNotFoundError: `args.resume_from_checkpoint` names no checkpoint.
        GGRCheckpointError: the checkpoint is an interrupted save, has a damaged file, or was written
            with another model shape, batch size, number of processes or training data.
        GGRTrainingError: a NaN or infinite loss, or weights no longer finite (the step, the epoch and
            the last good checkpoint are named).
    """
    accelerator = accelerator or build_accelerator(args)
    _check_accelerator(accelerator, args)
    set_seed(args.seed)
    out_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
    world, rank = accelerator.num_processes, accelerator.process_index
    collate = data_collator or train_dataset.collate
    # What a checkpoint records so that a resumed run can be refused when it is not the same run.
    identity: dict[str, Any] = {}
    if args.checkpoint_every_epochs or args.resume_from_checkpoint:
        identity = {
            "batch_size": args.batch_size,
            "num_processes": world,
            "model_shapes": model_shapes(model),
            "data": data_fingerprint(train_dataset, collate),
        }
    ckpt, ckpt_state = None, None
    if args.resume_from_checkpoint:
        ckpt = resolve_checkpoint(args.resume_from_checkpoint, out_dir)
        ckpt_state = read_trainer_state(ckpt)
        # Before `load_state`: a changed model, batch size or data set, or a damaged file, is named
        # here rather than met as a size-mismatch dump, or not at all.
        check_resumable(ckpt, ckpt_state, identity)
    loader = DataLoader(train_dataset, batch_size=args.batch_size, shuffle=True, collate_fn=collate)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.weight_decay,
        # The fused kernel updates a tensor in one pass. The default CPU form allocates two temporaries
        # the size of each parameter per step: with a million items, two more item tables at the
        # step's peak, and 14x the time (0.69 s vs 0.05 s for 1.1M x 64; bench_train_scale.py).
        fused=all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) or None,
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
    if ckpt is not None:
        try:
            accelerator.load_state(str(ckpt))
        except Exception as err:
            raise GGRCheckpointError(
                f"{ckpt}: accelerate could not load it ({type(err).__name__}: {err}); resume from an "
                "earlier checkpoint or start a new run"
            ) from err
        start_epoch, step, stale = ckpt_state["epoch"], ckpt_state["step"], ckpt_state["stale"]
        best, best_epoch = ckpt_state["best_metric"], ckpt_state["best_epoch"]
        history = ckpt_state["history"]
        # `load_state` does not restore the save counter: the next checkpoint follows the loaded one.
        accelerator.project_configuration.iteration = ckpt_state["checkpoint"] + 1
        if accelerator.is_main_process:
            if (ckpt / BEST_STATE_NAME).is_file():
                best_state = load_file(str(ckpt / BEST_STATE_NAME), device=str(accelerator.device))
            _trim_eval_log(out_dir / EVAL_LOG_NAME, start_epoch)
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
            batch_loss = float(stats[1]) / max(n_global, 1.0)
            if not math.isfinite(batch_loss):
                # Stop, not skip: the reduced loss is the same on every process, so all stop together,
                # before the step reaches the weights.
                raise GGRTrainingError(
                    f"training loss is {batch_loss} at step {step + 1} (epoch {epoch + 1}); the run stops "
                    f"({_last_good(ckpt)}); lower training.learning_rate or use mixed_precision: no"
                )
            if world > 1 and args.pair_weighted_loss:
                # DDP averages gradients over processes: the mean over the global batch's pairs is
                # sum_r n_r * loss_r / N = mean_r (W * n_r / N) * loss_r.
                loss = loss * (world * out.num_pairs / max(n_global, 1.0))
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            running += batch_loss
            seen += 1
            bar.update(1)
            if step % args.log_every == 0:
                bar.set_postfix(loss=f"{running / seen:.4f}")
            if args.max_steps > 0 and step >= args.max_steps:
                break
        # A finite loss can still leave non-finite weights (an overflowing update): never evaluate,
        # keep as best or checkpoint them.
        if not _weights_finite(accelerator, model):
            raise GGRTrainingError(
                f"the model's weights hold NaN or infinite values after step {step} (epoch {epoch + 1}); "
                f"they are neither saved as the best model nor checkpointed ({_last_good(ckpt)}); lower "
                "training.learning_rate"
            )
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
            ckpt = save_checkpoint(
                accelerator,
                {
                    "epoch": epoch + 1,
                    "step": step,
                    "best_metric": best,
                    "best_epoch": best_epoch,
                    "stale": stale,
                    "history": history,
                    "checkpoint": accelerator.save_iteration,
                    **identity,
                },
                best_state,
                args.save_total_limit,
            )
        if stop or done:
            break
    bar.close()
    final = _evaluation_model(accelerator, model, sharded, replica)
    if best_state is not None and accelerator.is_main_process:
        final.load_state_dict(best_state)
    accelerator.wait_for_everyone()
    return TrainResult(best, best_epoch, step, time.time() - start, history, model=final)


def _last_good(checkpoint: Path | None) -> str:
    if checkpoint is None:
        return "no checkpoint yet"
    return f"last good checkpoint: {checkpoint}, resume from it with --resume {checkpoint}"


def _weights_finite(accelerator: Accelerator, model: torch.nn.Module) -> bool:
    """Whether every process's weights (its shards, when sharded) are finite: a collective, so that
    all processes stop together."""
    bad = any(not bool(torch.isfinite(_local(p)).all()) for p in model.parameters() if p.is_floating_point())
    flag = torch.tensor([float(bad)], device=accelerator.device)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, reduction="sum")
    return float(flag[0]) == 0.0


def _local(parameter: torch.nn.Parameter) -> torch.Tensor:
    """This process's part of a parameter: an FSDP2 DTensor's local shard, a ZeRO-3 partition, or the
    parameter itself (reading these starts no collective)."""
    if hasattr(parameter, "to_local"):
        return parameter.to_local()
    return getattr(parameter, "ds_tensor", parameter)


def _trim_eval_log(path: Path, epoch: int) -> None:
    """Drops the evaluation lines a killed run wrote after the checkpoint it is resumed from (and a
    line cut short by the kill): the resumed run writes them again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if json.loads(line).get("epoch", epoch + 1) <= epoch:
                kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    tmp.replace(path)


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
