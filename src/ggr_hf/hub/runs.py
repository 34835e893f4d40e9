"""Run folders that cannot lie: a training run's output folder says whether the run finished.

A run (`ggr_hf.experiments`) writes `run_started.json` into its output folder before it trains,
saves `best/` during training (beside no completeness marker), and when it completes writes
`results.json`, `best/ggr_experiment.json` and the card, then last `run_complete.json`: the finish
time, the ggr-hf version and the SHA-256 of each published file (the card is left out: `ggr-hf
card` updates it). So a folder killed mid-run, or a folder where a second run's files sit beside an
earlier run's, reads as unfinished:

- `from_pretrained` still loads such a model, with a [`GGRIncompleteRunWarning`];
- `ggr-hf evaluate`, `card` and `push` refuse it unless `--allow-incomplete`.

Model folders outside a run folder (no `run_started.json` / `run_complete.json` beside them) are not
runs and load without a word. This module imports only `ggr_hf.hub.io` and the exception family.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

from ggr_hf import __version__
from ggr_hf.errors import GGRIncompleteRunWarning, GGRInputError
from ggr_hf.hub.io import CONFIG_NAME, write_text_atomic

__all__ = [
    "RUN_COMPLETE_NAME",
    "RUN_STARTED_NAME",
    "finish_run",
    "require_complete_run",
    "run_status",
    "start_run",
    "warn_if_incomplete",
]

RUN_STARTED_NAME = "run_started.json"
RUN_COMPLETE_NAME = "run_complete.json"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def start_run(run_dir: str | os.PathLike) -> None:
    """Marks `run_dir` as holding a run in progress: the completeness marker of an earlier (or a
    resumed) run goes first, then `run_started.json` is written."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_COMPLETE_NAME).unlink(missing_ok=True)
    record = {"started": _now(), "ggr_hf_version": __version__}
    write_text_atomic(run_dir / RUN_STARTED_NAME, json.dumps(record, indent=2) + "\n")


def finish_run(run_dir: str | os.PathLike, files: Iterable[str | os.PathLike]) -> Path:
    """Writes `run_dir/run_complete.json`, the last file of a run: the finish time, the ggr-hf
    version and the SHA-256 of each of `files` (paths inside `run_dir`).

    Returns:
        `Path`: the marker.
    """
    run_dir = Path(run_dir)
    hashes = {Path(f).relative_to(run_dir).as_posix(): _sha256(Path(f)) for f in files}
    record = {"finished": _now(), "ggr_hf_version": __version__, "files": dict(sorted(hashes.items()))}
    return write_text_atomic(run_dir / RUN_COMPLETE_NAME, json.dumps(record, indent=2) + "\n")


def run_status(model_dir: str | os.PathLike) -> str | None:
    """Why the model folder `model_dir` (e.g. `OUT/best`) is not a finished run's result, or `None`
    when it is one, or is not part of a run at all.

    Reasons: the run did not write its marker (killed, still running, or resumed and not done); a
    file the marker lists is missing or changed; weights or a config the run did not publish sit in
    the folder.
    """
    model_dir = Path(model_dir)
    run_dir = model_dir.parent
    marker = run_dir / RUN_COMPLETE_NAME
    if not marker.is_file():
        if (run_dir / RUN_STARTED_NAME).is_file():
            return (
                f"the training run in {run_dir} did not finish (no {RUN_COMPLETE_NAME}): its model is "
                "the best one saved so far, not the run's result"
            )
        return None
    try:
        files = json.loads(marker.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError(type(files).__name__)
    except (ValueError, KeyError, TypeError) as err:
        return f"{marker} is not a readable completeness marker ({err})"
    prefix = f"{model_dir.name}/"
    if not any(name.startswith(prefix) for name in files):
        return None  # a folder the run did not publish (saved there later by hand)
    for name, digest in files.items():
        path = run_dir / name
        if not path.is_file():
            return f"{path}, published by the run in {run_dir}, is missing"
        if _sha256(path) != digest:
            return f"{path} changed after the run in {run_dir} finished ({marker} records another hash)"
    for path in sorted(model_dir.iterdir()):
        is_model_file = path.name == CONFIG_NAME or path.name.endswith(
            (".safetensors", ".bin", ".index.json")
        )
        if is_model_file and f"{prefix}{path.name}" not in files:
            return f"{path} was not published by the run in {run_dir} (not in {marker})"
    return None


def warn_if_incomplete(model_dir: str | os.PathLike) -> None:
    """Warns ([`GGRIncompleteRunWarning`]) when `model_dir` is the model of an unfinished run."""
    reason = run_status(model_dir)
    if reason is not None:
        warnings.warn(
            f"{model_dir}: {reason}; loaded anyway (`ggr-hf evaluate`, `card` and `push` refuse it "
            "without --allow-incomplete)",
            GGRIncompleteRunWarning,
            stacklevel=3,
        )


def require_complete_run(model_dir: str | os.PathLike, command: str, allow_incomplete: bool = False) -> None:
    """Refuses the model of an unfinished run for `ggr-hf {command}`, unless `allow_incomplete`
    (then it warns).

    Raises:
        `GGRInputError`: naming the folder, the reason, and `--allow-incomplete`.
    """
    reason = run_status(model_dir)
    if reason is None:
        return
    if allow_incomplete:
        warnings.warn(
            f"{model_dir}: {reason}; used anyway (--allow-incomplete)", GGRIncompleteRunWarning, stacklevel=2
        )
        return
    raise GGRInputError(
        f"{model_dir}: {reason}. `ggr-hf {command}` refuses it: finish the run (rerun it with "
        f"--overwrite, or resume it with --resume), or pass --allow-incomplete to {command} it anyway"
    )
