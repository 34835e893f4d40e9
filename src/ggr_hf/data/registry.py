"""The one registry of data sets ggr-hf knows by name, for training and for `ggr-hf data prepare` alike.

Each name maps to a `DatasetSpec`:

- `ml-100k`: the embedded MovieLens-100K (`load_movielens()`), or MovieLens files in `path`;
- `movielens`: MovieLens files in `path` (any layout `load_movielens` reads);
- `synthetic`: `make_synthetic(**options)`;
- `bundle`: a folder written by `ggr-hf data prepare` (`RecDataBundle.load_from_disk`);
- the preparable sets `pixelrec`, `merrec`, `ebnerd` and `release`: their loader reads the publisher's
  files (`prepare_dataset` in `ggr_hf.data.cache` runs it and caches the bundle); opened by name, `path`
  is the prepared folder.

`load_dataset_bundle(name, path, **options)` opens any of them. Loader modules are imported on first
use, so importing the registry stays cheap (the `data prepare` command line imports it).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ggr_hf.errors import GGRInputError

from .locking import open_prepared
from .schema import RecDataBundle

__all__ = [
    "DATASETS",
    "RUNTIME_OPTIONS",
    "DatasetSpec",
    "get_dataset_spec",
    "load_dataset_bundle",
    "preparable",
]

PathLike = str | os.PathLike

# Options that change how a loader runs, not what it produces: not part of the cache fingerprint.
RUNTIME_OPTIONS = ("work_dir", "progress", "bucket_rows", "batch_rows", "block_size")


def _check_options(name: str, function: Callable, options: dict) -> None:
    """Unknown keyword options are a `GGRInputError` listing the accepted ones (not a `TypeError`)."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(function).parameters
    accepted = sorted(p for p, v in params.items() if v.kind in kinds and p != "path")
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise GGRInputError(
            f"option(s) {', '.join(unknown)} do not apply to data.dataset: {name}; it accepts: "
            f"{', '.join(accepted)}"
        )


def _load_ml100k(name: str, path: PathLike | None, options: dict) -> RecDataBundle:
    from .movielens import load_movielens

    _check_options(name, load_movielens, options)
    return load_movielens(path, **options) if path else load_movielens(**options)


def _load_movielens(name: str, path: PathLike | None, options: dict) -> RecDataBundle:
    from .movielens import load_movielens

    _check_options(name, load_movielens, options)
    return load_movielens(_required_path(name, path), **options)


def _make_synthetic(name: str, path: PathLike | None, options: dict) -> RecDataBundle:
    from .synthetic import make_synthetic

    if path:
        raise GGRInputError(f"data.path does not apply to data.dataset: {name}")
    _check_options(name, make_synthetic, options)
    return make_synthetic(**options)


def _load_prepared(name: str, path: PathLike | None, options: dict) -> RecDataBundle:
    if options:
        raise GGRInputError(
            f"option(s) {', '.join(sorted(options))} do not apply to data.dataset: {name} "
            "(a prepared folder is read as it was written)"
        )
    return open_prepared(_required_path(name, path))


def _required_path(name: str, path: PathLike | None) -> PathLike:
    if not path:
        raise GGRInputError(f"data.path is required with data.dataset: {name}")
    return path


