"""``segguided evaluate``: BraTS-style Dice and HD95 (mm) of prediction files against references.

Predictions and references are each read in one label convention: given (``--labels``,
``--pred-labels``, ``--ref-labels``) or decided once from all the folder's labels
(``labels.decide_convention``). Unless both are given, each case's prediction and
reference must read alike in them, so a label value never means one region in the
prediction and another in the reference. A prediction must lie on its reference's voxel
grid (shape, and affine within ``AFFINE_TOLERANCE_MM``), or be resampled onto it with
``--resample``. HD95 uses the reference's spacing in mm.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np
import torch
from nibabel.processing import resample_from_to

from segguided_model.attention_scores import (
    ATTENTION_KEYS,
    attention_scores,
    mean_attention_scores,
)
from segguided_model.data.volume_file import (
    AFFINE_TOLERANCE_MM,
    VolumeFile,
    VolumeFileError,
    read_label_map,
    read_volume,
)
from segguided_model.labels import (
    CONVENTIONS,
    decide_convention,
    equivalent_conventions,
    fitting_conventions,
    get_convention,
    region_masks,
    subregion_masks,
)
from segguided_model.metrics import METRIC_KEYS, case_metrics, mean_metrics
from segguided_tools.cli.command_error import CommandError
from segguided_tools.cli.segment import ATTENTION_SUFFIXES
from segguided_tools.cli.segmentation_folder import (
    SegmentationFolder,
    find_segmentations,
)

CASE_ID_COLUMN = "case-id"
MEAN_ROW_ID = "mean"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice and HD95 (ET, TC, WT) of predictions against references",
        description=(
            "BraTS-style evaluation. Predictions are PRED_DIR/<case-id>-seg.nii.gz or <case-id>.nii.gz "
            "(.nii alike); references are such files, BraTS case folders or an MSD task folder "
            "(labelsTr/), matched by case id. Writes one row per case (HD95 in mm) and a final row of means. "
            "When PRED_DIR also holds segment's attention maps (<case-id>-attention-{ncr,ed,et}.nii.gz) for every "
            "case, adds the Dice of each map thresholded at 0.5 against each reference sub-region "
            "(attention-dice-ncr: the NCR map on NCR; attention-ncr-on-et: the NCR map on ET; ...)."
        ),
    )
    parser.add_argument("--pred", type=Path, required=True, metavar="PRED_DIR")
    parser.add_argument("--ref", type=Path, required=True, metavar="REF_DIR")
    parser.add_argument("--out", type=Path, required=True, metavar="METRICS.csv")
    conventions = sorted(CONVENTIONS)
    parser.add_argument(
        "--labels",
        choices=conventions,
        help="label convention of predictions and references alike (default: each folder's, decided from all "
        "its labels; MSD labels in loose files and BraTS 2024 labels without a case that has both 3 and 4 must be given)",
    )
    parser.add_argument("--pred-labels", choices=conventions, help="label convention of the predictions (wins over --labels)")
    parser.add_argument("--ref-labels", choices=conventions, help="label convention of the references (wins over --labels)")
    parser.add_argument(
        "--resample",
        action="store_true",
        help="resample a prediction that lies on another voxel grid onto its reference's (nearest neighbour) "
        "instead of refusing it",
    )
    parser.set_defaults(handler=run)


def _read(case_id: str, path: Path, role: str) -> tuple[VolumeFile, np.ndarray, frozenset[int]]:
    try:
        return read_label_map(path)
    except (VolumeFileError, FileNotFoundError) as error:
        raise CommandError(f"case {case_id}: {role} {path}: {error}") from None


def _label_values(case_id: str, path: Path, role: str) -> frozenset[int]:
    """The label values of one file, which must fit at least one known convention."""
    values = _read(case_id, path, role)[2]
    if not fitting_conventions(values):
        raise CommandError(f"case {case_id}: {role} {path.name} holds label values {sorted(values)} that fit no known convention")
    return values


def _folder_convention(
    found: SegmentationFolder, values: Mapping[str, frozenset[int]], role: str, option: str
) -> str:
    decision = decide_convention(found.conventions, values)
    if decision.convention is None:
        raise CommandError(f"{role}s in {found.folder}: {decision.explanation}; give {option}")
    return decision.convention


def _on_reference_grid(case_id: str, pred: VolumeFile, labels: np.ndarray, ref: VolumeFile, resample: bool) -> np.ndarray:
    if pred.grid.matches(ref.grid):
        return labels
    if not resample:
        raise CommandError(
            f"case {case_id}: prediction {pred.path} and reference {ref.path} lie on different voxel grids "
            f"(prediction {pred.grid.describe()}; reference {ref.grid.describe()}; tolerance {AFFINE_TOLERANCE_MM} mm); "
            "save the prediction on the reference's grid or pass --resample"
        )
    moved = resample_from_to(
        nib.Nifti1Image(labels, pred.grid.affine), (ref.grid.shape, ref.grid.affine), order=0, mode="constant", cval=0
    )
    return np.rint(np.asanyarray(moved.dataobj)).astype(np.int16)


def _differing_values(first: str, second: str, values: frozenset[int]) -> list[int]:
    a, b = get_convention(first).values, get_convention(second).values
    return sorted(v for v in values if v not in a or v not in b or a[v] != b[v])


def evaluate_case(
    case_id: str,
    pred_path: Path,
    ref_path: Path,
    pred_convention: str,
    ref_convention: str,
    check_compatible: bool = True,
    resample: bool = False,
) -> dict[str, float]:
    """Metrics of one case (``metrics.case_metrics``, HD95 in mm from the reference's spacing).

    Args:
        case_id: names the case in errors.
        pred_path, ref_path: the prediction and reference segmentation files.
        pred_convention, ref_convention: the label convention each is read in.
        check_compatible: refuse a case whose prediction and reference read differently
            in the two conventions (off when the user gave both).
        resample: resample a prediction on another grid onto the reference's.

    Raises:
        CommandError: a file cannot be read, the grids differ (without ``resample``), values
            do not fit a convention, or the conventions are incompatible; naming the case,
            both files and both conventions.
    """
    pred_file, pred, pred_values = _read(case_id, pred_path, "prediction")
    ref_file, ref, ref_values = _read(case_id, ref_path, "reference")
    pred = _on_reference_grid(case_id, pred_file, pred, ref_file, resample)
    for role, path, values, convention in (
        ("prediction", pred_path, pred_values, pred_convention),
        ("reference", ref_path, ref_values, ref_convention),
    ):
        allowed = get_convention(convention).allowed_values
        if not values <= allowed:
            raise CommandError(
                f"case {case_id}: {role} {path.name} holds label values {sorted(values - allowed)} "
                f"that {role}s' convention {convention} does not define (allowed {sorted(allowed)})"
            )
    if check_compatible and not (
        equivalent_conventions(pred_convention, pred_values) & equivalent_conventions(ref_convention, ref_values)
    ):
        differing = _differing_values(pred_convention, ref_convention, pred_values | ref_values)
        raise CommandError(
            f"case {case_id}: prediction {pred_path.name} is read as {pred_convention} (values {sorted(pred_values)}) "
            f"and reference {ref_path.name} as {ref_convention} (values {sorted(ref_values)}), which give "
            f"label(s) {differing} different meanings; give --pred-labels and --ref-labels if both are right"
        )
    pred_regions = region_masks(torch.from_numpy(pred), get_convention(pred_convention))
    ref_regions = region_masks(torch.from_numpy(ref), get_convention(ref_convention))
    return case_metrics(pred_regions, ref_regions, ref_file.spacing)


def attention_map_paths(pred_dir: Path, case_id: str) -> list[Path] | None:
    """``segment``'s three attention maps of ``case_id`` in ``pred_dir`` (NCR, ED, ET), or None if any is missing."""
    paths = [pred_dir / f"{case_id}{suffix}.nii.gz" for suffix in ATTENTION_SUFFIXES]
    return paths if all(path.is_file() for path in paths) else None


def score_attention_maps(case_id: str, map_paths: list[Path], ref_path: Path, ref_convention: str) -> dict[str, float]:
    """``attention_scores.attention_scores`` of one case's map files against its reference's sub-regions.

    Raises:
        CommandError: a map cannot be read or lies on another grid than the reference.
    """
    ref_file, ref, _ = _read(case_id, ref_path, "reference")
    maps = []
    for path in map_paths:
        try:
            volume = read_volume(path)
        except (VolumeFileError, FileNotFoundError) as error:
            raise CommandError(f"case {case_id}: attention map {path}: {error}") from None
        if not volume.grid.matches(ref_file.grid):
            raise CommandError(
                f"case {case_id}: attention map {path} and reference {ref_path} lie on different voxel grids "
                f"(map {volume.grid.describe()}; reference {ref_file.grid.describe()})"
            )
        maps.append(torch.from_numpy(np.asarray(volume.data, dtype=np.float32)))
    subregions = subregion_masks(torch.from_numpy(ref), get_convention(ref_convention))
    return attention_scores(torch.stack(maps), subregions)


def run(args: argparse.Namespace) -> int:
    for name, folder in (("--pred", args.pred), ("--ref", args.ref)):
        if not folder.is_dir():
            raise CommandError(f"{name} folder {folder} does not exist")
    predictions, references = find_segmentations(args.pred), find_segmentations(args.ref)
    if not references.files:
        raise CommandError(f"no reference segmentations found in {args.ref}")
    missing = sorted(set(references.files) - set(predictions.files))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CommandError(f"no prediction in {args.pred} for case {missing[0]}{more}")
    extra = sorted(set(predictions.files) - set(references.files))
    if extra:
        print(f"segguided evaluate: warning: {len(extra)} predictions without reference ignored (e.g. {extra[0]})", file=sys.stderr)
    for found in (predictions, references):
        if found.skipped:
            print(
                f"segguided evaluate: warning: {len(found.skipped)} entries of {found.folder} hold no segmentation "
                f"(e.g. {found.skipped[0]})",
                file=sys.stderr,
            )

    cases = sorted(references.files)
    pred_convention = args.pred_labels or args.labels
    ref_convention = args.ref_labels or args.labels
    if pred_convention is None:
        values = {case: _label_values(case, predictions.files[case], "prediction") for case in cases}
        pred_convention = _folder_convention(predictions, values, "prediction", "--pred-labels")
    if ref_convention is None:
        values = {case: _label_values(case, references.files[case], "reference") for case in cases}
        ref_convention = _folder_convention(references, values, "reference", "--ref-labels")
    both_given = bool((args.pred_labels or args.labels) and (args.ref_labels or args.labels))

    rows = []
    for case_id in cases:
        row = evaluate_case(
            case_id,
            predictions.files[case_id],
            references.files[case_id],
            pred_convention,
            ref_convention,
            check_compatible=not both_given,
            resample=args.resample,
        )
        rows.append({CASE_ID_COLUMN: case_id, **row})
    map_paths = {case_id: attention_map_paths(args.pred, case_id) for case_id in cases}
    columns = list(METRIC_KEYS)
    if all(map_paths.values()):
        for row in rows:
            row.update(score_attention_maps(row[CASE_ID_COLUMN], map_paths[row[CASE_ID_COLUMN]],
                                            references.files[row[CASE_ID_COLUMN]], ref_convention))
        columns += ATTENTION_KEYS
    elif any(map_paths.values()):
        print(f"segguided evaluate: warning: only some cases have attention maps in {args.pred}; maps not scored",
              file=sys.stderr)
    means = {**mean_metrics(rows), **mean_attention_scores(rows)}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([CASE_ID_COLUMN, *columns])
        for row in rows:
            writer.writerow([row[CASE_ID_COLUMN], *(f"{row[key]:.6g}" for key in columns)])
        writer.writerow([MEAN_ROW_ID, *(f"{means[key]:.6g}" for key in columns)])
    print(
        f"{len(rows)} cases (predictions read as {pred_convention}, references as {ref_convention}): "
        f"mean Dice {means['dice-mean']:.4f}, mean HD95 {means['hd95-mean']:.2f} mm -> {args.out}"
    )
    if ATTENTION_KEYS[0] in means:
        print(
            "attention maps (Dice on own sub-region / on the other core sub-region): "
            f"NCR {means['attention-dice-ncr']:.3f} / {means['attention-ncr-on-et']:.3f}, "
            f"ED {means['attention-dice-ed']:.3f}, ET {means['attention-dice-et']:.3f} / {means['attention-et-on-ncr']:.3f}"
        )
    return 0
