"""The QA gate: check every case of a site before training, reject bad ones by name.

Each case is read once, file by file (``data.volume_file``, the project's one reader),
and stops at its first problem; the reason codes in ``REASONS`` are the only vocabulary a
rejection uses. The site's label convention is declared by the caller (a site's
``label-convention``, the server's ``server-validation-convention``, ``segguided qa
--convention``) or decided once from all the site's labels (``labels.decide_convention``):
a case whose labels do not fit the declared convention is rejected, never re-interpreted,
and when undeclared labels disagree every labelled case is rejected until the site
declares its convention, rather than guessed case by case.

``QAReport.summary()`` is the only part meant to leave the site: counts, reason codes
and case ids, never paths, image statistics or the free-text details.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np

from segguided_model.data.discovery import (
    DISCOVERY_FAILURES,
    DiscoveryResult,
    StrayEntry,
    discover_case_folder,
    discover_cases,
)
from segguided_model.data.layouts import MODALITIES, CaseRecord, layout_conventions
from segguided_model.data.qa_cache import CaseOutcome, QACache
from segguided_model.data.volume_file import (
    READ_FAILURES,
    Grid,
    VolumeFile,
    VolumeFileError,
    read_label_map,
    read_volume,
)
from segguided_model.labels import (
    decide_convention,
    fitting_conventions,
    get_convention,
)

REASONS: Mapping[str, str] = {
    **DISCOVERY_FAILURES,
    **READ_FAILURES,
    "shape-mismatch": "modalities and segmentation do not share one shape",
    "affine-mismatch": "modalities and segmentation do not share one affine",
    "implausible-spacing": "the voxel spacing is outside the plausible range",
    "non-finite-intensity": "an image holds NaN or infinite values",
    "empty-brain": "a modality has (almost) no non-zero voxels",
    "constant-intensity": "a modality holds one non-zero value in every voxel",
    "label-convention-mismatch": "the segmentation's values do not fit the site's label convention",
    "label-convention-undecided": "the site's segmentations disagree on the label convention; declare it",
}
"""Every reason a case can be rejected for, code → description. Failures of discovery and of
reading a file are declared next to the code that detects them and gathered here."""

SPACING_RANGE_MM: tuple[float, float] = (0.1, 12.0)
"""Plausible voxel spacing; wide enough for thick clinical slices and small synthetic volumes."""

MIN_BRAIN_FRACTION: float = 0.001
"""Least fraction of non-zero voxels each modality of a skull-stripped case must have."""

DECLARE_HINT = (
    "declare the site's label convention (site config label-convention, run config "
    "server-validation-convention, segguided qa --convention)"
)


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
        convention: the label convention the valid cases use; ``None`` when undeclared
            labels could not decide it.
        convention_reason: how the convention was decided (declared, or why the labels
            decide it or cannot); stays on site.
        valid: cases that passed, with ``convention`` set to the site's; labelled and
            inference-only alike.
        rejected: cases that failed, each with one reason code.
        details: case id → what exactly failed (names the file); stays on site.
        strays: entries that are not cases; stays on site.
        reused: cases whose kept outcome was reused (their files unchanged since).
        checked: cases read and checked this time.
    """

    site_dir: Path
    layout: str | None
    convention: str | None
    valid: list[CaseRecord] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)
    strays: list[StrayEntry] = field(default_factory=list)
    convention_reason: str = ""
    reused: int = 0
    checked: int = 0

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

    def reuse_line(self) -> str:
        """``"3 case(s) checked, 37 reused (files unchanged since their last check)"``."""
        return f"{self.checked} case(s) checked, {self.reused} reused (files unchanged since their last check)"

    def to_json(self, include_details: bool = False) -> str:
        """The summary as JSON; ``include_details`` adds details and stray names (site-local use only)."""
        document = self.summary()
        if include_details:
            document["site-dir"] = str(self.site_dir)
            document["convention-reason"] = self.convention_reason
            document["checked"], document["reused"] = self.checked, self.reused
            document["details"] = dict(self.details)
            document["strays"] = [{"name": s.name, "reason": s.reason} for s in self.strays]
        return json.dumps(document, indent=2)

    def format_table(self) -> str:
        """A human-readable report for the terminal."""
        lines = [
            f"site {self.site_dir}: layout {self.layout or '-'}, convention {self.convention or '-'}"
            + (f" ({self.convention_reason})" if self.convention_reason else ""),
            (
                f"{len(self.valid)} valid case(s) ({len(self.trainable)} with segmentation), "
                f"{len(self.rejected)} rejected, {len(self.strays)} stray entr{'y' if len(self.strays) == 1 else 'ies'}"
            ),
            self.reuse_line(),
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


def run_qa(
    site_dir: Path | str,
    *,
    layout: str | None = None,
    convention: str | None = None,
    cache_dir: Path | None = None,
) -> QAReport:
    """Check every case in ``site_dir`` and sort them into valid and rejected.

    Args:
        site_dir: the site's data folder.
        layout: force the layout (``"brats2021"``, ``"brats2023"``, ``"msd"``).
        convention: declare the label convention; otherwise decided once from all the
            site's labels (``labels.decide_convention``).
        cache_dir: the site's cache folder: a case whose files are unchanged since its last
            check is not read again (``data.qa_cache``); ``None`` checks every case.

    Returns:
        A ``QAReport``. Bad cases are rejected with a reason, never raised.

    Raises:
        FileNotFoundError: ``site_dir`` does not exist.
        ValueError: ``layout`` or ``convention`` is unknown.
    """
    return _gate(discover_cases(site_dir, layout=layout, convention=convention), convention, QACache(cache_dir))


def qa_case_folder(case_dir: Path | str, *, layout: str | None = None, convention: str | None = None) -> QAReport:
    """The QA gate on one case folder alone (what ``segguided segment`` checks before it reads a case).

    Args:
        case_dir: a BraTS case folder.
        layout: force ``"brats2021"`` or ``"brats2023"``.
        convention: declare the case's label convention; otherwise decided from its labels.

    Returns:
        A ``QAReport`` with the case valid or rejected, or neither (a stray) when the
        folder's files match no layout.

    Raises:
        FileNotFoundError: ``case_dir`` does not exist.
        ValueError: ``layout`` or ``convention`` is unknown.
    """
    return _gate(discover_case_folder(case_dir, layout=layout, convention=convention), convention, QACache(None))


class _CaseProblem(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _gate(found: DiscoveryResult, declared: str | None, cache: QACache) -> QAReport:
    """Check each found case, then read every label in the one convention, declared or decided here.

    Cases whose labels fit none of the layout's candidate conventions are left out of the
    decision and rejected as ``label-convention-mismatch``; when the rest cannot decide,
    every labelled case is rejected as ``label-convention-undecided``.
    """
    report = QAReport(site_dir=found.site_dir, layout=found.layout, convention=found.convention, strays=found.strays)
    for case in found.broken:
        _reject(report, case.case_id, case.reason, case.detail)
    label_values: dict[str, frozenset[int]] = {}
    readable: list[CaseRecord] = []
    for case in found.cases:
        outcome = cache.lookup(case)
        if outcome is None:
            try:
                outcome = CaseOutcome(label_values=_check_case(case))
            except _CaseProblem as problem:
                outcome = CaseOutcome(reason=problem.reason, detail=problem.detail)
            cache.store(case, outcome)
        if outcome.reason is not None:
            _reject(report, case.case_id, outcome.reason, outcome.detail)
            continue
        readable.append(case)
        if outcome.label_values is not None:
            label_values[case.case_id] = outcome.label_values
    cache.save()
    report.reused, report.checked = cache.reused, cache.checked

    if declared is not None:
        report.convention, report.convention_reason = declared, "declared"
    elif found.layout is not None:
        candidates = layout_conventions(found.layout)
        fitting = {case: values for case, values in label_values.items() if fitting_conventions(values, candidates)}
        decision = decide_convention(candidates, fitting)
        report.convention, report.convention_reason = decision.convention, decision.explanation
    for case in readable:
        values = label_values.get(case.case_id)
        if values is not None and report.convention is None:
            _reject(report, case.case_id, "label-convention-undecided", f"{report.convention_reason}; {DECLARE_HINT}")
        elif values is not None and not values <= get_convention(report.convention).allowed_values:
            _reject(report, case.case_id, "label-convention-mismatch", _mismatch_detail(case, values, report))
        else:
            report.valid.append(replace(case, convention=report.convention))
    report.rejected.sort(key=lambda rejection: rejection.case_id)
    return report


def _reject(report: QAReport, case_id: str, reason: str, detail: str) -> None:
    report.rejected.append(Rejection(case_id, reason))
    report.details[case_id] = detail


def _mismatch_detail(case: CaseRecord, values: frozenset[int], report: QAReport) -> str:
    convention = get_convention(report.convention)
    fits = fitting_conventions(values)
    reading = f"; they fit {', '.join(fits)}" if fits else ""
    declared = " declared" if report.convention_reason == "declared" else ""
    return (
        f"{case.label_path.name}: label values {sorted(values - convention.allowed_values)} are not in the site's"
        f"{declared} convention {convention.name} (allowed {sorted(convention.allowed_values)}){reading}"
    )


def _read(path: Path, channels: int = 1) -> VolumeFile:
    """Read one file, turning every failure into a named problem."""
    try:
        return read_volume(path, channels=channels)
    except VolumeFileError as error:
        raise _CaseProblem(error.reason, error.detail) from None
    except FileNotFoundError:
        raise _CaseProblem("missing-modality", f"missing file {path.name}") from None


def _check_case(case: CaseRecord) -> frozenset[int] | None:
    """Run every per-case check; return the label values (``None`` without a label)."""
    four_d = bool(case.channel_order)
    image_files = [case.image_paths[MODALITIES[0]]] if four_d else [case.image_paths[m] for m in MODALITIES]
    reference: Grid | None = None

    def check_geometry(path: Path, grid: Grid) -> None:
        nonlocal reference
        if reference is None:
            reference = grid
            low, high = SPACING_RANGE_MM
            if not all(low <= s <= high for s in grid.spacing):
                raise _CaseProblem(
                    "implausible-spacing",
                    f"{path.name}: voxel spacing {[round(s, 4) for s in grid.spacing]} mm, "
                    f"expected each within [{low}, {high}] mm",
                )
        elif grid.shape != reference.shape:
            raise _CaseProblem(
                "shape-mismatch", f"{path.name} has shape {grid.shape}, expected {reference.shape} like {image_files[0].name}"
            )
        elif not grid.matches(reference):
            raise _CaseProblem(
                "affine-mismatch",
                f"{path.name} has a different affine than {image_files[0].name}: {grid.describe()} vs {reference.describe()}",
            )

    for path in image_files:
        volume = _read(path, channels=len(case.channel_order) if four_d else 1)
        check_geometry(path, volume.grid)
        if four_d:
            channels = zip(case.channel_order, (volume.data[..., c] for c in range(volume.data.shape[3])))
        else:
            channels = iter([(next(m for m in MODALITIES if case.image_paths[m] == path), volume.data)])
        for name, channel in channels:
            _check_intensities(path, name, channel)
        del volume

    if case.label_path is None:
        return None
    try:
        label, _, values = read_label_map(case.label_path)
    except VolumeFileError as error:
        raise _CaseProblem(error.reason, error.detail) from None
    check_geometry(case.label_path, label.grid)
    if not fitting_conventions(values):
        raise _CaseProblem(
            "invalid-labels", f"{case.label_path.name}: label values {sorted(values)} fit no known convention"
        )
    return values


def _check_intensities(path: Path, modality: str, data: np.ndarray) -> None:
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        count = int(np.count_nonzero(~np.isfinite(data)))
        raise _CaseProblem(
            "non-finite-intensity", f"{path.name}: {modality} holds {count} NaN or infinite voxel(s) of {data.size}"
        )
    low, high = data.min(), data.max()
    if low == high and low != 0:
        raise _CaseProblem(
            "constant-intensity",
            f"{path.name}: {modality} is constant, every voxel is {float(low):g}; expected an MR image",
        )
    nonzero = np.count_nonzero(data)
    if nonzero < MIN_BRAIN_FRACTION * data.size:
        raise _CaseProblem(
            "empty-brain",
            f"{path.name}: {modality} has {nonzero} non-zero voxels of {data.size}, "
            f"expected a skull-stripped brain (at least {MIN_BRAIN_FRACTION:.1%})",
        )
