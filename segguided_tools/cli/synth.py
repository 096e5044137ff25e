"""``segguided synth OUT_DIR``: write synthetic hospital sites and a held-out validation folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from segguided_model.data.layouts import CASE_FOLDER_LAYOUTS
from segguided_model.data.synthetic import (
    DEFAULT_SIZE,
    SynthesisParameters,
    ensure_federation,
)
from segguided_tools.cli.command_error import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = SynthesisParameters()
    parser = subparsers.add_parser(
        "synth",
        help="generate synthetic hospital sites",
        description=(
            "Write N site folders of synthetic brain-tumour cases (real .nii.gz files) and a held-out "
            "validation folder into OUT_DIR. Reuses OUT_DIR when it already holds the same federation; "
            "replaces a federation generated with other parameters; never touches other folders."
        ),
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output folder")
    parser.add_argument("--sites", type=int, default=defaults.sites, help="number of sites (default %(default)s)")
    parser.add_argument("--cases", type=int, default=defaults.cases, help="cases per site (default %(default)s)")
    parser.add_argument(
        "--val-cases", type=int, default=defaults.val_cases, help="held-out validation cases (default %(default)s)"
    )
    parser.add_argument("--layout", choices=sorted(CASE_FOLDER_LAYOUTS), default=defaults.layout)
    parser.add_argument(
        "--size", type=int, nargs=3, default=list(DEFAULT_SIZE), metavar=("D", "H", "W"),
        help="volume shape (default %(default)s; 240 240 155 for BraTS size)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        federation = ensure_federation(
            args.out_dir, args.sites, args.cases, args.val_cases, args.layout, tuple(args.size), args.seed
        )
    except (ValueError, FileExistsError) as error:
        raise CommandError(str(error)) from None
    for site_dir in federation.site_dirs:
        print(site_dir)
    print(federation.validation_dir)
    print(f"{len(federation.site_dirs)} site(s) ready in {time.perf_counter() - start:.1f} s")
    return 0
