"""The `ggr-hf` command line: one dispatcher, one module per command group.

Each command module (`train`, `evaluate`, `recommend`, `compare`, `ablate`, `hub` for `push` and
`card`, `data`, `index`) exposes `add_parsers(subparsers) -> None`; each leaf parser sets `run`, a function
`(args) -> int`. The dispatcher owns what is common: the exit codes, error reporting, `--verbose`,
and the console (library logs and progress bars off unless `--verbose`). Command modules import
their heavy dependencies inside `run`, so that `ggr-hf data ...` never imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterator
from typing import NoReturn, TextIO

from ggr_hf.cli import ablate, compare, data, evaluate, hub, index, recommend, train
from ggr_hf.errors import GGRError, GGRIncompleteRunWarning, GGRLockTimeoutError, GGRTrainingError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUN_FAILED",
    "EXIT_USAGE",
    "build_parser",
    "exit_code",
    "main",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_RUN_FAILED = 3
EXIT_INTERRUPTED = 130

# What libraries raise on bad input at the boundary (a data file pandas cannot parse, a path that
# is not there, an output that exists or may not be written, e.g. a read-only folder given as
# --output). KeyError is not here: ours are bugs, exit 1.
LIBRARY_INPUT_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)

EPILOG = """\
exit codes:
  0    success
  2    bad input or usage: a wrong flag or value, a bad config, data file or model folder, a
       missing path (one line 'ggr-hf: error: ...' on stderr naming the file, field or value)
  3    the run failed: training could not go on (e.g. a NaN loss); the line names the step and
       the last good checkpoint to resume from
  1    any other failure: a data cache locked by another process for longer than
       GGR_HF_LOCK_TIMEOUT, or a bug (rerun with --verbose for the traceback)
  130  interrupted (Ctrl-C)

--verbose shows tracebacks and the libraries' logs and progress bars.
docs/errors.md lists every error with an example message and the fix."""

COMMAND_MODULES = (train, evaluate, recommend, compare, ablate, data, hub, index)

# Loggers of the libraries under us: quiet (errors only) unless --verbose.
LIBRARY_LOGGERS = ("transformers", "accelerate", "datasets", "huggingface_hub", "torch", "matplotlib")


class _Parser(argparse.ArgumentParser):
    """Reports a usage error in one line (sub-parsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"ggr-hf: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The `ggr-hf` parser with every command group's sub-parsers."""
    parser = _Parser(
        prog="ggr-hf",
        description="ggr-hf: train, evaluate, compare and publish GGR recommenders; prepare data sets.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show tracebacks, library logs and progress bars"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parsers(sub)
    return parser


def _rank() -> int:
    # Set by the launchers (accelerate launch, torchrun); the accelerator is built later.
    return int(os.environ.get("RANK", "0"))


@contextlib.contextmanager
def _library_progress_bars(enabled: bool) -> Iterator[None]:
    """Turns the Hub's and transformers' progress bars (one per model save or load) on or off for
    one command. transformers copies the Hub's setting when it is imported, so it is set directly
    only once imported (importing it here would load it for `ggr-hf data` too)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    def apply(on: bool) -> None:
        (enable_progress_bars if on else disable_progress_bars)()
        if "transformers" in sys.modules:
            from transformers.utils import logging as transformers_logging

            (transformers_logging.enable_progress_bar if on else transformers_logging.disable_progress_bar)()

    before = not are_progress_bars_disabled()
    apply(enabled)
    try:
        yield
    finally:
        apply(before)


@contextlib.contextmanager
def _our_warnings_in_one_line() -> Iterator[None]:
    """Shows ggr-hf's own warnings (e.g. an unfinished run's model) as one line
    `ggr-hf: warning: ...`, as errors are shown; other warnings keep Python's format."""
    show = warnings.showwarning

    def one_line(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, GGRIncompleteRunWarning):
            print(f"ggr-hf: warning: {' '.join(str(message).split())}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        yield
    finally:
        warnings.showwarning = show


@contextlib.contextmanager
def _console(verbose: bool) -> Iterator[None]:
    """The logging set-up of one command, undone afterwards (tests call `main` many times).

    Quiet: our own warnings only, no library progress bars. Verbose: our INFO logs (on the main
    process of a launched run), the libraries' warnings and progress bars.
    """
    root = logging.getLogger()
    rank_prefix = f"[rank {_rank()}] " if "WORLD_SIZE" in os.environ else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{rank_prefix}%(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("ggr_hf")
    saved = {
        "root": root.level,
        "ggr_hf": ours.level,
        **{name: logging.getLogger(name).level for name in LIBRARY_LOGGERS},
    }
    saved_env = os.environ.get("TRANSFORMERS_VERBOSITY")
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    ours.setLevel(logging.INFO if verbose and _rank() == 0 else logging.WARNING)
    if not verbose:
        # transformers sets its level from this variable when it is first imported (after us).
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with _library_progress_bars(verbose), _our_warnings_in_one_line():
            yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved["root"])
        ours.setLevel(saved["ggr_hf"])
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(saved[name])
        if saved_env is None:
            os.environ.pop("TRANSFORMERS_VERBOSITY", None)
        else:
            os.environ["TRANSFORMERS_VERBOSITY"] = saved_env


def exit_code(err: BaseException) -> int:
    """The exit code of a command that raised `err` (see `EPILOG`)."""
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, GGRTrainingError):
        return EXIT_RUN_FAILED
    if isinstance(err, GGRLockTimeoutError):
        return EXIT_FAILURE
    if isinstance(err, (GGRError, *LIBRARY_INPUT_ERRORS)):
        return EXIT_USAGE
    return EXIT_FAILURE


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def main(argv: list[str] | None = None) -> int:
    """Runs `ggr-hf` with `argv` (default: `sys.argv[1:]`); returns the exit code (see `EPILOG`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        # --help (0) or a usage error (2), already printed by argparse.
        return int(exit_.code or 0)
    with _console(args.verbose):
        try:
            return int(args.run(args))
        except KeyboardInterrupt:
            print("ggr-hf: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as err:  # noqa: BLE001 - the dispatcher reports every failure the same way
            code = exit_code(err)
            if args.verbose:
                traceback.print_exc()
            if code == EXIT_FAILURE:
                hint = "" if args.verbose else " (rerun with --verbose for the traceback)"
                print(f"ggr-hf: error: {type(err).__name__}: {_one_line(err)}{hint}", file=sys.stderr)
            else:
                print(f"ggr-hf: error: {_one_line(err)}", file=sys.stderr)
            return code
