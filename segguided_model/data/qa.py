"""The QA gate: check every case of a site before training, reject bad ones by name.

Each case is read once, file by file, and stops at its first problem; the reason codes
in ``REASONS`` are the only vocabulary a rejection uses. The site's label convention is
forced by the caller or decided by a vote of the cases whose labels tell releases apart
(ET = 4 without 3 is BraTS 2021, 3 is BraTS 2023, 3 and 4 is BraTS 2024); a case whose
labels do not fit the site's convention is rejected, never re-interpreted.

``QAReport.summary()`` is the only part meant to leave the site: counts, reason codes
and case ids, never paths, image statistics or the free-text details.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, NamedTuple

import nibabel as nib
import numpy as np

from segguided_model.data.discovery import StrayEntry, discover_cases
from segguided_model.data.layouts import (
    CASE_FOLDER_LAYOUTS,
    MODALITIES,
    MSD_LAYOUT,
    CaseRecord,
)
from segguided_model.labels import CONVENTIONS, detect_convention, get_convention

REASONS: Mapping[str, str] = {
    "missing-modality": "a modality file is missing",
    "empty-file": "a file has zero bytes",
    "corrupt-file": "a file is not a readable (gzipped) NIfTI image",
    "truncated-file": "a file ends before all its voxels",
    "unsupported-dtype": "an image or label is stored with an unsupported data type",
    "shape-mismatch": "modalities and segmentation do not share one shape",
    "affine-mismatch": "modalities and segmentation do not share one affine",
    "implausible-spacing": "the voxel spacing is outside the plausible range",
    "non-finite-intensity": "an image holds NaN or infinite values",
    "empty-brain": "a modality has (almost) no non-zero voxels or is constant",
    "invalid-labels": "the segmentation holds values that fit no label convention",
    "label-convention-mismatch": "the segmentation's values do not fit the site's label convention",
}
"""Every reason a case can be rejected for, code → description."""

SPACING_RANGE_MM: tuple[float, float] = (0.1, 12.0)
"""Plausible voxel spacing; wide enough for thick clinical slices and small synthetic volumes."""

MIN_BRAIN_FRACTION: float = 0.001
"""Least fraction of non-zero voxels each modality of a skull-stripped case must have."""

AFFINE_TOLERANCE: float = 1e-3
"""Largest difference (mm) between the affines of one case's files."""

_IMAGE_KINDS = frozenset("iuf")  # signed/unsigned integers and reals; no bool, complex or RGB


class Rejection(NamedTuple):
    """One rejected case: its id and a reason code from ``REASONS``."""

    case_id: str
    reason: str


@dataclass
class QAReport:
    """Result of the QA gate on one site.

    Attributes:
        site_dir: the folder checked.
        layout: the site's layout, or ``None`` when no case was found.
        convention: the label convention the valid cases use.
        valid: cases that passed, with ``convention`` set to the site's; labelled and
            inference-only alike.
        rejected: cases that failed, each with one reason code.
        details: case id → what exactly failed (names the file); stays on site.
        strays: entries that are not cases; stays on site.
    """

    site_dir: Path
    layout: str | None
    convention: str | None
    valid: list[CaseRecord] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)
    strays: list[StrayEntry] = field(default_factory=list)

    @property
    def trainable(self) -> list[CaseRecord]:
        """Valid cases that have a segmentation."""
        return [case for case in self.valid if case.has_label]

    def summary(self) -> dict:
        """Privacy-safe summary: counts, reason codes and case ids only."""
        return {
            "layout": self.layout,
            "convention": self.convention,
            "cases-found": len(self.valid) + len(self.rejected),
            "valid": len(self.valid),
            "trainable": len(self.trainable),
            "inference-only": len(self.valid) - len(self.trainable),
            "rejected": len(self.rejected),
            "rejected-by-reason": dict(sorted(Counter(r.reason for r in self.rejected).items())),
            "rejected-cases": [{"case-id": r.case_id, "reason": r.reason} for r in self.rejected],
            "stray-entries": len(self.strays),
        }

    def to_json(self, include_details: bool = False) -> str:
        """The summary as JSON; ``include_details`` adds details and stray names (site-local use only)."""
        document = self.summary()
        if include_details:
            document["site-dir"] = str(self.site_dir)
            document["details"] = dict(self.details)
            document["strays"] = [{"name": s.name, "reason": s.reason} for s in self.strays]
        return json.dumps(document, indent=2)

    def format_table(self) -> str:
        """A human-readable report for the terminal."""
        lines = [
            f"site {self.site_dir}: layout {self.layout or '-'}, convention {self.convention or '-'}",
            f"{len(self.valid)} valid case(s) ({len(self.trainable)} with segmentation), "
            f"{len(self.rejected)} rejected, {len(self.strays)} stray entr{'y' if len(self.strays) == 1 else 'ies'}",
        ]
        if self.rejected:
            width = max(len("case"), *(len(r.case_id) for r in self.rejected))
            reason_width = max(len(r.reason) for r in self.rejected)
            lines.append("")
            lines.append(f"{'case':<{width}}  {'reason':<{reason_width}}  detail")
            for rejection in self.rejected:
                detail = self.details.get(rejection.case_id, "")
                lines.append(f"{rejection.case_id:<{width}}  {rejection.reason:<{reason_width}}  {detail}")
        if self.strays:
            lines.append("")
            lines.extend(f"stray: {stray.name} ({stray.reason})" for stray in self.strays)
        return "\n".join(lines)


