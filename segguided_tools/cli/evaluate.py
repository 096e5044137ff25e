"""``segguided evaluate``: BraTS-style Dice and HD95 of prediction files against references."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from segguided_model.data.layouts import CASE_FOLDER_LAYOUTS
from segguided_model.labels import (
    CONVENTIONS,
    detect_convention,
    get_convention,
    region_masks,
)
from segguided_model.metrics import METRIC_KEYS, case_metrics, mean_metrics
from segguided_tools.cli.command_error import CommandError

CASE_ID_COLUMN = "case-id"
MEAN_ROW_ID = "mean"
_SUFFIXES = ("-seg.nii.gz", ".nii.gz")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice and HD95 (ET, TC, WT) of predictions against references",
        description=(
            "BraTS-style evaluation. Predictions are PRED_DIR/<case-id>-seg.nii.gz or <case-id>.nii.gz; "
            "references are such flat files or BraTS case folders, matched by case id. Writes one row "
            "per case and a final row of means."
        ),
    )
    parser.add_argument("--pred", type=Path, required=True, metavar="PRED_DIR")
    parser.add_argument("--ref", type=Path, required=True, metavar="REF_DIR")
    parser.add_argument("--out", type=Path, required=True, metavar="METRICS.csv")
    parser.add_argument(
        "--labels",
        choices=sorted(CONVENTIONS),
        help="label convention of both prediction and reference (default: detected per case; "
        "give it for BraTS 2024 and MSD, which values alone cannot always tell)",
    )
    parser.set_defaults(handler=run)


def _case_id(path: Path) -> str | None:
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def flat_files(folder: Path) -> dict[str, Path]:
    """Case id → segmentation file for ``<case-id>-seg.nii.gz`` / ``<case-id>.nii.gz`` files."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        case_id = _case_id(path) if path.is_file() else None
        if case_id is None:
            continue
        if case_id in found:
            raise CommandError(f"case {case_id} has two files in {folder}: {found[case_id].name} and {path.name}")
        found[case_id] = path
    return found


def reference_files(folder: Path) -> dict[str, Path]:
    """Case id → reference segmentation, from flat files and BraTS case folders alike."""
    found = flat_files(folder)
    for case_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for layout in CASE_FOLDER_LAYOUTS.values():
            label = layout.label_path(case_dir)
            if label.is_file():
                found.setdefault(case_dir.name, label)
                break
    return found


def _read(path: Path) -> nib.Nifti1Image:
    try:
        return nib.load(path)
    except Exception as error:
        raise CommandError(f"cannot read {path}: {error}") from None


def _labels(image: nib.Nifti1Image) -> np.ndarray:
    return np.rint(np.asanyarray(image.dataobj)).astype(np.int16)


def evaluate_case(case_id: str, pred_path: Path, ref_path: Path, convention_name: str | None) -> dict[str, float]:
    """Metrics of one case; errors name the case and file."""
    pred_image, ref_image = _read(pred_path), _read(ref_path)
    pred, ref = _labels(pred_image), _labels(ref_image)
    if pred.shape != ref.shape:
        raise CommandError(f"case {case_id}: prediction {pred_path} has shape {pred.shape}, reference {ref.shape}")
    try:
        convention = (
            get_convention(convention_name)
            if convention_name
            else detect_convention(set(np.unique(pred).tolist()) | set(np.unique(ref).tolist()))
        )
        pred_regions = region_masks(torch.from_numpy(pred), convention)
        ref_regions = region_masks(torch.from_numpy(ref), convention)
    except ValueError as error:
        raise CommandError(f"case {case_id} ({pred_path.name} / {ref_path.name}): {error}") from None
    spacing = tuple(float(s) for s in ref_image.header.get_zooms()[:3])
    return case_metrics(pred_regions, ref_regions, spacing)


def run(args: argparse.Namespace) -> int:
    for name, folder in (("--pred", args.pred), ("--ref", args.ref)):
        if not folder.is_dir():
            raise CommandError(f"{name} folder {folder} does not exist")
    predictions, references = flat_files(args.pred), reference_files(args.ref)
    if not references:
        raise CommandError(f"no reference segmentations found in {args.ref}")
    missing = sorted(set(references) - set(predictions))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CommandError(f"no prediction in {args.pred} for case {missing[0]}{more}")
    extra = sorted(set(predictions) - set(references))
    if extra:
        print(f"segguided evaluate: warning: {len(extra)} predictions without reference ignored (e.g. {extra[0]})", file=sys.stderr)

    rows = []
    for case_id in sorted(references):
        row = evaluate_case(case_id, predictions[case_id], references[case_id], args.labels)
        rows.append({CASE_ID_COLUMN: case_id, **row})
    means = mean_metrics(rows)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([CASE_ID_COLUMN, *METRIC_KEYS])
        for row in rows:
            writer.writerow([row[CASE_ID_COLUMN], *(f"{row[key]:.6g}" for key in METRIC_KEYS)])
        writer.writerow([MEAN_ROW_ID, *(f"{means[key]:.6g}" for key in METRIC_KEYS)])
    print(
        f"{len(rows)} cases: mean Dice {means['dice-mean']:.4f}, mean HD95 {means['hd95-mean']:.2f} mm -> {args.out}"
    )
    return 0
