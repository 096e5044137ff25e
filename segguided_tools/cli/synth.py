"""``segguided synth OUT_DIR``: write synthetic hospital sites and a held-out validation folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from segguided_model.data.layouts import CASE_FOLDER_LAYOUTS
from segguided_model.data.phantom.case import brats_grid
from segguided_model.data.synthetic import (
    CPU_SPACING_MM,
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
            "Write N site folders of phantom brain-tumour cases (MNI152 anatomy, grown gliomas with mass "
            "effect, each site its own scanner; real .nii.gz files) and a held-out validation folder into "
            "OUT_DIR, covering BraTS's 240x240x155 mm field of view. Reuses OUT_DIR when it already holds the "
            "same federation; replaces a federation generated with other parameters; never touches other folders."
        ),
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="output folder")
    parser.add_argument("--sites", type=int, default=defaults.sites, help="number of sites (default %(default)s)")
    parser.add_argument("--cases", type=int, default=defaults.cases, help="cases per site (default %(default)s)")
    parser.add_argument(
        "--val-cases", type=int, default=defaults.val_cases, help="held-out validation cases (default %(default)s)"
    )
    parser.add_argument("--layout", choices=sorted(CASE_FOLDER_LAYOUTS), default=defaults.layout)
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument(
        "--spacing", type=float, default=CPU_SPACING_MM, metavar="MM",
        help="isotropic voxel size of the BraTS field of view: 1 gives BraTS geometry (240x240x155), "
        "the default %(default)s the CPU grid (48x48x31)",
    )
    grid.add_argument(
        "--size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
        help="volume shape instead of --spacing (240 mm over the largest axis; Z is the slice axis)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if not args.spacing >= 1.0:
        raise CommandError(f"--spacing {args.spacing}: expected at least the template's 1 mm")
    size = tuple(args.size) if args.size else brats_grid(args.spacing)
    try:
        federation = ensure_federation(args.out_dir, args.sites, args.cases, args.val_cases, args.layout, size, args.seed)
    except (ValueError, FileExistsError) as error:
        raise CommandError(str(error)) from None
    for site_dir in federation.site_dirs:
        print(site_dir)
    print(federation.validation_dir)
    print(f"{len(federation.site_dirs)} site(s) of {'x'.join(map(str, size))} voxels ready in {time.perf_counter() - start:.1f} s")
    return 0
