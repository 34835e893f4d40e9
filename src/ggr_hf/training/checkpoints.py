"""Resumable checkpoints: `output_dir/checkpoints/checkpoint_N`, written by `accelerator.save_state`
plus the loop's own files, and the checks that refuse a checkpoint a run cannot continue from.

A checkpoint folder is complete once its `trainer_state.json` is there. That file is written last,
to a temporary name renamed into place after every other file of the folder has been flushed to
disk, so a run killed while saving leaves a folder without it: `latest` skips such a folder and the
resumed run overwrites it. Older checkpoints are pruned (`save_total_limit`) only once the new one is
complete (accelerate's own `total_limit` deletes them before writing the new one, so a kill during
that save could leave none), and a folder being deleted loses its `trainer_state.json` first.

`trainer_state.json` also records what a resumed run must not change: the batch size per process,
the number of processes, the shapes of the model's weights, a fingerprint of the training windows,
and the size of every file of the folder. `check_resumable` compares them before anything is loaded
and checks that every file reads back, naming the first one that does not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

from ggr_hf.errors import GGRCheckpointError, GGRFileNotFoundError

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
TRAINER_STATE_NAME = "trainer_state.json"
BEST_STATE_NAME = "best_model.safetensors"

# Windows collated per chunk when fingerprinting the training data.
_FINGERPRINT_CHUNK = 1024
# accelerate writes optimiser, scheduler, sampler and RNG states with `torch.save` (zip archives).
_TORCH_SUFFIXES = (".bin", ".pkl", ".pt")

__all__ = [
    "BEST_STATE_NAME",
    "CHECKPOINT_DIR",
    "TRAINER_STATE_NAME",
    "check_resumable",
    "data_fingerprint",
    "latest_checkpoint",
    "model_shapes",
    "read_trainer_state",
    "resolve_checkpoint",
    "save_checkpoint",
]


def _checkpoint_number(path: Path) -> int | None:
    match = re.fullmatch(r"checkpoint_(\d+)", path.name)
    return int(match.group(1)) if match else None


def _complete(path: Path) -> bool:
    return (path / TRAINER_STATE_NAME).is_file()


def _checkpoints(root: Path) -> list[Path]:
    """`checkpoint_N` folders under `root`, oldest first (complete or not)."""
    found = [d for d in (root.iterdir() if root.is_dir() else []) if _checkpoint_number(d) is not None]
    return sorted(found, key=_checkpoint_number)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under `output_dir/checkpoints` (`checkpoint_N`, highest N).

    accelerate's `load_state()` would take the highest N even when that save was interrupted; a
    checkpoint is complete once `trainer_state.json`, written last and atomically, is there.
    """
    done = [d for d in _checkpoints(Path(output_dir) / CHECKPOINT_DIR) if _complete(d)]
    return done[-1] if done else None


def resolve_checkpoint(value: str, output_dir: str | Path) -> Path:
    """The checkpoint folder `training.resume_from_checkpoint` names: a path, or `"latest"`.

    Raises:
        GGRFileNotFoundError: no complete checkpoint (`latest`), or the path does not exist.
        GGRCheckpointError: the folder is an interrupted save (no `trainer_state.json`).
    """
    root = Path(output_dir) / CHECKPOINT_DIR
    if value == "latest":
        path = latest_checkpoint(output_dir)
        if path is None:
            raise GGRFileNotFoundError(
                f"resume_from_checkpoint=latest: no checkpoint under {root} (a folder without "
                f"{TRAINER_STATE_NAME} is an interrupted save); train without --resume, or name a "
                "checkpoint folder"
            )
        return path
    path = Path(value)
    if not path.is_dir():
        raise GGRFileNotFoundError(
            f"resume_from_checkpoint={value!r}: no such checkpoint folder; give OUTPUT_DIR/"
            f"{CHECKPOINT_DIR}/checkpoint_N or 'latest'"
        )
    if not _complete(path):
        raise GGRCheckpointError(
            f"{path} is not a complete checkpoint (no {TRAINER_STATE_NAME}, which is written last: the "
            "save was interrupted); resume from 'latest' or an earlier checkpoint"
        )
    return path