class _CaseProblem(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def run_qa(site_dir: Path | str, layout: str | None = None, convention: str | None = None) -> QAReport:
    """Check every case in ``site_dir`` and sort them into valid and rejected.

    Args:
        site_dir: the site's data folder.
        layout: force the layout (``"brats2021"``, ``"brats2023"``, ``"msd"``).
        convention: force the label convention; otherwise decided from the labels.

    Returns:
        A ``QAReport``. Bad cases are rejected with a reason, never raised.

    Raises:
        FileNotFoundError: ``site_dir`` does not exist.
        ValueError: ``layout`` or ``convention`` is unknown.
    """
    found = discover_cases(site_dir, layout=layout, convention=convention)
    report = QAReport(site_dir=found.site_dir, layout=found.layout, convention=found.convention, strays=found.strays)
    for case in found.broken:
        report.rejected.append(Rejection(case.case_id, case.reason))
        report.details[case.case_id] = case.detail

    label_values: dict[str, set[int]] = {}
    readable: list[CaseRecord] = []
    for case in found.cases:
        try:
            values = _check_case(case)
        except _CaseProblem as problem:
            report.rejected.append(Rejection(case.case_id, problem.reason))
            report.details[case.case_id] = problem.detail
            continue
        readable.append(case)
        if values is not None:
            label_values[case.case_id] = values

    site_convention = convention or _vote_convention(found.layout, label_values.values())
    report.convention = site_convention
    allowed = get_convention(site_convention).allowed_values if site_convention else frozenset()
    for case in readable:
        values = label_values.get(case.case_id)
        if values is not None and not values <= allowed:
            report.rejected.append(Rejection(case.case_id, "label-convention-mismatch"))
            report.details[case.case_id] = _mismatch_detail(case, values, site_convention)
            continue
        report.valid.append(replace(case, convention=site_convention))
    report.rejected.sort(key=lambda rejection: rejection.case_id)
    return report


def _vote_convention(layout: str | None, label_values) -> str | None:
    """The site's convention: the most common one among cases whose labels tell releases apart."""
    if layout is None:
        return None
    if layout == MSD_LAYOUT.name:
        return MSD_LAYOUT.default_convention
    default = CASE_FOLDER_LAYOUTS[layout].default_convention
    votes = Counter(detect_convention(values).name for values in label_values if values & {3, 4})
    if not votes:
        return default
    ranked = sorted(votes.items(), key=lambda item: (-item[1], item[0] != default))
    return ranked[0][0]


def _mismatch_detail(case: CaseRecord, values: set[int], convention: str) -> str:
    allowed = get_convention(convention).allowed_values
    try:
        looks_like = f"; they look like {detect_convention(values).name}"
    except ValueError:
        looks_like = ""
    return (
        f"{case.label_path.name}: label values {sorted(values - allowed)} are not in the site's "
        f"convention {convention} (allowed {sorted(allowed)}){looks_like}"
    )


def _load(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Read one NIfTI file fully, turning every failure into a named problem."""
    if path.stat().st_size == 0:
        raise _CaseProblem("empty-file", f"{path.name} has zero bytes")
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except EOFError as error:
        raise _CaseProblem("truncated-file", f"{path.name} is truncated ({error})") from None
    except Exception as error:  # nibabel, gzip and zlib raise many unrelated types
        message = str(error).replace(str(path), path.name)
        raise _CaseProblem("corrupt-file", f"{path.name} cannot be read: {type(error).__name__}: {message}") from None
    return image, data


def _check_case(case: CaseRecord) -> set[int] | None:
    """Run every per-case check; return the label values (``None`` without a label)."""
    four_d = bool(case.channel_order)
    image_files = [case.image_paths[MODALITIES[0]]] if four_d else [case.image_paths[m] for m in MODALITIES]
    for path in image_files:
        if not path.is_file():
            raise _CaseProblem("missing-modality", f"missing file {path.name}")
    reference_shape: tuple[int, ...] | None = None
    reference_affine: np.ndarray | None = None

    def check_geometry(path: Path, image, spatial_shape: tuple[int, ...]) -> None:
        nonlocal reference_shape, reference_affine
        if reference_shape is None:
            reference_shape, reference_affine = spatial_shape, image.affine
            spacing = [float(z) for z in image.header.get_zooms()[:3]]
            low, high = SPACING_RANGE_MM
            if not all(low <= s <= high for s in spacing):
                raise _CaseProblem(
                    "implausible-spacing",
                    f"{path.name}: voxel spacing {spacing} mm, expected each within [{low}, {high}] mm",
                )
            return
        if spatial_shape != reference_shape:
            raise _CaseProblem(
                "shape-mismatch",
                f"{path.name} has shape {spatial_shape}, expected {reference_shape} like {image_files[0].name}",
            )
        if not np.allclose(image.affine, reference_affine, atol=AFFINE_TOLERANCE):
            raise _CaseProblem("affine-mismatch", f"{path.name} has a different affine than {image_files[0].name}")

    for path in image_files:
        image, data = _load(path)
        _check_dtype(path, image, "image")
        data = data[..., 0] if data.ndim == 4 and data.shape[3] == 1 and not four_d else data
        expected_ndim = 4 if four_d else 3
        if data.ndim != expected_ndim or (four_d and data.shape[3] != len(case.channel_order)):
            expected = f"(H, W, D, {len(case.channel_order)})" if four_d else "(H, W, D)"
            raise _CaseProblem("shape-mismatch", f"{path.name} has shape {data.shape}, expected {expected}")
        check_geometry(path, image, data.shape[:3])
        channels = [data[..., c] for c in range(data.shape[3])] if four_d else [data]
        names = case.channel_order if four_d else (next(m for m in MODALITIES if case.image_paths[m] == path),)
        for name, channel in zip(names, channels):
            _check_intensities(path, name, channel)
        del data, channels

    if case.label_path is None:
        return None
    image, data = _load(case.label_path)
    _check_dtype(case.label_path, image, "segmentation")
    data = data[..., 0] if data.ndim == 4 and data.shape[3] == 1 else data
    if data.ndim != 3:
        raise _CaseProblem("shape-mismatch", f"{case.label_path.name} has shape {data.shape}, expected (H, W, D)")
    check_geometry(case.label_path, image, data.shape)
    values = np.unique(data)
    if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
        raise _CaseProblem("invalid-labels", f"{case.label_path.name} holds non-integer label values")
    values = {int(v) for v in values}
    if not any(values <= c.allowed_values for c in CONVENTIONS.values()):
        raise _CaseProblem(
            "invalid-labels", f"{case.label_path.name}: label values {sorted(values)} fit no known convention"
        )
    return values


def _check_dtype(path: Path, image, role: str) -> None:
    dtype = np.dtype(image.get_data_dtype())
    if dtype.kind not in _IMAGE_KINDS or dtype.fields is not None:
        raise _CaseProblem(
            "unsupported-dtype", f"{path.name}: {role} stored as {dtype}, expected an integer or real type"
        )


def _check_intensities(path: Path, modality: str, data: np.ndarray) -> None:
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise _CaseProblem("non-finite-intensity", f"{path.name}: {modality} holds NaN or infinite values")
    nonzero = np.count_nonzero(data)
    if nonzero < MIN_BRAIN_FRACTION * data.size or data.min() == data.max():
        raise _CaseProblem(
            "empty-brain",
            f"{path.name}: {modality} has {nonzero} non-zero voxels of {data.size}, "
            f"expected a skull-stripped brain (at least {MIN_BRAIN_FRACTION:.1%})",
        )
