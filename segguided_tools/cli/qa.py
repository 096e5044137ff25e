"""``segguided qa SITE_DIR``: run the QA gate on a site's data folder and report every bad case."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segguided_federation.site_data import site_cache_dir
from segguided_model.data.layouts import LAYOUT_NAMES
from segguided_model.data.qa import run_qa
from segguided_model.labels import CONVENTIONS
from segguided_tools.cli.command_error import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "qa",
        help="check a site's cases before training",
        description=(
            "Check every case in SITE_DIR (.nii.gz or .nii; every file accounted for, no broken links, "
            "modalities present and readable, one shape and affine, finite and non-constant intensities, "
            "a non-empty brain, plausible spacing, labels in the site's one convention). "
            "Exits 0 when at least one valid case remains, 1 when none does."
        ),
    )
    parser.add_argument("site_dir", type=Path, metavar="SITE_DIR", help="the site's data folder")
    parser.add_argument("--layout", choices=LAYOUT_NAMES, help="force the folder layout (default: detect)")
    parser.add_argument(
        "--convention",
        choices=sorted(CONVENTIONS),
        help="declare the site's label convention (default: decided once from all its labels; cases that "
        "disagree are rejected as label-convention-undecided)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None,
        help="where the outcome of each case's checks is kept, so that unchanged cases are not read again "
        "(default: the SuperNode's default for this folder, $SEGGUIDED_CACHE/sites/NAME-HASH; give the site "
        "config's cache-dir if it sets one)",
    )
    parser.add_argument("--no-cache", action="store_true", help="check every case, keep nothing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (with site-local details)")
    parser.add_argument(
        "--require-labels", action="store_true", help="fail unless at least one valid case has a segmentation"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.site_dir.is_dir():
        raise CommandError(f"site folder {args.site_dir} does not exist or is not a folder")
    cache_dir = None if args.no_cache else site_cache_dir(args.site_dir, args.cache_dir)
    report = run_qa(args.site_dir, layout=args.layout, convention=args.convention, cache_dir=cache_dir)
    print(report.to_json(include_details=True) if args.json else report.format_table())
    usable = report.trainable if args.require_labels else report.valid
    if not usable:
        kind = "valid case with a segmentation" if args.require_labels else "valid case"
        print(
            f"segguided qa: no {kind} in {args.site_dir} "
            f"({len(report.rejected)} rejected, {len(report.strays)} stray entries); nothing to train on",
            file=sys.stderr,
        )
        return 1
    return 0