def data_fingerprint(dataset: Dataset, collate: Callable[[list], dict[str, torch.Tensor]]) -> dict[str, Any]:
    """What identifies the training data: the number of windows and a SHA-256 of every window as
    the model receives it (collated in index order, in chunks of 1024).

    Hashing the collated tensors, not the dataset's rows, catches a change of the items behind
    unchanged window boundaries. It assumes a deterministic collator.

    Returns:
        `dict` with `num_windows` (`int`) and `sha256` (`str`).
    """
    digest = hashlib.sha256()
    n = len(dataset)
    for lo in range(0, n, _FINGERPRINT_CHUNK):
        batch = collate([dataset[i] for i in range(lo, min(lo + _FINGERPRINT_CHUNK, n))])
        for key in sorted(batch):
            value = batch[key].detach().cpu().contiguous()
            digest.update(f"{key}:{value.dtype}:{tuple(value.shape)};".encode())
            digest.update(value.numpy().tobytes())
    return {"num_windows": n, "sha256": digest.hexdigest()}


def model_shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    """The shape of every entry of the model's state dict (taken before `accelerator.prepare`)."""
    return {name: list(value.shape) for name, value in model.state_dict().items()}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, payload: dict) -> None:
    """Writes `path` under a temporary name, flushes it and renames it into place: readers see the
    whole file or none."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump(payload, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _remove_checkpoint(path: Path) -> None:
    """Deletes a checkpoint folder, its completeness marker first: a kill halfway through leaves a
    folder that `latest` skips, never a complete-looking remnant."""
    (path / TRAINER_STATE_NAME).unlink(missing_ok=True)
    shutil.rmtree(path)


def _prune(root: Path, newest: Path, limit: int | None) -> None:
    """Keeps the newest `limit` complete checkpoints up to `newest`; interrupted saves older than
    it go too. Folders past `newest` (an earlier run's, about to be overwritten) are left."""
    older = [d for d in _checkpoints(root) if _checkpoint_number(d) < _checkpoint_number(newest)]
    complete = [d for d in older if _complete(d)]
    keep = set(complete) if limit is None else set(complete[max(len(complete) - limit + 1, 0) :])
    for folder in older:
        if folder not in keep:
            _remove_checkpoint(folder)


def save_checkpoint(
    accelerator: Accelerator,
    trainer_state: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None,
    total_limit: int | None,
) -> Path:
    """Saves everything a resumed run needs to `checkpoints/checkpoint_N` (accelerate's naming; a
    collective: every process calls it) and returns the folder.

    accelerate's `save_state` writes the model, optimiser, scheduler, sampler and each process's
    RNG states; the main process adds `best_model.safetensors` (the best weights so far) and, once
    every file is on disk, `trainer_state.json` (`trainer_state` plus the size of every file),
    which marks the folder complete. Then older checkpoints beyond `total_limit` are deleted.
    """
    root = Path(accelerator.project_dir) / CHECKPOINT_DIR
    path = root / f"checkpoint_{accelerator.save_iteration}"
    if path.exists():
        # An interrupted save, or a checkpoint past the one this run resumed from: overwrite it
        # (accelerate refuses an existing folder).
        if accelerator.is_main_process:
            _remove_checkpoint(path)
        accelerator.wait_for_everyone()
    saved = Path(accelerator.save_state())
    if accelerator.is_main_process and best_state is not None:
        save_file({k: v.contiguous() for k, v in best_state.items()}, str(saved / BEST_STATE_NAME))
    # Every process has written its RNG states before the folder is declared complete.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = {}
        for file in sorted(p for p in saved.rglob("*") if p.is_file()):
            _fsync(file)
            files[file.relative_to(saved).as_posix()] = file.stat().st_size
        _write_json_atomic(saved / TRAINER_STATE_NAME, {**trainer_state, "files": files})
        _prune(root, saved, total_limit)
    accelerator.wait_for_everyone()
    return saved


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """`checkpoint/trainer_state.json`; a damaged one is a `GGRCheckpointError` naming it."""
    path = checkpoint / TRAINER_STATE_NAME
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GGRCheckpointError(
            f"{path}: cannot be read ({err}); resume from an earlier checkpoint"
        ) from err
    if not isinstance(state, dict) or not {"epoch", "step", "checkpoint"} <= state.keys():
        raise GGRCheckpointError(
            f"{path}: not a ggr-hf trainer state (needs epoch, step, checkpoint); resume from an "
            "earlier checkpoint"
        )
    return state


def _read_back(path: Path) -> None:
    """Reads `path` as its loader will, without unpickling anything: a safetensors file tensor by
    tensor, a `torch.save` archive through its CRC checks, JSON by parsing it. Raises on failure."""
    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not iterable
                f.get_tensor(key)
    elif path.suffix in _TORCH_SUFFIXES:
        if not zipfile.is_zipfile(path):
            raise ValueError("not a torch.save archive (truncated?)")
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"entry {bad} fails its CRC check")


