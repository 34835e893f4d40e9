"""Readers for MovieLens-100K and MovieLens-1M, and the embedded MovieLens-100K default.

Three on-disk layouts are understood (see `load_movielens`):

- RecBole's atomic files (`*.inter`, `*.item`, `*.user`): tab-separated, with a typed header such as
  `user_id:token	item_id:token	rating:float	timestamp:float`. Columns are matched by the field name
  (the part before `:`), so their order does not matter.
- GroupLens' MovieLens-100K release (`u.data`, `u.item`, `u.user`, optionally `u.genre`).
- GroupLens' MovieLens-1M release (`ratings.dat`, `movies.dat`, `users.dat`).

Whatever the layout, the result is a `RecDataBundle`:

- ratings are dropped: MovieLens is treated as implicit feedback, every rating (1 to 5 stars) counts
  as one interaction;
- items are re-indexed to `1 .. num_items` in the order of their original (integer) id, users to
  `0 .. num_users - 1` the same way; the `original_id` columns keep the publisher's ids, so they are
  the id mapping;
- times are integers (RecBole's floats are floored) in `timestamp_unit`, by default inferred from their
  magnitude (MovieLens ships seconds), stored in seconds; a time outside 1970..2100 is an error;
- each user's interactions are sorted by timestamp with a *stable* sort: interactions that share a
  timestamp keep the order they have in the interaction file;
- every item of the item table and every user of the user table is kept, even without any
  interaction (such a user gets an empty sequence); filtering and splitting happen elsewhere.

Every mistake in the input raises `DataFormatError`, whose message names the file, the column and the
offending value (and the line, counting the header line, when the file has no blank lines).

`load_movielens()` without a path reads the real MovieLens-100K that RecBole ships inside its wheel on
PyPI. The wheel is fetched once with `pip download` (RecBole itself is never installed nor imported)
and the parsed bundle is cached next to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from ggr_hf.errors import GGRInputError

from .locking import cache_lock
from .movielens_files import (
    AGE_BANDS,
    ML1M_AGE_BANDS,
    ML1M_OCCUPATIONS,
    ML100K_GENRES,
    MOVIELENS_FORMATS,
    Source,
    age_band,
    read_movielens_folder,
    read_recbole,
)
from .schema import DataFormatError, RecDataBundle
from .timestamps import check_timestamp_unit

logger = logging.getLogger(__name__)

__all__ = [
    "AGE_BANDS",
    "ML100K_GENRES",
    "ML1M_AGE_BANDS",
    "ML1M_OCCUPATIONS",
    "MOVIELENS_FORMATS",
    "RECBOLE_VERSION",
    "age_band",
    "default_cache_dir",
    "fetch_movielens_100k",
    "load_movielens",
    "movielens_genre_names",
]

RECBOLE_VERSION = "1.2.1"
RECBOLE_WHEEL = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
RECBOLE_ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k"


def movielens_genre_names(bundle: RecDataBundle) -> list[str]:
    """Returns the sorted distinct genres found in the `genres` column of `bundle.items`."""
    if "genres" not in bundle.items.column_names:
        raise DataFormatError(f"{bundle.name}: items table lacks the column 'genres'")
    return sorted({g for genres in bundle.items["genres"] for g in genres})


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------


def load_movielens(
    path: str | Path | None = None,
    *,
    format: str = "auto",
    cache_dir: str | Path | None = None,
    timestamp_unit: str = "auto",
) -> RecDataBundle:
    """Reads MovieLens-100K or MovieLens-1M into a `RecDataBundle`.

    Args:
        path (`str` or `Path`, *optional*):
            A folder holding one of the supported layouts. `None` reads the embedded default, the real
            MovieLens-100K from RecBole's wheel (943 users, 1,682 items, 100,000 interactions), fetched
            with `fetch_movielens_100k` and cached as a parsed bundle in `cache_dir`.
        format (`str`, *optional*, defaults to `"auto"`):
            One of `"auto"`, `"recbole"` (`*.inter`, `*.item`, `*.user`), `"grouplens-100k"`
            (`u.data`, `u.item`, `u.user`, optional `u.genre`) or `"ml-1m"` (`ratings.dat`,
            `movies.dat`, `users.dat`). `"auto"` picks the layout from the files present in `path`.
            Ignored when `path` is `None`.
        cache_dir (`str` or `Path`, *optional*):
            Only used when `path` is `None`: where the wheel and the parsed bundle are kept. Defaults to
            `$GGR_HF_CACHE/recbole`, or `~/.cache/ggr_hf/recbole` when `GGR_HF_CACHE` is not set.
            Processes sharing it take turns (a lock file `.ggr-hf.lock` in it), so two trainings
            starting together download and parse once.
        timestamp_unit (`str`, *optional*, defaults to `"auto"`):
            The unit of the interaction file's times: `"s"` (MovieLens' own), `"ms"`, `"us"`, `"ns"`,
            or `"auto"` (inferred from the magnitude and logged; see `ggr_hf.data.timestamps`). Stored
            in seconds. A time outside 1970-01-01 .. 2100-01-01 is a `GGRDataError`.

    Returns:
        `RecDataBundle`: `sequences` (`user_id`, `item_ids`, `timestamps`), `items` (`item_id`,
        `original_id`, `title`, `year` (-1 when unknown), `genres`) and `users` (`user_id`,
        `original_id`, `age`, `gender`, `occupation`, `age_band`, `zip_code`). Ratings are dropped (every
        rating is one implicit interaction); ties in time keep the file's order.

    Raises:
        `DataFormatError`: a file is missing, empty or malformed; the message names the file, the column
        and the offending value.
        `RuntimeError`: `path` is `None` and RecBole's wheel can neither be found nor downloaded.
    """
    if format not in MOVIELENS_FORMATS:
        raise GGRInputError(f"format must be one of {', '.join(MOVIELENS_FORMATS)}, got {format!r}")
    check_timestamp_unit(timestamp_unit)
    if path is None:
        return _load_default(cache_dir, timestamp_unit)
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DataFormatError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: expected a folder holding MovieLens files, got a file")
    return read_movielens_folder(folder, format, timestamp_unit)


def default_cache_dir() -> Path:
    """`$GGR_HF_CACHE/recbole`, or `~/.cache/ggr_hf/recbole`: where RecBole's wheel is kept."""
    root = os.environ.get("GGR_HF_CACHE") or "~/.cache/ggr_hf"
    return Path(root).expanduser() / "recbole"


