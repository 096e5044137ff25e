"""Synthetic hospitals: brain-like multi-modal MRI cases with tumours, written as real NIfTI sites.

Each case is a skull-stripped brain phantom (white and grey matter, cortical CSF, an
interhemispheric fissure, two lateral ventricles) with one glioma-like tumour: a necrotic
core inside an enhancing rim inside oedema, sometimes without necrosis or without
enhancement. Tissue contrasts follow real scans (ET bright on T1c, necrosis dark on T1c,
oedema bright on FLAIR and T2, CSF dark on FLAIR). Each site has its own scanner (gain,
gamma, bias field, noise, slice thickness) and population (tumour size mix), so sites are
non-IID while the contrasts that separate sub-regions survive.

Everything is drawn from ``numpy.random.SeedSequence(seed)``: the same parameters give the
same files. Smooth random fields are drawn on a coarse grid and upsampled trilinearly, so
a 240×240×155 case costs seconds and a 48³ case a few tens of milliseconds.
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
import torch
from scipy.ndimage import gaussian_filter

from segguided_model.data.entries import visible_entries
from segguided_model.data.layouts import CASE_FOLDER_LAYOUTS, MODALITIES
from segguided_model.labels import get_convention

DEFAULT_SIZE: tuple[int, int, int] = (48, 48, 48)
FIELD_OF_VIEW_MM: float = 240.0
"""Field of view of the largest axis; spacing is isotropic, 1 mm at 240×240×155."""

MIN_SIZE: int = 16
VALIDATION_FOLDER = "validation"

TISSUE_INTENSITY: Mapping[str, tuple[float, float, float, float]] = {
    # relative signal per modality, in MODALITIES order (t1, t1c, t2, flair)
    "CSF": (0.25, 0.25, 1.00, 0.10),
    "GM": (0.62, 0.64, 0.62, 0.60),
    "WM": (0.88, 0.88, 0.42, 0.48),
    "ED": (0.60, 0.62, 0.82, 0.98),
    "NCR": (0.32, 0.28, 0.92, 0.55),
    "ET": (0.70, 1.45, 0.70, 0.80),
}
"""Tissue contrasts as on real T1, T1c, T2 and FLAIR scans."""

TISSUES: tuple[str, ...] = tuple(TISSUE_INTENSITY)
_FIRST_TUMOUR_TISSUE = TISSUES.index("ED")  # tissues from here on are tumour sub-regions

PROBABILITY_NO_NECROSIS: float = 0.12
PROBABILITY_NO_ENHANCEMENT: float = 0.06


@dataclass(frozen=True)
class SiteProfile:
    """One synthetic hospital: its scanner and its patient population.

    Attributes:
        gain: per-modality scale from relative signal to stored integers.
        gamma: per-modality exponent applied to the relative signal.
        bias_strength: amplitude of the smooth multiplicative bias field (log scale).
        noise: Rician noise level relative to the white-matter signal.
        slice_thickness_mm: through-plane blur of the last axis.
        tumour_radius: range of whole-tumour radii as a fraction of the largest axis.
    """

    gain: tuple[float, float, float, float]
    gamma: tuple[float, float, float, float]
    bias_strength: float
    noise: float
    slice_thickness_mm: float
    tumour_radius: tuple[float, float]


def draw_site_profiles(sites: int, seed: int) -> list[SiteProfile]:
    """Draw ``sites`` scanner/population profiles, stratified so that every site differs.

    Each scalar parameter is drawn once per site from its own stratum of the range
    (stratum order shuffled per parameter), so even two sites never look alike.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1_000_001,)))

    def stratified(low: float, high: float, count: int = sites) -> np.ndarray:
        strata = (rng.permutation(count) + rng.uniform(0.15, 0.85, count)) / count
        return low + (high - low) * strata

    log_gain = stratified(np.log(300.0), np.log(2000.0))
    gamma = stratified(0.8, 1.25)
    bias = stratified(0.05, 0.3)
    noise = stratified(0.01, 0.05)
    thickness = stratified(1.0, 6.0)
    radius_centre = stratified(0.17, 0.24)
    profiles = []
    for site in range(sites):
        jitter = rng.uniform(-0.15, 0.15, len(MODALITIES))
        gamma_jitter = rng.uniform(-0.05, 0.05, len(MODALITIES))
        profiles.append(
            SiteProfile(
                gain=tuple(float(np.exp(log_gain[site] + j)) for j in jitter),
                gamma=tuple(float(gamma[site] + j) for j in gamma_jitter),
                bias_strength=float(bias[site]),
                noise=float(noise[site]),
                slice_thickness_mm=float(thickness[site]),
                tumour_radius=(float(radius_centre[site] - 0.04), float(radius_centre[site] + 0.05)),
            )
        )
    return profiles


