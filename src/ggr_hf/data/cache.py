"""The prepare cache: raw public files -> a `RecDataBundle` saved once, reused while its inputs are unchanged.

`prepare_dataset(name, raw_dir, out_dir, **options)` runs the loader registered under `name`
(`pixelrec`, `merrec`, `ebnerd`, `release`; see `ggr_hf.data.registry`) and saves the bundle to
`out_dir` with `RecDataBundle.save_to_disk`. Next to it goes `fingerprint.json`: the loader's name,
version and options, and the path, size and modification time of every input file. A later call with
the same fingerprint loads the cache; any change (a shard added, a file touched, another `min_events`)
rebuilds it. The bundle is written into a temporary sibling folder that is renamed onto `out_dir` only
once it is complete (its `bundle.json` marker written last), so an interrupted prepare never leaves a
folder at `out_dir` that looks complete; the stale temporary folder is removed by the next prepare.

Processes sharing one cache take turns: a prepare holds an exclusive lock on `.<out_dir name>.lock`
beside `out_dir` from the fingerprint check to the publication (`ggr_hf.data.locking`), so a second
prepare into the same folder waits and then reuses the first one's bundle; readers
(`ggr_hf.data.locking.open_prepared`) take the shared lock and never see the folder half replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import TextIO

import datasets

from ggr_hf.errors import GGRFileNotFoundError, GGRInputError

from .locking import cache_lock, lock_path
from .registry import RUNTIME_OPTIONS, DatasetSpec, get_dataset_spec, preparable
from .schema import DataFormatError, RecDataBundle

__all__ = [
    "FINGERPRINT_FILE",
    "compute_fingerprint",
    "prepare_dataset",
    "print_summary",
]

FINGERPRINT_FILE = "fingerprint.json"
# Bumped when the cache layout written by `prepare_dataset` changes.
PREPARE_FORMAT_VERSION = 1


@contextlib.contextmanager
def _datasets_progress(enabled: bool):
    """Turns `datasets`' own progress bars off while saving when progress is off."""
    was_enabled = datasets.is_progress_bar_enabled()
    if not enabled and was_enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and was_enabled:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _large_write_batches(rows: int = 100_000):
    """Lets `Dataset.save_to_disk` write batches of up to `rows` rows instead of 1,000.

    `save_to_disk` writes `datasets.config.DEFAULT_MAX_BATCH_SIZE` rows at a time (still capped at about
    100 MB by `datasets`), with a fixed Python cost per batch: seconds for a million-item table.
    """
    previous = datasets.config.DEFAULT_MAX_BATCH_SIZE
    datasets.config.DEFAULT_MAX_BATCH_SIZE = max(previous, rows)
    try:
        yield
    finally:
        datasets.config.DEFAULT_MAX_BATCH_SIZE = previous


def print_summary(
    summary: dict,
    *,
    out_dir: str | Path | None = None,
    seconds: float | None = None,
    cached: bool = False,
    file: TextIO | None = None,
) -> None:
    """Prints users, items, interactions and dropped rows by reason.

    Args:
        summary (`dict`): `RecDataBundle.summary()`.
        out_dir (`str` or `Path`, *optional*): the cache folder, shown after the name.
        seconds (`float`, *optional*): how long the prepare took.
        cached (`bool`, *optional*, defaults to `False`): whether the cache was reused.
        file (`TextIO`, *optional*): where to print; standard output by default.
    """
    file = file or sys.stdout
    where = f" -> {out_dir}" if out_dir is not None else ""
    note = " (cached)" if cached else (f" in {seconds:.1f} s" if seconds is not None else "")
    print(f"{summary['name']}{where}{note}", file=file)
    print(f"  users         {summary['users']:>15,}", file=file)
    print(f"  items         {summary['items']:>15,}", file=file)
    print(f"  interactions  {summary['interactions']:>15,}", file=file)
    if summary.get("events"):
        print(f"  event types   {', '.join(summary['events'])}", file=file)
    dropped = summary.get("dropped") or {}
    if dropped:
        print("  dropped / repaired rows by reason:", file=file)
        width = max(len(k) for k in dropped)
        for reason, n in sorted(dropped.items()):
            print(f"    {reason:<{width}}  {n:>13,}", file=file)
    else:
        print("  dropped rows: none", file=file)


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    return value


def _file_entry(path: Path, raw_dir: Path) -> list:
    st = path.stat()
    try:
        shown = str(path.resolve().relative_to(raw_dir.resolve()))
    except ValueError:
        shown = str(path.resolve())
    return [shown, st.st_size, st.st_mtime_ns]


