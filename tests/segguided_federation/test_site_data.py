"""A client's site: hidden folders are no simulation site, the declared label convention reaches the QA gate,
and the site id it reports is one the server accepts."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segguided_federation.run_config import RunConfig
from segguided_federation.metric_keys import SITE_ID_PATTERN
from segguided_federation.site_data import SiteError, folder_site_id, load_site, simulation_site_folders
from segguided_model.data.synthetic import (
    draw_site_profiles,
    label_map,
    synthesize_case,
    write_case,
)

SIZE = (24, 24, 24)


def _write_site(site: Path, count: int, layout: str = "brats2021") -> list[str]:
    profile = draw_site_profiles(1, 0)[0]
    ids = []
    for number in range(count):
        case = synthesize_case(profile, SIZE, np.random.default_rng(number))
        case_id = f"BraTS2021_{number:05d}"
        write_case(site / case_id, layout, case.images, label_map(case.subregions, layout), 10.0)
        ids.append(case_id)
    return ids


def test_hidden_folders_are_no_simulation_site_and_the_last_site_is_reached(tmp_path):
    for hidden in (".ipynb_checkpoints", "__MACOSX", ".Trash-1000"):
        (tmp_path / hidden).mkdir()
    for name in ("site-a", "site-b"):
        _write_site(tmp_path / name, 2)
    (tmp_path / "README.txt").write_text("two hospitals")
    assert [folder.name for folder in simulation_site_folders(tmp_path)] == ["site-a", "site-b"]
    config = RunConfig(data_dir=str(tmp_path))
    assert load_site({"partition-id": 0, "num-partitions": 2}, config).site_id == "site-a"
    assert load_site({"partition-id": 1, "num-partitions": 2}, config).site_id == "site-b"


@pytest.fixture
def mixed_site(tmp_path) -> tuple[Path, list[str]]:
    """A BraTS 2021 site whose first case carries BraTS 2023 values (ET = 3)."""
    ids = _write_site(tmp_path / "hospital", 4)
    seg = tmp_path / "hospital" / ids[0] / f"{ids[0]}_seg.nii.gz"
    image = nib.load(seg)
    label = np.asanyarray(image.dataobj)
    nib.save(nib.Nifti1Image(np.where(label == 4, 3, label).astype(np.uint8), image.affine), seg)
    return tmp_path / "hospital", ids


def test_undeclared_site_whose_labels_disagree_fails_saying_declare_and_keeps_path_and_counts_private(mixed_site):
    site, _ = mixed_site
    with pytest.raises(SiteError) as raised:
        load_site({"data-path": str(site), "site-id": "hospital-a"}, RunConfig())
    public = raised.value.public  # what reaches the server: the rule, no path, no count
    assert public.startswith("hospital-a: no labelled case passed the QA gate; run `segguided qa`")
    assert "label-convention" in public and str(site) not in public and "4" not in public
    assert "label-convention-undecided 4" in raised.value.private and str(site) in raised.value.private


def test_declared_label_convention_reaches_the_qa_gate(mixed_site):
    site, ids = mixed_site
    loaded = load_site({"data-path": str(site), "label-convention": "brats2021"}, RunConfig())
    assert loaded.rejected == [(ids[0], "label-convention-mismatch")]
    cases = loaded.training_cases + loaded.validation_cases
    assert sorted(case.case_id for case in cases) == ids[1:] and {case.convention for case in cases} == {"brats2021"}


def test_unknown_declared_convention_names_the_key(mixed_site):
    site, _ = mixed_site
    with pytest.raises(SiteError, match="label-convention='brats2025'.*brats2021"):
        load_site({"data-path": str(site), "site-id": "h", "label-convention": "brats2025"}, RunConfig())


@pytest.mark.parametrize(
    "name, site_id",
    [("Hospital A (MRI)", "Hospital-A--MRI-"), ("_export.2021", "export.2021"), ("Zürich", "Z-rich"),
     ("---", "site"), ("x" * 80, "x" * 63), ("site-a", "site-a")],
)
def test_a_data_folders_name_becomes_a_site_id_the_server_accepts(name, site_id):
    assert folder_site_id(name) == site_id
    assert SITE_ID_PATTERN.fullmatch(site_id)


def test_a_site_folder_with_spaces_reports_under_a_valid_site_id(tmp_path):
    _write_site(tmp_path / "Hospital A", 2)
    assert load_site({"data-path": str(tmp_path / "Hospital A")}, RunConfig()).site_id == "Hospital-A"


@pytest.mark.parametrize("site_id", ["hospital-a (node 1)", "", "-a", "a" * 64])
def test_a_configured_site_id_the_server_would_refuse_fails_naming_the_key(tmp_path, site_id):
    _write_site(tmp_path / "hospital", 2)
    with pytest.raises(SiteError, match="node config site-id=.* is not a site id"):
        load_site({"data-path": str(tmp_path / "hospital"), "site-id": site_id}, RunConfig())