def _manual_instructions(directory: Path) -> str:
    return (
        f"To get it by hand, on a machine with access to PyPI run\n"
        f"    pip download --no-deps recbole=={RECBOLE_VERSION} -d DIR\n"
        f"and copy {RECBOLE_WHEEL} to {directory} (or set GGR_HF_CACHE=ROOT and put it in ROOT/recbole, "
        f"or pass cache_dir=DIR); alternatively download MovieLens-100K from GroupLens and call "
        f"load_movielens(path=FOLDER) on the folder holding u.data, u.item and u.user."
    )


def _pip_download(directory: Path) -> None:
    """Runs `pip download --no-deps recbole==1.2.1 -d directory` (never installs RecBole)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
        f"recbole=={RECBOLE_VERSION}",
        "-d",
        str(directory),
    ]
    logger.info("Downloading RecBole's wheel (for its MovieLens-100K copy): %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def fetch_movielens_100k(cache_dir: str | Path | None = None) -> Path:
    """Returns the path of RecBole's wheel, which holds MovieLens-100K, downloading it if needed.

    The wheel (`recbole-1.2.1-py3-none-any.whl`, about 2 MB) is fetched with
    `python -m pip download --no-deps recbole==1.2.1`; RecBole is never installed nor imported.

    Args:
        cache_dir (`str` or `Path`, *optional*):
            Where the wheel is kept. Defaults to `$GGR_HF_CACHE/recbole` or `~/.cache/ggr_hf/recbole`;
            with the default, a wheel lying directly in `$GGR_HF_CACHE` is found as well.

    Returns:
        `Path`: the wheel.

    Raises:
        `RuntimeError`: the wheel is not there and cannot be downloaded; the message says how to get it
        by hand.
    """
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    candidates = [directory / RECBOLE_WHEEL]
    if cache_dir is None:
        candidates.append(directory.parent / RECBOLE_WHEEL)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _pip_download(directory)
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        raise RuntimeError(
            f"Could not download RecBole's wheel, which carries MovieLens-100K, into {directory}: {err}\n"
            + _manual_instructions(directory)
        ) from err
    if not candidates[0].is_file():
        raise RuntimeError(
            f"`pip download` ran but {candidates[0]} is not there.\n" + _manual_instructions(directory)
        )
    return candidates[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_default(cache_dir: str | Path | None, timestamp_unit: str) -> RecDataBundle:
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = cache_lock(directory / ".ggr-hf.lock")
    except OSError:  # a read-only cache: nothing can be written there, so nothing to take turns on
        lock = contextlib.nullcontext()
    with lock:
        return _load_default_locked(cache_dir, timestamp_unit)


def _load_default_locked(cache_dir: str | Path | None, timestamp_unit: str) -> RecDataBundle:
    wheel = fetch_movielens_100k(cache_dir)
    # The parsed bundle depends on the unit its times were read in; "auto" keeps the original name.
    unit = "" if timestamp_unit == "auto" else f"-{timestamp_unit}"
    bundle_dir = wheel.parent / f"ml-100k-{_sha256(wheel)[:16]}{unit}"
    if RecDataBundle.is_complete(bundle_dir):
        logger.info("Reading the parsed MovieLens-100K from %s", bundle_dir)
        return RecDataBundle.load_from_disk(bundle_dir)
    bundle = _read_recbole_wheel(wheel, timestamp_unit)
    # Save into a private folder first and rename it, so that two processes never mix their files.
    tmp_dir = bundle_dir.with_name(f"{bundle_dir.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        bundle.save_to_disk(tmp_dir)
        try:
            tmp_dir.rename(bundle_dir)
        except OSError:  # another process finished first
            shutil.rmtree(tmp_dir, ignore_errors=True)
            if not RecDataBundle.is_complete(bundle_dir):
                raise
    except OSError as err:
        logger.warning("Could not cache the parsed MovieLens-100K in %s: %s", bundle_dir, err)
        return bundle
    return RecDataBundle.load_from_disk(bundle_dir)


def _read_recbole_wheel(wheel: Path, timestamp_unit: str) -> RecDataBundle:
    try:
        with zipfile.ZipFile(wheel) as zf:
            sources = []
            for ext in ("inter", "item", "user"):
                member = f"{RECBOLE_ML100K_MEMBER}.{ext}"
                try:
                    data = zf.read(member)
                except KeyError:
                    raise DataFormatError(f"{wheel}: the archive lacks {member}") from None
                sources.append(Source(f"{wheel}!{member}", data))
    except zipfile.BadZipFile as err:
        raise DataFormatError(f"{wheel}: not a readable wheel ({err}); delete it and try again") from None
    for src in sources:
        src.check_not_empty()
    return read_recbole("ml-100k", *sources, timestamp_unit=timestamp_unit)