def _damaged(path: Path, why: str) -> GGRCheckpointError:
    return GGRCheckpointError(
        f"{path}: {why}; the checkpoint is damaged: resume from an earlier checkpoint "
        "(--resume OUTPUT_DIR/checkpoints/checkpoint_N) or start a new run"
    )


def _check_files(checkpoint: Path, state: dict[str, Any]) -> None:
    for name, size in state.get("files", {}).items():
        path = checkpoint / name
        if not path.is_file():
            raise _damaged(path, "missing")
        if path.stat().st_size != size:
            raise _damaged(path, f"{path.stat().st_size} bytes where the save wrote {size} (truncated?)")
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != TRAINER_STATE_NAME):
        try:
            _read_back(path)
        except Exception as err:  # noqa: BLE001 - any failure to read the file means it is damaged
            raise _damaged(path, f"cannot be read ({type(err).__name__}: {err})") from err


def _shape_differences(saved: dict[str, list[int]], current: dict[str, list[int]]) -> list[str]:
    out = []
    for name in sorted(saved.keys() | current.keys()):
        if name not in current:
            out.append(f"{name!r} is in the checkpoint, not in this model")
        elif name not in saved:
            out.append(f"{name!r} is in this model, not in the checkpoint")
        elif list(saved[name]) != list(current[name]):
            out.append(
                f"{name!r} has shape {tuple(saved[name])} in the checkpoint, {tuple(current[name])} here"
            )
    return out


def check_resumable(checkpoint: Path, state: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuses a checkpoint this run cannot continue from, before anything is loaded.

    Args:
        checkpoint: the checkpoint folder.
        state: its `trainer_state.json` (`read_trainer_state`).
        expected: this run's `batch_size`, `num_processes`, `model_shapes` (`model_shapes`) and,
            where computed, `data` (`data_fingerprint`). A key the checkpoint does not record (one
            written by an older ggr-hf) is not checked.

    Raises:
        GGRCheckpointError: naming the checkpoint (or the damaged file) and what differs.
    """
    where = checkpoint / TRAINER_STATE_NAME
    fix = "resume with the settings of the run that wrote it, or start a new run (--overwrite)"
    for key, what in (("batch_size", "training.batch_size"), ("num_processes", "the number of processes")):
        if key in state and state[key] != expected[key]:
            raise GGRCheckpointError(
                f"{where}: written with {what} {state[key]}, this run has {expected[key]}: a resumed run "
                f"must keep it (the step count and the per-process RNG states depend on it); {fix}"
            )
    if "data" in state and "data" in expected and state["data"] != expected["data"]:
        old, new = state["data"], expected["data"]
        detail = (
            f"{old['num_windows']} training windows, this run has {new['num_windows']}"
            if old["num_windows"] != new["num_windows"]
            else f"the same number of training windows ({new['num_windows']}) with other contents"
        )
        raise GGRCheckpointError(f"{where}: written for another data set ({detail}); {fix}")
    if "model_shapes" in state:
        diffs = _shape_differences(state["model_shapes"], expected["model_shapes"])
        if diffs:
            more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
            raise GGRCheckpointError(f"{where}: written by a model of another shape: {diffs[0]}{more}; {fix}")
    missing = [k for k in ("batch_size", "data", "model_shapes", "files") if k not in state]
    if missing:
        logger.warning("%s records no %s (an older ggr-hf): not checked", where, ", ".join(missing))
    _check_files(checkpoint, state)
