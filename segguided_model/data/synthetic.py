"""Synthetic hospitals: phantom brain-tumour cases written as real NIfTI sites, generated once and shared.

Every case is a ``data.phantom`` case: an MNI152 subject with a glioma grown in its white
matter, pushing the anatomy aside, seen through its site's scanner (see
``data/phantom/case.py``). Sites differ in scanner and population, so they are non-IID
while the contrasts that separate sub-regions survive. Volumes cover BraTS's field of
view (240×240×155 mm) on an isotropic grid: 1 mm is BraTS geometry, ``CPU_SPACING_MM``
the coarser grid that CPU runs use.

Everything is drawn from ``numpy.random.SeedSequence(seed)``: the same parameters give the
same files.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np

from segguided_model.data.entries import visible_entries
from segguided_model.data.layouts import CASE_FOLDER_LAYOUTS, MODALITIES
from segguided_model.data.phantom.case import (
    FIELD_OF_VIEW_MM as BRATS_FIELD_OF_VIEW_MM,
)
from segguided_model.data.phantom.case import (
    brats_grid,
    synthesize_case,
    voxel_spacing,
)
from segguided_model.data.phantom.scanner import draw_site_profiles
from segguided_model.labels import get_convention

CPU_SPACING_MM: float = 5.0
"""The coarser grid for CPU runs: BraTS's field of view at 5 mm, 48×48×31 voxels. At 4 mm
(60×60×39) the main job's central validation needs four 48³ windows a case instead of one
and the job takes about twice as long; at 1 mm it cannot run on a CPU in minutes."""
DEFAULT_SIZE: tuple[int, int, int] = brats_grid(CPU_SPACING_MM)

MIN_SIZE: int = 8


def brats_grid_with_largest_axis(voxels: int) -> tuple[int, int, int]:
    """BraTS's field of view with ``voxels`` along its largest axis: ``240`` → ``(240, 240, 155)``, ``48`` → ``(48, 48, 31)``.

    What the run config's and the experiment grids' ``synthetic-size`` means.
    """
    return brats_grid(BRATS_FIELD_OF_VIEW_MM / voxels)

VALIDATION_FOLDER = "validation"


def label_map(subregions: Mapping[str, np.ndarray], convention: str) -> np.ndarray:
    """Sub-region masks to a ``uint8`` label map in ``convention`` (values from ``labels``)."""
    rules = get_convention(convention)
    label = np.zeros(next(iter(subregions.values())).shape, dtype=np.uint8)
    for name in ("ED", "NCR", "ET"):
        label[subregions[name]] = rules.value_of(name)
    return label


def case_id(layout: str, number: int) -> str:
    """The case id a real release would give case ``number`` in ``layout``."""
    if layout == "brats2021":
        return f"BraTS2021_{number:05d}"
    return f"BraTS-GLI-{number:05d}-000"


def write_case(
    case_dir: Path,
    layout: str,
    images: Mapping[str, np.ndarray],
    label: np.ndarray | None,
    spacing: float,
) -> None:
    """Write one case folder in ``layout`` naming; arrays in RAS order, stored as BraTS stores them (LPS affine)."""
    rules = CASE_FOLDER_LAYOUTS[layout]
    case_dir.mkdir(parents=True, exist_ok=True)
    shape = np.array(next(iter(images.values())).shape)
    affine = np.diag([-spacing, -spacing, spacing, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((shape - 1) / 2)
    outputs = [(rules.modality_path(case_dir, m), images[m]) for m in MODALITIES]
    if label is not None:
        outputs.append((rules.label_path(case_dir), label))
    for path, data in outputs:
        image = nib.Nifti1Image(np.ascontiguousarray(data[::-1, ::-1]), affine)
        image.header.set_xyzt_units("mm")
        nib.save(image, path)


GENERATOR_VERSION = 2
"""Bump whenever the same parameters would produce different files (2: the MNI152 phantom)."""

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class SynthesisParameters:
    """Everything that determines a synthetic federation's files.

    Attributes:
        sites: number of hospital folders.
        cases: labelled cases per site.
        val_cases: cases in the held-out server validation folder.
        layout: ``"brats2021"`` or ``"brats2023"`` file naming (and label convention).
        size: array shape ``(X, Y, Z)`` of every volume (Z the slice axis); the spacing
            gives the largest axis 240 mm (``brats_grid``: BraTS's field of view).
        seed: root of every random draw.
    """

    sites: int = 3
    cases: int = 16
    val_cases: int = 8
    layout: str = "brats2023"
    size: tuple[int, int, int] = DEFAULT_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(n) for n in self.size))
        if self.sites < 1 or self.cases < 1 or self.val_cases < 0:
            raise ValueError(
                f"expected sites >= 1, cases >= 1 and val_cases >= 0, "
                f"got sites={self.sites}, cases={self.cases}, val_cases={self.val_cases}"
            )
        if self.layout not in CASE_FOLDER_LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; expected one of {sorted(CASE_FOLDER_LAYOUTS)}")
        if len(self.size) != 3 or min(self.size) < MIN_SIZE:
            raise ValueError(f"expected size as three axes of at least {MIN_SIZE} voxels, got {self.size}")

    def to_manifest(self) -> dict:
        return {"generator-version": GENERATOR_VERSION, **asdict(self), "size": list(self.size)}


@dataclass(frozen=True)
class SyntheticFederation:
    """A synthetic federation on disk.

    Attributes:
        root: the output folder.
        site_dirs: one data folder per hospital (``root/site-1``...).
        validation_dir: the held-out server validation folder (``root/validation``).
        parameters: what generated it.
    """

    root: Path
    site_dirs: list[Path]
    validation_dir: Path
    parameters: SynthesisParameters


def _federation(root: Path, parameters: SynthesisParameters) -> SyntheticFederation:
    return SyntheticFederation(
        root=root,
        site_dirs=[root / f"site-{site + 1}" for site in range(parameters.sites)],
        validation_dir=root / VALIDATION_FOLDER,
        parameters=parameters,
    )


def _write_federation(root: Path, parameters: SynthesisParameters) -> SyntheticFederation:
    federation = _federation(root, parameters)
    profiles = draw_site_profiles(parameters.sites, parameters.seed)
    convention = CASE_FOLDER_LAYOUTS[parameters.layout].default_convention
    spacing = voxel_spacing(parameters.size)
    jobs = [
        (site_dir, profiles[site], (site, case)) for site, site_dir in enumerate(federation.site_dirs)
        for case in range(parameters.cases)
    ]
    jobs += [
        (federation.validation_dir, profiles[case % parameters.sites], (parameters.sites, case))
        for case in range(parameters.val_cases)
    ]
    for number, (folder, profile, key) in enumerate(jobs):
        rng = np.random.default_rng(np.random.SeedSequence(parameters.seed, spawn_key=key))
        case = synthesize_case(profile, parameters.size, rng)
        identifier = case_id(parameters.layout, number)
        write_case(folder / identifier, parameters.layout, case.images, label_map(case.subregions, convention), spacing)
    federation.validation_dir.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST_NAME).write_text(json.dumps(parameters.to_manifest(), indent=2))
    return federation


def generate_federation(
    out_dir: Path | str,
    sites: int = 3,
    cases: int = 16,
    val_cases: int = 8,
    layout: str = "brats2023",
    size: tuple[int, int, int] = DEFAULT_SIZE,
    seed: int = 0,
) -> SyntheticFederation:
    """Write ``sites`` synthetic hospital folders and a held-out validation folder.

    Args:
        out_dir: output folder; must not exist or be empty.
        sites: number of hospitals (``out_dir/site-1``...).
        cases: labelled cases per site.
        val_cases: cases in ``out_dir/validation``, drawn from every site's scanner in turn.
        layout: ``"brats2021"`` or ``"brats2023"`` naming; labels use its convention.
        size: array shape ``(X, Y, Z)``; isotropic spacing, 240 mm over the largest axis:
            ``(240, 240, 155)`` is BraTS geometry (1 mm), the default ``(48, 48, 31)`` the
            CPU grid (5 mm); ``brats_grid(spacing)`` gives the shape for a spacing.
        seed: the same seed and parameters give identical files.

    Raises:
        ValueError: a parameter is out of range.
        FileExistsError: ``out_dir`` exists and is not empty.
    """
    parameters = SynthesisParameters(sites, cases, val_cases, layout, tuple(size), seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"output folder {out_dir} is not empty; expected a new or empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    return _write_federation(out_dir, parameters)


def _is_complete(root: Path, parameters: SynthesisParameters) -> bool:
    manifest = root / MANIFEST_NAME
    try:
        if json.loads(manifest.read_text()) != parameters.to_manifest():
            return False
    except (OSError, ValueError):
        return False
    federation = _federation(root, parameters)
    expected = [(folder, parameters.cases) for folder in federation.site_dirs]
    expected.append((federation.validation_dir, parameters.val_cases))
    files_per_case = len(MODALITIES) + 1
    for folder, count in expected:
        if not folder.is_dir():
            return False
        case_dirs = [entry for entry in visible_entries(folder) if entry.is_dir()]
        if len(case_dirs) != count or any(len(visible_entries(c)) != files_per_case for c in case_dirs):
            return False
    return True


def ensure_federation(
    out_dir: Path | str,
    sites: int = 3,
    cases: int = 16,
    val_cases: int = 8,
    layout: str = "brats2023",
    size: tuple[int, int, int] = DEFAULT_SIZE,
    seed: int = 0,
) -> SyntheticFederation:
    """Return the federation in ``out_dir``, generating it only if missing, incomplete or different.

    Safe to call from several processes at once: an exclusive ``fcntl`` lock on
    ``.OUT_DIR.lock`` beside ``out_dir`` serialises them, and a new federation is written
    to a temporary sibling folder that is renamed into place only when complete. An
    existing ``out_dir`` is replaced only if it is empty or holds a ``manifest.json``
    written here, never a folder of someone else's files.

    Args: as ``generate_federation``.

    Raises:
        ValueError: a parameter is out of range.
        FileExistsError: ``out_dir`` holds files that this generator did not write.
    """
    parameters = SynthesisParameters(sites, cases, val_cases, layout, tuple(size), seed)
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_complete(out_dir, parameters):
            return _federation(out_dir, parameters)
        if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).exists():
            raise FileExistsError(
                f"{out_dir} holds files without a {MANIFEST_NAME}; refusing to replace a folder "
                "this generator did not write"
            )
        partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            _write_federation(partial, parameters)
            if out_dir.exists():
                stale = out_dir.parent / f".{out_dir.name}.stale-{os.getpid()}"
                out_dir.rename(stale)
                shutil.rmtree(stale)
            partial.rename(out_dir)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return _federation(out_dir, parameters)

