"""`ggr-hf data ...`: prepare the public data sets from the publishers' files.

    ggr-hf data prepare merrec --raw merrec/ --out data/merrec_2000
    ggr-hf data prepare ebnerd --raw ebnerd_large/ --out data/ebnerd_512 --min-events 512
    ggr-hf data prepare pixelrec --raw PixelRec/ --out data/pixel8m --variant Pixel8M
    ggr-hf data prepare release --raw release/merrec/ --out data/merrec_release --release-name merrec
    ggr-hf data prepare pixelrec --raw PixelRec/ --out data/pixel8m --timestamp-unit ms
    ggr-hf data list

The paper's filters are the defaults; the flags change them. A flag that does not apply to the chosen
data set is an error. Errors are raised (`DataFormatError` / `GGRDataError`, `GGRInputError`,
`GGRFileNotFoundError`, `FileExistsError`) for the `ggr-hf` dispatcher to report; nothing here imports
torch. Two prepares into one `--out` take turns (the second reuses the first one's cache).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ggr_hf.cli.common import positive_int
from ggr_hf.data.cache import prepare_dataset
from ggr_hf.data.registry import DATASETS, preparable
from ggr_hf.data.timestamps import TIMESTAMP_UNITS

__all__ = ["add_parsers"]

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
    "timestamp_unit": "timestamp_unit",
    "bucket_rows": "bucket_rows",
}


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Registers `data prepare` and `data list` on the `ggr-hf` sub-parser set.

    Each leaf parser sets `run`, a function `(args: argparse.Namespace) -> int` returning the exit code.
    """
    data = subparsers.add_parser("data", help="prepare the public data sets (PixelRec, MerRec, EB-NeRD)")
    actions = data.add_subparsers(dest="data_command", metavar="{prepare,list}")
    actions.required = True

    prepare = actions.add_parser(
        "prepare",
        help="read a data set from the publisher's files and cache it as a ggr-hf bundle",
        description="Read a data set from the publisher's files and cache it (datasets.save_to_disk).",
    )
    prepare.set_defaults(run=_run_prepare)
    prepare.add_argument("name", choices=preparable(), help="which data set")
    prepare.add_argument("--raw", required=True, type=Path, help="the folder as the publisher ships it")
    prepare.add_argument("--out", required=True, type=Path, help="the cache folder to write")
    prepare.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bars")
    filters = prepare.add_argument_group("filters (defaults: the paper's)")
    filters.add_argument(
        "--min-events",
        "--min-clicks",
        dest="min_events",
        type=positive_int,
        default=None,
        help="keep users with at least this many events: merrec 2000, ebnerd 512 (clicks), pixelrec 1",
    )
    filters.add_argument(
        "--skip-unknown-events",
        action="store_true",
        default=None,
        help="merrec: skip and count events of unknown type instead of failing",
    )
    prepare.add_argument(
        "--timestamp-unit",
        choices=TIMESTAMP_UNITS,
        help="unit of integer time columns (default auto: inferred from the magnitude and logged); "
        "typed timestamps (MerRec, EB-NeRD) carry their own",
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
    rel.add_argument(
        "--release-name",
        help="the data set the release files are for: merrec, pixel8m, ebnerd (default: release)",
    )
    prepare.add_argument("--bucket-rows", type=int, help=argparse.SUPPRESS)

    listing = actions.add_parser("list", help="list the data sets `prepare` knows")
    listing.set_defaults(run=_run_list)


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


def _run_list(args: argparse.Namespace) -> int:
    for name in preparable():
        print(f"{name:10s} {DATASETS[name].description}")
    return 0


def _run_prepare(args: argparse.Namespace) -> int:
    prepare_dataset(
        args.name, args.raw, args.out, force=args.force, progress=not args.no_progress, **_options(args)
    )
    return 0
