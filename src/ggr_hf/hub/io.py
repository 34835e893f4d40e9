"""File helpers of the hub layer: `config.json`, safetensors headers and tensors, atomic folder
publication, and local folder vs. Hub repo id.

A leaf module: it imports no other ggr-hf module, so every other module may use it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CARD_NAME = "README.md"

# Weight files of any format; their presence is what "the repo has its weights" means.
_WEIGHT_FILES = (WEIGHTS_NAME, WEIGHTS_INDEX_NAME, "pytorch_model.bin", "pytorch_model.bin.index.json")


def looks_like_local_path(name: str) -> bool:
    """Whether `name` can only be a local path (a Hub id is `name` or `namespace/name`)."""
    return name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or os.path.isfile(name)


def resolve_repo(
    path_or_id: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    allow_patterns: Iterable[str] | None = ("*.json", "*.safetensors", "*.md", "*.png"),
) -> Path:
    """The local folder of a model: `path_or_id` itself when it is a folder, else a Hub snapshot.

    Args:
        path_or_id (`str` or `os.PathLike`): a folder or a Hub repo id (`"namespace/name"`).
        revision, token, cache_dir, local_files_only, force_download: as in
            `huggingface_hub.snapshot_download`. With `local_files_only=True` (or `HF_HUB_OFFLINE=1`)
            nothing is downloaded and the local cache is used.
        allow_patterns: files fetched from the Hub. Pickled weights are not among them.

    Raises:
        `FileNotFoundError` for a local-looking path that is not a folder.
    """
    path = Path(os.path.expanduser(os.fspath(path_or_id)))
    if path.is_dir():
        return path
    name = os.fspath(path_or_id)
    if looks_like_local_path(name):
        raise FileNotFoundError(f"{name} is not a folder (and not a Hub repo id)")
    # Looked up on the module at call time, so that a patched `snapshot_download` (tests, mirrors)
    # is the one used.
    import huggingface_hub

    return Path(
        huggingface_hub.snapshot_download(
            repo_id=name,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
            allow_patterns=list(allow_patterns) if allow_patterns is not None else None,
        )
    )


def read_config_dict(folder: str | os.PathLike) -> dict[str, Any]:
    """`folder/config.json` as a dict, with errors that name the file."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}; it is not a saved model or heads folder")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def check_safetensors(path: Path) -> list[str]:
    """Reads a safetensors header (not the tensors) and returns its keys.

    Raises:
        `FileNotFoundError` when the file is missing; `OSError` naming the file when it is truncated
        or not a safetensors file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the repo has no weights")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except (SafetensorError, OSError) as err:
        raise OSError(
            f"{path} is not a readable safetensors file ({err}); it is truncated or corrupted: "
            "download or save it again"
        ) from err
    return keys


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (never a pickle), with errors that name the file."""
    from safetensors.torch import load_file

    check_safetensors(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise OSError(
            f"{path} could not be read ({err}); it is corrupted: download or save it again"
        ) from err


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a full model folder: the shards its index names, or `model.safetensors`."""
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        return [folder / shard for shard in shards]
    return [folder / WEIGHTS_NAME]


def tensor_shapes(folder: Path) -> dict[str, list[int]]:
    """Tensor shapes from the safetensors headers of a folder (no tensor is read); `{}` without weights."""
    shapes: dict[str, list[int]] = {}
    for path in weight_files(folder):
        if not path.is_file() and path.name == WEIGHTS_NAME:
            continue
        check_safetensors(path)
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shapes[key] = list(f.get_slice(key).get_shape())
    return shapes


def check_model_weights(folder: Path) -> None:
    """A full model folder must hold weights, and its safetensors headers must parse."""
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise FileNotFoundError(
            f"{folder} has a {CONFIG_NAME} but no weights ({WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}); "
            "the upload or save is incomplete"
        )
    for path in weight_files(folder):
        if path.is_file() or path.name != WEIGHTS_NAME:  # pickled weights alone: not ours to check
            check_safetensors(path)


def model_files(folder: Path) -> list[Path]:
    """The files of a full model folder that make the model: its config and its weights (the index
    and the shards it names, or `model.safetensors`), not logs, checkpoints or optimiser states."""
    files = [folder / name for name in (CONFIG_NAME, "generation_config.json") if (folder / name).is_file()]
    if (folder / WEIGHTS_INDEX_NAME).is_file():
        files.append(folder / WEIGHTS_INDEX_NAME)
    return files + weight_files(folder)


def staging_dir(target: Path) -> Path:
    """A new hidden folder beside `target` (same file system, so [`commit_folder`] can rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def commit_folder(staging: Path, target: Path) -> None:
    """Moves the files written in `staging` into `target` so that a crash never leaves a folder that
    looks complete.

    A new `target` is one atomic rename of the whole folder. An existing one loses its `config.json`
    first (from then on it reads as incomplete), gets every other file by rename, and gets the new
    `config.json` last: a folder with a `config.json` always holds a finished save. Files of
    `target` that `staging` does not hold are left alone. `staging` must be on the same file system
    (see [`staging_dir`]).
    """
    target = Path(target)
    if not target.exists():
        os.replace(staging, target)
        return
    (target / CONFIG_NAME).unlink(missing_ok=True)
    for item in sorted(staging.iterdir()):
        if item.name == CONFIG_NAME:
            continue
        dest = target / item.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(item, dest)
    if (staging / CONFIG_NAME).exists():
        os.replace(staging / CONFIG_NAME, target / CONFIG_NAME)
    shutil.rmtree(staging, ignore_errors=True)
