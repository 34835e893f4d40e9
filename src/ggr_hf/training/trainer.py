"""The accelerate training loop and the end-to-end experiment (data -> priors -> model -> metrics)."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, broadcast_object_list, set_seed
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Sampler
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
    # The model holding the best weights on the main process: the one passed to `train`, or a full
    # copy when the weights were sharded (FSDP, ZeRO-3).
    model: GGRForRecommendation | None = None


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
    for name, clusters in priors.item_clusters.items():
        # Graph clusters become an ordinary item column (string group names), usable by metrics
        # (`data.category_field`) and by later item priors.
        values = next(p["values"] for p in priors.specs if p["name"] == name)
        column = [values[c] for c in clusters[1:].tolist()]
        items = bundle.items.remove_columns([name]) if name in bundle.items.column_names else bundle.items
        bundle = dataclasses.replace(bundle, items=items.add_column(name, column))
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
    if hasattr(model.backbone, "prepare_from_items"):
        # HLLM reads item text: tokenise the item table into the model (and load pretrained LLMs).
        model.backbone.prepare_from_items(exp.bundle.items)
    return model


def _save_atomic(model: GGRForRecommendation, target: Path) -> None:
    """`save_pretrained` into a temporary folder renamed into place: never a half-written model."""
    from ggr_hf.hub import save_model

    # The card is written once at the end of the run, not at every improvement.
    save_model(model, target, model_card=False)


CHECKPOINT_DIR = "checkpoints"
TRAINER_STATE_NAME = "trainer_state.json"
BEST_STATE_NAME = "best_model.safetensors"


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (e.g. seed, epoch), the same in every process."""
    state = np.random.SeedSequence([int(k) & (2**64 - 1) for k in keys]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


class EpochShuffleSampler(Sampler[int]):
    """A permutation of the windows that depends only on (seed, epoch).

    `shuffle=True` with a generator gives an order that depends on how many epochs the generator has
    already produced, which a run resumed from a checkpoint does not replay; here the epoch picks the
    permutation (accelerate's `DataLoaderShard.set_epoch` forwards it), so a resumed run sees the
    order the uninterrupted one saw. Every process draws the same permutation and accelerate's
    `BatchSamplerShard` hands process r the batches r, r + W, r + 2W, ... of it: one step of W
    processes x B windows covers the windows of one step of one process with a batch of W x B.
    """

    def __init__(self, num_samples: int, seed: int):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under `output_dir/checkpoints` (`epoch_N` with the highest N)."""
    root = Path(output_dir) / CHECKPOINT_DIR
    done = [d for d in root.glob("epoch_*") if (d / TRAINER_STATE_NAME).is_file()] if root.is_dir() else []
    return max(done, key=lambda d: int(d.name.split("_", 1)[1]), default=None)


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


def build_accelerator(args: TrainingArguments) -> Accelerator:
    """The `Accelerator` for `args`; the launcher (`accelerate launch --config_file ...`) decides the
    distribution.

    `args.mixed_precision` wins when it is not `"no"`; otherwise the launcher's setting applies (e.g.
    bf16 in `recipes/accelerate_configs/deepspeed_zero2.yaml`). A head with no compatible target in
    a process's batch gets no gradient in that step, so DDP must look for unused parameters.
    """
    return Accelerator(
        cpu=args.cpu,
        mixed_precision=None if args.mixed_precision == "no" else args.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def train(
    model: GGRForRecommendation,
    exp: Experiment,
    args: TrainingArguments,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Trains `model` on the training split, selecting the best epoch on validation.

    Runs unchanged on one process or under `accelerate launch` / `torchrun` (DDP, FSDP, DeepSpeed):
    `args.batch_size` windows per process and step, negatives shared across processes
    (`args.gather_negatives`), per-process losses weighted so the gradient is that of the global
    batch (`args.pair_weighted_loss`). Only the main process evaluates and writes; the others wait.

    Writes `output_dir/eval_log.jsonl` (one line per evaluation), with `save_best` the best model to
    `output_dir/best`, and with `checkpoint_every_epochs` resumable states to
    `output_dir/checkpoints/epoch_N`. On return the main process's model (`TrainResult.model`) holds
    the best weights; the other processes' copies hold the last ones.
    """
    accelerator = accelerator or build_accelerator(args)
    set_seed(args.seed)
    out_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
    world, rank = accelerator.num_processes, accelerator.process_index
    windows = TrainingWindows(
        exp.split, model.config.max_seq_len, model.config.horizon, user_groups=exp.priors.user_groups
    )
    loader = DataLoader(
        windows,
        batch_size=args.batch_size,
        sampler=EpochShuffleSampler(len(windows), args.seed),
        collate_fn=windows.collate,
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.weight_decay,
    )
    steps_per_epoch = math.ceil(len(windows) / (args.batch_size * world))
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
        if accelerator.is_main_process and (ckpt / BEST_STATE_NAME).is_file():
            best_state = load_file(str(ckpt / BEST_STATE_NAME), device=str(accelerator.device))
        logger.info("resumed from %s at epoch %d, step %d", ckpt, start_epoch, step)

    start = time.time()
    bar = tqdm(
        total=total,
        initial=step,
        desc="train",
        disable=not (args.progress and accelerator.is_local_main_process),
    )
    log_path = out_dir / "eval_log.jsonl"
    gather = args.gather_negatives and world > 1
    for epoch in range(start_epoch, args.epochs):
        if args.max_steps > 0 and step >= args.max_steps:
            break
        model.train()
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
                metrics = evaluate_model(
                    eval_model,
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
                    best_state = {k: v.detach().clone() for k, v in eval_model.state_dict().items()}
                    if args.save_best:
                        _save_atomic(eval_model, out_dir / "best")
                else:
                    stale += 1
                logger.info("epoch %d: validation %s = %.4f", epoch + 1, args.selection_metric, value)
            history.append(record)
            # The main process decides; the sum makes every process take the same branch.
            flag = torch.tensor(int(args.patience > 0 and stale >= args.patience), device=accelerator.device)
            stop = int(accelerator.reduce(flag, reduction="sum")) > 0
        if args.checkpoint_every_epochs and (epoch + 1) % args.checkpoint_every_epochs == 0:
            _save_checkpoint(
                accelerator,
                out_dir / CHECKPOINT_DIR / f"epoch_{epoch + 1}",
                {
                    "epoch": epoch + 1,
                    "step": step,
                    "best_metric": best,
                    "best_epoch": best_epoch,
                    "stale": stale,
                    "history": history,
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
    accelerator: Accelerator, model: torch.nn.Module, sharded: bool, replica: GGRForRecommendation | None
) -> GGRForRecommendation:
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
    accelerator: Accelerator, path: Path, trainer_state: dict, best_state: dict[str, torch.Tensor] | None
) -> None:
    """Everything a resumed run needs; `trainer_state.json`, written last, marks it complete."""
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        if best_state is not None:
            save_file({k: v.contiguous() for k, v in best_state.items()}, str(path / BEST_STATE_NAME))
        (path / TRAINER_STATE_NAME).write_text(json.dumps(trainer_state, indent=2))
    accelerator.wait_for_everyone()


def run_experiment(
    cfg: ExperimentConfig,
    exp: Experiment | None = None,
    test: bool = True,
    accelerator: Accelerator | None = None,
) -> dict:
    """Trains one model as `cfg` says and evaluates it (validation-selected) on the test split.

    Under several processes every process trains; only the main one evaluates on the test split
    and writes `results.json`, the experiment file and the model card, and every process returns
    its result. Without an `accelerator`, one is built from `cfg.training` (`build_accelerator`); the
    caller of a multi-process run should end it with `accelerator.end_training()`.

    Returns a dict with `validation`, `test`, `popularity_test`, `train` (steps, seconds, best
    epoch) and the number of parameters.
    """
    # Created here, not in `train`, so that under a launcher only the main process writes below.
    accelerator = accelerator or build_accelerator(cfg.training)
    exp = exp or prepare_experiment(cfg)
    model = build_model(exp, seed=cfg.training.seed)
    result = train(model, exp, cfg.training, accelerator=accelerator)
    model = result.model or model
    out: dict = {
        "train": {"steps": result.steps, "seconds": result.seconds, "best_epoch": result.best_epoch},
        "validation": {cfg.training.selection_metric: result.best_metric},
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "num_heads": model.num_heads,
    }
    if accelerator.is_main_process:
        _finish_on_main(cfg, model, exp, out, test)
    if accelerator.num_processes > 1:
        # The other processes waited for the test metrics; they return the main process's result.
        holder = [out]
        broadcast_object_list(holder, from_process=0)
        out = holder[0]
    return out


def launch_experiment(cfg: ExperimentConfig, test: bool = True) -> tuple[dict, bool]:
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


def _finish_on_main(
    cfg: ExperimentConfig, model: GGRForRecommendation, exp: Experiment, out: dict, test: bool
) -> None:
    """Test metrics, `results.json`, the experiment file and the model card (main process only)."""
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


def set_torch_threads() -> None:
    """Uses every core for intra-op parallelism unless the user chose (OMP_NUM_THREADS)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))


__all__ = [
    "Experiment",
    "TrainResult",
    "EpochShuffleSampler",
    "build_accelerator",
    "build_model",
    "derive_seed",
    "latest_checkpoint",
    "load_data",
    "prepare_experiment",
    "run_experiment",
    "train",
]
