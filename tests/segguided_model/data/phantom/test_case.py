"""The phantom case: real anatomy, tumours that follow white matter, MRI contrasts, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from segguided_model.data.phantom.case import (
    brats_grid,
    draw_case,
    render_case,
    synthesize_case,
)
from segguided_model.data.phantom.scanner import draw_site_profiles
from segguided_model.data.phantom.template import TISSUES, brain_template

SHAPE = brats_grid(6.0)  # (40, 40, 26): BraTS's field of view at 6 mm
PROFILE = draw_site_profiles(1, 0)[0]


@pytest.fixture(scope="module")
def cases():
    return [synthesize_case(PROFILE, SHAPE, np.random.default_rng(seed)) for seed in range(6)]


def test_template_is_a_brain_of_plausible_size():
    template = brain_template(4.0)
    volume_ml = float(template.tissues.sum()) * 4.0**3 / 1000
    assert 1500 < volume_ml < 2300  # CSF + GM + WM of an adult brain
    grey, white = (float(template.tissues[TISSUES.index(t)].sum()) for t in ("GM", "WM"))
    assert grey > white  # the template's GM includes cerebellar and deep grey matter


def test_grids_cover_the_brats_field_of_view():
    assert brats_grid(1.0) == (240, 240, 155)
    assert brats_grid(4.0) == (60, 60, 39)


def test_subregions_are_disjoint_inside_the_brain_and_of_plausible_size(cases):
    for case in cases:
        sub = case.subregions
        assert not (sub["NCR"] & sub["ET"]).any() and not (sub["ED"] & (sub["NCR"] | sub["ET"])).any()
        whole = sub["NCR"] | sub["ED"] | sub["ET"]
        brain = case.images["t1"] > 0
        assert not (whole & ~brain).any()
        volume_ml = whole.sum() * case.spacing_mm**3 / 1000
        assert 10 < volume_ml < 400  # BraTS whole tumours range from a few to a few hundred ml
        assert (sub["NCR"] | sub["ET"]).any()  # every case has a core


def test_the_tumour_grows_in_white_matter_and_its_oedema_follows_it(cases):
    for case in cases:
        white = case.tissues[TISSUES.index("WM")]
        grey = case.tissues[TISSUES.index("GM")]
        assert white[case.centre] > 0.5
        oedema = case.subregions["ED"]
        # oedema prefers white matter over grey matter, compared with the brain around it
        ring = (case.images["t1"] > 0) & ~oedema
        assert white[oedema].mean() / grey[oedema].mean() > white[ring].mean() / grey[ring].mean()


def test_subregion_contrasts_follow_real_scans(cases):
    for case in cases:
        images, sub = case.images, case.subregions
        healthy = (images["t1"] > 0) & ~(sub["NCR"] | sub["ED"] | sub["ET"])
        mean = {m: {name: images[m][mask].mean() for name, mask in {**sub, "healthy": healthy}.items() if mask.any()}
                for m in images}
        assert mean["flair"]["ED"] > mean["flair"]["healthy"]  # oedema bright on FLAIR
        assert mean["t2"]["ED"] > mean["t2"]["healthy"]  # and on T2
        if "ET" in mean["t1c"] and "NCR" in mean["t1c"]:
            assert mean["t1c"]["ET"] > mean["t1c"]["NCR"]  # the rim enhances, the centre does not


def test_some_sub_regions_are_ambiguous_in_some_modalities():
    # across a population, ED and ET overlap on FLAIR and T1 (only T1c tells them apart)
    overlaps = []
    for seed in range(8):
        case = synthesize_case(PROFILE, SHAPE, np.random.default_rng(seed))
        sub = case.subregions
        if sub["ET"].sum() < 5:
            continue
        flair = case.images["flair"]
        ed, et = flair[sub["ED"]], flair[sub["ET"]]
        overlaps.append(np.mean((ed > np.percentile(et, 10)) & (ed < np.percentile(et, 90))))
    assert np.mean(overlaps) > 0.2


def test_same_draw_gives_identical_cases_and_another_does_not():
    first, second = (synthesize_case(PROFILE, SHAPE, np.random.default_rng(3)) for _ in range(2))
    other = synthesize_case(PROFILE, SHAPE, np.random.default_rng(4))
    assert all(np.array_equal(first.images[m], second.images[m]) for m in first.images)
    assert all(np.array_equal(first.subregions[s], second.subregions[s]) for s in first.subregions)
    assert not np.array_equal(first.images["t1c"], other.images["t1c"])


def test_mass_effect_pushes_the_anatomy_away_from_the_tumour():
    draw = draw_case(PROFILE, np.random.default_rng(2))
    pushed = render_case(dataclasses.replace(draw, bulk_fraction=0.9), PROFILE, SHAPE)
    still = render_case(dataclasses.replace(draw, bulk_fraction=0.0), PROFILE, SHAPE)
    axes = np.indices(SHAPE)
    distance = np.sqrt(sum((a - c) ** 2 for a, c in zip(axes, pushed.centre))) * pushed.spacing_mm
    near = distance < 30.0

    def mean_distance(case):  # of the grey matter and CSF around the tumour (which grows in white matter)
        tissue = (case.tissues[TISSUES.index("GM")] + case.tissues[TISSUES.index("CSF")]) * near
        return float((tissue * distance).sum() / tissue.sum())

    # the cortex and CSF around the tumour lie further out when the bulk pushes them: displaced, not overwritten
    assert mean_distance(pushed) > mean_distance(still) + 0.5
    far = distance > 80.0  # the same brain far away
    assert np.abs(pushed.tissues[:, far] - still.tissues[:, far]).max() < 0.01


def test_cases_without_necrosis_or_enhancement_follow_the_draw():
    draw = draw_case(PROFILE, np.random.default_rng(1))
    solid = render_case(dataclasses.replace(draw, growth=dataclasses.replace(draw.growth, necrotic=False)), PROFILE, SHAPE)
    assert not solid.subregions["NCR"].any() and solid.subregions["ET"].any()
    dull = render_case(
        dataclasses.replace(draw, growth=dataclasses.replace(draw.growth, enhancing=False, necrotic=True)), PROFILE, SHAPE
    )
    assert not dull.subregions["ET"].any() and dull.subregions["NCR"].any()