def compute_fingerprint(name: str, raw_dir: str | Path, options: dict | None = None) -> dict:
    """The fingerprint of a prepare: loader name and version, options, and every input file's stat.

    Args:
        name (`str`): a registered data set.
        raw_dir (`str` or `Path`): the publisher's folder.
        options (`dict`, *optional*): the loader options (runtime-only options are ignored).

    Returns:
        a JSON-serialisable dict; two prepares with equal fingerprints produce the same bundle.
    """
    spec = get_dataset_spec(name)
    raw_dir = Path(raw_dir)
    options = {k: v for k, v in (options or {}).items() if k not in RUNTIME_OPTIONS}
    files = sorted(spec.input_files(raw_dir, options))
    return {
        "format": PREPARE_FORMAT_VERSION,
        "dataset": spec.name,
        "loader_version": spec.version,
        "options": _jsonable(options),
        "files": [_file_entry(p, raw_dir) for p in files],
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Removes temporary folders left by prepares into `out_dir` whose process has died."""
    for prefix in (f".{out_dir.name}.tmp-", f".{out_dir.name}.old-"):
        for path in out_dir.parent.glob(prefix + "*"):
            try:
                pid = int(path.name[len(prefix) :].split("-")[0])
            except ValueError:
                continue
            if not _pid_alive(pid) or pid == os.getpid():
                shutil.rmtree(path, ignore_errors=True)


def _read_fingerprint(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / FINGERPRINT_FILE).read_text())
    except (OSError, ValueError):
        return None


def _no_user_message(name: str, raw_dir: Path, options: dict, bundle: RecDataBundle) -> str:
    if not any(bundle.dropped.values()):
        return f"{name}: no interactions in {raw_dir} (the input files hold no event rows)"
    return (
        f"{name}: no user is left after the filters (options {options or 'default'}); "
        f"rows dropped by reason: {bundle.dropped}"
    )


def prepare_dataset(
    name: str,
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    verbose: bool = True,
    **options,
) -> RecDataBundle:
    """Reads a public data set from the publisher's files and caches it as a `RecDataBundle`.

    Args:
        name (`str`): `"pixelrec"`, `"merrec"`, `"ebnerd"` or `"release"` (see `DATASETS`).
        raw_dir (`str` or `Path`): the folder as the publisher ships it.
        out_dir (`str` or `Path`): the cache folder (created; replaced when the fingerprint changes).
        force (`bool`, *optional*, defaults to `False`): rebuild even if the cache is up to date.
        progress (`bool`, *optional*, defaults to `True`): show tqdm progress bars.
        verbose (`bool`, *optional*, defaults to `True`): print the summary.
        **options: the loader's keyword options (e.g. `min_events=2000`); unknown ones are an error.

    Returns:
        the bundle, loaded (memory-mapped) from `out_dir`.

    Raises:
        `GGRInputError` for an unknown data set or option, `GGRFileNotFoundError` for a missing input,
        `DataFormatError` for malformed input (the message names the file and the column),
        `FileExistsError` when `out_dir` holds something else, `GGRError` when another process holds the
        cache's lock for longer than `$GGR_HF_LOCK_TIMEOUT` seconds.
    """
    spec = get_dataset_spec(name)
    if not spec.preparable:
        raise GGRInputError(
            f"{spec.name} is not prepared from raw files; preparable: {', '.join(preparable())}"
        )
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise GGRFileNotFoundError(f"raw folder {raw_dir} does not exist")
    allowed = spec.accepted_options()
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise GGRInputError(
            f"option(s) {', '.join(unknown)} do not apply to {spec.name}; it accepts: {', '.join(sorted(allowed))}"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a folder; pass another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(lock_path(out_dir)):
        return _prepare_locked(spec, raw_dir, out_dir, force, progress, verbose, options)


def _prepare_locked(
    spec: DatasetSpec, raw_dir: Path, out_dir: Path, force: bool, progress: bool, verbose: bool, options: dict
) -> RecDataBundle:
    """`prepare_dataset` once the cache's lock is held: reuse the cache, or build and publish it."""
    fingerprint = compute_fingerprint(spec.name, raw_dir, options)
    if not force and RecDataBundle.is_complete(out_dir) and _read_fingerprint(out_dir) == fingerprint:
        bundle = RecDataBundle.load_from_disk(out_dir)
        if verbose:
            print_summary(bundle.summary(), out_dir=out_dir, cached=True)
        return bundle
    if (
        out_dir.exists()
        and any(out_dir.iterdir())
        and not ((out_dir / "bundle.json").exists() or (out_dir / FINGERPRINT_FILE).exists())
    ):
        raise FileExistsError(f"{out_dir} exists and is not a ggr-hf data set; refusing to overwrite it")
    _remove_stale_temporaries(out_dir)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{tag}"
    start = time.perf_counter()
    try:
        tmp.mkdir()
        work = tmp / "_work"
        bundle = spec.load_function()(raw_dir, work_dir=work, progress=progress, **options)
        if bundle.num_users == 0:
            # `datasets` cannot reload an empty saved table, and an empty cache is never what was meant.
            raise DataFormatError(_no_user_message(spec.name, raw_dir, options, bundle))
        bundle.validate()
        # The fingerprint goes in before `save_to_disk` writes the `bundle.json` marker, and the whole
        # folder only appears at `out_dir` by the rename below.
        (tmp / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=1))
        with _large_write_batches(), _datasets_progress(progress):
            bundle.save_to_disk(tmp)
        del bundle
        shutil.rmtree(work, ignore_errors=True)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{tag}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle = RecDataBundle.load_from_disk(out_dir)
    if verbose:
        print_summary(bundle.summary(), out_dir=out_dir, seconds=time.perf_counter() - start)
    return bundle
