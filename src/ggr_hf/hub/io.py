"""File helpers of the hub layer: `config.json`, safetensors headers and tensors, atomic folder
and file publication, and local folder vs. Hub repo id.

A leaf module: it imports nothing from ggr-hf but the exception family (`ggr_hf.errors`, at the
bottom of the layers), so every other module may use it.
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

from ggr_hf.errors import GGRFileNotFoundError, GGRInputError, GGRModelFolderError, UnreadableWeightsError

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CARD_NAME = "README.md"
# Pickled weights: recognised only to refuse them with a way out (a pickle can run code on load).
PICKLE_WEIGHTS_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def looks_like_local_path(name: str) -> bool:
    """Whether `name` is meant as a local path rather than a Hub repo id (`name` or `namespace/name`).

    A path is absolute, starts with `.` or `~`, holds a backslash or more than one `/`
    (`outputs/run/best`), exists, or is `x/y` where `x` is an existing local folder (`outputs/best`
    from the project root).
    """
    if name.startswith((".", "/", "~", "\\")) or "\\" in name or name.count("/") > 1:
        return True
    if os.path.exists(name):
        return True
    namespace, sep, _ = name.partition("/")
    return bool(sep) and os.path.isdir(namespace)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0]


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
        `GGRFileNotFoundError`: a local path (see [`looks_like_local_path`]) that does not exist, or
            a name that is neither a local folder nor a Hub repo that could be fetched (both named).
        `GGRModelFolderError`: an existing file where a folder is expected.
    """
    name = os.fspath(path_or_id)
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        return path
    if path.exists():
        raise GGRModelFolderError(
            f"{name} is a file, not a model folder: pass the folder holding {CONFIG_NAME}"
        )
    if isinstance(path_or_id, Path) or looks_like_local_path(name):
        raise GGRFileNotFoundError(
            f"model folder {name} does not exist ({path.absolute()} is not a folder): check the path"
        )
    # Looked up on the module at call time, so that a patched `snapshot_download` (tests, mirrors)
    # is the one used.
    import huggingface_hub
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
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
    except (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    ) as err:
        raise GGRFileNotFoundError(
            f"model folder {name} does not exist ({path.absolute()} is not a folder) and {name!r} is not "
            f"a Hub repo that could be fetched ({type(err).__name__}: {_first_line(err)}): check the path "
            "or the repo id"
        ) from err


def read_config_dict(folder: str | os.PathLike) -> dict[str, Any]:
    """`folder/config.json` as a dict, with errors that name the folder or the file.

    Raises:
        `GGRFileNotFoundError`: the folder does not exist, or holds no `config.json`.
        `GGRModelFolderError`: `config.json` is not a JSON object.
    """
    if not Path(folder).is_dir():
        raise GGRFileNotFoundError(f"model folder {folder} does not exist: check the path")
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise GGRFileNotFoundError(
            f"{folder} has no {CONFIG_NAME}; it is not a saved model or heads folder (or its save did "
            "not finish): save it again"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GGRModelFolderError(f"{path} is not valid JSON ({err}): fix or rewrite the file") from err
    if not isinstance(data, dict):
        raise GGRModelFolderError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def check_safetensors(path: Path) -> list[str]:
    """Reads a safetensors header (not the tensors) and returns its keys.

    Raises:
        `GGRFileNotFoundError` when the file is missing; `UnreadableWeightsError` (a
        `GGRModelFolderError` and an `OSError`) naming the file when it is truncated or not a
        safetensors file.
    """
    if not path.is_file():
        raise GGRFileNotFoundError(f"{path} is missing: the repo has no weights")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except (SafetensorError, OSError) as err:
        raise UnreadableWeightsError(
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
        raise UnreadableWeightsError(
            f"{path} could not be read ({err}); it is corrupted: download or save it again"
        ) from err


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a full model folder: the shards its index names, or `model.safetensors`."""
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        return [folder / shard for shard in shards]
    return [folder / WEIGHTS_NAME]


def tensor_files(folder: Path) -> dict[str, tuple[Path, list[int]]]:
    """Each tensor of a full model folder's safetensors files: the file holding it and its shape, read
    from the headers (no tensor is read); `{}` without weights."""
    found: dict[str, tuple[Path, list[int]]] = {}
    for path in weight_files(folder):
        if not path.is_file() and path.name == WEIGHTS_NAME:
            continue
        check_safetensors(path)
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                found[key] = (path, list(f.get_slice(key).get_shape()))
    return found


def tensor_shapes(folder: Path) -> dict[str, list[int]]:
    """Tensor shapes from the safetensors headers of a folder (no tensor is read); `{}` without weights."""
    return {key: shape for key, (_, shape) in tensor_files(folder).items()}


def pickle_only_error(folder: Path) -> GGRModelFolderError:
    """The error for a folder whose weights exist only as a pickle, with the way to convert them."""
    pickle = next(
        (folder / n for n in PICKLE_WEIGHTS_NAMES if (folder / n).is_file()), folder / PICKLE_WEIGHTS_NAMES[0]
    )
    return GGRModelFolderError(
        f"{folder} holds only pickled weights ({pickle.name}) and no {WEIGHTS_NAME}; ggr-hf loads "
        "safetensors only, since unpickling can run code. If you trust where the file comes from, "
        f"convert it: state = torch.load('{pickle}', weights_only=True); build the model from "
        f"{CONFIG_NAME}, model.load_state_dict(state), then model.save_pretrained('{folder}') writes "
        f"{WEIGHTS_NAME}"
    )


def check_model_weights(folder: Path) -> None:
    """A full model folder must hold safetensors weights, and their headers must parse.

    Raises:
        `GGRModelFolderError`: only pickled weights (`pytorch_model.bin`): never loaded; the message
            says how to convert them.
        `GGRFileNotFoundError`: no weights at all, or a shard named by the index is missing.
        `OSError`: a truncated or corrupted safetensors file (named).
    """
    if not any((folder / name).is_file() for name in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME)):
        if any((folder / name).is_file() for name in PICKLE_WEIGHTS_NAMES):
            raise pickle_only_error(folder)
        raise GGRFileNotFoundError(
            f"{folder} has a {CONFIG_NAME} but no weights ({WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}); "
            "the upload or save is incomplete: save or download it again"
        )
    for path in weight_files(folder):
        check_safetensors(path)


def model_files(folder: Path) -> list[Path]:
    """The files of a full model folder that make the model: its config and its weights (the index
    and the shards it names, or `model.safetensors`), not logs, checkpoints or optimiser states."""
    files = [folder / name for name in (CONFIG_NAME, "generation_config.json") if (folder / name).is_file()]
    if (folder / WEIGHTS_INDEX_NAME).is_file():
        files.append(folder / WEIGHTS_INDEX_NAME)
    return files + weight_files(folder)


def check_save_target(target: str | os.PathLike) -> None:
    """Refuses a save folder that is a file, or lies under one, before anything is written.

    Raises:
        `GGRInputError` naming the path.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise GGRInputError(f"{target} is a file, not a folder: pass a folder to save the model into")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise GGRInputError(f"cannot save into {target}: {parent} is a file, not a folder")
            break


def staging_dir(target: Path) -> Path:
    """A new hidden folder beside `target` (same file system, so [`commit_folder`] can rename)."""
    check_save_target(target)
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


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes `text` to `path` through a temporary file beside it and one rename, so that a reader
    (or a crash) never sees half a file; the parent folder is created.

    Returns:
        `Path`: `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain `open` (not `mkstemp`, whose files are private) so the file gets the usual permissions.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
