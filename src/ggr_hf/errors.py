"""ggr-hf's exception types: one family for every entry point (CLI, YAML / `--set`, Python API,
loaders, model folders), so that callers can catch `GGRError` and the CLI can map each kind to its
exit code. Every message is one line naming the file, field or argument, the offending value, and
what to do. `docs/errors.md` lists each class with an example message and the fix.

The classes also subclass the built-in exception that fits (`ValueError`, `FileNotFoundError`,
`RuntimeError`), so code written against those keeps working.

This module is at the bottom of the layers: it imports nothing from ggr_hf.
"""

from __future__ import annotations

__all__ = [
    "GGRCheckpointError",
    "GGRConfigError",
    "GGRDataError",
    "GGRError",
    "GGRFileNotFoundError",
    "GGRIncompleteRunWarning",
    "GGRInputError",
    "GGRLockTimeoutError",
    "GGRMissingDependencyError",
    "GGRModelFolderError",
    "GGRTrainingError",
    "UnreadableWeightsError",
]


class GGRError(Exception):
    """Base class of every error ggr-hf raises on purpose."""


class GGRInputError(GGRError, ValueError):
    """A bad argument or value given to the Python API or the command line (names the argument and
    the value), e.g. `recommend(k=-1)`, an item id outside the catalogue, a `--set` that is not YAML."""


class GGRConfigError(GGRInputError):
    """A bad configuration field: an experiment YAML section/field, a `--set` override, a model
    `config.json` field (names the source, `section.field` and the value)."""


class GGRDataError(GGRError, ValueError):
    """A data file that does not have the expected layout or plausible values (names the file, the
    column and the offending value)."""


class GGRFileNotFoundError(GGRError, FileNotFoundError):
    """A path that does not exist: a model folder, a data folder or file, a checkpoint."""


class GGRModelFolderError(GGRError, ValueError):
    """A model folder that exists but cannot be loaded as asked: no safetensors weights (only a
    pickle), a heads folder whose base is gone, a config whose shapes disagree with its weights
    (names the folder and the file)."""


class UnreadableWeightsError(GGRModelFolderError, OSError):
    """A weights file that exists but is truncated or not safetensors (names the file). Also the
    `OSError` transformers raises for such files, so code catching that keeps working."""


class GGRCheckpointError(GGRError, ValueError):
    """A checkpoint that cannot be resumed from: truncated, or written by a run with another model
    shape, batch size or data set (names the checkpoint file and the reason)."""


class GGRTrainingError(GGRError, RuntimeError):
    """A run that cannot go on: a NaN or infinite loss (names the step and the last good checkpoint)."""


class GGRLockTimeoutError(GGRError, TimeoutError):
    """Another process held a data cache's lock for longer than `GGR_HF_LOCK_TIMEOUT` (names the
    lock file and the holder). Not bad input: the CLI exits with 1."""


class GGRMissingDependencyError(GGRError, ImportError):
    """An optional dependency is not installed (the message names the extra that installs it)."""


class GGRIncompleteRunWarning(UserWarning):
    """Loading or using the model of a run that did not finish (no completeness marker)."""
