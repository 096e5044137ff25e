"""Each hospital's scanner and patients: site profiles, and the acquisition that turns signal into stored images.

A site's scanner sets contrast and gain, a smooth multiplicative bias field, Rician noise,
the slice thickness (blur along the slice axis) and the contrast agent's strength; its
population sets the tumour sizes. Bias field and noise are MONAI's transforms
(``RandBiasField``: a log-polynomial field as in Sudre et al. 2017; ``RandRicianNoise``),
seeded per case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import RandBiasField, RandRicianNoise
from scipy.ndimage import gaussian_filter

from segguided_model.data.layouts import MODALITIES

FWHM_PER_SIGMA = 2.3548
IN_PLANE_BLUR_VOXELS = 0.5
"""Point-spread function in-plane, standard deviation in voxels."""


@dataclass(frozen=True)
class SiteProfile:
    """One synthetic hospital: its scanner and its patient population.

    Attributes:
        gain: per-modality scale from relative signal to stored integers.
        gamma: per-modality exponent applied to the relative signal.
        contrast: per-modality stretch of the signal about the brain's mean (< 1 flattens).
        bias_coefficient: range ``(-b, b)`` of the bias field's polynomial coefficients.
        noise: Rician noise level relative to white matter's signal.
        slice_thickness_mm: full width at half maximum of the through-plane blur.
        contrast_agent: strength of T1c enhancement (1 = typical).
        growth_time: range of tumour growth times: the population's tumour sizes.
    """

    gain: tuple[float, float, float, float]
    gamma: tuple[float, float, float, float]
    contrast: tuple[float, float, float, float]
    bias_coefficient: float
    noise: float
    slice_thickness_mm: float
    contrast_agent: float
    growth_time: tuple[float, float]


def draw_site_profiles(sites: int, seed: int) -> list[SiteProfile]:
    """Draw ``sites`` scanner/population profiles, stratified so that every site differs.

    Each scalar parameter is drawn once per site from its own stratum of the range
    (stratum order shuffled per parameter), so even two sites never look alike.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1_000_001,)))

    def stratified(low: float, high: float) -> np.ndarray:
        strata = (rng.permutation(sites) + rng.uniform(0.15, 0.85, sites)) / sites
        return low + (high - low) * strata

    log_gain = stratified(np.log(300.0), np.log(2000.0))
    gamma = stratified(0.75, 1.3)
    contrast = stratified(0.7, 1.2)
    bias = stratified(0.01, 0.08)
    noise = stratified(0.02, 0.09)
    thickness = stratified(1.0, 6.0)
    agent = stratified(0.5, 1.3)
    growth = stratified(4.0, 6.5)
    profiles = []
    for site in range(sites):
        modalities = len(MODALITIES)
        profiles.append(
            SiteProfile(
                gain=tuple(float(np.exp(log_gain[site] + j)) for j in rng.uniform(-0.15, 0.15, modalities)),  # type: ignore[arg-type]
                gamma=tuple(float(gamma[site] + j) for j in rng.uniform(-0.05, 0.05, modalities)),  # type: ignore[arg-type]
                contrast=tuple(float(contrast[site] + j) for j in rng.uniform(-0.05, 0.05, modalities)),  # type: ignore[arg-type]
                bias_coefficient=float(bias[site]),
                noise=float(noise[site]),
                slice_thickness_mm=float(thickness[site]),
                contrast_agent=float(agent[site]),
                growth_time=(float(growth[site] - 1.2), float(growth[site] + 1.2)),
            )
        )
    return profiles


def acquire(
    signal: torch.Tensor,
    brain: torch.Tensor,
    white_matter: torch.Tensor,
    profile: SiteProfile,
    spacing_mm: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """The site's scanner: contrast, blur, bias field, gamma, Rician noise, gain; skull-stripped.

    Args:
        signal: ``(4, X, Y, Z)`` relative signal (``appearance.render_signal``); Z is the slice axis.
        brain: ``(X, Y, Z)`` boolean mask of what is kept (0 outside it, as in BraTS).
        white_matter: ``(X, Y, Z)`` boolean mask of pure white matter (the noise reference).
        profile: the site.
        spacing_mm: voxel size.
        seed: seeds the MONAI transforms.

    Returns:
        modality → ``int16`` array ``(X, Y, Z)``: 0 outside the brain, ≥ 1 inside.
    """
    through_plane = profile.slice_thickness_mm / spacing_mm / FWHM_PER_SIGMA
    sigma = (IN_PLANE_BLUR_VOXELS, IN_PLANE_BLUR_VOXELS, float(np.hypot(IN_PLANE_BLUR_VOXELS, through_plane)))
    inside = brain.numpy()
    reference = white_matter if white_matter.any() else brain
    images = {}
    for index, modality in enumerate(MODALITIES):
        image = signal[index].numpy()
        mean = float(image[inside].mean()) if inside.any() else 0.0
        image = np.clip(mean + profile.contrast[index] * (image - mean), 0.0, None)
        image = torch.from_numpy(gaussian_filter(image, sigma=sigma, mode="nearest"))[None]
        bias = RandBiasField(degree=3, coeff_range=(-profile.bias_coefficient, profile.bias_coefficient), prob=1.0)
        bias.set_random_state(seed=(seed + 7919 * index) % 2**32)
        image = torch.as_tensor(bias(image)).clamp_min(1e-4) ** profile.gamma[index]
        level = float(image[0][reference].mean()) * profile.noise
        noise = RandRicianNoise(prob=1.0, mean=0.0, std=level, relative=False, sample_std=False)
        noise.set_random_state(seed=(seed + 104729 * (index + 1)) % 2**32)
        image = torch.as_tensor(noise(image.float()))[0].numpy() * profile.gain[index]
        stored = np.where(inside, np.clip(np.rint(image), 1, np.iinfo(np.int16).max), 0)
        images[modality] = stored.astype(np.int16)
    return images
