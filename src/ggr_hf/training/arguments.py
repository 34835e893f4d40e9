"""The training loop's settings: the `training:` section of an experiment YAML.

Named `GGRTrainingArguments` so that it does not shadow `transformers.TrainingArguments`. Light on
purpose (no torch): the experiment config imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ggr_hf.errors import GGRConfigError

__all__ = ["GGRTrainingArguments"]


@dataclass
class GGRTrainingArguments:
    """The training loop's settings (AdamW, cosine schedule with warm-up, model selection).

    Args:
        output_dir: where metrics JSON files and the best model (`best/`) are written.
        overwrite_output_dir: allow a new run into an output folder that already holds a run
            (`ggr-hf train --overwrite`); cannot be combined with `resume_from_checkpoint`.
        epochs: passes over the training windows.
        max_steps: stop after this many optimiser steps (-1: no limit).
        batch_size: training windows per step (per process).
        eval_batch_size: users per evaluation batch.
        learning_rate, weight_decay, adam_beta1, adam_beta2: AdamW (HSTU reference: 1e-3, betas 0.9/0.98).
        warmup_ratio: share of the steps with linear warm-up before the cosine decay.
        seed: seeds Python, numpy and torch (data order, negatives, dropout).
        eval_every_epochs: validation frequency.
        patience: stop after this many evaluations without improvement (0: never).
        selection_metric: validation metric that picks the best checkpoint (the paper: NDCG@10).
        mixed_precision: `"no"`, `"bf16"` or `"fp16"` (accelerate).
        cpu: force the CPU even when a GPU is present.
        log_every: steps between loss logs.
        save_best: write the best model with `save_pretrained` to `output_dir/best`.
        progress: show progress bars.
        gather_negatives: with several processes, each draws its own `model.num_negatives` (times
            `negative_draws`) and every process scores the union (all-gather), as the release does:
            W processes contrast each pair with W times as many negatives. Off: each process scores
            only its own draw. No effect with one process.
        negative_draws: independent draws of `model.num_negatives` negatives per process and step,
            concatenated. Negatives come from generators seeded by (seed, step, draw index), so one
            process with `negative_draws: W` scores exactly the negatives that W gathering processes
            with `negative_draws: 1` score (the single-process reference of a distributed run).
        pair_weighted_loss: with several processes, scale each process's loss by its share of the
            global batch's (position, offset, head) pairs, so that DDP's average of the gradients is
            the gradient of the loss over the global batch (exact with one offset, `horizon == 1`, and
            `prior_weighting: frequency`, where the loss is a mean over pairs). Off: the plain average
            of per-process means, which over-weights the pairs of a process with fewer of them.
        checkpoint_every_epochs: save the full training state (model, optimiser, scheduler, RNG
            states, data position, best model so far) with `accelerator.save_state` to
            `output_dir/checkpoints/checkpoint_N` (accelerate's automatic naming: N counts the saves
            of the run from 0) every this many epochs (0: never).
        save_total_limit: keep only the newest this many checkpoints, deleting older ones (None: keep
            all; accelerate's `ProjectConfiguration.total_limit`).
        resume_from_checkpoint: a folder written by `checkpoint_every_epochs`, or `"latest"` (the
            newest complete one under `output_dir/checkpoints`; `ggr-hf train --resume [latest|PATH]`):
            training continues with the next epoch, as the uninterrupted run would have (same data
            order, negatives, schedule and RNG states). Refused, before anything is loaded
            (`GGRCheckpointError` naming the file and the reason), when the checkpoint was written
            with another `batch_size`, number of processes, model shape or training data (its
            `trainer_state.json` records them), or when one of its files is truncated or unreadable.

    Numerical faults stop the run; no batch is skipped. A NaN or infinite training loss raises
    `GGRTrainingError` naming the step, the epoch and the last good checkpoint (or "no checkpoint
    yet") before that step updates the weights; weights that became NaN or infinite are caught at
    the end of the epoch, before they are evaluated, saved as the best model or checkpointed. Lower
    `learning_rate` (or leave `mixed_precision` at `"no"`) and resume from the named checkpoint.
    """

    output_dir: str = "outputs/run"
    overwrite_output_dir: bool = False
    epochs: int = 20
    max_steps: int = -1
    batch_size: int = 64
    eval_batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    warmup_ratio: float = 0.1
    seed: int = 0
    eval_every_epochs: int = 1
    patience: int = 0
    selection_metric: str = "ndcg@10"
    mixed_precision: str = "no"
    cpu: bool = False
    log_every: int = 50
    save_best: bool = True
    progress: bool = True
    # Distributed training and checkpoints (docs/distributed.md).
    gather_negatives: bool = True
    negative_draws: int = 1
    pair_weighted_loss: bool = True
    checkpoint_every_epochs: int = 0
    save_total_limit: int | None = None
    resume_from_checkpoint: str | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "eval_every_epochs", "negative_draws"):
            if int(getattr(self, name)) < 1:
                raise GGRConfigError(f"training.{name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.log_every) < 1:
            # The loop logs every `step % log_every == 0`: 0 would divide by zero mid-run.
            raise GGRConfigError(f"training.log_every must be >= 1, got {self.log_every!r}")
        if int(self.patience) < 0:
            raise GGRConfigError(
                f"training.patience must be >= 0 (0: never stop early), got {self.patience!r}"
            )
        if int(self.max_steps) != -1 and int(self.max_steps) < 1:
            raise GGRConfigError(f"training.max_steps must be -1 (no limit) or >= 1, got {self.max_steps!r}")
        if not str(self.output_dir).strip():
            # An empty path is the working directory: the run would write beside whatever is there.
            raise GGRConfigError(f"training.output_dir must name a folder, got {self.output_dir!r}")
        if int(self.checkpoint_every_epochs) < 0:
            raise GGRConfigError(
                f"training.checkpoint_every_epochs must be >= 0, got {self.checkpoint_every_epochs!r}"
            )
        if self.save_total_limit is not None and int(self.save_total_limit) < 1:
            raise GGRConfigError(
                f"training.save_total_limit must be >= 1 or null, got {self.save_total_limit!r}"
            )
        if not 0 <= float(self.warmup_ratio) < 1:
            raise GGRConfigError(f"training.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if float(self.learning_rate) <= 0:
            raise GGRConfigError(f"training.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.overwrite_output_dir and self.resume_from_checkpoint:
            raise GGRConfigError(
                "training.overwrite_output_dir and training.resume_from_checkpoint "
                f"({self.resume_from_checkpoint!r}) exclude each other: a resumed run continues the "
                "folder's run; drop one (--overwrite or --resume)"
            )
        if self.mixed_precision is False:
            # YAML reads a bare `no` (as in `--set training.mixed_precision=no`) as false.
            object.__setattr__(self, "mixed_precision", "no")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise GGRConfigError(
                f"training.mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}"
            )
