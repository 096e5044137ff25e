"""``segguided segment``: segment one BraTS case folder with a trained checkpoint.

The case first passes the QA gate (``data.qa.qa_case_folder``): the checks a site's cases
pass before training (readable files, one grid, finite and non-constant intensities...),
so a case with NaN voxels is refused with its reason instead of segmented as empty. The
segmentation is written in the case's label convention as the gate finds it (declared
with ``--labels``, decided from the case's own segmentation, else the layout's default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from segguided_model.checkpoint import CheckpointError, load_checkpoint
from segguided_model.data.layouts import CASE_FOLDER_LAYOUTS, MODALITIES, CaseRecord
from segguided_model.data.preprocessing import IMAGE_KEY, load_case, restore_orientation
from segguided_model.data.qa import qa_case_folder
from segguided_model.data.volume_file import read_volume
from segguided_model.inference import SlidingWindow, predict_volume
from segguided_model.labels import CONVENTIONS, SUBREGIONS, get_convention
from segguided_model.overlay import write_overlay
from segguided_tools.cli.command_error import CommandError

DEFAULT_ROI = 128

SEGMENTATION_SUFFIX = "-seg"
ATTENTION_SUFFIXES: tuple[str, ...] = tuple(f"-attention-{name.lower()}" for name in SUBREGIONS)
OVERLAY_SUFFIX = "-overlay.png"
"""What ``segment`` writes: ``<case-id>-seg.nii.gz``, ``<case-id>-attention-{ncr,ed,et}.nii.gz``, ``<case-id>-overlay.png``."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment one case folder (BraTS 2021 or 2023 layout)",
        description=(
            "Segment one BraTS case folder (.nii.gz or .nii) after the QA gate's checks. Writes "
            "<case-id>-seg.nii.gz on the input's voxel grid with its affine and header, in the case's "
            "label convention, one NIfTI per attention map (NCR, ED, ET) and a PNG overlay."
        ),
    )
    parser.add_argument("case_dir", type=Path, metavar="CASE_DIR")
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="CKPT")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT_DIR")
    parser.add_argument("--layout", choices=sorted(CASE_FOLDER_LAYOUTS), help="case-folder layout (default: detected)")
    parser.add_argument(
        "--labels",
        choices=sorted(CONVENTIONS),
        help="the case's label convention, written by the output (default: as the QA gate finds it: from the "
        "case's segmentation if it has one, else the layout's)",
    )
    parser.add_argument(
        "--roi-size", type=int, default=DEFAULT_ROI,
        help="sliding-window edge in voxels, rounded up to the network's divisor and capped at the brain's "
        "bounding box (default %(default)s)",
    )
    parser.add_argument("--overlap", type=float, default=0.5, help="overlap of neighbouring windows (default %(default)s)")
    parser.add_argument(
        "--memory-mb", type=float, default=2048.0,
        help="activation memory for one forward pass; decides how many windows run together (default %(default)s)",
    )
    parser.add_argument("--sw-batch-size", type=int, default=None, help="windows per forward pass (default: from --memory-mb)")
    parser.add_argument(
        "--mirror", action="store_true",
        help="test-time augmentation: average the predictions of all 8 mirrorings of each window (8x the time)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--amp", action="store_true", help="half-precision inference (CUDA)")
    parser.set_defaults(handler=run)


def _save(volume: np.ndarray, reference: nib.Nifti1Image, dtype: type, path: Path) -> None:
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    image = nib.Nifti1Image(volume.astype(dtype), reference.affine, header)
    image.header.set_slope_inter(1, 0)
    nib.save(image, path)


def checked_case(case_dir: Path, layout: str | None, convention: str | None) -> tuple[CaseRecord, str]:
    """The case in ``case_dir`` and its label convention, after the QA gate.

    Raises:
        CommandError: the folder is missing or matches no layout, or the case fails the
            gate (the message gives the reason code and what failed).
    """
    try:
        report = qa_case_folder(case_dir, layout=layout, convention=convention)
    except (FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from None
    if report.rejected:
        (case_id, reason), = report.rejected
        raise CommandError(f"case {case_id} fails the QA gate ({reason}): {report.details[case_id]}")
    if not report.valid:
        reasons = "; ".join(stray.reason for stray in report.strays if "/" not in stray.name)
        raise CommandError(f"{case_dir}: {reasons or 'no case found'}")
    return report.valid[0], str(report.convention)


def run(args: argparse.Namespace) -> int:
    try:
        checkpoint = load_checkpoint(args.checkpoint)
    except CheckpointError as error:
        raise CommandError(str(error)) from None
    record, convention_name = checked_case(args.case_dir, args.layout, args.labels)
    try:
        item = load_case(record, with_label=False)
    except Exception as error:  # nibabel and MONAI raise many types for unreadable files
        raise CommandError(f"case {record.case_id}: cannot read its images: {error}") from None
    convention = get_convention(convention_name)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    image = item[IMAGE_KEY]
    try:
        window = SlidingWindow(
            roi_size=args.roi_size, overlap=args.overlap, memory_mb=args.memory_mb, batch_size=args.sw_batch_size,
            mirror=args.mirror, amp=args.amp,
        )
        prediction = predict_volume(checkpoint.model, image, window, device)
    except ValueError as error:
        raise CommandError(str(error)) from None

    source = read_volume(record.image_paths[MODALITIES[0]])
    label = restore_orientation(prediction.label_map(convention)[None], image)[0].numpy()
    if label.shape != source.grid.shape:
        raise CommandError(
            f"case {record.case_id}: prediction shape {label.shape} differs from {source.path} {source.grid.shape}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    written = [args.out / f"{record.case_id}{SEGMENTATION_SUFFIX}.nii.gz"]
    _save(label, source.image, np.uint8, written[0])
    if prediction.attention_maps is not None:
        maps = restore_orientation(prediction.attention_maps, image).numpy()
        for channel, suffix in enumerate(ATTENTION_SUFFIXES):
            path = args.out / f"{record.case_id}{suffix}.nii.gz"
            _save(maps[channel], source.image, np.float32, path)
            written.append(path)
    overlay = args.out / f"{record.case_id}{OVERLAY_SUFFIX}"
    spacing = tuple(float(s) for s in image.pixdim[:3])
    write_overlay(overlay, image, prediction.regions, prediction.attention_maps, spacing, title=record.case_id)
    written.append(overlay)
    print(f"case {record.case_id}: label convention {convention.name}", file=sys.stderr)
    for path in written:
        print(path)
    return 0