def voxel_spacing(size: tuple[int, int, int]) -> float:
    """Isotropic spacing (mm) that gives the largest axis a ``FIELD_OF_VIEW_MM`` field of view."""
    return FIELD_OF_VIEW_MM / max(size)


def _smooth_field(rng: np.random.Generator, size: tuple[int, int, int], coarse: int) -> np.ndarray:
    """Unit-variance smooth random field ``size`` with about ``coarse`` blobs along the largest axis.

    White noise on a grid of ``4 * coarse`` points is Gaussian-smoothed there (cheap, and
    free of the creases of plain trilinear upsampling), then upsampled trilinearly.
    """
    grid = [min(n, max(4, round(4 * coarse * n / max(size)))) for n in size]
    smoothed = gaussian_filter(rng.standard_normal(grid).astype(np.float32), sigma=1.5, mode="wrap")
    noise = torch.from_numpy(smoothed)[None, None]
    field = torch.nn.functional.interpolate(noise, size=size, mode="trilinear", align_corners=True)[0, 0]
    field = (field - field.mean()) / (field.std() + 1e-6)
    return field.numpy()


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def synthesize_case(
    profile: SiteProfile, size: tuple[int, int, int], rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Draw one case's images and sub-region masks.

    Args:
        profile: the site's scanner and population.
        size: array shape ``(H, W, D)``; the last axis is the slice axis.
        rng: source of every random choice.

    Returns:
        ``(images, subregions)``: modality → ``int16`` array ``size`` (0 outside the
        brain, ≥ 1 inside), and ``"NCR"``/``"ED"``/``"ET"`` → boolean mask ``size``.
    """
    size = tuple(int(n) for n in size)
    half = [(n - 1) / 2 for n in size]
    axes = np.ogrid[tuple(slice(0, n) for n in size)]
    axes = [(a.astype(np.float32) - c) for a, c in zip(axes, half)]

    # brain: an ellipsoid with a wobbly surface; depth 0 at the centre, 1 at the surface
    radii = [h * f for h, f in zip(half, (0.74, 0.84, 0.86))]
    depth = np.sqrt(sum((a / r) ** 2 for a, r in zip(axes, radii)))
    depth *= 1 + 0.03 * _smooth_field(rng, size, 6)
    brain = depth < 1
    tissue = np.full(size, TISSUES.index("WM"), dtype=np.uint8)
    cortex = depth > 0.8 + 0.05 * _smooth_field(rng, size, 16)
    tissue[cortex] = TISSUES.index("GM")
    tissue[depth > 0.95] = TISSUES.index("CSF")
    fissure = (np.abs(axes[0]) < max(0.6, 0.015 * size[0])) & (depth > 0.45) & (axes[2] > -0.2 * half[2])
    tissue[np.broadcast_to(fissure, size)] = TISSUES.index("CSF")
    for side in (-1, 1):  # lateral ventricles, elongated front to back
        centre = (side * 0.11 * radii[0], 0.05 * radii[1], 0.12 * radii[2])
        shape = (0.08 * radii[0], 0.34 * radii[1], 0.14 * radii[2])
        ventricle = sum(((a - c) / s) ** 2 for a, c, s in zip(axes, centre, shape)) < 1
        tissue[ventricle] = TISSUES.index("CSF")

    # tumour: whole tumour ⊃ core ⊃ necrosis, each an irregular rotated ellipsoid
    radius = rng.uniform(*profile.tumour_radius) * max(size)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    offset = direction * rng.uniform(0.0, 0.45) * np.array(radii)
    rotation = _random_rotation(rng)
    elongation = rng.uniform(0.8, 1.2, 3)
    shifted = [a - o for a, o in zip(axes, offset)]
    rotated = [sum(rotation[i, j] * shifted[j] for j in range(3)) / elongation[i] for i in range(3)]
    distance = np.sqrt(sum(r**2 for r in rotated)) / radius
    whole = (distance * (1 + 0.18 * _smooth_field(rng, size, 8)) < 1) & brain
    core_distance = distance * (1 + 0.10 * _smooth_field(rng, size, 8))
    core_fraction = rng.uniform(0.5, 0.7)
    core = (core_distance < core_fraction) & whole
    enhancing = rng.random() >= PROBABILITY_NO_ENHANCEMENT
    necrotic = rng.random() >= PROBABILITY_NO_NECROSIS or not enhancing
    if not enhancing:
        necrosis = core
    elif necrotic:
        necrosis = core & (core_distance < core_fraction - rng.uniform(0.22, 0.32))
    else:
        necrosis = np.zeros(size, dtype=bool)
    subregions = {"NCR": necrosis, "ED": whole & ~core, "ET": core & ~necrosis}
    for name, mask in subregions.items():
        tissue[mask] = TISSUES.index(name)

    # signal: tissue contrast, texture, partial volume, then the site's scanner
    spacing = voxel_spacing(size)
    through_plane = profile.slice_thickness_mm / spacing / 2.355
    sigma = (0.5, 0.5, float(np.hypot(0.5, through_plane)))
    table = np.array([TISSUE_INTENSITY[t] for t in TISSUES], dtype=np.float32)
    texture = 1 + 0.04 * _smooth_field(rng, size, 16) + 0.06 * _smooth_field(rng, size, 8) * (tissue >= _FIRST_TUMOUR_TISSUE)
    bias = _smooth_field(rng, size, 3)
    images = {}
    for index, modality in enumerate(MODALITIES):
        signal = table[tissue, index] * texture * rng.uniform(0.95, 1.05)
        signal = gaussian_filter(signal, sigma=sigma, mode="nearest")
        signal *= np.exp(profile.bias_strength * (0.6 * bias + 0.4 * _smooth_field(rng, size, 3)))
        signal = np.clip(signal, 1e-3, None) ** profile.gamma[index]
        level = profile.noise * TISSUE_INTENSITY["WM"][index] ** profile.gamma[index]
        real = signal + level * rng.standard_normal(size, dtype=np.float32)
        imaginary = level * rng.standard_normal(size, dtype=np.float32)
        signal = np.sqrt(real**2 + imaginary**2) * profile.gain[index]
        stored = np.where(brain, np.clip(np.rint(signal), 1, np.iinfo(np.int16).max), 0)
        images[modality] = stored.astype(np.int16)
    return images, subregions


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
    """Write one case folder in ``layout`` naming, RAS-flipped like BraTS (LPS affine)."""
    rules = CASE_FOLDER_LAYOUTS[layout]
    case_dir.mkdir(parents=True, exist_ok=True)
    shape = np.array(next(iter(images.values())).shape)
    affine = np.diag([-spacing, -spacing, spacing, 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((shape - 1) / 2)
    outputs = [(rules.modality_path(case_dir, m), images[m]) for m in MODALITIES]
    if label is not None:
        outputs.append((rules.label_path(case_dir), label))
    for path, data in outputs:
        image = nib.Nifti1Image(data, affine)
        image.header.set_xyzt_units("mm")
        nib.save(image, path)


GENERATOR_VERSION = 1
"""Bump whenever the same parameters would produce different files."""

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class SynthesisParameters:
    """Everything that determines a synthetic federation's files.

    Attributes:
        sites: number of hospital folders.
        cases: labelled cases per site.
        val_cases: cases in the held-out server validation folder.
        layout: ``"brats2021"`` or ``"brats2023"`` file naming (and label convention).
        size: array shape ``(H, W, D)`` of every volume.
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
        images, subregions = synthesize_case(profile, parameters.size, rng)
        identifier = case_id(parameters.layout, number)
        write_case(folder / identifier, parameters.layout, images, label_map(subregions, convention), spacing)
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
        size: array shape ``(H, W, D)``; isotropic spacing, 1 mm at 240×240×155.
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

