"""`ggr-hf data ...`: prepare the public data sets from the publishers' files.

    ggr-hf data prepare merrec --raw merrec/ --out data/merrec_2000
    ggr-hf data prepare ebnerd --raw ebnerd_large/ --out data/ebnerd_512 --min-events 512
    ggr-hf data prepare pixelrec --raw PixelRec/ --out data/pixel8m --variant Pixel8M
    ggr-hf data prepare release --raw release/merrec/ --out data/merrec_release --release-name merrec
    ggr-hf data list

The paper's filters are the defaults; the flags change them. A flag that does not apply to the chosen
data set is an error. The console script wires `add_data_commands` / `run_data_command`; for a
standalone run use `python -m ggr_hf.data.cli data prepare ...`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .prepare import DATASETS, prepare_dataset
from .schema import DataFormatError

__all__ = ["add_data_commands", "main", "run_data_command"]

# Flag destination -> loader option name. Only the flags given on the command line are passed, so the
# loaders' own defaults (the paper's filters) apply otherwise.
_OPTION_FLAGS = {
    "min_events": "min_events",
    "skip_unknown_events": "skip_unknown_events",
    "variant": "variant",
    "tag_map": "tag_map",
    "tag_separator": "tag_separator",
    "splits": "splits",
    "include_behaviors": "include_behaviors",
    "include_body": "include_body",
    "release_name": "release_name",
    "bucket_rows": "bucket_rows",
}


def add_data_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers the `data` command (with `prepare` and `list`) on an argparse sub-parser set."""
    data = subparsers.add_parser("data", help="prepare the public data sets (PixelRec, MerRec, EB-NeRD)")
    data.set_defaults(func=run_data_command)
    actions = data.add_subparsers(dest="data_command", metavar="{prepare,list}")
    actions.required = True

    prepare = actions.add_parser(
        "prepare",
        help="read a data set from the publisher's files and cache it as a ggr-hf bundle",
        description="Read a data set from the publisher's files and cache it (datasets.save_to_disk).",
    )
    prepare.add_argument("name", choices=sorted(DATASETS), help="which data set")
    prepare.add_argument("--raw", required=True, type=Path, help="the folder as the publisher ships it")
    prepare.add_argument("--out", required=True, type=Path, help="the cache folder to write")
    prepare.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bars")
    filters = prepare.add_argument_group("filters (defaults: the paper's)")
    filters.add_argument(
        "--min-events",
        "--min-clicks",
        dest="min_events",
        type=int,
        default=None,
        help="keep users with at least this many events: merrec 2000, ebnerd 512 (clicks), pixelrec 1",
    )
    filters.add_argument(
        "--skip-unknown-events",
        action="store_true",
        default=None,
        help="merrec: skip and count events of unknown type instead of failing",
    )
    pixel = prepare.add_argument_group("pixelrec")
    pixel.add_argument("--variant", help="which interaction file, e.g. Pixel200K, Pixel1M, Pixel8M")
    pixel.add_argument("--tag-map", type=Path, help="CSV tag -> categories table replacing the packaged one")
    pixel.add_argument("--tag-separator", help="split the item-info 'tag' field on this string")
    eb = prepare.add_argument_group("ebnerd")
    eb.add_argument("--splits", help="comma-separated split folders to read (default: train)")
    eb.add_argument(
        "--include-behaviors", action="store_true", default=None, help="add behaviors.parquet clicks"
    )
    eb.add_argument("--include-body", action="store_true", default=None, help="keep the article body text")
    rel = prepare.add_argument_group("release")
    rel.add_argument("--release-name", help="the data set the release files are for: merrec, pixel8m, ebnerd")
    prepare.add_argument("--bucket-rows", type=int, help=argparse.SUPPRESS)

    actions.add_parser("list", help="list the data sets `prepare` knows")
    return data


def _options(args: argparse.Namespace) -> dict:
    options = {}
    for dest, option in _OPTION_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "splits":
            value = tuple(s.strip() for s in value.split(",") if s.strip())
        options[option] = value
    return options


def run_data_command(args: argparse.Namespace) -> int:
    """Runs a parsed `data` command; returns the process exit code."""
    if args.data_command == "list":
        for name, spec in sorted(DATASETS.items()):
            print(f"{name:10s} {spec.description}")
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        prepare_dataset(
            args.name, args.raw, args.out, force=args.force, progress=not args.no_progress, **_options(args)
        )
    except (DataFormatError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no cache was written", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m ggr_hf.data.cli data prepare ...`"""
    parser = argparse.ArgumentParser(prog="ggr-hf")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_data_command(args)


if __name__ == "__main__":
    sys.exit(main())