@dataclass(frozen=True)
class DatasetSpec:
    """A data set known by name: how to open it and, for a preparable one, its loader.

    A preparable data set's loader is `module.loader(raw_dir, *, work_dir=None, progress=True,
    **options)`; the module's `input_files(raw_dir, **options)` lists the files whose sizes and times
    make up the cache fingerprint, and its `LOADER_VERSION` is part of the fingerprint so that a changed
    loader rebuilds caches.

    Args:
        name (`str`): the name used in configs (`data.dataset`) and on the command line.
        description (`str`): one line for `ggr-hf data list`.
        opener (`Callable[[str, PathLike | None, dict], RecDataBundle]`): opens the data set from a
            `path` and `options` (see `load_dataset_bundle`).
        module (`str`, *optional*): the loader's module, relative to `ggr_hf.data`; only for data sets
            prepared from the publisher's files.
        loader (`str`, *optional*): the loader function's name in `module`.
    """

    name: str
    description: str
    opener: Callable[[str, PathLike | None, dict], RecDataBundle] = _load_prepared
    module: str | None = None
    loader: str | None = None

    @property
    def preparable(self) -> bool:
        """Whether `ggr-hf data prepare` builds this data set from the publisher's files."""
        return self.module is not None

    def _module(self):
        if self.module is None:
            raise GGRInputError(
                f"{self.name} is not prepared from raw files; preparable: {', '.join(preparable())}"
            )
        return importlib.import_module(self.module, package=__package__)

    def load_function(self) -> Callable[..., RecDataBundle]:
        return getattr(self._module(), self.loader)

    def input_files(self, raw_dir: Path, options: dict) -> list[Path]:
        return list(self._module().input_files(raw_dir, **options))

    @property
    def version(self) -> str:
        return str(getattr(self._module(), "LOADER_VERSION", "0"))

    def option_names(self) -> list[str]:
        """The loader's keyword options that change what it produces (the fingerprint's options)."""
        params = inspect.signature(self.load_function()).parameters
        return [
            p
            for p, v in params.items()
            if v.kind is inspect.Parameter.KEYWORD_ONLY and p not in RUNTIME_OPTIONS
        ]

    def accepted_options(self) -> set[str]:
        """Every option a caller may pass to `prepare_dataset` for this data set."""
        params = inspect.signature(self.load_function()).parameters
        return set(self.option_names()) | (set(RUNTIME_OPTIONS) & set(params)) - {"work_dir", "progress"}


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "ml-100k", "the embedded MovieLens-100K (RecBole's copy), or MovieLens files", _load_ml100k
        ),
        DatasetSpec("movielens", "MovieLens-100K or -1M files in data.path", _load_movielens),
        DatasetSpec("synthetic", "a generated data set with planted structure", _make_synthetic),
        DatasetSpec("bundle", "a folder written by `ggr-hf data prepare`"),
        DatasetSpec(
            "pixelrec",
            "PixelRec / Pixel8M interaction + item-info CSVs",
            module=".pixelrec",
            loader="load_pixelrec",
        ),
        DatasetSpec(
            "merrec", "MerRec monthly folders of parquet shards", module=".merrec", loader="load_merrec"
        ),
        DatasetSpec(
            "ebnerd",
            "EB-NeRD split folder (train/history.parquet, articles)",
            module=".ebnerd",
            loader="load_ebnerd",
        ),
        DatasetSpec(
            "release",
            "the GGR release's processed parquet pair",
            module=".release",
            loader="load_release_dir",
        ),
    )
}


def preparable() -> list[str]:
    """The names `ggr-hf data prepare` accepts, sorted."""
    return sorted(name for name, spec in DATASETS.items() if spec.preparable)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec registered under `name` (case-insensitive).

    Raises:
        `GGRInputError` (a `ValueError`) listing the known names.
    """
    try:
        return DATASETS[name.lower()]
    except (KeyError, AttributeError):
        raise GGRInputError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def load_dataset_bundle(name: str, path: str | os.PathLike | None = None, **options) -> RecDataBundle:
    """Opens the data set registered under `name`.

    Args:
        name (`str`): a key of `DATASETS`.
        path (`str` or `os.PathLike`, *optional*): MovieLens files for `ml-100k` (optional) and
            `movielens` (required); a prepared folder for `bundle` and the preparable sets (required).
        **options: `make_synthetic`'s arguments for `synthetic`, `load_movielens`'s keyword arguments for
            the MovieLens sets; none for prepared folders.

    Returns:
        `RecDataBundle`.

    Raises:
        `GGRInputError` (a `ValueError`) for an unknown name or option, (listing the known ones) or a missing required `path`.
    """
    spec = get_dataset_spec(name)
    return spec.opener(spec.name, path, options)
